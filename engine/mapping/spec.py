"""The mapping language: a mapping file compiled into closures, checked against FHIR R4 when it loads.

A mapping file (see ``mappings/hl7v2/README.md`` for the full reference)::

    mapping: oru-r01                      # name (default: the file name)
    version: "1.0"
    extends: base-patient                 # optional: start from another mapping
    match: {message: ORU, events: [R01], versions: "2.3-2.8", sender: {application: "LAB*"}}
    timezone: Europe/Paris                # for v2 times sent without an offset
    systems: {"MR&1.2.3": "urn:oid:1.2.3"}  # assigning authority -> identifier system URI
    codesystems: {"99LAB": "urn:acme:lab"}  # CWE-3 coding system name -> system URI
    segments: {ZPI: {fields: {2: {name: pet, type: CWE}}}}   # Z segments, documented and checked
    resources:                            # resource blocks, in output order
      observation:
        type: Observation
        for_each: OBSERVATION             # a structure group, or a path (OBX[**], PV1-7[*])
        when: {not: {equals: [OBX-2, ED]}}
        identity: {system: ..., value: {join: [OBR-3.1, OBX-3.1, OBX-4], sep: "-"}}
        fields:
          status: {path: OBX-11, table: observation-status}
          code: OBX-3                     # a bare string is a path; the converter follows the element type
          value[x]: {path: OBX-5, as: obx-value}
          subject: {ref: patient}
    events:                               # the event table: trigger/ORC-1/OBR-25/OBX-11 -> action
      - {resource: observation, when: {equals: [OBX-11, X]}, action: cancel}

Value specs: a path string; ``{path, as, table, translate, default, when}``; ``{value: fixed}``;
``{ref: block, all: true}``; ``{fields: {...}}`` (a nested object); ``{first_of: [...]}``;
``{join: [...], sep}``; ``{function: name, args: [...]}``; a list (concatenated).
Conditions: a path (exists); ``{exists|missing: path}``; ``{equals: [path, value]}``;
``{in: [path, [values]]}``; ``{trigger: [A03]}``; ``{group: [OBSERVATION]}`` (the scope's structure
group); ``{not|all|any: ...}``.
"""

from __future__ import annotations

import re
from collections.abc import Callable
from dataclasses import dataclass, field
from fnmatch import fnmatchcase
from typing import TYPE_CHECKING, Any

from engine.errors import ConfigurationError, Issue, MappingError
from engine.hl7v2.paths import Path, PathSyntaxError, Value, compile_path
from engine.hl7v2.structure import Group
from engine.mapping import elements
from engine.mapping.concepts import UNMAPPED, Terminology
from engine.mapping.converters import (
    CONVERTERS,
    TEXT_CONVERTERS,
    Choice,
    ConversionError,
    UnmappedCode,
    text_as_is,
)
from engine.mapping.datetime import parse_zone
from engine.mapping.functions import lookup as lookup_function
from engine.mapping.loader import LocatedDict, where

if TYPE_CHECKING:
    from engine.mapping.interpreter import Instance, RunState

__all__ = [
    "Mapping",
    "Block",
    "FieldSpec",
    "Fields",
    "EventRule",
    "Ctx",
    "PendingRef",
    "compile_mapping",
    "Match",
    "FixedPlan",
    "RefPlan",
    "TextPlan",
    "PlainPlan",
    "ConcatPlan",
    "FirstOfPlan",
    "JoinPlan",
    "TablePlan",
    "DefaultPlan",
    "WhenPlan",
    "NotPlan",
    "AllPlan",
    "AnyPlan",
    "GroupPlan",
    "TriggerPlan",
    "text_as_is",
]

#: the converter used when a mapping does not say ``as:``, by the FHIR type of the target element
DEFAULT_CONVERTER = {
    "Identifier": "CX",
    "HumanName": "XPN",
    "Address": "XAD",
    "ContactPoint": "XTN",
    "CodeableConcept": "CWE",
    "Coding": "coding",
    "Quantity": "quantity",
    "decimal": "NM",
    "integer": "integer",
    "positiveInt": "integer",
    "unsignedInt": "integer",
    "boolean": "boolean",
    "dateTime": "DTM",
    "date": "date",
    "instant": "instant",
    "Attachment": "ED",
    "Period": "period",
    "code": "code",
    "id": "code",
}


class Ctx:
    """What a value spec sees: the scope group, the current iterated value, the run and the instance."""

    __slots__ = ("scope", "value", "state", "instance")

    def __init__(self, scope: Group, value: Value | None, state: RunState, instance: Instance | None):
        self.scope = scope
        self.value = value
        self.state = state
        self.instance = instance


class PendingRef:
    """A local reference resolved once every resource of the message is built. (engine.mapping.codegen
    makes them without calling __init__, setting these same slots: keep the two in step.)"""

    __slots__ = ("block", "scope", "all", "where", "display")

    def __init__(self, block: str, scope: Group, all_: bool, where_: str):
        self.block = block
        self.scope = scope
        self.all = all_
        self.where = where_


ValueFn = Callable[[Ctx], list[Any]]
CondFn = Callable[[Ctx], bool]


@dataclass(slots=True)  # read for every field of every instance: slots make those reads cheap
class FieldSpec:
    element: str  # JSON name, or the base of a choice element ("value" for value[x])
    choice: bool
    array: bool
    fn: ValueFn
    where: str


class Fields(list[FieldSpec]):
    """The field specs of one object (a resource block, a nested ``fields:``, an event's ``set:``), and the
    function engine.mapping.codegen makes of them on first use."""

    __slots__ = ("label", "_build")

    def __init__(self, specs: list[FieldSpec], label: str):
        super().__init__(specs)
        self.label = label
        self._build: Callable[[Ctx, dict[str, Any]], dict[str, Any]] | None = None

    def builder(self) -> Callable[[Ctx, dict[str, Any]], dict[str, Any]]:
        build = self._build
        if build is None:
            from engine.mapping.codegen import compile_fields

            build = self._build = compile_fields(self, self.label)
        return build


