"""Durations as channel files write them: ``500ms``, ``30s``, ``5m``, ``2h``, ``7d`` or plain seconds."""

from __future__ import annotations

import re
from datetime import UTC, datetime, timedelta

__all__ = ["parse_duration", "parse_since"]

_UNITS = {"ms": 0.001, "s": 1.0, "m": 60.0, "h": 3600.0, "d": 86400.0}
_PATTERN = re.compile(r"^\s*(\d+(?:\.\d+)?)\s*(ms|s|m|h|d)?\s*$")


def parse_duration(value: object) -> float:
    """Seconds in ``value``; ValueError with the accepted forms otherwise."""
    if isinstance(value, bool):
        raise ValueError("expected a duration such as 30s, 5m, 2h, 7d")
    if isinstance(value, int | float):
        if value < 0:
            raise ValueError("a duration cannot be negative")
        return float(value)
    match = _PATTERN.match(str(value))
    if not match:
        raise ValueError(f"{value!r} is not a duration (use e.g. 500ms, 30s, 5m, 2h, 7d)")
    return float(match.group(1)) * _UNITS[match.group(2) or "s"]


def parse_since(value: str) -> datetime:
    """A moment given as ``2h`` / ``7d`` ago or an ISO 8601 date or date-time (UTC when no offset).
    ValueError otherwise."""
    try:
        return datetime.now(UTC) - timedelta(seconds=parse_duration(value))
    except ValueError:
        pass
    moment = datetime.fromisoformat(value)
    # stored times are UTC (SQLite compares them as text, so the offset must be applied here)
    return moment.astimezone(UTC) if moment.tzinfo else moment.replace(tzinfo=UTC)
