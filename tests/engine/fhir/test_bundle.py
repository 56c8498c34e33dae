"""Batch/transaction semantics (engine.fhir.bundle) run against the SQL record store on both databases."""

from __future__ import annotations

import base64
import json
from typing import Any

import pytest

from engine.db import Database
from engine.errors import InvalidInput, PreconditionFailed
from engine.fhir.bundle import METHOD_ORDER, parse_etag, rewrite_references
from services.records.repository import SqlResourceRepository

MRN = "urn:oid:1.2.3"


def entry(method: str, url: str, resource: dict[str, Any] | None = None, **extra: Any) -> dict[str, Any]:
    out: dict[str, Any] = {"request": {"method": method, "url": url, **extra.pop("request", {})}, **extra}
    if resource is not None:
        out["resource"] = resource
    return out


def bundle(kind: str, *entries: dict[str, Any]) -> dict[str, Any]:
    return {"resourceType": "Bundle", "type": kind, "entry": list(entries)}


def patient(mrn: str) -> dict[str, Any]:
    return {"resourceType": "Patient", "identifier": [{"system": MRN, "value": mrn}]}


def observation(subject: str, code: str = "718-7") -> dict[str, Any]:
    return {
        "resourceType": "Observation",
        "status": "final",
        "code": {"text": code},
        "subject": {"reference": subject},
    }


def run(database: Database, body: dict[str, Any]) -> dict[str, Any]:
    with database.unit_of_work() as uow:
        return SqlResourceRepository(uow).transaction(body)


def search(database: Database, rtype: str, *params: tuple[str, str]) -> list[dict[str, Any]]:
    with database.unit_of_work() as uow:
        return [m.resource for m in SqlResourceRepository(uow).search(rtype, list(params)).matches]


def test_transaction_rewrites_urn_uuid_references_everywhere(database: Database) -> None:
    response = run(
        database,
        bundle(
            "transaction",
            entry("POST", "Observation", observation("urn:uuid:aaaa-1")),
            entry("POST", "Patient", patient("1"), fullUrl="urn:uuid:aaaa-1"),
            entry(
                "POST",
                "Provenance",
                {
                    "resourceType": "Provenance",
                    "target": [{"reference": "urn:uuid:aaaa-1"}],
                    "recorded": "2024-05-01T10:00:00Z",
                    "agent": [{"who": {"display": "lab"}}],
                    "policy": ["urn:uuid:aaaa-1"],
                },
            ),
        ),
    )
    assert response["type"] == "transaction-response"
    statuses = [e["response"]["status"] for e in response["entry"]]
    assert statuses == ["201 Created"] * 3
    patient_ref = response["entry"][1]["fullUrl"]
    assert patient_ref.startswith("Patient/")
    assert response["entry"][1]["response"]["location"] == f"{patient_ref}/_history/1"
    assert response["entry"][1]["response"]["etag"] == 'W/"1"'
    assert response["entry"][1]["response"]["lastModified"].endswith("Z")
    [obs] = search(database, "Observation", ("subject", patient_ref))
    assert obs["subject"]["reference"] == patient_ref
    [prov] = search(database, "Provenance", ("target", patient_ref))
    assert prov["policy"] == [patient_ref]


def test_transaction_rolls_back_entirely_on_failure(database: Database) -> None:
    with database.unit_of_work() as uow:
        existing = SqlResourceRepository(uow).create(patient("keep"))
    body = bundle(
        "transaction",
        entry("POST", "Patient", patient("2"), fullUrl="urn:uuid:p2"),
        entry("POST", "Observation", observation("urn:uuid:p2")),
        entry("PUT", f"Patient/{existing.id}", patient("changed"), request={"ifMatch": 'W/"9"'}),
    )
    with pytest.raises(PreconditionFailed) as err:
        run(database, body)
    assert err.value.issues[0].location == "Bundle.entry[2]"
    assert search(database, "Patient", ("identifier", "2")) == []
    assert search(database, "Observation") == []
    assert search(database, "Patient", ("identifier", "keep"))[0]["meta"]["versionId"] == "1"


def test_transaction_order_delete_post_put_get(database: Database) -> None:
    with database.unit_of_work() as uow:
        old = SqlResourceRepository(uow).create(patient("old"))
    response = run(
        database,
        bundle(
            "transaction",
            entry("GET", "Patient?identifier=new"),
            entry("PUT", "Patient/fixed-id", {**patient("put"), "id": "fixed-id"}),
            entry("POST", "Patient", patient("new")),
            entry("DELETE", f"Patient/{old.id}"),
        ),
    )
    statuses = [e["response"]["status"] for e in response["entry"]]
    assert statuses == ["200 OK", "201 Created", "201 Created", "204 No Content"]
    searchset = response["entry"][0]["resource"]
    assert searchset["type"] == "searchset" and searchset["total"] == 1  # the GET ran after the POST
    assert [METHOD_ORDER[m] for m in ("DELETE", "POST", "PUT", "PATCH", "GET")] == [0, 1, 2, 2, 3]
    with database.unit_of_work() as uow, pytest.raises(Exception, match="deleted"):
        SqlResourceRepository(uow).read("Patient", old.id)


