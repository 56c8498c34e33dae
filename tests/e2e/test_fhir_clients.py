"""Acceptance: real FHIR clients nobody here wrote (fhirpy, smart-on-fhir fhirclient) against a real
``conduit serve`` subprocess, on SQLite and PostgreSQL."""

from __future__ import annotations

import signal
import uuid
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest
from fhirclient import client as smart_client
from fhirclient.models.humanname import HumanName
from fhirclient.models.identifier import Identifier
from fhirclient.models.observation import Observation as SmartObservation
from fhirclient.models.patient import Patient as SmartPatient
from fhirpy import SyncFHIRClient
from support import ConduitProcess

LOINC = "http://loinc.org"
MRN = "urn:oid:2.16.840.1.113883.19.5"


@pytest.fixture
def conduit(tmp_path: Path, database_url: str) -> Iterator[ConduitProcess]:
    with ConduitProcess(tmp_path / "data", database_url, "--only", "fhir") as process:
        yield process


def test_fhirpy_patient_observations_transaction_history(conduit: ConduitProcess) -> None:
    fhir = SyncFHIRClient(conduit.fhir_base)

    patient = fhir.resource(
        "Patient",
        identifier=[{"system": MRN, "value": "E2E-1"}],
        name=[{"family": "Lovelace", "given": ["Ada"]}],
        birthDate="1815-12-10",
    )
    patient.save()
    assert patient.id and patient["meta"]["versionId"] == "1"

    by_identifier = fhir.resources("Patient").search(identifier=f"{MRN}|E2E-1").fetch_all()
    by_name = fhir.resources("Patient").search(name="lovelace").fetch_all()
    assert [p.id for p in by_identifier] == [patient.id] == [p.id for p in by_name]

    for code, day, value in [
        ("718-7", "2026-11-01", 13.1),
        ("718-7", "2026-11-15", 12.4),
        ("2345-7", "2026-11-15", 5.5),
    ]:
        fhir.resource(
            "Observation",
            status="final",
            code={"coding": [{"system": LOINC, "code": code}]},
            subject=patient.to_reference(),
            effectiveDateTime=f"{day}T08:00:00Z",
            valueQuantity={
                "value": value,
                "unit": "g/dL",
                "system": "http://unitsofmeasure.org",
                "code": "g/dL",
            },
        ).save()
    found = (
        fhir.resources("Observation")
        .search(subject=f"Patient/{patient.id}", code=f"{LOINC}|718-7", date__ge="2026-11-10")
        .fetch_all()
    )
    assert [o["valueQuantity"]["value"] for o in found] == [12.4]

    patient["active"] = True
    patient.save()
    history = fhir.execute(f"Patient/{patient.id}/_history", method="get")
    assert [e["response"]["etag"] for e in history["entry"]] == ['W/"2"', 'W/"1"']
    first = fhir.execute(f"Patient/{patient.id}/_history/1", method="get")
    assert "active" not in first and first["meta"]["versionId"] == "1"

    urn = f"urn:uuid:{uuid.uuid4()}"
    bundle = {
        "resourceType": "Bundle",
        "type": "transaction",
        "entry": [
            {
                "fullUrl": urn,
                "resource": {"resourceType": "Patient", "identifier": [{"system": MRN, "value": "E2E-TX"}]},
                "request": {"method": "POST", "url": "Patient"},
            },
            {
                "resource": {
                    "resourceType": "Observation",
                    "status": "final",
                    "code": {"coding": [{"system": LOINC, "code": "718-7"}]},
                    "subject": {"reference": urn},
                },
                "request": {"method": "POST", "url": "Observation"},
            },
        ],
    }
    response = fhir.execute("", method="post", data=bundle)
    assert response["type"] == "transaction-response"
    tx_patient = fhir.resources("Patient").search(identifier=f"{MRN}|E2E-TX").get()
    tx_obs = fhir.resources("Observation").search(subject=f"Patient/{tx_patient.id}").fetch_all()
    assert len(tx_obs) == 1 and tx_obs[0]["subject"]["reference"] == f"Patient/{tx_patient.id}"

    # conditional create twice -> one resource (fhirpy sends POST Patient?identifier=...)
    for _ in range(2):
        fhir.resource("Patient", identifier=[{"system": MRN, "value": "E2E-COND"}]).create(
            identifier=f"{MRN}|E2E-COND"
        )
    assert len(fhir.resources("Patient").search(identifier=f"{MRN}|E2E-COND").fetch_all()) == 1
    # and with the standard If-None-Exist header
    for expected in (201, 200):
        r = httpx.post(
            conduit.fhir_base + "/Patient",
            json={"resourceType": "Patient", "identifier": [{"system": MRN, "value": "E2E-INE"}]},
            headers={"If-None-Exist": f"identifier={MRN}|E2E-INE"},
        )
        assert r.status_code == expected


