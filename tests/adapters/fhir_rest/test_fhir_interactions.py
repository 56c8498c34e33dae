"""Every FHIR RESTful interaction over a real loopback socket, on SQLite and PostgreSQL."""

from __future__ import annotations

from typing import Any
from urllib.parse import urlsplit

import httpx

from engine.fhir.validation import validate_resource

FHIR_JSON = "application/fhir+json; fhirVersion=4.0"


def patient(
    family: str = "Doe", system: str = "urn:oid:1.2.3", value: str = "MRN-1", **extra: Any
) -> dict[str, Any]:
    return {
        "resourceType": "Patient",
        "identifier": [{"system": system, "value": value}],
        "name": [{"family": family, "given": ["Jane"]}],
        **extra,
    }


def observation(subject: str, code: str = "718-7", when: str = "2026-11-20T10:00:00Z") -> dict[str, Any]:
    return {
        "resourceType": "Observation",
        "status": "final",
        "code": {"coding": [{"system": "http://loinc.org", "code": code}]},
        "subject": {"reference": subject},
        "effectiveDateTime": when,
        "valueQuantity": {
            "value": 13.2,
            "unit": "g/dL",
            "system": "http://unitsofmeasure.org",
            "code": "g/dL",
        },
    }


def create(fhir: httpx.Client, resource: dict[str, Any], **kw: Any) -> dict[str, Any]:
    r = fhir.post(f"/{resource['resourceType']}", json=resource, **kw)
    assert r.status_code == 201, r.text
    return r.json()


def _relative(url: str) -> str:
    parts = urlsplit(url)
    return parts.path.removeprefix("/fhir") + ("?" + parts.query if parts.query else "")


def test_create_read_headers(fhir: httpx.Client) -> None:
    r = fhir.post("/Patient", json={**patient(), "id": "client-id", "meta": {"versionId": "9"}})
    assert r.status_code == 201
    body = r.json()
    assert body["id"] != "client-id" and body["meta"]["versionId"] == "1"
    assert r.headers["etag"] == 'W/"1"'
    assert r.headers["location"].endswith(f"/fhir/Patient/{body['id']}/_history/1")
    assert r.headers["last-modified"].endswith("GMT")
    assert r.headers["content-type"] == FHIR_JSON

    read = fhir.get(f"/Patient/{body['id']}")
    assert read.status_code == 200 and read.json() == body
    assert read.headers["etag"] == 'W/"1"' and read.headers["content-type"] == FHIR_JSON
    assert fhir.get(f"/Patient/{body['id']}", headers={"If-None-Match": 'W/"1"'}).status_code == 304
    assert fhir.get(f"/Patient/{body['id']}?_format=json").status_code == 200
    head = fhir.head(f"/Patient/{body['id']}")
    assert head.status_code == 200 and head.content == b"" and head.headers["etag"] == 'W/"1"'
    assert fhir.get("/Patient/does-not-exist").status_code == 404


def test_fast_read_answers_as_the_general_path(fhir: httpx.Client) -> None:
    """``GET /T/id`` is answered by the fast path (app.ReadFastPath); with a query string it goes through
    the dispatcher and the read handler: both give the same bytes, headers and errors."""
    made = fhir.post("/Patient", json=patient()).json()
    fhir.put(f"/Patient/{made['id']}", json={**patient(), "id": made["id"], "gender": "other"})
    fast, general = fhir.get(f"/Patient/{made['id']}"), fhir.get(f"/Patient/{made['id']}?_format=json")
    assert fast.status_code == general.status_code == 200
    assert fast.content == general.content and fast.json()["gender"] == "other"
    for name in ("etag", "last-modified", "content-type", "content-length"):
        assert fast.headers[name] == general.headers[name], name
    assert fast.headers["etag"] == 'W/"2"'
    stale = fhir.get(f"/Patient/{made['id']}", headers={"If-None-Match": 'W/"1"'})
    assert stale.status_code == 200 and stale.content == fast.content
    fresh = fhir.get(f"/Patient/{made['id']}", headers={"If-None-Match": 'W/"2"'})
    assert fresh.status_code == 304 and fresh.content == b"" and fresh.headers["etag"] == 'W/"2"'
    assert fhir.get(f"/Patient/{made['id']}", headers={"Accept": "application/xml"}).status_code == 406
    assert fhir.get(f"/Observation/{made['id']}").status_code == 404  # the id under another type
    assert fhir.get("/NoSuchType/x").status_code == 404
    assert fhir.get("/Patient/bad_id!").status_code == 400
    fhir.delete(f"/Patient/{made['id']}")
    gone = fhir.get(f"/Patient/{made['id']}")
    assert gone.status_code == 410 and gone.json()["resourceType"] == "OperationOutcome"
    assert gone.json() == fhir.get(f"/Patient/{made['id']}?_format=json").json()


