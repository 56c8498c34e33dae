"""Index extraction per the R4 SearchParameter expressions, one sample per required resource type: the
extracted rows, and a search on the stored resource that finds it (both databases)."""

from __future__ import annotations

from typing import Any

import pytest

from engine.fhir.search.registry import default_registry
from services.records.indexing import Extractor, normalize, parse_reference

P = {"reference": "Patient/p1"}

#: resource, (search parameter, value that must find it), expected index row subset (table, param, columns)
SAMPLES: list[tuple[dict[str, Any], tuple[str, str], tuple[str, str, dict[str, Any]]]] = [
    (
        {"resourceType": "Patient", "name": [{"family": "Ødegård", "given": ["Åse"]}], "gender": "female"},
        ("family", "odegard"),
        ("string", "family", {"value_norm": "odegard", "value": "Ødegård"}),
    ),
    (
        {"resourceType": "Encounter", "status": "in-progress", "class": {"code": "IMP"}, "subject": P},
        ("patient", "p1"),
        ("reference", "patient", {"target_type": "Patient", "target_id": "p1"}),
    ),
    (
        {"resourceType": "Observation", "status": "final", "code": {"text": "x"}, "valueString": "Positive"},
        ("value-string", "pos"),
        ("string", "value-string", {"value_norm": "positive"}),
    ),
    (
        {"resourceType": "DiagnosticReport", "status": "final", "code": {"text": "CBC"}, "subject": P,
         "result": [{"reference": "Observation/o1"}], "issued": "2024-05-01T10:00:00Z"},
        ("result", "Observation/o1"),
        ("reference", "result", {"target_type": "Observation", "target_id": "o1"}),
    ),
    (
        {"resourceType": "ServiceRequest", "status": "active", "intent": "order", "subject": P,
         "requisition": {"system": "urn:req", "value": "R1"}, "authoredOn": "2024-05-01"},
        ("requisition", "urn:req|R1"),
        ("token", "requisition", {"system": "urn:req", "code": "R1"}),
    ),
    (
        {"resourceType": "Specimen", "accessionIdentifier": {"system": "urn:acc", "value": "A1"}, "subject": P,
         "collection": {"collectedDateTime": "2024-05-01T08:00:00Z"}},
        ("accession", "A1"),
        ("token", "accession", {"system": "urn:acc", "code": "A1"}),
    ),
    (
        {"resourceType": "ImagingStudy", "status": "available", "subject": P, "started": "2024-05-01T09:00:00Z",
         "series": [{"uid": "1.2.3.4", "modality": {"system": "http://dicom.nema.org/resources/ontology/DCM", "code": "CT"}}],
         "identifier": [{"system": "urn:dicom:uid", "value": "urn:oid:1.2.3"}]},
        ("modality", "CT"),
        ("token", "modality", {"code": "CT"}),
    ),
    (
        {"resourceType": "Organization", "name": "General Hospital", "alias": ["GH"],
         "address": [{"city": "Zürich"}]},
        ("address-city", "zurich"),
        ("string", "address-city", {"value_norm": "zurich"}),
    ),
    (
        {"resourceType": "Location", "name": "Ward 3", "status": "active",
         "managingOrganization": {"reference": "Organization/o1"}},
        ("organization", "Organization/o1"),
        ("reference", "organization", {"target_type": "Organization", "target_id": "o1"}),
    ),
    (
        {"resourceType": "Practitioner", "name": [{"family": "House", "prefix": ["Dr."]}],
         "telecom": [{"system": "email", "value": "house@example.org"}]},
        ("email", "house@example.org"),
        ("token", "email", {"system": None, "code": "house@example.org"}),
    ),
    (
        {"resourceType": "PractitionerRole", "practitioner": {"reference": "Practitioner/d1"},
         "code": [{"coding": [{"system": "urn:roles", "code": "doctor"}]}], "period": {"start": "2020-01-01"}},
        ("role", "urn:roles|doctor"),
        ("token", "role", {"system": "urn:roles", "code": "doctor"}),
    ),
    (
        {"resourceType": "Device", "patient": P, "manufacturer": "Acme",
         "deviceName": [{"name": "Analyzer X", "type": "model-name"}]},
        ("device-name", "analyzer"),
        ("string", "device-name", {"value_norm": "analyzer x"}),
    ),
    (
        {"resourceType": "Endpoint", "status": "active", "connectionType": {"code": "hl7-fhir-rest"},
         "payloadType": [{"text": "any"}], "address": "https://ehr.example.org/fhir", "name": "EHR"},
        ("connection-type", "hl7-fhir-rest"),
        ("token", "connection-type", {"code": "hl7-fhir-rest"}),
    ),
    (
        {"resourceType": "DocumentReference", "status": "current", "subject": P, "date": "2024-05-01T10:00:00Z",
         "content": [{"attachment": {"contentType": "application/pdf", "url": "http://docs/1"}}]},
        ("contenttype", "application/pdf"),
        ("token", "contenttype", {"code": "application/pdf"}),
    ),
    (
        {"resourceType": "Appointment", "status": "booked", "start": "2024-06-01T09:00:00Z",
         "participant": [{"actor": P, "status": "accepted"}, {"actor": {"reference": "Location/l1"}, "status": "accepted"}]},
        ("location", "l1"),
        ("reference", "location", {"target_type": "Location", "target_id": "l1"}),
    ),
    (
        {"resourceType": "Immunization", "status": "completed", "patient": P,
         "vaccineCode": {"coding": [{"system": "http://hl7.org/fhir/sid/cvx", "code": "207"}]},
         "occurrenceDateTime": "2021-01-05", "lotNumber": "L-9"},
        ("vaccine-code", "http://hl7.org/fhir/sid/cvx|207"),
        ("token", "vaccine-code", {"system": "http://hl7.org/fhir/sid/cvx", "code": "207"}),
    ),
    (
        {"resourceType": "Provenance", "target": [P, {"reference": "Observation/o1"}], "recorded": "2024-05-01T10:00:00Z",
         "agent": [{"who": {"reference": "Device/d1"}}]},
        ("patient", "p1"),
        ("reference", "patient", {"target_type": "Patient", "target_id": "p1"}),
    ),
    (
        {"resourceType": "AuditEvent", "type": {"code": "rest"}, "recorded": "2024-05-01T10:00:00Z",
         "agent": [{"who": P, "requestor": False}], "source": {"observer": {"reference": "Device/d1"}},
         "entity": [{"what": {"reference": "Observation/o1"}}]},
        ("entity", "Observation/o1"),
        ("reference", "entity", {"target_type": "Observation", "target_id": "o1"}),
    ),
    (
        {"resourceType": "ConceptMap", "url": "http://example.org/cm/sex", "status": "active", "name": "SexMap",
         "sourceUri": "http://terminology.hl7.org/ValueSet/v2-0001",
         "targetCanonical": "http://hl7.org/fhir/ValueSet/administrative-gender|4.0.1"},
        ("target", "http://hl7.org/fhir/ValueSet/administrative-gender"),
        ("reference", "target", {"url": "http://hl7.org/fhir/ValueSet/administrative-gender"}),
    ),
    (
        {"resourceType": "Subscription", "status": "active", "criteria": "Observation?code=1234", "reason": "x",
         "channel": {"type": "rest-hook", "endpoint": "https://hooks.example.org/in", "payload": "application/fhir+json"}},
        ("url", "https://hooks.example.org/in"),
        ("uri", "url", {"uri": "https://hooks.example.org/in"}),
    ),
]  # fmt: skip


