"""HTTP header semantics of the FHIR REST API: ETag / If-Match (R4 §3.1.0.5), Prefer (§3.1.0.6, RFC 7240)
and Last-Modified dates."""

from __future__ import annotations

import re
from dataclasses import dataclass
from datetime import UTC, datetime
from email.utils import format_datetime

from engine.errors import InvalidInput

__all__ = ["Prefer", "parse_prefer", "parse_if_match", "http_date", "etag"]

_ETAG = re.compile(r'^\s*(?:W/)?"?([0-9]{1,18})"?\s*$')


@dataclass(frozen=True)
class Prefer:
    return_: str = "representation"  # minimal | representation | OperationOutcome
    strict: bool = False  # handling=strict: unknown search parameters are errors


def parse_prefer(value: str | None) -> Prefer:
    """``Prefer: return=minimal, handling=strict`` (several headers arrive joined by commas)."""
    if not value:
        return Prefer()
    ret = "representation"
    strict = False
    for part in re.split(r"[,;]", value):
        key, _, val = part.strip().partition("=")
        key, val = key.strip().lower(), val.strip().strip('"')
        if key == "return" and val in ("minimal", "representation", "OperationOutcome"):
            ret = val
        elif key == "handling":
            strict = val.lower() == "strict"
    return Prefer(ret, strict)


def parse_if_match(value: str | None) -> int | None:
    """The version named by ``If-Match: W/"3"`` (None when absent); InvalidInput when malformed."""
    if value is None or not value.strip():
        return None
    match = _ETAG.match(value)
    if not match:
        raise InvalidInput('If-Match must be a version ETag such as W/"3"', location="If-Match")
    return int(match.group(1))


def etag(version_id: int | str) -> str:
    return f'W/"{version_id}"'


def http_date(moment: datetime) -> str:
    """RFC 9110 IMF-fixdate for Last-Modified."""
    if moment.tzinfo is None:
        moment = moment.replace(tzinfo=UTC)
    return format_datetime(moment.astimezone(UTC), usegmt=True)
