"""HL7 v2 DTM/TS/DT values to FHIR date, dateTime and instant, keeping their precision.

A v2 time without an offset is read in the mapping's default time zone (``timezone:``), since FHIR requires
an offset whenever a time is given (R4 §2.24.0.1 dateTime). Precision is never invented: ``2023`` stays a
year, ``202302091143`` becomes ``2023-02-09T11:43:00+01:00`` (FHIR needs the seconds once minutes are
given).
"""

from __future__ import annotations

import re
from datetime import UTC, datetime, timedelta, timezone, tzinfo
from functools import lru_cache
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

__all__ = ["parse_zone", "to_date", "to_datetime", "to_instant", "DateFormatError"]


class DateFormatError(ValueError):
    pass


_DTM = re.compile(
    r"^(\d{4})(\d{2})?(\d{2})?(?:(\d{2})(\d{2})?(\d{2})?(?:\.(\d{1,4}))?)?\s*(?:([+-])(\d{2})(\d{2}))?$",
    re.ASCII,
)


@lru_cache(maxsize=64)
def parse_zone(name: str | None) -> tzinfo:
    """``Europe/Paris``, ``+01:00``, ``-0500``, ``UTC`` or ``Z`` to a tzinfo (UTC when empty)."""
    if not name or name in ("Z", "UTC"):
        return UTC
    m = re.fullmatch(r"([+-])(\d{2}):?(\d{2})", name, re.ASCII)
    if m:
        delta = timedelta(hours=int(m[2]), minutes=int(m[3]))
        return timezone(delta if m[1] == "+" else -delta)
    try:
        return ZoneInfo(name)
    except (ZoneInfoNotFoundError, ValueError) as exc:
        raise ValueError(f"unknown time zone {name!r}") from exc


def _parts(value: str) -> re.Match[str]:
    m = _DTM.match(value.strip())
    if not m:
        raise DateFormatError("not an HL7 v2 date/time (YYYY[MM[DD[HH[MM[SS[.S]]]]]][+/-ZZZZ])")
    mo, d = m[2], m[3]
    if mo and not 1 <= int(mo) <= 12 or d and not 1 <= int(d) <= 31:
        raise DateFormatError("month or day out of range")
    return m


@lru_cache(maxsize=4096)
def to_date(value: str) -> str:
    m = _parts(value)
    return "-".join(p for p in (m[1], m[2], m[3]) if p)


def _offset(m: re.Match[str], tz: tzinfo, naive: datetime) -> str:
    if m[8]:
        return f"{m[8]}{m[9]}:{m[10]}"
    off = tz.utcoffset(naive) if not isinstance(tz, timezone) else tz.utcoffset(None)
    if off is None or off == timedelta(0):
        return "+00:00" if tz is not UTC else "Z"
    total = int(off.total_seconds() // 60)
    sign = "+" if total >= 0 else "-"
    total = abs(total)
    return f"{sign}{total // 60:02d}:{total % 60:02d}"


# the results of one message repeat (every OBX of a panel has the same OBX-14, OBR-7 and OBR-22): pure
# functions of their text and zone, so remembered; failures are not cached (they raise again)
@lru_cache(maxsize=4096)
def to_datetime(value: str, tz: tzinfo = UTC) -> str:
    m = _parts(value)
    if not m[4]:
        return to_date(value)
    if not m[3]:
        return to_date(value)
    hh, mi, ss = int(m[4]), int(m[5] or 0), int(m[6] or 0)
    if hh > 23 or mi > 59 or ss > 60:
        raise DateFormatError("time out of range")
    naive = datetime(int(m[1]), int(m[2]), int(m[3]), hh, mi, min(ss, 59))
    frac = f".{m[7]}" if m[7] else ""
    return f"{m[1]}-{m[2]}-{m[3]}T{m[4]}:{m[5] or '00'}:{m[6] or '00'}{frac}{_offset(m, tz, naive)}"


@lru_cache(maxsize=4096)  # like to_datetime: every OBX of a panel issued at the same OBR-22
def to_instant(value: str, tz: tzinfo = UTC) -> str:
    """An instant needs a full time: a date alone is read as its midnight."""
    m = _parts(value)
    if not (m[2] and m[3]):
        raise DateFormatError("an instant needs at least a full date")
    if not m[4]:
        value = value.strip()[:8] + "000000" + value.strip()[8:]
    return to_datetime(value, tz)