# What a value closure is, for engine.mapping.codegen to write it in line (a closure without ``plan``
# is called as it is). Each describes the closure it is attached to, which stays the general way.


@dataclass(frozen=True, slots=True)
class FixedPlan:
    """``{value: ...}`` or a literal: always ``[value]``."""

    value: Any


@dataclass(frozen=True, slots=True)
class RefPlan:
    """``{ref: block}``: one new PendingRef from the scope."""

    block: str
    all: bool
    display: Any
    where: str


@dataclass(frozen=True, slots=True)
class TextPlan:
    """A path read by _plain_text_shortcut: a plain field (or its first component) through a converter
    of text alone; ``general`` (the closure without the shortcut) otherwise."""

    segment: str
    field: int
    first: bool
    convert: Callable[[str, Any], Any]
    general: ValueFn


@dataclass(frozen=True, slots=True)
class PlainPlan:
    """A path read by _plain_value_shortcut: a whole field of one repetition without subcomponents or
    escapes, as the Value the general way makes of it, converted."""

    segment: str
    field: int
    convert: Callable[..., Any]
    options: dict[str, Any]
    general: ValueFn


@dataclass(frozen=True, slots=True)
class ConcatPlan:
    """A list of value specs: their results one after the other."""

    parts: tuple[ValueFn, ...]


@dataclass(frozen=True, slots=True)
class FirstOfPlan:
    """``first_of:``: the results of the first part that gives some."""

    parts: tuple[ValueFn, ...]


@dataclass(frozen=True, slots=True)
class JoinPlan:
    """``join:``: the parts' results as text, joined by ``sep``."""

    parts: tuple[ValueFn, ...]
    sep: str


@dataclass(frozen=True, slots=True)
class TablePlan:
    """``table:``: each result of ``inner`` looked up; ``unmapped(code)`` is the error of a missing code."""

    inner: ValueFn
    lookup: Callable[[str], Any]
    unmapped: Callable[[str], MappingError]


@dataclass(frozen=True, slots=True)
class DefaultPlan:
    """``default:``: ``inner``'s results, else the default."""

    inner: ValueFn
    default: Any


@dataclass(frozen=True, slots=True)
class WhenPlan:
    """``when:`` on a value: ``inner``'s results when the condition holds."""

    inner: ValueFn
    cond: CondFn


@dataclass(frozen=True, slots=True)
class NotPlan:
    """``not:`` / ``missing:``."""

    inner: CondFn


@dataclass(frozen=True, slots=True)
class AllPlan:
    parts: tuple[CondFn, ...]


@dataclass(frozen=True, slots=True)
class AnyPlan:
    parts: tuple[CondFn, ...]


@dataclass(frozen=True, slots=True)
class GroupPlan:
    """``group:``: the scope is one of these structure groups."""

    names: frozenset[str]


@dataclass(frozen=True, slots=True)
class TriggerPlan:
    """``trigger:``: the message's trigger event is one of these."""

    events: frozenset[str]


def _untracked_compiled(fn: ValueFn, label: str) -> ValueFn:
    """``fn`` run as generated code (engine.mapping.codegen, made on first use) except on a tracking run,
    where its closures record what they read."""
    compiled: ValueFn | None = None

    def run(ctx: Ctx) -> list[Any]:
        nonlocal compiled
        if ctx.state.track:
            return fn(ctx)
        if compiled is None:
            from engine.mapping.codegen import compile_value

            compiled = compile_value(fn, label)
        return compiled(ctx)

    return run


def _planned(fn: ValueFn, plan: Any) -> ValueFn:
    fn.plan = plan  # type: ignore[attr-defined]
    return fn


@dataclass
class EventRule:
    blocks: frozenset[str] | None  # None = every block
    when: CondFn | None
    action: str
    set_fields: list[FieldSpec]
    options: dict[str, Any]
    where: str


@dataclass
class Block:
    name: str
    type: str
    fields: list[FieldSpec]
    where: str
    for_each_group: str | None = None
    for_each_paths: tuple[Path, ...] = ()
    segment: str | None = None
    when: CondFn | None = None
    identity: str = "identifier"  # identifier | id | none | spec
    identity_fn: ValueFn | None = None  # -> Identifier dicts, the first complete one is the identity


@dataclass
class Match:
    message: frozenset[str] = frozenset()
    events: frozenset[str] = frozenset()
    versions: tuple[tuple[int, ...], tuple[int, ...]] | None = None
    application: str | None = None
    facility: str | None = None
    priority: int = 0

    def score(
        self, message_type: str, event: str, version: str, application: str, facility: str
    ) -> int | None:
        """None when the mapping does not apply; higher is more specific (sender-specific first)."""
        if self.message and message_type not in self.message:
            return None
        if self.events and event not in self.events and "*" not in self.events:
            return None
        if self.versions is not None:
            key = _version_key(version)
            if not (self.versions[0] <= key <= self.versions[1]):
                return None
        score = self.priority
        if self.application is not None:
            if not fnmatchcase(application, self.application):
                return None
            score += 1000
        if self.facility is not None:
            if not fnmatchcase(facility, self.facility):
                return None
            score += 1000
        return score


@dataclass
class Mapping:
    name: str
    version: str
    file: str
    match: Match
    blocks: list[Block]
    events: list[EventRule]
    tz: Any
    systems: dict[str, str]
    codesystems: dict[str, str]
    z_segments: dict[str, dict[int, dict[str, str]]]
    terminology: Terminology
    abstract: bool = False
    provenance: bool = True
    description: str = ""
    extends: str | None = None
    direction: str = "v2-to-fhir"
    raw: dict[str, Any] = field(default_factory=dict)
    reads: frozenset[str] = frozenset()
    """The DICOM attribute keywords a DICOM mapping refers to anywhere (its paths, conditions included)."""
    rules_by_block: dict[str, list[EventRule]] | None = field(default=None, repr=False, compare=False)
    """The event rules of each block, in table order: worked out by the interpreter on its first run."""


