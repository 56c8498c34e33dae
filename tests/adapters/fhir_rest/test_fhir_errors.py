"""Bad input always gets an OperationOutcome with the right 4xx status: never a 500 (both databases)."""

from __future__ import annotations

import json
import logging
import string
from typing import Any

import httpx
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from adapters.fhir_rest.settings import FhirRestSettings


def assert_outcome(r: httpx.Response, status: int) -> dict:
    assert r.status_code == status, r.text
    body = r.json()
    assert body["resourceType"] == "OperationOutcome"
    assert body["issue"] and body["issue"][0]["severity"] == "error"
    return body


@pytest.mark.parametrize(
    ("method", "path", "kwargs", "status"),
    [
        ("POST", "/Patient", {"content": b'{"resourceType": "Patient",'}, 400),
        ("POST", "/Patient", {"content": b""}, 400),
        ("POST", "/Patient", {"content": b"[]"}, 400),
        ("POST", "/Patient", {"content": b'{"resourceType": "Pat\x00ient"}'}, 400),
        ("POST", "/Patient", {"content": b'{"resourceType": "Patient", "id": "\\u0000"}'}, 400),
        ("POST", "/Patient", {"json": {"resourceType": "Observation", "status": "final", "code": {}}}, 400),
        ("POST", "/Patient", {"json": {"resourceType": "Patient", "birthDate": "31/12/1970"}}, 400),
        (
            "POST",
            "/Patient",
            {"content": b"<Patient/>", "headers": {"Content-Type": "application/fhir+xml"}},
            415,
        ),
        ("POST", "/Patient", {"content": b"{}", "headers": {"Content-Type": "text/plain"}}, 415),
        ("GET", "/Patient/1", {"headers": {"Accept": "application/fhir+xml"}}, 406),
        ("GET", "/Patient/1?_format=xml", {}, 406),
        ("GET", "/metadata?_format=application/fhir+xml", {}, 406),
        ("GET", "/Frobnicator/1", {}, 404),
        ("GET", "/Frobnicator", {}, 404),
        ("DELETE", "/metadata", {}, 405),
        ("PATCH", "/Patient", {"content": b"[]"}, 405),
        ("GET", "/Patient/bad id!", {}, 400),
        ("GET", "/Patient/1/_history/abc", {}, 400),
        ("GET", "/Patient/1/_history/1/extra/path", {}, 404),
        ("GET", "/Patient/$everything", {}, 404),
        ("GET", "/Patient?birthdate=ge2020-99-99", {}, 400),
        ("GET", "/Patient?name=%00", {}, 400),
        ("GET", "/Patient?_count=abc", {}, 400),
        (
            "PUT",
            "/Patient/1",
            {"headers": {"If-Match": "garbage"}, "json": {"resourceType": "Patient", "id": "1"}},
            400,
        ),
        ("POST", "", {"json": {"resourceType": "Patient"}}, 400),
        ("POST", "", {"json": {"resourceType": "Bundle", "type": "collection"}}, 400),
        ("POST", "", {"json": {"resourceType": "Bundle", "type": "transaction", "entry": 5}}, 400),
        (
            "POST",
            "/Patient/_search",
            {"content": b"{}", "headers": {"Content-Type": "application/json"}},
            415,
        ),
        ("POST", "/Patient/$validate", {"json": {"resourceType": "Parameters", "parameter": []}}, 400),
        ("POST", "/Patient/$validate?mode=explode", {"json": {"resourceType": "Patient"}}, 400),
    ],
)
def test_bad_requests(fhir: httpx.Client, method: str, path: str, kwargs: dict, status: int) -> None:
    assert_outcome(fhir.request(method, path, **kwargs), status)


def test_unknown_elements_are_named(fhir: httpx.Client) -> None:
    r = fhir.post(
        "/Patient", json={"resourceType": "Patient", "name": [{"given": ["a", 5], "nickname": "x"}]}
    )
    body = assert_outcome(r, 400)
    assert {i["expression"][0] for i in body["issue"]} == {
        "Patient.name[0].given[1]",
        "Patient.name[0].nickname",
    }


def test_405_names_allowed_methods(fhir: httpx.Client) -> None:
    r = fhir.request("DELETE", "/metadata")
    assert "GET" in r.json()["issue"][0]["diagnostics"] and r.headers["allow"] == "GET"
    assert fhir.request("PATCH", "/Patient").headers["allow"] == "DELETE, GET, POST, PUT"


def test_unknown_route_outside_fhir_is_an_outcome(server) -> None:  # noqa: ANN001
    r = httpx.get(server.base + "/nothing-here")
    assert_outcome(r, 404)


def test_body_size_limit(runtime) -> None:  # noqa: ANN001
    from fhir_rest_server import ThreadedListener

    with ThreadedListener(runtime, FhirRestSettings(max_body_bytes=2048)) as running:
        big = {"resourceType": "Patient", "name": [{"family": "x" * 4000}]}
        r = httpx.post(running.base + "/fhir/Patient", json=big)
        assert_outcome(r, 413)

        def chunks():  # no Content-Length: the limit applies while streaming
            yield b'{"resourceType": "Patient", "name": [{"family": "'
            for _ in range(10):
                yield b"y" * 512
            yield b'"}]}'

        streamed = httpx.post(running.base + "/fhir/Patient", content=chunks())
        assert_outcome(streamed, 413)


def test_bad_input_logs_no_patient_data(fhir: httpx.Client, caplog: pytest.LogCaptureFixture) -> None:
    secret = "Zebedee-Quintessential"
    with caplog.at_level(logging.DEBUG):
        fhir.post("/Patient", json={"resourceType": "Patient", "birthDate": secret, secret: 1})
        fhir.get("/Patient", params={"birthdate": secret})
    server_side = [r.getMessage() for r in caplog.records if not r.name.startswith(("httpx", "httpcore"))]
    assert all(secret not in line for line in server_side)