@pytest.mark.parametrize(
    ("resource", "query", "expected"), SAMPLES, ids=[s[0]["resourceType"] for s in SAMPLES]
)
def test_extraction_per_type(
    resource: dict[str, Any], query: tuple[str, str], expected: tuple[str, str, dict[str, Any]]
) -> None:
    rows = Extractor(default_registry()).extract(resource)
    table, param, columns = expected
    candidates = [r for r in rows.get(table, []) if r["param"] == param]
    assert any(all(r.get(k) == v for k, v in columns.items()) for r in candidates), (param, candidates)
    assert all(r["resource_type"] == resource["resourceType"] for t in rows.values() for r in t)


def test_every_required_type_has_a_sample() -> None:
    assert sorted(s[0]["resourceType"] for s in SAMPLES) == sorted(default_registry().resource_types())


def test_stored_samples_are_found_by_their_parameter(records) -> None:  # type: ignore[no-untyped-def]
    with records() as repo:
        stored = {resource["resourceType"]: repo.create(resource).id for resource, _, _ in SAMPLES}
        for resource, _, _ in SAMPLES:
            repo.create({"resourceType": resource["resourceType"]})  # a bare one that must not match
    with records() as repo:
        for resource, query, _ in SAMPLES:
            found = repo.search(resource["resourceType"], [query])
            assert [m.id for m in found.matches] == [stored[resource["resourceType"]]], (resource, query)


def test_values_of_the_wrong_shape_are_skipped() -> None:
    rows = Extractor(default_registry()).extract(
        {
            "resourceType": "Observation",
            "effectiveDateTime": "last tuesday",
            "subject": {"display": "no reference"},
            "valueQuantity": {"unit": "mg"},
            "status": "final",
        }
    )
    assert "date" not in rows and "reference" not in rows and "quantity" not in rows
    assert [r["code"] for r in rows["token"] if r["param"] == "status"] == ["final"]


def test_helpers() -> None:
    assert normalize("Ærøskøbing ÉCOLE Łódź Straße") == "aeroskobing ecole lodz strasse"
    assert parse_reference("Patient/1") == ("Patient", "1", None)
    assert parse_reference("Patient/1/_history/3") == ("Patient", "1", None)
    assert parse_reference("http://x/fhir/Patient/1") == ("Patient", "1", "http://x/fhir/Patient/1")
    assert parse_reference("https://me/fhir/Patient/1", "https://me/fhir/") == ("Patient", "1", None)
    assert parse_reference("urn:uuid:1") == (None, None, "urn:uuid:1")


def test_skipping_absent_elements_changes_no_row() -> None:
    """The shortcut that skips parameters whose first element is absent yields exactly the full result."""
    from dataclasses import replace

    fast = Extractor(default_registry())
    full = Extractor(default_registry())
    samples = [s[0] for s in SAMPLES] + [
        {"resourceType": "Patient"},
        {"resourceType": "Patient", "deceasedBoolean": True},
    ]
    for resource in samples:
        rtype = resource["resourceType"]
        full._plans[rtype] = [replace(p, heads=None) for p in fast.plan(rtype)]
        assert fast.extract(resource) == full.extract(resource), rtype
