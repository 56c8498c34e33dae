"""UID validation (PS3.5 9.1): components of digits separated by dots, no leading zero in a multi-digit
component, at most 64 characters. Checked before any UID becomes part of a file name."""

from __future__ import annotations

import re

from engine.errors import InvalidInput

__all__ = ["is_valid_uid", "require_uid"]

_UID = re.compile(r"(0|[1-9][0-9]*)(\.(0|[1-9][0-9]*))*")


def is_valid_uid(value: object) -> bool:
    # fullmatch: with match, "$" would also accept a trailing newline
    return isinstance(value, str) and 0 < len(value) <= 64 and _UID.fullmatch(value) is not None


def require_uid(value: object, keyword: str) -> str:
    """``value`` stripped of the trailing NUL padding allowed by PS3.5 9.1, or InvalidInput."""
    text = str(value).rstrip("\x00 ") if value is not None else ""
    if not is_valid_uid(text):
        raise InvalidInput(f"{keyword} is not a valid UID (PS3.5 9.1)", location=keyword)
    return text
