"""Content negotiation and request bodies (R4 §3.1.0.1.x): Conduit speaks FHIR JSON only.

An XML request is refused in the protocol's own terms: 406 when XML is asked for (Accept or ``_format``),
415 when an XML body is sent. Bodies are checked before parsing: NUL bytes and JSON that does not parse are
400, never a 500.
"""

from __future__ import annotations

from typing import Any
from urllib.parse import parse_qsl

import orjson

from engine.errors import InvalidInput, NotSupported

__all__ = [
    "FHIR_JSON",
    "JSON_PATCH",
    "MERGE_PATCH",
    "FORM",
    "check_accept",
    "check_format",
    "body_media_type",
    "parse_json_body",
    "parse_form_body",
]

FHIR_JSON = "application/fhir+json; fhirVersion=4.0"
JSON_PATCH = "application/json-patch+json"
MERGE_PATCH = "application/merge-patch+json"
FORM = "application/x-www-form-urlencoded"

_JSON_TYPES = frozenset({"application/fhir+json", "application/json", "application/json+fhir", "text/json"})
_JSON_FORMATS = frozenset({"json", "application/json", "application/fhir+json", "application/json+fhir"})


def _media_type(value: str) -> str:
    return value.split(";", 1)[0].strip().lower()


def check_format(value: str | None) -> None:
    """``_format`` (R4 §3.1.0.1.5): json is served, anything else gets 406."""
    if value is None:
        return
    if _media_type(value) not in _JSON_FORMATS:
        raise NotSupported("Only JSON is supported (_format=json); XML and other formats are not", 406)


def check_accept(value: str | None) -> None:
    """406 unless the Accept header admits JSON (absent, */*, application/*, or a JSON type)."""
    if not value:
        return
    for item in value.split(","):
        media = _media_type(item)
        params = item.lower().split(";")[1:]
        if any(p.strip().replace(" ", "") in ("q=0", "q=0.0", "q=0.00", "q=0.000") for p in params):
            continue
        if media in _JSON_TYPES or media in ("*/*", "application/*", "") or media.endswith("+json"):
            return
    raise NotSupported("Only FHIR JSON (application/fhir+json) can be returned; XML is not supported", 406)


def body_media_type(content_type: str | None) -> str | None:
    return _media_type(content_type) if content_type else None


def _check_json_content_type(content_type: str | None, *, allowed: frozenset[str]) -> None:
    media = body_media_type(content_type)
    if media is None or media in allowed:
        return  # a missing Content-Type is read as JSON: lenient with simple clients
    if "xml" in media:
        raise NotSupported("XML bodies are not supported: send application/fhir+json", 415)
    raise NotSupported(f"Unsupported Content-Type {media[:80]!r}: send application/fhir+json", 415)


def _check_bytes(body: bytes) -> None:
    if b"\x00" in body or b"\\u0000" in body:
        raise InvalidInput("The body contains NUL characters, which FHIR JSON does not allow")


def parse_json_body(body: bytes, content_type: str | None, *, patch: bool = False) -> Any:
    """The parsed JSON body; 415 for a wrong Content-Type, 400 for empty, NUL-bearing or malformed JSON."""
    allowed = frozenset({JSON_PATCH, MERGE_PATCH, *_JSON_TYPES}) if patch else _JSON_TYPES
    _check_json_content_type(content_type, allowed=allowed)
    if not body.strip():
        raise InvalidInput("The request body is empty")
    _check_bytes(body)
    try:
        return orjson.loads(body)
    except orjson.JSONDecodeError as exc:
        # orjson's message names the position, not the content
        raise InvalidInput(f"The body is not valid JSON: {exc}") from exc


def parse_form_body(body: bytes, content_type: str | None) -> list[tuple[str, str]]:
    """Search parameters of ``POST [type]/_search`` (application/x-www-form-urlencoded)."""
    media = body_media_type(content_type)
    if body.strip() and media not in (FORM, None):
        raise NotSupported(f"POST _search takes {FORM}", 415)
    _check_bytes(body)
    try:
        text = body.decode("utf-8")
    except UnicodeDecodeError as exc:
        raise InvalidInput("The form body is not UTF-8") from exc
    try:
        return parse_qsl(text, keep_blank_values=True, strict_parsing=False, max_num_fields=1000)
    except ValueError as exc:
        raise InvalidInput(f"The form body cannot be parsed: {exc}") from exc