def _version_key(version: str) -> tuple[int, ...]:
    out = []
    for part in (version or "0").split("."):
        digits = "".join(ch for ch in part if ch in "0123456789")
        out.append(int(digits) if digits else 0)
    while len(out) < 3:
        out.append(0)
    return tuple(out)


def _version_range(text: str, at: str) -> tuple[tuple[int, ...], tuple[int, ...]]:
    text = str(text).strip()
    m = re.fullmatch(r"(>=|<=)?\s*([\d.]+)(?:\s*-\s*([\d.]+))?", text)
    if not m:
        raise ConfigurationError(f"{at}: versions must look like '2.3-2.8', '>=2.5' or '2.5.1', not {text!r}")
    low, high = m[2], m[3]
    hi_key = lambda v: tuple(list(_version_key(v))[: len(v.split("."))] + [999] * (3 - len(v.split("."))))  # noqa: E731
    if m[1] == ">=":
        return _version_key(low), (999, 999, 999)
    if m[1] == "<=":
        return (0, 0, 0), hi_key(low)
    if high:
        return _version_key(low), hi_key(high)
    return _version_key(low), hi_key(low)


class Compiler:
    """Turns one merged mapping document into a :class:`Mapping`; every error names file:line."""

    def __init__(self, doc: LocatedDict, terminology: Terminology, default_tz: str | None = None):
        self.doc = doc
        self.terminology = terminology
        self.default_tz = default_tz
        self.blocks_declared: set[str] = set((doc.get("resources") or {}).keys())

    def fail(self, at: str, message: str) -> ConfigurationError:
        return ConfigurationError(f"{at}: {message}")

    # -- paths and conditions ------------------------------------------------------------------------

    def path(self, text: Any, at: str) -> Path | None:
        """A compiled path; None for ``$`` (the value being iterated)."""
        if not isinstance(text, str):
            raise self.fail(at, f"a field path must be a string, not {text!r}")
        if text == "$" or text.startswith("$."):
            return None
        try:
            return compile_path(text)
        except PathSyntaxError as exc:
            raise self.fail(at, str(exc)) from None

    def values_fn(self, text: str, at: str) -> Callable[[Ctx], list[Value]]:
        p = self.path(text, at)
        if p is None:
            parts = [int(x) for x in text[2:].split(".")] if text != "$" else []

            def current(ctx: Ctx) -> list[Value]:
                v = ctx.value
                if v is None:
                    return []
                for i in parts:
                    v = v.component(i)
                return [v] if v else []

            return current

        key = id(p)
        read = _one_segment_reader(p) or p.values

        def from_scope(ctx: Ctx) -> list[Value]:
            found = ctx.scope._values.get(key)  # hot path: asked before from this scope
            if found is None:
                found = read(ctx.scope)
            if ctx.state.track:
                ctx.state.mark_used(found)
            return found

        return from_scope

    def when(self, node: Any, at: str) -> CondFn:
        """A whole condition (a block's, an event rule's, a value's ``when:``): one generated function when
        it combines others (engine.mapping.codegen), so that asking it is one call."""
        cond = self.condition(node, at)
        if isinstance(getattr(cond, "plan", None), NotPlan | AllPlan | AnyPlan):
            from engine.mapping.codegen import compile_condition

            return compile_condition(cond, at)
        return cond

    def condition(self, node: Any, at: str) -> CondFn:
        if isinstance(node, str):
            fn = self.values_fn(node, at)
            general = lambda ctx: any(fn(ctx))  # noqa: E731 - Value.__bool__: valued, not empty or explicit null
            quick = _exists_reader(self.path(node, at))
            if quick is None:
                return general

            def exists(ctx: Ctx) -> bool:
                """The path has a value, read from the raw field (see _exists_reader) when it can tell."""
                if ctx.state.track:
                    return general(ctx)
                found = quick(ctx.scope)
                return general(ctx) if found is None else found

            return exists
        if not isinstance(node, dict) or len(node) != 1:
            raise self.fail(
                at, f"a condition is a path or one of exists/missing/equals/in/trigger/not/all/any: {node!r}"
            )
        ((op, arg),) = node.items()
        at = where(node, op, at)
        if op == "exists":
            return self.condition(arg, at)
        if op == "missing":
            inner = self.condition(arg, at)
            return _planned(lambda ctx: not inner(ctx), NotPlan(inner))
        if op in ("equals", "in"):
            if not isinstance(arg, list) or len(arg) != 2:
                raise self.fail(at, f"{op}: takes [path, value{'s' if op == 'in' else ''}]")
            fn = self.values_fn(arg[0], at)
            accepted = frozenset(str(x) for x in (arg[1] if isinstance(arg[1], list) else [arg[1]]))

            def equals(ctx: Ctx) -> bool:
                for v in fn(ctx):
                    if v.c(1) in accepted:
                        return True
                return False

            p = self.path(arg[0], at) if isinstance(arg[0], str) else None
            read_plain = _plain_reader(p, first_component=True) if isinstance(p, Path) else None
            if read_plain is None:
                return equals

            def equals_plain(ctx: Ctx) -> bool:
                """equals on a plain field read without Values (see _plain_reader)."""
                if ctx.state.track:
                    return equals(ctx)
                raw = read_plain(ctx.scope)
                if raw is None:
                    return False
                if raw is _GENERAL:
                    return equals(ctx)
                return raw.strip() in accepted

            return equals_plain
        if op == "trigger":
            events = frozenset(str(x) for x in (arg if isinstance(arg, list) else [arg]))
            return _planned(lambda ctx: ctx.state.message.trigger_event in events, TriggerPlan(events))
        if op == "group":  # the scope is (one of) these structure groups: {group: [OBSERVATION, RESULT]}
            names = frozenset(str(x) for x in (arg if isinstance(arg, list) else [arg]))
            return _planned(lambda ctx: ctx.scope.name in names, GroupPlan(names))
        if op == "not":
            inner = self.condition(arg, at)
            return _planned(lambda ctx: not inner(ctx), NotPlan(inner))
        if op in ("all", "any"):
            if not isinstance(arg, list):
                raise self.fail(at, f"{op}: takes a list of conditions")
            parts = [self.condition(c, where(arg, None, at)) for c in arg]
            # loops, not all()/any() over a generator: conditions run for every scope of every block
            if op == "all":

                def all_of(ctx: Ctx) -> bool:
                    for p in parts:
                        if not p(ctx):
                            return False
                    return True

                return _planned(all_of, AllPlan(tuple(parts)))

            def any_of(ctx: Ctx) -> bool:
                for p in parts:
                    if p(ctx):
                        return True
                return False

            return _planned(any_of, AnyPlan(tuple(parts)))
        raise self.fail(
            at, f"unknown condition {op!r} (exists, missing, equals, in, trigger, group, not, all, any)"
        )

    # -- value specs ---------------------------------------------------------------------------------

    def value(self, node: Any, at: str, target: str | None) -> ValueFn:
        if isinstance(node, str):
            node_d: dict[str, Any] = {"path": node}
            return self._value_dict(node_d, at, target)
        if isinstance(node, list):
            fns = [self.value(n, where(node, None, at), target) for n in node]
            if len(fns) == 1:  # ``basedOn: [{ref: ...}]``: nothing to concatenate (results are never mutated)
                return fns[0]
            return _planned(lambda ctx: [r for f in fns for r in f(ctx)], ConcatPlan(tuple(fns)))
        if isinstance(node, bool | int | float):
            return _planned(lambda ctx: [node], FixedPlan(node))
        if isinstance(node, dict):
            return self._value_dict(node, where(node, None, at), target)
        if node is None:
            return lambda ctx: []
        raise self.fail(at, f"unsupported value spec {node!r}")

    _VALUE_KEYS = {
        "path",
        "as",
        "table",
        "translate",
        "unmapped",
        "default",
        "when",
        "value",
        "ref",
        "all",
        "fields",
        "first_of",
        "join",
        "sep",
        "function",
        "args",
        "unit",
        "use",
        "type",
        "table_id",
        "comparators",
        "on_error",
        "display",
        "each",
    }

    def _value_dict(self, node: dict[str, Any], at: str, target: str | None) -> ValueFn:
        unknown = set(node) - self._VALUE_KEYS
        if unknown:
            raise self.fail(at, f"unknown key(s) {', '.join(sorted(map(str, unknown)))} in a value spec")
        base = self._value_base(node, at, target)
        if "table" in node:
            table_name = node["table"]
            try:
                table = self.terminology.table(table_name)
            except ConfigurationError as exc:
                raise self.fail(where(node, "table", at), str(exc)) from None
            inner = base
            table_at = where(node, "table", at)

            def unmapped(code: str) -> MappingError:
                return MappingError(
                    f"code {code!r} is not in table {table_name!r} (unmapped: error)",
                    issues=[Issue(f"code not in table {table_name}", location=f"({table_at})")],
                )

            def via_table(ctx: Ctx) -> list[Any]:
                out = []
                for r in inner(ctx):
                    code = r if isinstance(r, str) else (r.c(1) if isinstance(r, Value) else str(r))
                    try:
                        mapped = table.lookup(code)
                    except KeyError:
                        raise unmapped(code) from None
                    if mapped is not None:
                        out.append(mapped)
                return out

            base = _planned(via_table, TablePlan(inner, table.lookup, unmapped))
        if "default" in node:
            default = node["default"]
            inner_d = base
            base = _planned(lambda ctx: inner_d(ctx) or [default], DefaultPlan(inner_d, default))
        if "when" in node:
            cond = self.when(node["when"], where(node, "when", at))
            inner_w = base
            base = _planned(lambda ctx: inner_w(ctx) if cond(ctx) else [], WhenPlan(inner_w, cond))
        return base

    def _value_base(self, node: dict[str, Any], at: str, target: str | None) -> ValueFn:
        if "value" in node:
            fixed = node["value"]
            return _planned(lambda ctx: [fixed], FixedPlan(fixed))
        if "ref" in node:
            block = node["ref"]
            if block not in self.blocks_declared:
                raise self.fail(
                    where(node, "ref", at), f"ref: no resource block named {block!r} in this mapping"
                )
            all_ = bool(node.get("all"))
            display = node.get("display")

            def ref(ctx: Ctx) -> list[Any]:
                pending = PendingRef(block, ctx.scope, all_, at)
                pending.display = display
                ctx.state.pending = True
                return [pending]

            return _planned(ref, RefPlan(block, all_, display, at))
        if "fields" in node:
            if target is None or not elements.is_known_type(target):
                raise self.fail(at, "fields: needs a target element whose type has elements")
            specs = self.fields(node["fields"], target, where(node, "fields", at))
            if "each" in node:  # one object per value of the path, the value being "$"
                each_values = self.values_fn(node["each"], where(node, "each", at))

                def per_value(ctx: Ctx) -> list[Any]:
                    out = []
                    for v in each_values(ctx):
                        if not v:
                            continue
                        sub = Ctx(
                            v.segment.group if v.segment is not None and v.segment.group else ctx.scope,
                            v,
                            ctx.state,
                            ctx.instance,
                        )
                        obj = build_object(specs, sub)
                        if obj:
                            out.append(obj)
                    return out

                return per_value

            def nested(ctx: Ctx) -> list[Any]:
                obj = build_object(specs, ctx)
                return [obj] if obj else []

            return nested
        if "first_of" in node:
            fns = [self.value(n, where(node, "first_of", at), target) for n in node["first_of"]]

            def first_of(ctx: Ctx) -> list[Any]:
                for f in fns:
                    found = f(ctx)
                    if found:
                        return found
                return []

            return _planned(first_of, FirstOfPlan(tuple(fns)))
        if "join" in node:
            fns = [self.value(n, where(node, "join", at), "string") for n in node["join"]]
            sep = str(node.get("sep", " "))

            def join(ctx: Ctx) -> list[Any]:
                parts = [
                    str(r) for f in fns for r in f(ctx) if r is not None and (r or not isinstance(r, str))
                ]
                return [sep.join(parts)] if parts else []

            return _planned(join, JoinPlan(tuple(fns), sep))
        if "function" in node:
            try:
                fn = lookup_function(node["function"])
            except ConfigurationError as exc:
                raise self.fail(where(node, "function", at), str(exc)) from None
            arg_fns = [self._raw_values(a, where(node, "args", at)) for a in node.get("args", [])]
            conv_name = node.get("as")
            conv = self._converter(conv_name, at) if conv_name else None
            opts = self._options(node)

            def call(ctx: Ctx) -> list[Any]:
                result = fn(ctx, *[a(ctx) for a in arg_fns])
                results = result if isinstance(result, list) else ([] if result is None else [result])
                if conv is not None:
                    return self._convert_all(
                        conv, [r for r in results if isinstance(r, Value)], ctx, opts, at
                    )
                return results

            return call
        if "path" in node:
            values = self.values_fn(node["path"], where(node, "path", at))
            conv_name = (
                node.get("as")
                or self._declared_type(node["path"])
                or DEFAULT_CONVERTER.get(target or "", "string")
            )
            conv = self._converter(conv_name, where(node, "as", at))
            opts = self._options(node)
            if "translate" in node:
                try:
                    cm = self.terminology.concept_map(node["translate"])
                except ConfigurationError as exc:
                    raise self.fail(where(node, "translate", at), str(exc)) from None
                del cm
                if "unmapped" in node and node["unmapped"] not in UNMAPPED:
                    raise self.fail(where(node, "unmapped", at), f"unmapped: one of {', '.join(UNMAPPED)}")
            convert_all = self._convert_all
            path = self.path(node["path"], at)
            key = id(path) if path is not None else None
            lookup = _one_segment_reader(path)
            simple = lookup is not None

            def from_path(ctx: Ctx) -> list[Any]:
                state = ctx.state
                if simple and not state.track:
                    scope = ctx.scope
                    found = scope._values.get(key)
                    if found is None:
                        found = lookup(scope)  # type: ignore[misc]
                else:
                    found = values(ctx)
                if not found:
                    return []
                if len(found) == 1:  # the usual case, without the loop and its error handling frame
                    try:
                        r = conv(found[0], state.cx, opts)
                    except (ConversionError, KeyError, UnmappedCode):
                        return convert_all(conv, found, ctx, opts, at)
                    return [] if r is None else [r]
                return convert_all(conv, found, ctx, opts, at)

            text_conv = TEXT_CONVERTERS.get(conv)
            shortcut = (
                _plain_text_shortcut(path, text_conv, from_path)
                if text_conv is not None
                else _plain_value_shortcut(path, conv, opts, from_path)
            )
            return shortcut or from_path
        raise self.fail(at, "a value spec needs one of path, value, ref, fields, first_of, join, function")

    def _declared_type(self, text: str) -> str | None:
        """The datatype a ``segments:`` declaration gives a Z segment field (ZPI-2 declared CWE)."""
        m = re.match(r"^(Z[A-Z0-9]{2})(?:\[[^\]]*\])?-(\d+)(?:\[[^\]]*\])?$", text)
        if not m:
            return None
        declared = ((self.doc.get("segments") or {}).get(m[1]) or {}).get("fields") or {}
        spec = declared.get(int(m[2])) or declared.get(m[2]) or {}
        kind = spec.get("type") if isinstance(spec, dict) else None
        return kind if kind in CONVERTERS else None

    def _raw_values(self, node: Any, at: str) -> ValueFn:
        if isinstance(node, str):
            return self.values_fn(node, at)  # type: ignore[return-value]
        return self.value(node, at, None)

    def _options(self, node: dict[str, Any]) -> dict[str, Any]:
        keys = ("unit", "use", "type", "table_id", "translate", "unmapped", "comparators")
        return {k: node[k] for k in keys if k in node}

    def _converter(self, name: Any, at: str) -> Callable[..., Any]:
        try:
            return CONVERTERS[str(name)]
        except KeyError:
            raise self.fail(
                at, f"unknown converter {name!r} (known: {', '.join(sorted(CONVERTERS))})"
            ) from None

    @staticmethod
    def _convert_all(
        conv: Callable[..., Any], values: list[Value], ctx: Ctx, opts: dict[str, Any], at: str
    ) -> list[Any]:
        out = []
        cx = ctx.state.cx
        for v in values:
            try:
                r = conv(v, cx, opts)
            except ConversionError as exc:
                ctx.state.warn(f"{exc}; value left out", f"{v.location} ({at})")
                continue
            except (KeyError, UnmappedCode) as exc:
                text = (
                    str(exc)
                    if isinstance(exc, UnmappedCode)
                    else f"code {exc} has no mapping (unmapped: error)"
                )
                raise MappingError(
                    f"{v.location}: {text}", issues=[Issue(text, location=f"{v.location} ({at})")]
                ) from None
            if r is not None:
                out.append(r)
        return out

    # -- fields and blocks ---------------------------------------------------------------------------

    def fields(self, node: Any, type_name: str, at: str) -> Fields:
        if not isinstance(node, dict):
            raise self.fail(at, "fields: must be a mapping of element -> value spec")
        specs = []
        for elem, spec in node.items():
            if spec is None:
                continue
            fat = where(node, elem, at)
            elem = str(elem)
            if elem.endswith("[x]"):
                base_name = elem[:-3]
                if not elements.choice_types(type_name, base_name):
                    raise self.fail(fat, f"{type_name} has no choice element {elem}")
                specs.append(FieldSpec(base_name, True, False, self.value(spec, fat, None), fat))
                continue
            found = elements.element(type_name, elem)
            if found is None:
                raise self.fail(fat, f"{type_name} has no element {elem!r} in FHIR R4")
            is_array, elem_type, _codes = found
            specs.append(FieldSpec(elem, False, is_array, self.value(spec, fat, elem_type), fat))
        return Fields(specs, at)

    def block(self, name: str, node: Any, at: str) -> Block:
        if not isinstance(node, dict):
            raise self.fail(at, f"resource block {name!r} must be a mapping")
        unknown = set(node) - {"type", "for_each", "segment", "when", "identity", "fields"}
        if unknown:
            raise self.fail(
                at, f"resource block {name!r}: unknown key(s) {', '.join(sorted(map(str, unknown)))}"
            )
        type_name = node.get("type")
        if not type_name or not elements.is_known_type(type_name):
            raise self.fail(
                where(node, "type", at), f"resource block {name!r}: unknown FHIR resource type {type_name!r}"
            )
        block = Block(
            name, type_name, self.fields(node.get("fields") or {}, type_name, where(node, "fields", at)), at
        )
        fe = node.get("for_each")
        if fe:
            fat = where(node, "for_each", at)
            if (
                isinstance(fe, str)
                and re.fullmatch(r"[A-Z][A-Z0-9_]*", fe)
                and not re.fullmatch(r"[A-Z][A-Z0-9]{2}", fe)
            ):
                block.for_each_group = fe
            else:
                paths = []
                for text in fe if isinstance(fe, list) else [fe]:
                    p = self.path(text, fat)
                    if p is None:
                        raise self.fail(fat, "for_each cannot be $")
                    paths.append(p)
                block.for_each_paths = tuple(paths)
        if node.get("segment"):
            block.segment = str(node["segment"])
        if node.get("when") is not None:
            block.when = self.when(node["when"], where(node, "when", at))
        identity = node.get("identity", "identifier" if elements.element(type_name, "identifier") else "id")
        iat = where(node, "identity", at)
        if isinstance(identity, dict):
            block.identity = "spec"
            if "from" in identity:  # the first valued identifier among paths, converted (EI, CX ...)
                conv = identity.get("as", "EI")
                sources = identity["from"] if isinstance(identity["from"], list) else [identity["from"]]
                block.identity_fn = _untracked_compiled(
                    self.value({"first_of": [{"path": p, "as": conv} for p in sources]}, iat, "Identifier"),
                    iat,
                )
            elif "value" in identity:
                sys_fn = self.value(identity.get("system", {"value": ""}), iat, "string")
                val_fn = _untracked_compiled(self.value(identity["value"], iat, "string"), iat)
                type_code = identity.get("type")

                def from_parts(ctx: Ctx) -> list[Any]:
                    # the first valued system and value (loops: no comprehension frames, once per resource)
                    system = value = None
                    for x in sys_fn(ctx):
                        if x:
                            system = x
                            break
                    for x in val_fn(ctx):
                        if x:
                            value = x
                            break
                    if value is None:
                        return []
                    ident: dict[str, Any] = {
                        "system": "" if system is None else str(system),
                        "value": str(value),
                    }
                    if type_code:
                        ident["type"] = {
                            "coding": [
                                {"system": "http://terminology.hl7.org/CodeSystem/v2-0203", "code": type_code}
                            ]
                        }
                    return [ident]

                block.identity_fn = from_parts
            else:
                raise self.fail(iat, "identity: needs from: [paths] or value: (and system:)")
        elif identity in ("identifier", "id", "none"):
            if identity == "identifier" and not elements.element(type_name, "identifier"):
                raise self.fail(iat, f"{type_name} has no identifier element: use identity: id")
            block.identity = identity
        else:
            raise self.fail(iat, "identity: is identifier, id, none, or {system, value}")
        return block

    def events(self, node: Any, at: str) -> list[EventRule]:
        from engine.mapping.actions import ACTIONS

        rules = []
        for rule in node or []:
            rat = where(rule, None, at)
            if not isinstance(rule, dict) or "action" not in rule:
                raise self.fail(rat, "an event rule needs action: (and optionally resource:, when:, set:)")
            action = rule["action"]
            if action not in ACTIONS:
                raise self.fail(
                    where(rule, "action", rat),
                    f"unknown action {action!r} (known: {', '.join(sorted(ACTIONS))})",
                )
            res = rule.get("resource")
            names = None
            if res is not None:
                names = frozenset(res if isinstance(res, list) else [res])
                missing = names - self.blocks_declared
                if missing == names:
                    if getattr(rule, "file", None) != getattr(self.doc, "file", None):
                        continue  # inherited, and every block it names was removed by this mapping
                    raise self.fail(
                        where(rule, "resource", rat), f"no resource block named {', '.join(sorted(missing))}"
                    )
                names = names - missing
            set_fields: list[FieldSpec] = []
            if rule.get("set"):
                types = {self.doc["resources"][n]["type"] for n in names or ()}
                if len(types) != 1:
                    raise self.fail(
                        where(rule, "set", rat), "set: needs exactly one resource type (name resource:)"
                    )
                set_fields = self.fields(rule["set"], types.pop(), where(rule, "set", rat))
            options = {k: v for k, v in rule.items() if k not in ("action", "resource", "when", "set")}
            when = self.when(rule["when"], where(rule, "when", rat)) if rule.get("when") is not None else None
            rules.append(EventRule(names, when, action, set_fields, options, rat))
        return rules

    def match(self, node: Any, at: str) -> Match:
        if not node:
            return Match()
        m = Match()
        msg = node.get("message")
        if msg:
            m.message = frozenset(msg if isinstance(msg, list) else [msg])
        events = node.get("events")
        if events:
            m.events = frozenset(str(e) for e in (events if isinstance(events, list) else [events]))
        if node.get("versions"):
            m.versions = _version_range(node["versions"], where(node, "versions", at))
        sender = node.get("sender") or {}
        m.application = sender.get("application")
        m.facility = sender.get("facility")
        m.priority = int(node.get("priority", 0))
        return m

    def compile(self, name: str, file: str) -> Mapping:
        doc = self.doc
        at = f"{file}:{doc.line}" if isinstance(doc, LocatedDict) else file
        known = {
            "mapping",
            "version",
            "description",
            "extends",
            "abstract",
            "match",
            "timezone",
            "systems",
            "codesystems",
            "segments",
            "resources",
            "events",
            "provenance",
            "direction",
            "message",
        }
        unknown = set(doc) - known
        if unknown:
            raise self.fail(at, f"unknown top-level key(s): {', '.join(sorted(map(str, unknown)))}")
        try:
            tz = parse_zone(doc.get("timezone") or self.default_tz)
        except ValueError as exc:
            raise self.fail(where(doc, "timezone", at), str(exc)) from None
        z_segments: dict[str, dict[int, dict[str, str]]] = {}
        for seg, zspec in (doc.get("segments") or {}).items():
            if not re.fullmatch(r"Z[A-Z0-9]{2}", str(seg)):
                raise self.fail(
                    where(doc.get("segments"), seg, at),
                    f"segments: only Z segments are declared here, not {seg!r}",
                )
            z_segments[seg] = {int(k): dict(v) for k, v in ((zspec or {}).get("fields") or {}).items()}
        blocks = []
        if doc.get("direction", "v2-to-fhir") == "v2-to-fhir":
            for bname, bnode in (doc.get("resources") or {}).items():
                blocks.append(self.block(str(bname), bnode, where(doc.get("resources"), bname, at)))
        return Mapping(
            name=name,
            version=str(doc.get("version", "1")),
            file=file,
            match=self.match(doc.get("match"), where(doc, "match", at)),
            blocks=blocks,
            events=self.events(doc.get("events"), where(doc, "events", at)),
            tz=tz,
            systems={str(k): str(v) for k, v in (doc.get("systems") or {}).items()},
            codesystems={str(k): str(v) for k, v in (doc.get("codesystems") or {}).items()},
            z_segments=z_segments,
            terminology=self.terminology,
            abstract=bool(doc.get("abstract", False)),
            provenance=bool(doc.get("provenance", True)),
            description=str(doc.get("description", "")),
            extends=doc.get("extends"),
            direction=str(doc.get("direction", "v2-to-fhir")),
            raw=doc,
        )