def test_update_vread_if_match_and_update_as_create(fhir: httpx.Client) -> None:
    pid = create(fhir, patient())["id"]
    r = fhir.put(f"/Patient/{pid}", json={**patient(), "id": pid, "active": True})
    assert r.status_code == 200 and r.headers["etag"] == 'W/"2"'
    assert r.headers["location"].endswith(f"/Patient/{pid}/_history/2")
    stale = fhir.put(f"/Patient/{pid}", json={**patient(), "id": pid}, headers={"If-Match": 'W/"1"'})
    assert stale.status_code == 412 and stale.json()["resourceType"] == "OperationOutcome"
    fresh = fhir.put(f"/Patient/{pid}", json={**patient(), "id": pid}, headers={"If-Match": 'W/"2"'})
    assert fresh.status_code == 200 and fresh.json()["meta"]["versionId"] == "3"
    v1 = fhir.get(f"/Patient/{pid}/_history/1")
    assert v1.status_code == 200 and "active" not in v1.json() and v1.headers["etag"] == 'W/"1"'
    assert fhir.get(f"/Patient/{pid}/_history/2").json()["active"] is True

    made = fhir.put("/Patient/chosen-id", json={**patient(value="MRN-9"), "id": "chosen-id"})
    assert made.status_code == 201 and made.json()["id"] == "chosen-id"


def test_put_id_rules(fhir: httpx.Client) -> None:
    assert fhir.put("/Patient/a1", json={**patient(), "id": "b2"}).status_code == 400
    missing = fhir.put("/Patient/a1", json=patient())
    assert missing.status_code == 400
    assert missing.json()["issue"][0]["expression"] == ["id"]
    assert fhir.put("/Patient/a1", json={"resourceType": "Observation", "id": "a1"}).status_code == 400


def test_delete_then_gone_and_history(fhir: httpx.Client) -> None:
    pid = create(fhir, patient())["id"]
    fhir.put(f"/Patient/{pid}", json={**patient(), "id": pid, "active": False})
    assert fhir.delete(f"/Patient/{pid}").status_code == 200
    assert fhir.get(f"/Patient/{pid}").status_code == 410
    history = fhir.get(f"/Patient/{pid}/_history").json()
    assert history["type"] == "history"
    methods = [e["request"]["method"] for e in history["entry"]]
    assert methods == ["DELETE", "PUT", "POST"]
    assert "resource" not in history["entry"][0]
    assert history["entry"][2]["response"]["etag"] == 'W/"1"'
    assert fhir.get("/Patient/never-was/_history").status_code == 404
    assert fhir.delete(f"/Patient/{pid}", headers={"Prefer": "return=minimal"}).status_code == 204


def test_patch(fhir: httpx.Client) -> None:
    pid = create(fhir, patient())["id"]
    ops = b'[{"op": "add", "path": "/active", "value": true}]'
    r = fhir.patch(f"/Patient/{pid}", content=ops, headers={"Content-Type": "application/json-patch+json"})
    assert r.status_code == 200 and r.json()["active"] is True and r.headers["etag"] == 'W/"2"'
    stale = fhir.patch(
        f"/Patient/{pid}",
        content=ops,
        headers={"Content-Type": "application/json-patch+json", "If-Match": 'W/"1"'},
    )
    assert stale.status_code == 412
    bad = fhir.patch(
        f"/Patient/{pid}",
        content=b'[{"op": "remove", "path": "/nothing"}]',
        headers={"Content-Type": "application/json-patch+json"},
    )
    assert bad.status_code == 400
    invalid = fhir.patch(
        f"/Patient/{pid}",
        content=b'[{"op": "add", "path": "/foo", "value": 1}]',
        headers={"Content-Type": "application/json-patch+json"},
    )
    assert invalid.status_code == 400 and invalid.json()["issue"][0]["expression"] == ["Patient.foo"]
    xml = fhir.patch(f"/Patient/{pid}", content=b"<x/>", headers={"Content-Type": "application/xml"})
    assert xml.status_code == 415
    merged = fhir.patch(
        f"/Patient/{pid}", json={"active": None, "gender": "female"}
    )  # RFC 7386, as fhirpy sends
    assert merged.status_code == 200
    assert "active" not in merged.json() and merged.json()["gender"] == "female"


