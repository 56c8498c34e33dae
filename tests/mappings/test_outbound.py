"""FHIR -> HL7 v2 (render_message): ServiceRequest -> OML^O21 (2.5.1) and ORM^O01 (2.3.1), DiagnosticReport
-> ORU^R01, validated with hl7apy; a round trip through the inbound mappings keeps the clinical content."""

from __future__ import annotations

from pathlib import Path

import pytest

from engine.errors import MappingError
from engine.hl7v2.message import parse
from engine.mapping import map_message, render_message
from tests.mappings.clinical import compare, facts

CORPUS = Path(__file__).resolve().parents[1] / "fixtures" / "hl7v2"


def test_oru_round_trip_keeps_the_clinical_content():
    original = map_message((CORPUS / "ORU_R01" / "msfc-LAB-ORU-1.hl7").read_bytes()).bundle
    rendered = render_message(original, mapping="oru-r01-out")
    msg = parse(rendered)
    assert (msg.message_type, msg.trigger_event, msg.version) == ("ORU", "R01", "2.5.1")
    assert len(msg.all("OBR")) == 2 and len(msg.all("OBX")) == 10
    again = map_message(rendered).bundle
    assert compare(facts(again), facts(original)) == []


@pytest.mark.parametrize("mapping,version", [("oml-o21-out", "2.5.1"), ("orm-o01-out", "2.3.1")])
def test_service_request_renders_a_valid_order(mapping: str, version: str):
    bundle = map_message((CORPUS / "OML_O21" / "v2tofhir-ig-OML_O21.hl7").read_bytes()).bundle
    rendered = render_message(bundle, mapping=mapping)
    msg = parse(rendered)
    assert msg.version == version
    orc = msg.first("ORC")
    assert orc.get(1) == "NW" and orc.get(2) == "ORD777888"
    assert msg.first("OBR").get(4) == "51523-9"
    assert msg.first("PID").get(3) == "1032702" and msg.first("PID").get(8) == "F"
    back = map_message(rendered).bundle
    codes = [
        e["resource"]["code"]["coding"][0]["code"]
        for e in back["entry"]
        if e["resource"]["resourceType"] == "ServiceRequest"
    ]
    assert codes == ["51523-9"]


def test_a_message_the_structure_refuses_is_not_sent():
    patient = {
        "resourceType": "Patient",
        "identifier": [{"system": "urn:oid:1.2", "value": "7"}],
        "name": [{"family": "X"}],
    }
    with pytest.raises(
        MappingError,
        match="not valid HL7 v2 2.5.1: ORDER: required ORC is missing|not valid HL7 v2 2.5.1.*ORDER",
    ):
        render_message([patient], mapping="oml-o21-out")  # no ServiceRequest: OML^O21 needs an ORDER
    with pytest.raises(MappingError, match="no outbound mapping"):
        render_message([patient], mapping="nope")


def test_escaping_on_the_way_out():
    patient = {
        "resourceType": "Patient",
        "id": "p",
        "identifier": [{"system": "urn:oid:1.2", "value": "7"}],
        "name": [{"family": "O|Brien^&", "given": ["A~B"]}],
    }
    request = {
        "resourceType": "ServiceRequest",
        "status": "active",
        "intent": "order",
        "subject": {"reference": "Patient/p"},
        "identifier": [{"system": "urn:oid:1.2.3", "value": "X1", "type": {"coding": [{"code": "PLAC"}]}}],
        "code": {"coding": [{"system": "http://loinc.org", "code": "2345-7", "display": "Glucose"}]},
    }
    rendered = render_message([patient, request], mapping="oml-o21-out")
    pid = parse(rendered).first("PID")
    assert pid.get(5, comp=1) == "O|Brien^&" and pid.get(5, comp=2) == "A~B"