def _one_segment_reader(path: Path | None) -> Callable[[Group], list[Value]] | None:
    """For the usual path (one segment, one field: ``OBX-5``, ``OBR-3.1``), what ``Path.values`` does,
    inlined: the values from a scope that has not asked before, remembered on the scope and, shared by
    every scope that reads the same segment, on the segment. None for other paths."""
    if (
        path is None
        or path.occurrence != 1
        or path.subtree
        or path.segment_filter is not None
        or path.field is None
    ):
        return None
    key, seg_name, values_in = id(path), path.segment, path.values_in

    def read(scope: Group) -> list[Value]:
        segs = scope._nearest.get(seg_name)
        if segs is None:
            segs = scope.nearest(seg_name)
        if not segs:
            found: list[Value] = []
        else:
            seg = segs[0]
            found = seg._values.get(key)
            if found is None:
                found = seg._values[key] = values_in(seg)
        scope._values[key] = found
        return found

    return read


def _exists_reader(path: Path | None) -> Callable[[Group], bool | None] | None:
    """For a condition on a one-segment path to a whole field (``OBX-3``, ``PV1-7[*]``): whether it has a
    value, from the raw field without making Values — what ``any(values)`` answers, Value.__bool__ being
    "some subcomponent neither empty nor the explicit null". The reader answers None when the field holds
    an explicit null somewhere (the general way then decides). None for other paths."""
    if (
        not isinstance(path, Path)
        or _one_segment_reader(path) is None
        or path.field is None
        or path.repetition not in (1, None)
        or path.filter is not None
        or path.component is not None
        or path.subcomponent is not None
        or (path.segment == "MSH" and path.field <= 2)  # the separators themselves
    ):
        return None
    seg_name, fno, first_only = path.segment, path.field, path.repetition == 1

    def read(scope: Group) -> bool | None:
        segs = scope._nearest.get(seg_name)
        if segs is None:
            segs = scope.nearest(seg_name)
        if not segs:
            return False
        seg = segs[0]
        fields = seg.fields
        raw = fields[fno] if fno < len(fields) else ""
        if not raw:
            return False
        if '""' in raw:
            return None
        d = seg.delimiters
        if first_only and d.repetition in raw:
            raw = raw.split(d.repetition, 1)[0]
        # a character that is not a separator: some subcomponent is not empty
        return bool(raw.strip(d.repetition + d.component + d.subcomponent))

    return read