def test_prefer_return(fhir: httpx.Client) -> None:
    minimal = fhir.post("/Patient", json=patient(), headers={"Prefer": "return=minimal"})
    assert minimal.status_code == 201 and minimal.content == b"" and minimal.headers["location"]
    outcome = fhir.post("/Patient", json=patient(value="2"), headers={"Prefer": "return=OperationOutcome"})
    assert outcome.status_code == 201 and outcome.json()["resourceType"] == "OperationOutcome"


def test_conditional_create_update_delete(fhir: httpx.Client) -> None:
    headers = {"If-None-Exist": "identifier=urn:oid:1.2.3|COND-1"}
    first = fhir.post("/Patient", json=patient(value="COND-1"), headers=headers)
    second = fhir.post("/Patient", json=patient(value="COND-1"), headers=headers)
    assert (first.status_code, second.status_code) == (201, 200)
    assert first.json()["id"] == second.json()["id"]
    found = fhir.get("/Patient", params={"identifier": "urn:oid:1.2.3|COND-1"}).json()
    assert len(found["entry"]) == 1

    made = fhir.put("/Patient?identifier=urn:oid:1.2.3|COND-2", json=patient(value="COND-2"))
    assert made.status_code == 201
    changed = fhir.put("/Patient?identifier=urn:oid:1.2.3|COND-2", json=patient(value="COND-2", active=True))
    assert changed.status_code == 200 and changed.json()["id"] == made.json()["id"]
    assert changed.json()["meta"]["versionId"] == "2"

    gone = fhir.delete("/Patient?identifier=urn:oid:1.2.3|COND-2")
    assert gone.status_code == 200
    assert fhir.get(f"/Patient/{made.json()['id']}").status_code == 410
    assert fhir.delete("/Patient").status_code == 400  # no criteria: never "delete everything"
    assert fhir.delete("/Patient?bogus=1").status_code == 400  # an ignored criterion would match anything
    assert fhir.post("/Patient?_pretty=true", json=patient(value="NOT-COND")).status_code == 201
    create(fhir, patient(value="DUP"))
    create(fhir, patient(value="DUP"))
    assert fhir.delete("/Patient?identifier=urn:oid:1.2.3|DUP").status_code == 412


def test_search_paging_links(fhir: httpx.Client) -> None:
    for i in range(5):
        create(fhir, patient(family="Pager", value=f"P{i}"))
    page1 = fhir.get("/Patient", params={"family": "Pager", "_count": "2"}).json()
    assert page1["type"] == "searchset" and len(page1["entry"]) == 2
    links = {link["relation"]: link["url"] for link in page1["link"]}
    assert "next" in links and "previous" not in links and "self" in links
    page2 = fhir.get(_relative(links["next"])).json()
    links2 = {link["relation"]: link["url"] for link in page2["link"]}
    assert "previous" in links2 and "next" in links2
    page3 = fhir.get(_relative(links2["next"])).json()
    assert len(page3["entry"]) == 1 and "next" not in {link["relation"] for link in page3["link"]}
    seen = [e["resource"]["id"] for p in (page1, page2, page3) for e in p["entry"]]
    assert len(set(seen)) == 5
    assert all(e["search"]["mode"] == "match" for e in page1["entry"])
    assert all(e["fullUrl"].startswith("http://127.0.0.1:") for e in page1["entry"])

    count = fhir.get("/Patient", params={"family": "Pager", "_summary": "count"}).json()
    assert count["total"] == 5 and not count.get("entry")
    accurate = fhir.get("/Patient", params={"family": "Pager", "_count": "1", "_total": "accurate"}).json()
    assert accurate["total"] == 5
    elements = fhir.get("/Patient", params={"family": "Pager", "_elements": "identifier"}).json()
    assert all("name" not in e["resource"] for e in elements["entry"])


