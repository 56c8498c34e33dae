"""Golden files: one input per shipped mapping and the expected Bundle snapshot (volatile parts — fullUrls,
ids, Provenance.recorded — normalized by ``engine.cli.map.normalize``). A change in a mapping shows up
here as a reviewable diff; refresh with ``CONDUIT_UPDATE_GOLDEN=1 pytest tests/mappings``."""

from __future__ import annotations

import json
import os
from pathlib import Path

import pytest

from engine.cli.map import normalize
from engine.mapping import map_message

HERE = Path(__file__).resolve().parent
GOLDEN = HERE / "golden"
CORPUS = HERE.parent / "fixtures" / "hl7v2"

#: mapping -> input message (corpus file, or a small message written for what the corpus lacks)
CASES = {
    "adt": CORPUS / "ADT_A01" / "msfc-ADT01-28.hl7",
    "adt-finish": GOLDEN / "adt_a03.hl7",
    "adt-a40": CORPUS / "ADT_A40" / "lfh-ADT_A40-two-PID-MRG-pairs.hl7",
    "adt-a47": GOLDEN / "adt_a47.hl7",
    "oru-r01": CORPUS / "ORU_R01" / "medplum-ORU-final-comparators-pdf.hl7",
    "oul-r22": CORPUS / "OUL_R22" / "msfc-OUL-R22-01.hl7",
    "orm-o01": CORPUS / "ORM_O01" / "msfc-LAB-ORM-1.hl7",
    "oml-o21": CORPUS / "OML_O21" / "v2tofhir-ig-OML_O21.hl7",
    "oml-o33": CORPUS / "OML_O33" / "hl7apy-OML_O33-multi-specimen.hl7",
    "omi-o23": GOLDEN / "omi_o23.hl7",
    "siu": CORPUS / "SIU_S12" / "v2tofhir-ig-SIU_S12.hl7",
    "siu-cancel": GOLDEN / "siu_s15.hl7",
    "mdm-t02": CORPUS / "MDM_T02" / "v2tofhir-ig-MDM_T02.hl7",
    "vxu-v04": CORPUS / "VXU_V04" / "v2tofhir-ig-VXU_V04.hl7",
    "example-or-schedule": CORPUS / "ADT_A08" / "hl7dotnetcore-ADT_A08-Z-segment-invalid-escape.hl7",
}


@pytest.mark.parametrize("case", sorted(CASES))
def test_golden(case: str):
    result = map_message(CASES[case].read_bytes())
    assert result.mapping == case.split("-finish")[0].split("-cancel")[0]
    actual = normalize(result.bundle)
    snapshot = GOLDEN / f"{case}.json"
    if os.environ.get("CONDUIT_UPDATE_GOLDEN") or not snapshot.exists():
        snapshot.write_text(json.dumps(actual, indent=1, ensure_ascii=False, sort_keys=True) + "\n")
    assert actual == json.loads(snapshot.read_text())


def test_event_table_outcomes():
    a03 = map_message((GOLDEN / "adt_a03.hl7").read_bytes()).bundle
    encounter = next(e["resource"] for e in a03["entry"] if e["resource"]["resourceType"] == "Encounter")
    assert encounter["status"] == "finished" and encounter["period"]["end"].startswith("2024-01-05T10:00")
    s15 = map_message((GOLDEN / "siu_s15.hl7").read_bytes()).bundle
    appointment = next(e["resource"] for e in s15["entry"] if e["resource"]["resourceType"] == "Appointment")
    assert appointment["status"] == "cancelled"
    omi = map_message((GOLDEN / "omi_o23.hl7").read_bytes()).bundle
    study = next(e for e in omi["entry"] if e["resource"]["resourceType"] == "ImagingStudy")
    assert study["request"]["method"] == "POST" and "ACC42" in study["request"]["ifNoneExist"]
    assert {"system": "urn:dicom:uid", "value": "urn:oid:1.2.826.0.1.3680043.8.498.1"} in study["resource"][
        "identifier"
    ]
    a47 = map_message((GOLDEN / "adt_a47.hl7").read_bytes()).bundle
    patient = a47["entry"][0]
    assert patient["request"]["url"].endswith("|OLD456")  # found by the old identifier
    assert {(i["value"], i.get("use")) for i in patient["resource"]["identifier"]} >= {
        ("NEW123", None),
        ("OLD456", "old"),
    }


def _of(bundle: dict, kind: str) -> list[dict]:
    return [e["resource"] for e in bundle["entry"] if e["resource"]["resourceType"] == kind]


def test_result_status_events_from_the_corpus():
    cancelled = map_message((CORPUS / "ORU_R01" / "medplum-ORU-cancelled.hl7").read_bytes()).bundle
    assert {o["status"] for o in _of(cancelled, "Observation")} == {"cancelled"}
    assert {r["status"] for r in _of(cancelled, "DiagnosticReport")} == {"cancelled"}
    corrected = map_message(
        (CORPUS / "ORU_R01" / "medplum-ORU-corrected-unable-to-calc.hl7").read_bytes()
    ).bundle
    assert {r["status"] for r in _of(corrected, "DiagnosticReport")} == {"corrected"}


ADT = "MSH|^~\\&|REG|HOSP|||20240105101500||ADT^{event}|{event}1|P|2.5\rEVN|{event}\rPID|1||MR1^^^HOSP^MR||Doe^John\rPV1|1|I|W1^1^A|||||||||||||||V1^^^HOSP^VN\r"


@pytest.mark.parametrize(
    "event,status",
    [("A01", "in-progress"), ("A02", "in-progress"), ("A04", "arrived"), ("A05", "planned"), ("A06", "in-progress"),
     ("A07", "in-progress"), ("A08", "in-progress"), ("A11", "cancelled"), ("A13", "in-progress"),
     ("A28", "unknown"), ("A31", "unknown")],
)  # fmt: skip
def test_adt_events_set_the_encounter_status(event: str, status: str):
    result = map_message(ADT.format(event=event).encode())
    assert result.mapping == "adt"
    (encounter,) = _of(result.bundle, "Encounter")
    assert encounter["status"] == status
    assert result.bundle["entry"][0]["request"]["url"] == "Patient?identifier=urn:conduit:authority:HOSP|MR1"


def test_order_control_cancel():
    orm = (
        "MSH|^~\\&|EHR|HOSP|||20240105101500||ORM^O01|O1|P|2.3\rPID|1||MR1^^^HOSP^MR||Doe^John\r"
        "ORC|CA|P77^EHR\rOBR|1|P77^EHR||GLU^Glucose^L\r"
    )
    (request,) = _of(map_message(orm.encode()).bundle, "ServiceRequest")
    assert request["status"] == "revoked"