#: what a plain reader answers when the field is not one plain string: take the general way
_GENERAL = object()


def _plain_reader(path: Path | None, first_component: bool) -> Callable[[Group], Any] | None:
    """A reader of a one-segment path to a field or its first component (``OBX-14``, ``OBR-3.1``) straight
    from the raw field, without splitting it or making a Value (about half the reads of an OBX). It answers
    None when there is no such value (no segment, an empty field), the raw text (escaped text never: not
    stripped yet, maybe empty) when the value is one plain string, and :data:`_GENERAL` otherwise (another
    repetition, a subcomponent, an escape, the explicit null, several components where the whole field is
    asked). None for other paths. ``first_component``: read a whole field as its first component (``c(1)``)."""
    if (
        _one_segment_reader(path) is None
        or path is None
        or path.repetition not in (1, None)  # all repetitions of a plain field: the one
        or path.filter is not None
        or path.subcomponent is not None
        or path.component not in (None, 1)
    ):
        return None
    seg_name, fno = path.segment, path.field or 0
    first = first_component or path.component == 1
    if seg_name == "MSH" and fno <= 2:  # MSH-1 and MSH-2 are the separators themselves
        return None

    def read_plain(scope: Group) -> Any:
        segs = scope._nearest.get(seg_name)
        if segs is None:
            segs = scope.nearest(seg_name)
        if not segs:
            return None
        seg = segs[0]
        fields = seg.fields
        raw = fields[fno] if fno < len(fields) else ""
        if not raw:
            return None
        d = seg.delimiters
        if d.repetition in raw or d.subcomponent in raw or d.escape in raw:
            return _GENERAL
        if d.component in raw:
            if not first:  # the text of several components: the general way re-joins them
                return _GENERAL
            raw = raw.split(d.component, 1)[0]
        return _GENERAL if raw == '""' else raw

    return read_plain