def test_fhirclient_models_against_conduit(conduit: ConduitProcess) -> None:
    smart = smart_client.FHIRClient(settings={"app_id": "conduit-e2e", "api_base": conduit.fhir_base + "/"})
    server = smart.server

    patient = SmartPatient()
    ident = Identifier()
    ident.system, ident.value = MRN, "SMART-1"
    name = HumanName()
    name.family, name.given = "Hopper", ["Grace"]
    patient.identifier, patient.name = [ident], [name]
    created = patient.create(server)
    pid = created["id"]

    read = SmartPatient.read(pid, server)
    assert read.name[0].family == "Hopper" and read.meta.versionId == "1"
    found = SmartPatient.where(struct={"identifier": f"{MRN}|SMART-1"}).perform_resources(server)
    assert [p.id for p in found] == [pid]
    by_name = SmartPatient.where(struct={"family": "hopper"}).perform_resources(server)
    assert [p.id for p in by_name] == [pid]

    obs = SmartObservation(
        {
            "resourceType": "Observation",
            "status": "final",
            "code": {"coding": [{"system": LOINC, "code": "718-7"}]},
            "subject": {"reference": f"Patient/{pid}"},
            "effectiveDateTime": "2026-11-20T09:30:00Z",
            "valueQuantity": {"value": 14.0, "unit": "g/dL"},
        }
    )
    obs.create(server)
    hits = SmartObservation.where(
        struct={"subject": f"Patient/{pid}", "code": f"{LOINC}|718-7", "date": "ge2026-11-01"}
    ).perform_resources(server)
    assert len(hits) == 1 and hits[0].valueQuantity.value == 14.0

    read.active = True
    read.update(server)
    v2 = SmartPatient.read(pid, server)
    assert v2.meta.versionId == "2" and v2.active is True
    history = server.request_json(f"Patient/{pid}/_history")
    assert len(history["entry"]) == 2
    v1 = server.request_json(f"Patient/{pid}/_history/1")
    assert "active" not in v1


def test_serve_on_fresh_data_dir_and_sigterm(tmp_path: Path) -> None:
    data = tmp_path / "fresh"
    process = ConduitProcess(data, f"sqlite:///{data / 'conduit.db'}", "--only", "fhir").start()
    try:
        base = process.fhir_base
        assert httpx.get(base.removesuffix("/fhir") + "/ready").json()["status"] == "ready"
        r = httpx.post(base + "/Patient", json={"resourceType": "Patient", "active": True})
        assert r.status_code == 201
        assert process.proc is not None
        process.proc.send_signal(signal.SIGTERM)
        assert process.proc.wait(15) == 0, process.log()
    finally:
        process.stop()
    # what was acknowledged is on disk: a new process serves it
    with ConduitProcess(data, f"sqlite:///{data / 'conduit.db'}", "--only", "fhir") as again:
        assert httpx.get(again.fhir_base + f"/Patient/{r.json()['id']}").status_code == 200