# --------------------------------------------------------------------------------------------- fuzz-ish

_json_scalars = st.none() | st.booleans() | st.integers() | st.floats(allow_nan=False) | st.text(max_size=20)
_json = st.recursive(
    _json_scalars,
    lambda children: (
        st.lists(children, max_size=4) | st.dictionaries(st.text(max_size=12), children, max_size=4)
    ),
    max_leaves=20,
)
_elements = st.sampled_from(
    [
        "id",
        "meta",
        "name",
        "identifier",
        "birthDate",
        "active",
        "gender",
        "telecom",
        "contained",
        "extension",
        "_birthDate",
        "status",
        "code",
        "subject",
        "valueQuantity",
        "entry",
        "type",
        "text",
        "resourceType",
    ]
)
_resourceish = st.fixed_dictionaries(
    {"resourceType": st.sampled_from(["Patient", "Observation", "Bundle", "Nope", ""])},
    optional={
        k: _json for k in ["name", "identifier", "birthDate", "active", "status", "code", "entry", "type"]
    },
) | st.dictionaries(_elements, _json, max_size=6)
_bodies = _resourceish.map(lambda d: json.dumps(d).encode()) | st.binary(max_size=200)
_query_text = st.text(alphabet=string.printable + "éü€", max_size=30)


@settings(max_examples=250, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(
    method=st.sampled_from(["POST", "PUT", "PATCH"]),
    path=st.sampled_from(
        ["/Patient", "/Patient/p1", "/Observation", "", "/Patient/$validate", "/Patient/_search"]
    ),
    body=_bodies,
    content_type=st.sampled_from(
        ["application/fhir+json", "application/json-patch+json", "application/json", None]
    ),
)
def test_fuzz_bodies_never_5xx(
    fhir: httpx.Client, method: str, path: str, body: bytes, content_type: str | None
) -> None:
    headers = {"Content-Type": content_type} if content_type else {}
    r = fhir.request(method, path, content=body, headers=headers)
    assert r.status_code < 500, (r.status_code, r.text)
    assert r.headers["content-type"].startswith("application/fhir+json") or r.status_code in (204, 304)


@settings(max_examples=250, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(
    resource_type=st.sampled_from(["Patient", "Observation", "Encounter"]),
    name=st.sampled_from(
        [
            "name",
            "birthdate",
            "identifier",
            "subject",
            "code",
            "date",
            "value-quantity",
            "_count",
            "_sort",
            "_include",
            "_revinclude",
            "_lastUpdated",
            "_id",
            "gender:not",
            "name:exact",
            "subject:Patient",
            "_summary",
            "_elements",
            "_total",
            "_offset",
            "_since",
            "x",
        ]
    ),
    value=_query_text,
)
def test_fuzz_search_never_5xx(fhir: httpx.Client, resource_type: str, name: str, value: str) -> None:
    r = fhir.get(f"/{resource_type}", params={name: value})
    assert r.status_code < 500, (name, value, r.text)
    r = fhir.get(f"/{resource_type}/_history", params={name: value})
    assert r.status_code < 500, (name, value, r.text)


def test_unexpected_errors_are_500_outcomes_without_details(
    fhir: httpx.Client, monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    from adapters.fhir_rest import interactions

    def broken(repo, req, ctx):  # noqa: ANN001, ANN202
        raise RuntimeError("-".join(["Secret", "Patient", "Name"]))  # as if a bug quoted a resource

    monkeypatch.setitem(interactions.HANDLERS, "vread", broken)
    with caplog.at_level(logging.ERROR, logger="adapters.fhir_rest.app"):
        r = fhir.get("/Patient/1/_history/1")
    body = assert_outcome(r, 500)
    assert body["issue"][0]["code"] == "exception"
    assert "Secret-Patient" not in r.text
    assert "RuntimeError" in caplog.text and "Secret-Patient" not in caplog.text


def test_unexpected_errors_on_the_fast_read_path_are_500_outcomes_without_details(
    server: Any, fhir: httpx.Client, monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    reads = server.listener._server.config.app.state.raw_reads

    async def broken(resource_type: str, id: str) -> Any:
        raise RuntimeError("-".join(["Secret", "Patient", "Name"]))

    monkeypatch.setattr(reads, "read", broken)
    with caplog.at_level(logging.ERROR, logger="adapters.fhir_rest.app"):
        r = fhir.get("/Patient/1")
    body = assert_outcome(r, 500)
    assert body["issue"][0]["code"] == "exception"
    assert "Secret-Patient" not in r.text
    assert "RuntimeError" in caplog.text and "Secret-Patient" not in caplog.text


_header_text = st.text(
    alphabet=string.printable.replace("\r", "").replace("\n", "").replace("\x0b", "").replace("\x0c", ""),
    max_size=40,
)


@settings(max_examples=120, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(
    name=st.sampled_from(["If-Match", "If-None-Match", "If-None-Exist", "Prefer", "Accept", "Content-Type"]),
    value=_header_text,
    method=st.sampled_from(["GET", "PUT", "POST", "PATCH", "DELETE"]),
)
def test_fuzz_headers_never_5xx(fhir: httpx.Client, name: str, value: str, method: str) -> None:
    path = "/Patient/p1" if method in ("GET", "PUT", "PATCH", "DELETE") else "/Patient"
    body = b'{"resourceType": "Patient", "id": "p1"}' if method in ("PUT", "POST") else b"[]"
    r = fhir.request(method, path, content=body if method != "GET" else None, headers={name: value.strip()})
    assert r.status_code < 500, (name, value, r.text)