def _plain_text_shortcut(
    path: Path | None, text_conv: Callable[[str, Any], Any] | None, general: ValueFn
) -> ValueFn | None:
    """For a converter of text alone (engine.mapping.converters.TEXT_CONVERTERS): the result straight from
    a plain field (see _plain_reader). A tracking run, a field that is not plain, or a conversion that
    fails goes the ``general`` way, which also reports the failure."""
    read_plain = _plain_reader(path, first_component=False) if text_conv is not None else None
    if read_plain is None or text_conv is None:
        return None

    def from_text(ctx: Ctx) -> list[Any]:
        state = ctx.state
        if state.track:
            return general(ctx)
        raw = read_plain(ctx.scope)
        if not raw:  # None or an empty first component
            return []
        if raw is _GENERAL:
            return general(ctx)
        try:
            r = text_conv(raw.strip(), state.cx)
        except ValueError:  # ConversionError and DateFormatError are ValueErrors
            return general(ctx)
        return [] if r is None else [r]

    assert path is not None and path.field is not None  # _plain_reader made a reader
    return _planned(from_text, TextPlan(path.segment, path.field, path.component == 1, text_conv, general))


def _plain_value_shortcut(
    path: Path | None, conv: Callable[..., Any], opts: dict[str, Any], general: ValueFn
) -> ValueFn | None:
    """For any other converter on a path to a whole field (``OBX-5``, ``OBX-3``, ``OBX-8[*]``): the Value the
    general way makes of a field of one repetition without subcomponents or escapes (``1001-1^Test^LN``),
    made without remembering it. A tracking run, another field, or a conversion that fails goes the
    ``general`` way (which also reports the failure)."""
    if _plain_reader(path, first_component=False) is None or path is None or path.component is not None:
        return None
    seg_name, fno = path.segment, path.field
    assert fno is not None  # _plain_reader accepted the path

    def from_plain(ctx: Ctx) -> list[Any]:
        state = ctx.state
        if state.track:
            return general(ctx)
        scope = ctx.scope
        segs = scope._nearest.get(seg_name)
        if segs is None:
            segs = scope.nearest(seg_name)
        if not segs:
            return []
        seg = segs[0]
        fields = seg.fields
        raw = fields[fno] if fno < len(fields) else ""
        if not raw:
            return []
        d = seg.delimiters
        if d.repetition in raw or d.subcomponent in raw or d.escape in raw or raw == '""':
            return general(ctx)
        # the components as Segment.field splits them
        comps = [(c,) for c in raw.split(d.component)] if d.component in raw else ((raw,),)
        try:
            r = conv(Value(comps, d, (seg, fno, None, None, None), seg), state.cx, opts)
        except (ConversionError, KeyError, UnmappedCode):
            return general(ctx)
        return [] if r is None else [r]

    return _planned(from_plain, PlainPlan(seg_name, fno, conv, opts, general))


