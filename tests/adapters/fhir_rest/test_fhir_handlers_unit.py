"""Handler logic without a database or sockets, on the in-memory twin of the records port."""

from __future__ import annotations

from typing import Any

import pytest
from fhir_rest_memory_repository import MemoryStore

from adapters.fhir_rest.headers import parse_prefer
from adapters.fhir_rest.interactions import Context, handle
from adapters.fhir_rest.request import route
from adapters.fhir_rest.settings import FhirRestSettings
from engine.errors import InvalidInput, NotFound, NotSupported, PreconditionFailed


def call(
    store: MemoryStore,
    method: str,
    path: str,
    params: list[tuple[str, str]] | None = None,
    body: bytes = b"",
    headers: dict[str, str] | None = None,
) -> Any:
    ctx = Context(
        base="http://h/fhir",
        path=path,
        params=params or [],
        headers={k.lower(): v for k, v in (headers or {}).items()},
        body=body,
        prefer=parse_prefer((headers or {}).get("Prefer")),
        settings=FhirRestSettings(default_count=2),
        capability=lambda: b"{}",
    )
    return handle(store.repository(), route(method, path), ctx)


def test_routes() -> None:
    assert route("GET", "Patient/1/_history/2").version_id == 2
    assert route("POST", "Patient/_search").interaction == "search-type"
    assert route("GET", "").interaction == "search-system"
    with pytest.raises(NotFound) as missing:
        route("GET", "Nope/1")
    assert "'Nope'" in str(missing.value)
    with pytest.raises(NotFound) as missing:
        route("GET", "John Smith 1970-01-01/1")  # not a type name: may be data, not echoed
    assert "John" not in str(missing.value)
    with pytest.raises(NotSupported) as caught:
        route("PATCH", "Patient")
    assert caught.value.status == 405
    with pytest.raises(InvalidInput):
        route("GET", "Patient/" + "x" * 65)


def test_default_count_paging_and_prefer() -> None:
    store = MemoryStore()
    for _ in range(3):
        answer = call(
            store,
            "POST",
            "Patient",
            body=b'{"resourceType": "Patient"}',
            headers={"Prefer": "return=minimal"},
        )
        assert answer.status == 201 and answer.body is None and "Location" in answer.headers
    page = call(store, "GET", "Patient").body
    relations = {link["relation"]: link["url"] for link in page["link"]}
    assert relations["next"] == "http://h/fhir/Patient?_count=2&_offset=2"
    last = call(store, "GET", "Patient", params=[("_offset", "2")]).body
    assert {link["relation"] for link in last["link"]} == {"self", "previous"}
    history = call(store, "GET", "Patient/_history").body
    assert len(history["entry"]) == 2 and any(link["relation"] == "next" for link in history["link"])


def test_conditional_delete_refuses_several_matches() -> None:
    store = MemoryStore()
    body = b'{"resourceType": "Patient", "identifier": [{"system": "s", "value": "v"}]}'
    call(store, "POST", "Patient", body=body)
    call(store, "POST", "Patient", body=body)
    with pytest.raises(PreconditionFailed):
        call(store, "DELETE", "Patient", params=[("identifier", "s|v")])


def test_batch_keeps_entry_order_around_invalid_entries() -> None:
    store = MemoryStore()
    bundle = (
        b'{"resourceType": "Bundle", "type": "batch", "entry": ['
        b'{"resource": {"resourceType": "Patient"}, "request": {"method": "POST", "url": "Patient"}},'
        b'{"resource": {"resourceType": "Patient", "bad": 1}, "request": {"method": "POST", "url": "Patient"}},'
        b'{"resource": {"resourceType": "Patient"}, "request": {"method": "POST", "url": "Patient"}}]}'
    )
    entries = call(store, "POST", "", body=bundle).body["entry"]
    assert [e["response"]["status"][:3] for e in entries] == ["201", "400", "201"]