def test_search_by_post_and_include(fhir: httpx.Client) -> None:
    pid = create(fhir, patient(value="INC-1"))["id"]
    create(fhir, observation(f"Patient/{pid}"))
    r = fhir.post(
        "/Observation/_search",
        content=f"subject=Patient/{pid}&_include=Observation:subject".encode(),
        headers={"Content-Type": "application/x-www-form-urlencoded"},
    )
    assert r.status_code == 200
    modes = sorted(e["search"]["mode"] for e in r.json()["entry"])
    assert modes == ["include", "match"]
    found = fhir.get(
        "/Observation",
        params=[("subject", f"Patient/{pid}"), ("code", "http://loinc.org|718-7"), ("date", "ge2026-11-01")],
    ).json()
    assert len(found["entry"]) == 1


def test_patient_compartment_search(fhir: httpx.Client) -> None:
    pid = create(fhir, patient(value="COMP-1"))["id"]
    other = create(fhir, patient(value="COMP-2"))["id"]
    create(fhir, observation(f"Patient/{pid}"))
    create(fhir, observation(f"Patient/{other}"))
    found = fhir.get(f"/Patient/{pid}/Observation", params={"code": "http://loinc.org|718-7"}).json()
    assert [e["resource"]["subject"]["reference"] for e in found["entry"]] == [f"Patient/{pid}"]
    assert found["link"][0]["url"].split("?")[0].endswith(f"/Patient/{pid}/Observation")
    assert fhir.get(f"/Patient/{pid}/Frobnicator").status_code == 404


def test_unknown_search_parameters_lenient_and_strict(fhir: httpx.Client) -> None:
    create(fhir, patient())
    lenient = fhir.get("/Patient", params={"bogus": "1"})
    assert lenient.status_code == 200
    outcomes = [e for e in lenient.json()["entry"] if e["search"]["mode"] == "outcome"]
    assert outcomes and outcomes[0]["resource"]["resourceType"] == "OperationOutcome"
    strict = fhir.get("/Patient", params={"bogus": "1"}, headers={"Prefer": "handling=strict"})
    assert strict.status_code == 400 and strict.json()["issue"][0]["expression"] == ["bogus"]
    assert fhir.get("/Patient", params={"birthdate": "not-a-date"}).status_code == 400
    assert fhir.get("/Patient", params={"_count": "-1"}).status_code == 400


def test_history_type_system_since_and_paging(fhir: httpx.Client) -> None:
    for i in range(3):
        create(fhir, patient(value=f"H{i}"))
    typed = fhir.get("/Patient/_history", params={"_count": "2"}).json()
    assert len(typed["entry"]) == 2
    nxt = {link["relation"]: link["url"] for link in typed["link"]}["next"]
    assert len(fhir.get(_relative(nxt)).json()["entry"]) == 1
    system = fhir.get("/_history").json()
    assert len(system["entry"]) == 3
    empty_history = fhir.get("/_history", params={"_since": "2999-01-01T00:00:00Z"}).json()
    assert "entry" not in empty_history  # FHIR JSON has no empty arrays
    assert validate_resource(empty_history) == []
    for query in ({"name": "nobody-has-this-name"}, {"_summary": "count"}):
        empty = fhir.get("/Patient", params=query).json()
        assert "entry" not in empty and validate_resource(empty) == []
    assert fhir.get("/_history", params={"_since": "yesterday"}).status_code == 400


def test_validate_operation(fhir: httpx.Client) -> None:
    ok = fhir.post("/Patient/$validate", json=patient())
    assert ok.status_code == 200 and ok.json()["issue"][0]["severity"] == "information"
    bad = fhir.post("/Patient/$validate", json={"resourceType": "Patient", "foo": 1, "active": "yes"})
    assert bad.status_code == 200
    assert {i["expression"][0] for i in bad.json()["issue"]} == {"Patient.foo", "Patient.active"}
    params = {
        "resourceType": "Parameters",
        "parameter": [{"name": "mode", "valueCode": "update"}, {"name": "resource", "resource": patient()}],
    }
    update_mode = fhir.post("/Patient/$validate", json=params).json()
    assert update_mode["issue"][0]["expression"] == ["Patient.id"]
    pid = create(fhir, patient())["id"]
    assert fhir.post(f"/Patient/{pid}/$validate?mode=delete").json()["issue"][0]["severity"] == "information"
    assert fhir.post("/Patient/nope/$validate?mode=delete").status_code == 404
    assert fhir.get(f"/Patient/{pid}/$validate").json()["issue"][0]["severity"] == "information"
    # the same checks guard create
    refused = fhir.post("/Patient", json={"resourceType": "Patient", "foo": 1, "active": "yes"})
    assert refused.status_code == 400
    assert {i["expression"][0] for i in refused.json()["issue"]} == {"Patient.foo", "Patient.active"}


