"""Declarative filter conditions of a channel or destination, checked without a full HL7 parse.

Each condition is a small mapping; a list of them must all match (``any:`` takes a list where one must)::

    filters:
      - message_type: [ADT, ORU]          # MSH-9.1
      - trigger: A01                      # MSH-9.2
      - version: ["2.5", "2.5.1"]         # MSH-12
      - sender: "LAB^*"                   # MSH-3^MSH-4, * wildcard
      - field: PID-8                      # SEG-field[.component[.subcomponent]], first occurrence
        in: [F, M]                        # or equals / not_equals / matches (regex) / exists: true|false
      - any:
          - message_type: ORU
          - field: MSH-5
            equals: LIS
"""

from __future__ import annotations

import fnmatch
import re
from collections.abc import Callable
from dataclasses import dataclass
from functools import cached_property
from typing import Any

from engine.hl7v2.header import MessageHeader

__all__ = ["MessageView", "Condition", "compile_conditions", "field_value", "CONDITION_KEYS"]

CONDITION_KEYS = ("message_type", "trigger", "version", "sender", "field", "any", "not")
_FIELD_OPS = ("equals", "not_equals", "in", "matches", "exists")
_FIELD_SPEC = re.compile(r"^([A-Z][A-Z0-9]{2})-(\d+)(?:\.(\d+))?(?:\.(\d+))?$")


@dataclass
class MessageView:
    """What filters look at: the parsed MSH plus the raw segments, split on demand."""

    header: MessageHeader
    raw: bytes
    charset: str = "utf-8"

    @cached_property
    def segments(self) -> list[str]:
        text = self.raw.decode(self.charset, errors="replace")
        return [s for s in re.split(r"\r\n|\r|\n", text) if s]

    @property
    def sender(self) -> str:
        return f"{self.header.sending_application}^{self.header.sending_facility}"


def field_value(view: MessageView, spec: str) -> str | None:
    """Value at ``PID-8`` / ``PID-3.1`` / ``OBX-5.1.2`` in the first such segment (first repetition)."""
    match = _FIELD_SPEC.match(spec)
    if not match:
        raise ValueError(f"{spec!r} is not a field position such as PID-8 or PID-3.1")
    seg, num, comp, sub = match.group(1), int(match.group(2)), match.group(3), match.group(4)
    h = view.header
    fs = h.field_separator or "|"
    enc = h.encoding_characters or "^~\\&"
    for segment in view.segments:
        if not segment.startswith(seg):
            continue
        parts = segment.split(fs)
        if parts[0] != seg:
            continue
        if seg == "MSH":
            # MSH-1 is the field separator itself, so MSH-n sits one place earlier than other segments
            if num == 1:
                return fs
            index = num - 1
        else:
            index = num
        if index >= len(parts):
            return None
        value = parts[index] if seg != "MSH" or num != 2 else parts[1]
        if seg == "MSH" and num == 2:
            return value
        value = value.split(enc[1])[0] if len(enc) > 1 else value
        if comp:
            components = value.split(enc[0])
            c = int(comp)
            value = components[c - 1] if c <= len(components) else ""
            if sub:
                subs = value.split(enc[3]) if len(enc) > 3 else [value]
                s = int(sub)
                value = subs[s - 1] if s <= len(subs) else ""
        return value if value != "" else None
    return None


Condition = Callable[[MessageView], bool]


def _as_list(value: Any) -> list[str]:
    if isinstance(value, list):
        return [str(v) for v in value]
    return [str(value)]


def _compile_one(
    cond: Any, path: tuple[str | int, ...], errors: list[tuple[tuple[str | int, ...], str]]
) -> Condition:
    if not isinstance(cond, dict) or not cond:
        errors.append((path, "a condition is a mapping such as {message_type: ADT}"))
        return lambda _v: True
    unknown = [k for k in cond if k not in (*CONDITION_KEYS, *_FIELD_OPS)]
    if unknown:
        errors.append(
            (
                (*path, str(unknown[0])),
                f"unknown condition {unknown[0]!r}; use one of {', '.join(CONDITION_KEYS)}",
            )
        )
        return lambda _v: True
    checks: list[Condition] = []
    if "message_type" in cond:
        types = {t.upper() for t in _as_list(cond["message_type"])}
        checks.append(lambda v: v.header.message_type.upper() in types)
    if "trigger" in cond:
        triggers = {t.upper() for t in _as_list(cond["trigger"])}
        checks.append(lambda v: v.header.trigger_event.upper() in triggers)
    if "version" in cond:
        versions = set(_as_list(cond["version"]))
        checks.append(lambda v: v.header.version in versions)
    if "sender" in cond:
        patterns = _as_list(cond["sender"])
        checks.append(lambda v: any(fnmatch.fnmatchcase(v.sender, p) for p in patterns))
    if "any" in cond:
        if not isinstance(cond["any"], list) or not cond["any"]:
            errors.append(((*path, "any"), "any: takes a non-empty list of conditions"))
        else:
            alternatives = [_compile_one(c, (*path, "any", i), errors) for i, c in enumerate(cond["any"])]
            checks.append(lambda v: any(a(v) for a in alternatives))
    if "not" in cond:
        inner = _compile_one(cond["not"], (*path, "not"), errors)
        checks.append(lambda v: not inner(v))
    ops = [k for k in _FIELD_OPS if k in cond]
    if "field" in cond:
        spec = str(cond["field"])
        if not _FIELD_SPEC.match(spec):
            errors.append(((*path, "field"), f"{spec!r} is not a field position such as PID-8 or PID-3.1"))
        elif len(ops) != 1:
            errors.append((path, f"field: {spec} needs exactly one of {', '.join(_FIELD_OPS)}"))
        else:
            checks.append(_field_check(spec, ops[0], cond[ops[0]], (*path, ops[0]), errors))
    elif ops:
        errors.append(((*path, ops[0]), f"{ops[0]}: needs a field: position (e.g. field: PID-8)"))
    return lambda v: all(c(v) for c in checks)


def _field_check(
    spec: str, op: str, arg: Any, path: tuple[str | int, ...], errors: list[tuple[tuple[str | int, ...], str]]
) -> Condition:
    if op == "exists":
        want = bool(arg)
        return lambda v: (field_value(v, spec) is not None) == want
    if op == "equals":
        expected = str(arg)
        return lambda v: field_value(v, spec) == expected
    if op == "not_equals":
        unexpected = str(arg)
        return lambda v: field_value(v, spec) != unexpected
    if op == "in":
        allowed = set(_as_list(arg))
        return lambda v: field_value(v, spec) in allowed
    try:
        pattern = re.compile(str(arg))
    except re.error as exc:
        errors.append((path, f"invalid regular expression: {exc}"))
        return lambda _v: True
    return lambda v: pattern.search(field_value(v, spec) or "") is not None


def compile_conditions(
    conditions: Any, path: tuple[str | int, ...], errors: list[tuple[tuple[str | int, ...], str]]
) -> Condition | None:
    """One predicate for a list of conditions (all must match); None when there are none."""
    if conditions is None:
        return None
    if isinstance(conditions, dict):
        conditions = [conditions]
    if not isinstance(conditions, list):
        errors.append((path, "expected a list of conditions"))
        return None
    compiled = [_compile_one(c, (*path, i), errors) for i, c in enumerate(conditions)]
    return lambda v: all(c(v) for c in compiled)