def test_conditional_references_and_if_none_exist(database: Database) -> None:
    with database.unit_of_work() as uow:
        known = SqlResourceRepository(uow).create(patient("42"))
    response = run(
        database,
        bundle(
            "transaction",
            entry(
                "POST",
                "Patient",
                patient("42"),
                fullUrl="urn:uuid:dup",
                request={"ifNoneExist": f"identifier={MRN}|42"},
            ),
            entry("POST", "Observation", observation("urn:uuid:dup", "a")),
            entry("POST", "Observation", observation(f"Patient?identifier={MRN}|42", "b")),
        ),
    )
    assert response["entry"][0]["response"]["status"] == "200 OK"
    assert response["entry"][0]["response"]["location"].startswith(f"Patient/{known.id}/")
    assert len(search(database, "Patient")) == 1
    subjects = {o["subject"]["reference"] for o in search(database, "Observation")}
    assert subjects == {f"Patient/{known.id}"}
    with pytest.raises(PreconditionFailed, match="no Patient matches"):
        run(
            database,
            bundle("transaction", entry("POST", "Observation", observation("Patient?identifier=none"))),
        )
    with database.unit_of_work() as uow:
        SqlResourceRepository(uow).create(patient("42"))
    with pytest.raises(PreconditionFailed, match="several"):
        run(
            database,
            bundle("transaction", entry("POST", "Observation", observation("Patient?identifier=42"))),
        )


def test_conditional_put_in_transaction(database: Database) -> None:
    body = bundle(
        "transaction",
        entry("PUT", f"Patient?identifier={MRN}|7", patient("7"), fullUrl="urn:uuid:seven"),
        entry("POST", "Observation", observation("urn:uuid:seven")),
    )
    first = run(database, body)
    second = run(database, body)
    assert first["entry"][0]["response"]["status"] == "201 Created"
    assert second["entry"][0]["response"]["status"] == "200 OK"
    assert first["entry"][0]["fullUrl"] == second["entry"][0]["fullUrl"]
    assert len(search(database, "Patient")) == 1 and len(search(database, "Observation")) == 2


def test_batch_reports_failures_per_entry_and_keeps_the_rest(database: Database) -> None:
    response = run(
        database,
        bundle(
            "batch",
            entry("POST", "Patient", patient("b1")),
            entry("GET", "Patient/missing"),
            entry("PUT", "Patient/x", {"resourceType": "Observation"}),
            entry("POST", "Observation", observation("Patient?identifier=nobody")),
            entry("POST", "Patient", patient("b2")),
        ),
    )
    assert response["type"] == "batch-response"
    statuses = [e["response"]["status"] for e in response["entry"]]
    assert statuses == [
        "201 Created",
        "404 Not Found",
        "400 Bad Request",
        "412 Precondition Failed",
        "201 Created",
    ]
    outcome = response["entry"][1]["response"]["outcome"]
    assert outcome["resourceType"] == "OperationOutcome" and outcome["issue"][0]["code"] == "not-found"
    assert len(search(database, "Patient")) == 2


def test_get_with_if_none_match_and_vread(database: Database) -> None:
    with database.unit_of_work() as uow:
        stored = SqlResourceRepository(uow).create(patient("g"))
    response = run(
        database,
        bundle(
            "batch",
            entry("GET", f"Patient/{stored.id}", request={"ifNoneMatch": 'W/"1"'}),
            entry("GET", f"Patient/{stored.id}"),
            entry("GET", f"Patient/{stored.id}/_history/1"),
        ),
    )
    assert [e["response"]["status"] for e in response["entry"]] == ["304 Not Modified", "200 OK", "200 OK"]
    assert response["entry"][1]["resource"]["id"] == stored.id


def test_patch_entry_with_json_patch_binary(database: Database) -> None:
    with database.unit_of_work() as uow:
        stored = SqlResourceRepository(uow).create(patient("p"))
    ops = [{"op": "add", "path": "/gender", "value": "female"}]
    binary = {
        "resourceType": "Binary",
        "contentType": "application/json-patch+json",
        "data": base64.b64encode(json.dumps(ops).encode()).decode(),
    }
    response = run(database, bundle("transaction", entry("PATCH", f"Patient/{stored.id}", binary)))
    assert response["entry"][0]["response"]["etag"] == 'W/"2"'
    assert search(database, "Patient", ("gender", "female"))[0]["id"] == stored.id