def test_transaction_with_urn_uuid_references(fhir: httpx.Client) -> None:
    urn = "urn:uuid:0c1f2b5e-8f0a-4c5e-9b1e-3f2d4a5b6c7d"
    bundle = {
        "resourceType": "Bundle",
        "type": "transaction",
        "entry": [
            {
                "fullUrl": urn,
                "resource": patient(value="TX-1"),
                "request": {"method": "POST", "url": "Patient"},
            },
            {"resource": observation(urn), "request": {"method": "POST", "url": "Observation"}},
        ],
    }
    r = fhir.post("", json=bundle)
    assert r.status_code == 200, r.text
    response = r.json()
    assert response["type"] == "transaction-response"
    assert [e["response"]["status"][:3] for e in response["entry"]] == ["201", "201"]
    pid = response["entry"][0]["response"]["location"].split("/")[1]
    obs = fhir.get("/Observation", params={"subject": f"Patient/{pid}"}).json()
    assert obs["entry"][0]["resource"]["subject"]["reference"] == f"Patient/{pid}"


def test_invalid_transaction_is_refused_whole_with_entry_paths(fhir: httpx.Client) -> None:
    bundle = {
        "resourceType": "Bundle",
        "type": "transaction",
        "entry": [
            {"resource": patient(value="TX-OK"), "request": {"method": "POST", "url": "Patient"}},
            {
                "resource": {"resourceType": "Patient", "foo": 1},
                "request": {"method": "POST", "url": "Patient"},
            },
        ],
    }
    r = fhir.post("", json=bundle)
    assert r.status_code == 400
    assert r.json()["issue"][0]["expression"] == ["Bundle.entry[1].resource.foo"]
    assert "entry" not in fhir.get("/Patient", params={"identifier": "urn:oid:1.2.3|TX-OK"}).json()


def test_batch_processes_valid_entries_and_answers_invalid_ones(fhir: httpx.Client) -> None:
    bundle = {
        "resourceType": "Bundle",
        "type": "batch",
        "entry": [
            {
                "resource": {"resourceType": "Patient", "foo": 1},
                "request": {"method": "POST", "url": "Patient"},
            },
            {"resource": patient(value="B-OK"), "request": {"method": "POST", "url": "Patient"}},
        ],
    }
    r = fhir.post("", json=bundle)
    assert r.status_code == 200, r.text
    entries = r.json()["entry"]
    assert entries[0]["response"]["status"].startswith("400")
    assert entries[0]["response"]["outcome"]["issue"][0]["expression"] == ["Bundle.entry[0].resource.foo"]
    assert entries[1]["response"]["status"].startswith("201")
    assert len(fhir.get("/Patient", params={"identifier": "urn:oid:1.2.3|B-OK"}).json()["entry"]) == 1


def test_metadata(fhir: httpx.Client) -> None:
    r = fhir.get("/metadata")
    assert r.status_code == 200 and r.json()["fhirVersion"] == "4.0.1"
    assert r.headers["content-type"] == FHIR_JSON


def test_concurrent_update_as_create_never_500(server) -> None:  # noqa: ANN001
    from concurrent.futures import ThreadPoolExecutor

    from fhir_rest_server import nodelay_transport

    def put(i: int) -> int:
        with httpx.Client(base_url=server.base + "/fhir", transport=nodelay_transport(), timeout=60) as c:
            body = {**patient(value=f"RACE-{i}"), "id": "race-1"}
            return c.put("/Patient/race-1", json=body).status_code

    with ThreadPoolExecutor(8) as pool:
        statuses = list(pool.map(put, range(8)))
    assert set(statuses) <= {200, 201, 409}, statuses
    assert statuses.count(201) <= 1
    with httpx.Client(base_url=server.base + "/fhir") as c:
        history = c.get("/Patient/race-1/_history").json()
    assert len(history["entry"]) == statuses.count(200) + statuses.count(201)
