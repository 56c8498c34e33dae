"""FHIR date/dateTime/instant values as the instant ranges they denote (R4 3.1.1.4.3, 2.24.0.5).

A value is as precise as it is written: ``2024`` is the whole year, ``2024-05`` the month, ``2024-05-01`` the
day and ``2024-05-01T10:00`` the minute. Both the stored values and the searched values become inclusive
[low, high] ranges of naive UTC datetimes, so every comparison the spec defines is a pair of range tests.
Values without a time zone are taken as UTC.
"""

from __future__ import annotations

import calendar
import re
from datetime import UTC, datetime, timedelta

__all__ = ["DATE_MIN", "DATE_MAX", "date_range", "to_utc_naive"]

DATE_MIN = datetime(1, 1, 1)
DATE_MAX = datetime(9999, 12, 31, 23, 59, 59, 999999)

_DATE = re.compile(
    r"^(?P<y>\d{4})(?:-(?P<m>\d{2})(?:-(?P<d>\d{2})"
    r"(?:T(?P<H>\d{2}):(?P<M>\d{2})(?::(?P<S>\d{2})(?:\.(?P<f>\d+))?)?(?P<tz>Z|[+-]\d{2}:\d{2})?)?)?)?$"
)
_ONE = timedelta(microseconds=1)


def to_utc_naive(value: datetime) -> datetime:
    """Aware → UTC without tzinfo (the form stored in the index tables); naive values are taken as UTC."""
    if value.tzinfo is not None:
        value = value.astimezone(UTC).replace(tzinfo=None)
    return value


def date_range(text: str) -> tuple[datetime, datetime]:
    """The inclusive [low, high] UTC range a FHIR date/dateTime/instant denotes; ValueError if malformed."""
    try:
        return _date_range(text)
    except OverflowError:  # e.g. 9999-12-31T23:00:00-05:00 lies beyond the last representable instant
        raise ValueError(f"not a representable FHIR date/dateTime: {text!r}") from None


def _date_range(text: str) -> tuple[datetime, datetime]:
    m = _DATE.match(text.strip())
    if not m:
        raise ValueError(f"not a FHIR date/dateTime: {text!r}")
    year = int(m["y"])
    if m["m"] is None:
        low = datetime(year, 1, 1)
        return low, datetime(year, 12, 31, 23, 59, 59, 999999)
    month = int(m["m"])
    if m["d"] is None:
        low = datetime(year, month, 1)
        last = calendar.monthrange(year, month)[1]
        return low, datetime(year, month, last, 23, 59, 59, 999999)
    day = int(m["d"])
    if m["H"] is None:
        return datetime(year, month, day), datetime(year, month, day, 23, 59, 59, 999999)
    seconds = m["S"]
    fraction = m["f"]
    low = datetime(
        year,
        month,
        day,
        int(m["H"]),
        int(m["M"]),
        int(seconds or 0),
        int((fraction or "0")[:6].ljust(6, "0")),
    )
    if m["tz"] and m["tz"] != "Z":
        sign = 1 if m["tz"][0] == "+" else -1
        hours, minutes = int(m["tz"][1:3]), int(m["tz"][4:6])
        low -= sign * timedelta(hours=hours, minutes=minutes)
    if seconds is None:
        width = timedelta(minutes=1)
    elif fraction is None:
        width = timedelta(seconds=1)
    else:
        width = timedelta(microseconds=10 ** max(0, 6 - len(fraction)))
    return low, (low + width - _ONE) if DATE_MAX - low >= width else DATE_MAX