@pytest.mark.parametrize(
    "body",
    [
        {"resourceType": "Patient"},
        {"resourceType": "Bundle", "type": "collection"},
        bundle("transaction", {"resource": patient("x")}),
        bundle("transaction", entry("POST", "patient", patient("x"))),
        bundle("transaction", entry("POST", "Patient")),
        bundle("transaction", entry("TRACE", "Patient")),
        bundle("transaction", entry("PUT", "Patient/x", patient("x"), request={"ifMatch": "yesterday"})),
        bundle(
            "transaction",
            entry("POST", "Patient", patient("1"), fullUrl="urn:uuid:same"),
            entry("POST", "Patient", patient("2"), fullUrl="urn:uuid:same"),
        ),
    ],
)
def test_malformed_bundles_are_invalid_input(database: Database, body: dict[str, Any]) -> None:
    with pytest.raises(InvalidInput):
        run(database, body)


def test_pure_helpers() -> None:
    assert parse_etag('W/"12"') == 12 and parse_etag("3") == 3 and parse_etag(None) is None
    rewritten = rewrite_references(
        {"a": {"reference": "urn:uuid:1"}, "b": ["urn:uuid:1", "x"], "c": {"reference": "Patient/2"}},
        {"urn:uuid:1": "Patient/1"},
    )
    assert rewritten == {
        "a": {"reference": "Patient/1"},
        "b": ["Patient/1", "x"],
        "c": {"reference": "Patient/2"},
    }


def test_same_conditional_criteria_in_one_transaction_name_one_resource(database: Database) -> None:
    """A mapping that emits the patient twice (ifNoneExist) and refers to it by criteria creates it once."""
    criteria = f"identifier={MRN}|77"
    response = run(
        database,
        bundle(
            "transaction",
            entry("POST", "Patient", patient("77"), fullUrl="urn:uuid:a", request={"ifNoneExist": criteria}),
            entry("POST", "Patient", patient("77"), fullUrl="urn:uuid:b", request={"ifNoneExist": criteria}),
            entry("POST", "Observation", observation("urn:uuid:b", "1")),
            entry("POST", "Observation", observation(f"Patient?{criteria}", "2")),
            entry("PUT", "Organization?identifier=org-1", {"resourceType": "Organization", "name": "A"}),
            entry("PUT", "Organization?identifier=org-1", {"resourceType": "Organization", "name": "B"}),
        ),
    )
    statuses = [e["response"]["status"] for e in response["entry"]]
    assert statuses == ["201 Created", "200 OK", "201 Created", "201 Created", "201 Created", "200 OK"]
    [stored] = search(database, "Patient")
    assert {o["subject"]["reference"] for o in search(database, "Observation")} == {f"Patient/{stored['id']}"}
    [org] = search(database, "Organization")
    assert org["name"] == "B" and org["meta"]["versionId"] == "2"


def test_random_bundles_answer_or_refuse_cleanly(database: Database) -> None:
    """Odd request fields, URLs and bodies: a batch answers every entry with a status, a transaction
    commits or raises a ProcessingError — nothing else escapes."""
    import random

    from engine.errors import ProcessingError

    rng = random.Random(5)
    methods = ["GET", "POST", "PUT", "PATCH", "DELETE", "HEAD", "get", "", None, 7]
    urls = ["Patient", "Patient/1", "Patient?identifier=x", "Patient/1/_history/1", "Patient/1/_history", "patient",
            "http://x/fhir/Patient/2", "Patient/../../etc", "Patient/" + "a" * 80, "", "?", "Observation?code=%00", None]  # fmt: skip
    bodies = [patient("r"), {"resourceType": "Observation", "status": "final", "code": {"text": "x"}},
              {"resourceType": "Binary", "contentType": "application/json-patch+json", "data": "!!"}, "text", [], None,
              {"resourceType": "Patient", "id": "../x"}]  # fmt: skip
    for _ in range(40):
        entries = []
        for _ in range(rng.randrange(1, 5)):
            item: dict[str, Any] = {"request": {"method": rng.choice(methods), "url": rng.choice(urls)}}
            if rng.random() < 0.3:
                item["request"][rng.choice(["ifMatch", "ifNoneExist", "ifNoneMatch"])] = rng.choice(
                    ['W/"1"', "x", "identifier=r"]
                )
            body = rng.choice(bodies)
            if body is not None:
                item["resource"] = body
            if rng.random() < 0.3:
                item["fullUrl"] = rng.choice(["urn:uuid:1", "urn:uuid:2", "Patient/1"])
            entries.append(item)
        kind = rng.choice(["batch", "transaction"])
        try:
            response = run(database, bundle(kind, *entries))
        except ProcessingError:
            assert kind == "transaction"
            continue
        assert len(response["entry"]) == len(entries)
        assert all(e["response"]["status"][:3].isdigit() for e in response["entry"])
