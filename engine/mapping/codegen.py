"""Field lists compiled to Python source: one generated function per list of field specs.

:func:`engine.mapping.spec.build_object` walks a list of :class:`~engine.mapping.spec.FieldSpec` and calls
each spec's closure; for an ORU^R01 with 20 OBX that is some 400 closure calls, each reading its segment
again, wrapping its one result in a list and being dispatched on choice/array/single. The function made
here does the same work with those decisions taken once, when the mapping loads:

* the segments the plain paths read (``OBX-11``, ``PID-8``) are looked up once per object, not per field;
* a plain field (no repetition, subcomponent, escape; see ``spec._plain_reader``) is converted in line,
  and a local reference (``ref:``) is made in line;
* anything else calls the spec's own closure, as the interpreter does, so there is one definition of what
  a value spec means: the generated code only inlines the shortcuts the closures already take, and falls
  back to the closure (which reports warnings and errors with the mapping's ``file:line``) whenever the
  field is not plain or a conversion fails.

The generated source is compiled with a filename naming the mapping file and lines of the fields
(``<mapping mappings/hl7v2/oru_r01.yaml:66>``); each field's code starts with a comment giving its element
and ``file:line``, and ``source`` of the returned function keeps the text for debugging.

A tracking run (``track=True``, which records what was read) keeps the interpreter: the shortcuts here
record nothing.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from engine.hl7v2.paths import Value
from engine.mapping.converters import Choice, ConversionError, UnmappedCode
from engine.mapping.spec import (
    ConcatPlan,
    Ctx,
    FieldSpec,
    FixedPlan,
    PendingRef,
    PlainPlan,
    RefPlan,
    TextPlan,
    text_as_is,
)

__all__ = ["compile_fields", "Builder"]

Builder = Callable[[Ctx, dict[str, Any]], dict[str, Any]]


class _Source:
    """Lines of source and the objects they name (``k0``, ``k1`` … in the generated function's globals)."""

    def __init__(self) -> None:
        self.lines: list[str] = []
        self.names: dict[str, Any] = {}
        self._ids: dict[int, str] = {}
        self.segments: dict[str, str] = {}  # segment name -> suffix of its hoisted variables

    def const(self, obj: Any) -> str:
        name = self._ids.get(id(obj))
        if name is None:
            name = self._ids[id(obj)] = f"k{len(self._ids)}"
            self.names[name] = obj
        return name

    def segment(self, seg_name: str) -> str:
        suffix = self.segments.get(seg_name)
        if suffix is None:
            suffix = self.segments[seg_name] = str(len(self.segments))
        return suffix

    def add(self, indent: int, text: str) -> None:
        self.lines.append("    " * indent + text)


def _emit_results(src: _Source, ind: int, spec: FieldSpec, rs: str) -> None:
    """What build_object does with a spec's results ``rs`` (a non-empty list)."""
    elem = repr(spec.element)
    if spec.choice:
        src.add(ind, f"r = {rs}[0]")
        _emit_choice(src, ind, spec)
    elif spec.array:
        src.add(ind, f"cur = obj.get({elem})")
        src.add(ind, "if cur is None:")
        src.add(ind + 1, f"cur = obj[{elem}] = []")
        src.add(ind, f"for r in {rs}:")
        src.add(ind + 1, "if isinstance(r, list):")
        src.add(ind + 2, "cur.extend(r)")
        src.add(ind + 1, "elif isinstance(r, PendingRef):")
        src.add(ind + 2, f"slots.append((obj, {elem}, r, ctx.instance))")
        src.add(ind + 2, "cur.append(r)")
        src.add(ind + 1, "else:")
        src.add(ind + 2, "cur.append(r)")
    else:
        src.add(ind, f"r = {rs}[0]")
        src.add(ind, "if isinstance(r, PendingRef):")
        src.add(ind + 1, f"slots.append((obj, {elem}, r, ctx.instance))")
        src.add(ind, f"obj[{elem}] = r")


def _emit_one(src: _Source, ind: int, spec: FieldSpec) -> None:
    """build_object's handling of one converted value ``r`` (never a PendingRef: converters make none)."""
    elem = repr(spec.element)
    if spec.choice:
        _emit_choice(src, ind, spec)
    elif spec.array:
        src.add(ind, f"cur = obj.get({elem})")
        src.add(ind, "if cur is None:")
        src.add(ind + 1, f"cur = obj[{elem}] = []")
        src.add(ind, "if isinstance(r, list):")
        src.add(ind + 1, "cur.extend(r)")
        src.add(ind, "else:")
        src.add(ind + 1, "cur.append(r)")
    else:
        src.add(ind, f"obj[{elem}] = r")


def _emit_choice(src: _Source, ind: int, spec: FieldSpec) -> None:
    warning = src.const((f"{spec.element}[x] needs a typed value (as: obx-value, SN ...)", f"({spec.where})"))
    src.add(ind, "if isinstance(r, Choice):")
    src.add(ind + 1, "for suffix, val in r.items():")
    src.add(ind + 2, f"obj[{spec.element!r} + suffix] = val")
    src.add(ind, "else:")
    src.add(ind + 1, f"state.warn(*{warning})")


def _emit_general(src: _Source, ind: int, spec: FieldSpec, fn: Any) -> None:
    src.add(ind, f"rs = {src.const(fn)}(ctx)")
    src.add(ind, "if rs:")
    _emit_results(src, ind + 1, spec, "rs")


def _emit_field_read(src: _Source, ind: int, seg: str, fno: int) -> str:
    """``raw`` := the raw text of the field (empty when the segment or the field is absent)."""
    s = src.segment(seg)
    src.add(ind, f"raw = f{s}[{fno}] if n{s} > {fno} else ''")
    return s


def _emit_text(src: _Source, ind: int, spec: FieldSpec, plan: TextPlan) -> None:
    """``spec._plain_text_shortcut`` in line: a plain field through a converter of text alone."""
    s = _emit_field_read(src, ind, plan.segment, plan.field)
    general = src.const(plan.general)
    src.add(ind, "if raw:")
    special = f"rep{s} in raw or sub{s} in raw or esc{s} in raw"
    if not plan.first:  # a whole field of several components: the general way re-joins them
        special += f" or comp{s} in raw"
    src.add(ind + 1, f"if {special}:")
    _emit_general(src, ind + 2, spec, plan.general)
    src.add(ind + 1, "else:")
    ind += 2
    if plan.first:
        src.add(ind, f"if comp{s} in raw:")
        src.add(ind + 1, f"raw = raw.split(comp{s}, 1)[0]")
    src.add(ind, "if raw == '\"\"':")
    _emit_general(src, ind + 1, spec, plan.general)
    src.add(ind, "elif raw:")
    ind += 1
    if plan.convert is text_as_is:  # the text itself (string, code): nothing can fail
        src.add(ind, "r = raw.strip()")
        src.add(ind, "if r:")
        _emit_one(src, ind + 1, spec)
        return
    src.add(ind, "try:")
    src.add(ind + 1, f"r = {src.const(plan.convert)}(raw.strip(), cx)")
    src.add(ind, "except ValueError:")  # ConversionError and DateFormatError are ValueErrors
    src.add(ind + 1, f"rs = {general}(ctx)")
    src.add(ind + 1, "if rs:")
    _emit_results(src, ind + 2, spec, "rs")
    src.add(ind, "else:")
    src.add(ind + 1, "if r is not None:")
    _emit_one(src, ind + 2, spec)


def _emit_plain(src: _Source, ind: int, spec: FieldSpec, plan: PlainPlan) -> None:
    """``spec._plain_value_shortcut`` in line: a plain whole field as a one-string Value, converted."""
    s = _emit_field_read(src, ind, plan.segment, plan.field)
    src.add(ind, "if raw:")
    src.add(
        ind + 1, f"if rep{s} in raw or sub{s} in raw or esc{s} in raw or comp{s} in raw or raw == '\"\"':"
    )
    _emit_general(src, ind + 2, spec, plan.general)
    src.add(ind + 1, "else:")
    ind += 2
    src.add(ind, "try:")
    src.add(
        ind + 1,
        f"r = {src.const(plan.convert)}(Value(((raw,),), d{s}, (g{s}, {plan.field}, None, None, None), g{s}), "
        f"cx, {src.const(plan.options)})",
    )
    src.add(ind, "except (ConversionError, KeyError, UnmappedCode):")
    src.add(ind + 1, f"rs = {src.const(plan.general)}(ctx)")
    src.add(ind + 1, "if rs:")
    _emit_results(src, ind + 2, spec, "rs")
    src.add(ind, "else:")
    src.add(ind + 1, "if r is not None:")
    _emit_one(src, ind + 2, spec)


def _emit_ref(src: _Source, ind: int, spec: FieldSpec, plan: RefPlan) -> None:
    """The ``ref:`` closure and build_object's handling of its PendingRef, in line."""
    elem = repr(spec.element)
    src.add(ind, f"r = PendingRef({plan.block!r}, scope, {plan.all!r}, {src.const(plan.where)})")
    src.add(ind, f"r.display = {src.const(plan.display)}")
    src.add(ind, "state.pending = True")
    src.add(ind, f"slots.append((obj, {elem}, r, ctx.instance))")
    if spec.array:
        src.add(ind, f"cur = obj.get({elem})")
        src.add(ind, "if cur is None:")
        src.add(ind + 1, f"cur = obj[{elem}] = []")
        src.add(ind, "cur.append(r)")
    else:
        src.add(ind, f"obj[{elem}] = r")


def _emit_fixed(src: _Source, ind: int, spec: FieldSpec, plan: FixedPlan) -> None:
    value = plan.value
    src.add(ind, f"r = {src.const(value)}")
    _emit_one(src, ind, spec)


def _emit_spec(src: _Source, ind: int, spec: FieldSpec, fn: Any) -> None:
    plan = getattr(fn, "plan", None)
    if isinstance(plan, TextPlan):
        _emit_text(src, ind, spec, plan)
    elif isinstance(plan, PlainPlan):
        _emit_plain(src, ind, spec, plan)
    elif isinstance(plan, RefPlan) and not spec.choice:
        _emit_ref(src, ind, spec, plan)
    elif isinstance(plan, FixedPlan) and not isinstance(plan.value, PendingRef):
        _emit_fixed(src, ind, spec, plan)
    elif isinstance(plan, ConcatPlan) and spec.array:
        # the parts' values appended in turn: what appending their concatenation does
        for part in plan.parts:
            _emit_spec(src, ind, spec, part)
    else:
        _emit_general(src, ind, spec, fn)


def compile_fields(specs: list[FieldSpec], label: str) -> Builder:
    """The function ``build(ctx, obj)`` that fills ``obj`` as ``build_object(specs, ctx, into=obj)``
    does on a run that does not track what it reads. ``label`` names the source in tracebacks."""
    body = _Source()
    for spec in specs:
        body.add(1, f"# {spec.element}{'[x]' if spec.choice else ''} ({spec.where})")
        _emit_spec(body, 1, spec, spec.fn)
    head = _Source()
    head.add(0, "def build(ctx, obj):")
    head.add(1, "state = ctx.state")
    head.add(1, "scope = ctx.scope")
    head.add(1, "cx = state.cx")
    head.add(1, "slots = state.ref_slots")
    for seg, s in body.segments.items():  # each segment the plain paths read: looked up once
        head.add(1, f"segs = scope._nearest.get({seg!r})")
        head.add(1, "if segs is None:")
        head.add(2, f"segs = scope.nearest({seg!r})")
        head.add(1, "if segs:")
        head.add(2, f"g{s} = segs[0]")
        head.add(2, f"f{s} = g{s}.fields")
        head.add(2, f"n{s} = len(f{s})")
        head.add(2, f"d{s} = g{s}.delimiters")
        head.add(
            2,
            f"rep{s}, sub{s}, esc{s}, comp{s} = d{s}.repetition, d{s}.subcomponent, d{s}.escape, d{s}.component",
        )
        head.add(1, "else:")
        head.add(2, f"n{s} = 0")
    source = "\n".join(head.lines + body.lines + ["    return obj", ""])
    namespace: dict[str, Any] = {
        "PendingRef": PendingRef,
        "Choice": Choice,
        "Value": Value,
        "ConversionError": ConversionError,
        "UnmappedCode": UnmappedCode,
        **body.names,
    }
    exec(compile(source, f"<mapping {label}>", "exec"), namespace)  # noqa: S102 - our own generated source
    build = namespace["build"]
    build.source = source
    return build  # type: ignore[no-any-return]
