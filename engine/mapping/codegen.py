"""Mapping specs compiled to Python source: one generated function per list of field specs
(:func:`compile_fields`), per identity value (:func:`compile_value`) and per whole condition
(:func:`compile_condition`).

:func:`engine.mapping.spec.build_object` walks a list of :class:`~engine.mapping.spec.FieldSpec` and calls
each spec's closure; for an ORU^R01 with 20 OBX that is some 400 closure calls, each reading its segment
again, wrapping its one result in a list and being dispatched on choice/array/single. The function made
here does the same work with those decisions taken once, when the mapping loads:

* the segments the plain paths read (``OBX-11``, ``PID-8``) are looked up once per object, not per field;
* a plain field (no repetition, subcomponent, escape; see ``spec._plain_reader``) is converted in line,
  and a local reference (``ref:``) is made in line;
* ``first_of``, ``join``, ``table``, ``default``, ``when`` and lists of specs are written out from the
  plans their closures carry (``spec.FirstOfPlan`` …), each value handed on as it is made (``_emit_value``)
  instead of collected into lists; conditions become one ``and``/``or``/``not`` expression;
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
    AllPlan,
    AnyPlan,
    ConcatPlan,
    CondFn,
    Ctx,
    DefaultPlan,
    FieldSpec,
    FirstOfPlan,
    FixedPlan,
    GroupPlan,
    JoinPlan,
    NotPlan,
    PendingRef,
    PlainPlan,
    RefPlan,
    TablePlan,
    TextPlan,
    TriggerPlan,
    ValueFn,
    WhenPlan,
    text_as_is,
)

__all__ = ["compile_fields", "compile_value", "compile_condition", "Builder"]

Builder = Callable[[Ctx, dict[str, Any]], dict[str, Any]]


class _Source:
    """Lines of source and the objects they name (``k0``, ``k1`` … in the generated function's globals)."""

    def __init__(self) -> None:
        self.lines: list[str] = []
        self.names: dict[str, Any] = {}
        self._ids: dict[int, str] = {}
        self.segments: dict[str, str] = {}  # segment name -> suffix of its hoisted variables
        self._fresh = 0

    def const(self, obj: Any) -> str:
        name = self._ids.get(id(obj))
        if name is None:
            name = self._ids[id(obj)] = f"k{len(self._ids)}"
            self.names[name] = obj
        return name

    def fresh(self, stem: str) -> str:
        self._fresh += 1
        return f"{stem}{self._fresh}"

    def segment(self, seg_name: str) -> str:
        suffix = self.segments.get(seg_name)
        if suffix is None:
            suffix = self.segments[seg_name] = str(len(self.segments))
        return suffix

    def add(self, indent: int, text: str) -> None:
        self.lines.append("    " * indent + text)


#: How a consumer is told what ``r`` holds: a PendingRef just made, text known to be non-empty, or any value
#: a converter, a table or a fixed spec gave (never a PendingRef).
REF, TEXT, ANY = "ref", "text", "any"

One = Callable[[_Source, int, str], None]  # emits the use of one value ``r`` of that kind
Many = Callable[[_Source, int], None]  # emits the use of a non-empty list of values ``rs``


def _emit_value(src: _Source, ind: int, fn: Any, one: One, many: Many, general: Any = None) -> None:
    """Code evaluating the value closure ``fn``: each value it gives handed to ``one`` (or, where the
    closure itself is called, its results to ``many``) in the order the closure gives them. ``general``
    is called instead of ``fn`` where the closure is (a table's inner path falls back to the table)."""
    plan = getattr(fn, "plan", None)
    call = general or fn
    if isinstance(plan, TextPlan):
        _emit_text(src, ind, plan, one, many, call if general else plan.general)
    elif isinstance(plan, PlainPlan):
        _emit_plain(src, ind, plan, one, many, call if general else plan.general)
    elif isinstance(plan, RefPlan) and general is None:
        # PendingRef(block, scope, all, where) and its display, without the frame of its __init__
        src.add(ind, "r = new(PendingRef)")
        src.add(ind, f"r.block = {plan.block!r}")
        src.add(ind, "r.scope = scope")
        src.add(ind, f"r.all = {plan.all!r}")
        src.add(ind, f"r.where = {src.const(plan.where)}")
        src.add(ind, f"r.display = {src.const(plan.display)}")
        src.add(ind, "state.pending = True")
        one(src, ind, REF)
    elif isinstance(plan, FixedPlan) and general is None:
        src.add(ind, f"r = {src.const(plan.value)}")
        one(src, ind, ANY)
    elif isinstance(plan, ConcatPlan) and general is None:
        for part in plan.parts:
            _emit_value(src, ind, part, one, many)
    elif isinstance(plan, FirstOfPlan) and general is None:
        hit = src.fresh("hit")
        src.add(ind, f"{hit} = False")

        def one_hit(src: _Source, ind: int, kind: str) -> None:
            src.add(ind, f"{hit} = True")
            one(src, ind, kind)

        def many_hit(src: _Source, ind: int) -> None:
            src.add(ind, f"{hit} = True")
            many(src, ind)

        for n, part in enumerate(plan.parts):
            if n == 0:
                _emit_value(src, ind, part, one_hit, many_hit)
            else:
                src.add(ind, f"if not {hit}:")
                _emit_value(src, ind + 1, part, one_hit, many_hit)
    elif isinstance(plan, JoinPlan) and general is None:
        parts = src.fresh("parts")
        src.add(ind, f"{parts} = []")

        def one_part(src: _Source, ind: int, kind: str) -> None:
            if kind == TEXT:
                src.add(ind, f"{parts}.append(r)")
            else:
                src.add(ind, "if r is not None and (r or not isinstance(r, str)):")
                src.add(ind + 1, f"{parts}.append(str(r))")

        def many_parts(src: _Source, ind: int) -> None:
            src.add(ind, "for r in rs:")
            one_part(src, ind + 1, ANY)

        for part in plan.parts:
            _emit_value(src, ind, part, one_part, many_parts)
        src.add(ind, f"if {parts}:")
        src.add(ind + 1, f"r = {src.const(plan.sep)}.join({parts})")
        one(src, ind + 1, ANY)
    elif isinstance(plan, TablePlan) and general is None:
        lookup, unmapped = src.const(plan.lookup), src.const(plan.unmapped)

        def one_code(src: _Source, ind: int, kind: str) -> None:
            if kind == TEXT:
                src.add(ind, "code = r")
            else:
                src.add(
                    ind, "code = r if isinstance(r, str) else (r.c(1) if isinstance(r, Value) else str(r))"
                )
            src.add(ind, "try:")
            src.add(ind + 1, f"r = {lookup}(code)")
            src.add(ind, "except KeyError:")
            src.add(ind + 1, f"raise {unmapped}(code) from None")
            src.add(ind, "if r is not None:")
            one(src, ind + 1, ANY)

        # where the inner path takes its general way, the table closure is called: its results are mapped
        _emit_value(src, ind, plan.inner, one_code, many, general=fn)
    elif isinstance(plan, DefaultPlan) and general is None:
        hit = src.fresh("hit")
        src.add(ind, f"{hit} = False")

        def one_hit_d(src: _Source, ind: int, kind: str) -> None:
            src.add(ind, f"{hit} = True")
            one(src, ind, kind)

        def many_hit_d(src: _Source, ind: int) -> None:
            src.add(ind, f"{hit} = True")
            many(src, ind)

        _emit_value(src, ind, plan.inner, one_hit_d, many_hit_d)
        src.add(ind, f"if not {hit}:")
        src.add(ind + 1, f"r = {src.const(plan.default)}")
        one(src, ind + 1, ANY)
    elif isinstance(plan, WhenPlan) and general is None:
        src.add(ind, f"if {src.const(plan.cond)}(ctx):")
        _emit_value(src, ind + 1, plan.inner, one, many)
    else:
        src.add(ind, f"rs = {src.const(call)}(ctx)")
        src.add(ind, "if rs:")
        many(src, ind + 1)


def _emit_field_read(src: _Source, ind: int, seg: str, fno: int) -> str:
    """``raw`` := the raw text of the field (empty when the segment or the field is absent)."""
    s = src.segment(seg)
    src.add(ind, f"raw = f{s}[{fno}] if n{s} > {fno} else ''")
    return s


def _emit_general(src: _Source, ind: int, fn: Any, many: Many) -> None:
    src.add(ind, f"rs = {src.const(fn)}(ctx)")
    src.add(ind, "if rs:")
    many(src, ind + 1)


def _emit_text(src: _Source, ind: int, plan: TextPlan, one: One, many: Many, general: Any) -> None:
    """``spec._plain_text_shortcut`` in line: a plain field through a converter of text alone."""
    s = _emit_field_read(src, ind, plan.segment, plan.field)
    src.add(ind, "if raw:")
    special = f"rep{s} in raw or sub{s} in raw or esc{s} in raw"
    if not plan.first:  # a whole field of several components: the general way re-joins them
        special += f" or comp{s} in raw"
    src.add(ind + 1, f"if {special}:")
    _emit_general(src, ind + 2, general, many)
    src.add(ind + 1, "else:")
    ind += 2
    if plan.first:
        src.add(ind, f"if comp{s} in raw:")
        src.add(ind + 1, f"raw = raw.split(comp{s}, 1)[0]")
    src.add(ind, "if raw == '\"\"':")
    _emit_general(src, ind + 1, general, many)
    src.add(ind, "elif raw:")
    ind += 1
    if plan.convert is text_as_is:  # the text itself (string, code): nothing can fail
        src.add(ind, "r = raw.strip()")
        src.add(ind, "if r:")
        one(src, ind + 1, TEXT)
        return
    src.add(ind, "try:")
    src.add(ind + 1, f"r = {src.const(plan.convert)}(raw.strip(), cx)")
    src.add(ind, "except ValueError:")  # ConversionError and DateFormatError are ValueErrors
    _emit_general(src, ind + 1, general, many)
    src.add(ind, "else:")
    src.add(ind + 1, "if r is not None:")
    one(src, ind + 2, ANY)


def _emit_plain(src: _Source, ind: int, plan: PlainPlan, one: One, many: Many, general: Any) -> None:
    """``spec._plain_value_shortcut`` in line: a whole field of one repetition as a Value, converted."""
    s = _emit_field_read(src, ind, plan.segment, plan.field)
    src.add(ind, "if raw:")
    src.add(ind + 1, f"if rep{s} in raw or sub{s} in raw or esc{s} in raw or raw == '\"\"':")
    _emit_general(src, ind + 2, general, many)
    src.add(ind + 1, "else:")
    ind += 2
    src.add(ind, "try:")
    src.add(
        ind + 1,
        f"r = {src.const(plan.convert)}(Value([(c,) for c in raw.split(comp{s})] if comp{s} in raw else ((raw,),), "
        f"d{s}, (g{s}, {plan.field}, None, None, None), g{s}), cx, {src.const(plan.options)})",
    )
    src.add(ind, "except (ConversionError, KeyError, UnmappedCode):")
    _emit_general(src, ind + 1, general, many)
    src.add(ind, "else:")
    src.add(ind + 1, "if r is not None:")
    one(src, ind + 2, ANY)


def _emit_spec(src: _Source, ind: int, spec: FieldSpec) -> None:
    """One field: its value closure's code, each value put where build_object puts it."""
    elem = repr(spec.element)
    if not spec.array and _may_give_several(spec.fn):
        # one value wanted of what may be several: build_object takes the first of the closure's list
        _emit_general(src, ind, spec.fn, lambda src, ind: _use_results(src, ind, spec))
        return

    def one(src: _Source, ind: int, kind: str) -> None:
        if spec.choice:
            _emit_choice(src, ind, spec)
        elif spec.array:
            src.add(ind, f"cur = obj.get({elem})")
            src.add(ind, "if cur is None:")
            src.add(ind + 1, f"cur = obj[{elem}] = []")
            if kind == REF:
                src.add(ind, f"slots.append((obj, {elem}, r, ctx.instance))")
                src.add(ind, "cur.append(r)")
            elif kind == TEXT:
                src.add(ind, "cur.append(r)")
            else:
                src.add(ind, "if isinstance(r, list):")
                src.add(ind + 1, "cur.extend(r)")
                src.add(ind, "else:")
                src.add(ind + 1, "cur.append(r)")
        else:
            if kind == REF:
                src.add(ind, f"slots.append((obj, {elem}, r, ctx.instance))")
            src.add(ind, f"obj[{elem}] = r")

    _emit_value(src, ind, spec.fn, one, lambda src, ind: _use_results(src, ind, spec))


def _may_give_several(fn: Any) -> bool:
    """Whether the code of ``fn`` may hand ``one`` more than one value (a list of specs in it)."""
    plan = getattr(fn, "plan", None)
    if isinstance(plan, ConcatPlan):
        return True
    if isinstance(plan, FirstOfPlan):
        return any(_may_give_several(p) for p in plan.parts)
    if isinstance(plan, TablePlan | DefaultPlan | WhenPlan):
        return _may_give_several(plan.inner)
    return False


def _use_results(src: _Source, ind: int, spec: FieldSpec) -> None:
    """What build_object does with a spec's results ``rs`` (a non-empty list)."""
    elem = repr(spec.element)
    if spec.choice:
        src.add(ind, "r = rs[0]")
        _emit_choice(src, ind, spec)
    elif spec.array:
        src.add(ind, f"cur = obj.get({elem})")
        src.add(ind, "if cur is None:")
        src.add(ind + 1, f"cur = obj[{elem}] = []")
        src.add(ind, "for r in rs:")
        src.add(ind + 1, "if isinstance(r, list):")
        src.add(ind + 2, "cur.extend(r)")
        src.add(ind + 1, "elif isinstance(r, PendingRef):")
        src.add(ind + 2, f"slots.append((obj, {elem}, r, ctx.instance))")
        src.add(ind + 2, "cur.append(r)")
        src.add(ind + 1, "else:")
        src.add(ind + 2, "cur.append(r)")
    else:
        src.add(ind, "r = rs[0]")
        src.add(ind, "if isinstance(r, PendingRef):")
        src.add(ind + 1, f"slots.append((obj, {elem}, r, ctx.instance))")
        src.add(ind, f"obj[{elem}] = r")


def _emit_choice(src: _Source, ind: int, spec: FieldSpec) -> None:
    warning = src.const((f"{spec.element}[x] needs a typed value (as: obx-value, SN ...)", f"({spec.where})"))
    src.add(ind, "if isinstance(r, Choice):")
    src.add(ind + 1, "for suffix, val in r.items():")
    src.add(ind + 2, f"obj[{spec.element!r} + suffix] = val")
    src.add(ind, "else:")
    src.add(ind + 1, f"state.warn(*{warning})")


def compile_fields(specs: list[FieldSpec], label: str) -> Builder:
    """The function ``build(ctx, obj)`` that fills ``obj`` as ``build_object(specs, ctx, into=obj)``
    does on a run that does not track what it reads. ``label`` names the source in tracebacks."""
    body = _Source()
    for spec in specs:
        body.add(1, f"# {spec.element}{'[x]' if spec.choice else ''} ({spec.where})")
        _emit_spec(body, 1, spec)
    body.add(1, "return obj")
    return _function("build(ctx, obj)", body, label)  # type: ignore[return-value]


def compile_value(fn: ValueFn, label: str) -> ValueFn:
    """A function giving what the value closure ``fn`` gives (a list), for a run that does not track."""
    body = _Source()
    body.add(1, "out = []")
    _emit_value(
        body,
        1,
        fn,
        lambda src, ind, kind: src.add(ind, "out.append(r)"),
        lambda src, ind: src.add(ind, "out.extend(rs)"),
    )
    body.add(1, "return out")
    return _function("value(ctx)", body, label)  # type: ignore[return-value]


def compile_condition(cond: CondFn, label: str) -> CondFn:
    """One function asking what the condition ``cond`` asks, its not/all/any written as expressions."""
    body = _Source()
    body.add(1, f"return {_condition(body, cond)}")
    return _function("when(ctx)", body, label)  # type: ignore[return-value]


def _condition(src: _Source, cond: CondFn) -> str:
    plan = getattr(cond, "plan", None)
    if isinstance(plan, NotPlan):
        return f"not {_condition(src, plan.inner)}"
    if isinstance(plan, AllPlan):
        return "(" + " and ".join(_condition(src, p) for p in plan.parts) + ")" if plan.parts else "True"
    if isinstance(plan, AnyPlan):
        return "(" + " or ".join(_condition(src, p) for p in plan.parts) + ")" if plan.parts else "False"
    if isinstance(plan, GroupPlan):
        return f"(scope.name in {src.const(plan.names)})"
    if isinstance(plan, TriggerPlan):
        return f"(state.message.trigger_event in {src.const(plan.events)})"
    return f"{src.const(cond)}(ctx)"


def _function(signature: str, body: _Source, label: str) -> Callable[..., Any]:
    head = _Source()
    head.add(0, f"def {signature}:")
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
    source = "\n".join(head.lines + body.lines + [""])
    namespace: dict[str, Any] = {
        "PendingRef": PendingRef,
        "new": object.__new__,
        "Choice": Choice,
        "Value": Value,
        "ConversionError": ConversionError,
        "UnmappedCode": UnmappedCode,
        **body.names,
    }
    exec(compile(source, f"<mapping {label}>", "exec"), namespace)  # noqa: S102 - our own generated source
    made = namespace[signature.split("(")[0]]
    made.source = source
    return made  # type: ignore[no-any-return]