def build_object(specs: list[FieldSpec], ctx: Ctx, into: dict[str, Any] | None = None) -> dict[str, Any]:
    """One FHIR object from field specs (written into ``into`` when given). Local references are left as
    PendingRef and their places noted in ``ctx.state.ref_slots``, so resolving them later touches only
    those places.

    Compiled field lists (:class:`Fields`) run their generated function (engine.mapping.codegen), which
    does what the loop below does; a tracking run takes the loop, whose closures record what they read."""
    obj: dict[str, Any] = {} if into is None else into
    if specs.__class__ is Fields and not ctx.state.track:
        return specs.builder()(ctx, obj)  # type: ignore[attr-defined]
    return interpret_object(specs, ctx, obj)


def interpret_object(specs: list[FieldSpec], ctx: Ctx, obj: dict[str, Any]) -> dict[str, Any]:
    """build_object by walking the specs and calling each one's closure."""
    slots = ctx.state.ref_slots
    for spec in specs:
        results = spec.fn(ctx)
        if not results:
            continue
        if spec.choice:
            r = results[0]
            if isinstance(r, Choice):
                for suffix, val in r.items():
                    obj[spec.element + suffix] = val
            else:
                ctx.state.warn(
                    f"{spec.element}[x] needs a typed value (as: obx-value, SN ...)", f"({spec.where})"
                )
        elif spec.array:
            current = obj.get(spec.element)
            if current is None:
                current = obj[spec.element] = []
            for r in results:
                if isinstance(r, list):
                    current.extend(r)
                elif isinstance(r, PendingRef):
                    slots.append((obj, spec.element, r, ctx.instance))
                    current.append(r)
                else:
                    current.append(r)
        else:
            r = results[0]
            if isinstance(r, PendingRef):
                slots.append((obj, spec.element, r, ctx.instance))
            obj[spec.element] = r
    return obj


def compile_mapping(
    doc: LocatedDict, name: str, file: str, terminology: Terminology, default_tz: str | None
) -> Mapping:
    return Compiler(doc, terminology, default_tz).compile(name, file)
