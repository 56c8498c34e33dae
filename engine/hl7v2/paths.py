"""Field paths into a grouped message: ``PID-3``, ``PID-3[*].1``, ``PID-3[?5=MR]``, ``OBX-5``,
``NTE[*]-3``, ``PID-5.1.1``.

    path   := SEG [ '[' occurrence ']' ] [ '-' FIELD [ '[' repetition ']' ] [ '.' COMP [ '.' SUB ] ] ]
    occurrence := N | '*' | '**'      which segment among those found (default 1); '*' all of the
                                      nearest level, '**' all in the scope's whole subtree; a filter
                                      may follow: OBX[**?2=ED] keeps the OBX whose OBX-2 is ED
    repetition := N | '*' | '?' C '=' V   which repetitions (default 1; ?5=MR keeps those whose
                                          component 5 is MR; ?5=MR|PI accepts either)

A segment is looked up from a *scope* group the way the standard's structure reads: in the group, else in
its parent, and so on up to the message (so from an OBSERVATION group ``OBR-3`` is the OBR of *its*
ORDER_OBSERVATION, and ``MSH-10`` is found from anywhere). Evaluation returns :class:`Value` objects, one
per selected repetition, each knowing its location (``OBX[3]-5``) for error messages.
"""

from __future__ import annotations

import re
from collections.abc import Sequence
from dataclasses import dataclass
from functools import lru_cache
from typing import Any

from engine.hl7v2.escape import Delimiters
from engine.hl7v2.message import Segment, leaf
from engine.hl7v2.structure import Group

__all__ = ["Path", "Value", "compile_path", "PathSyntaxError"]


class PathSyntaxError(ValueError):
    pass


class Value:
    """One repetition (or a component of one, narrowed by the path): components of subcomponents."""

    __slots__ = ("comps", "d", "_loc", "segment")

    def __init__(
        self,
        comps: Sequence[Sequence[str]],
        d: Delimiters,
        location: str | tuple[Any, ...],
        segment: Segment | None = None,
    ):
        self.comps = comps
        self.d = d
        self._loc = location  # a string, or (segment, field, repetition|None, component, sub) made on demand
        self.segment = segment

    @property
    def location(self) -> str:
        """Where the value sits, as messages name it: ``OBX[3]-5``, ``PID-3[2].4.1``."""
        loc = self._loc
        if isinstance(loc, str):
            return loc
        seg, fno, rep, comp, sub = loc
        text = f"{seg.location}-{fno}" + (f"[{rep}]" if rep else "")
        if comp:
            text += f".{comp}" + (f".{sub}" if sub else "")
        self._loc = text
        return text

    def __repr__(self) -> str:
        return f"<Value {self.location} {self.comps!r}>"

    def __bool__(self) -> bool:
        for comp in self.comps:
            for s in comp:
                if s and s != '""':
                    return True
        return False

    @property
    def is_null(self) -> bool:
        return len(self.comps) == 1 and len(self.comps[0]) == 1 and self.comps[0][0] == '""'

    def c(self, i: int = 1, j: int = 1) -> str:
        """Component i, subcomponent j (1-based), decoded; '' when absent."""
        comps = self.comps
        if i > len(comps):
            return ""
        subs = comps[i - 1]
        if j > len(subs):
            return ""
        raw = subs[j - 1]  # leaf() inlined for its usual case: the most called function of a mapping
        if not raw:
            return ""
        if raw == '""' or self.d.escape in raw:
            return leaf(raw, self.d)
        return raw.strip()

    def texts(self, n: int) -> list[str]:
        """Components 1..n (their first subcomponents), decoded: ``[c(1), ..., c(n)]`` in one call, for the
        converters that read most of a datatype's components (CWE reads nine)."""
        d = self.d
        out = []
        for subs in self.comps[:n]:
            raw = subs[0] if subs else ""
            if not raw:
                out.append("")
            elif raw == '""' or d.escape in raw:
                out.append(leaf(raw, d))
            else:
                out.append(raw.strip())
        if len(out) < n:
            out.extend([""] * (n - len(out)))
        return out

    def component(self, i: int) -> Value:
        """Component i as a value of its own (its subcomponents become components): CX-4 as an HD."""
        subs = self.comps[i - 1] if i <= len(self.comps) else []
        return Value([(s,) for s in subs], self.d, f"{self.location}.{i}", self.segment)

    def text(self) -> str:
        """The value as plain text: one component as is, several re-joined with the component separator."""
        if len(self.comps) == 1:
            subs = self.comps[0]
            if len(subs) == 1:
                return leaf(subs[0], self.d)
            return self.d.subcomponent.join(leaf(s, self.d) for s in subs).strip(self.d.subcomponent)
        d = self.d
        parts = [d.subcomponent.join(leaf(s, d) for s in comp) for comp in self.comps]
        while parts and not parts[-1]:
            parts.pop()
        return d.component.join(parts)


_PATH = re.compile(
    r"^(?P<seg>[A-Z][A-Z0-9]{2})(?:\[(?P<occ>\d+|\*\*|\*)?(?:\?(?P<sfield>\d+)=(?P<saccept>[^\]]*))?\])?"
    r"(?:-(?P<field>\d+)(?:\[(?P<rep>\d+|\*|\?\d+=[^\]]*)\])?(?:\.(?P<comp>\d+)(?:\.(?P<sub>\d+))?)?)?$"
)


@dataclass(frozen=True)
class Path:
    text: str
    segment: str
    occurrence: int | None  # None = all
    subtree: bool  # '**': every segment of that name below the scope
    segment_filter: tuple[int, frozenset[str]] | None  # OBX[**?2=ED]: only segments whose field 2 is ED
    field: int | None  # None = the segment itself (for conditions such as "SPM exists")
    repetition: int | None  # None = all (also with a filter)
    filter: tuple[int, frozenset[str]] | None
    component: int | None
    subcomponent: int | None

    @property
    def many(self) -> bool:
        return self.occurrence is None or self.repetition is None

    def segments(self, scope: Group) -> list[Segment]:
        if self.subtree:
            found = scope.find_all(self.segment)
        else:
            found = scope._nearest.get(self.segment)
            if found is None:
                found = scope.nearest(self.segment)
        if self.segment_filter is not None:
            fno, accepted = self.segment_filter
            found = [s for s in found if s.get(fno) in accepted]
        if self.occurrence is None:
            return found
        return found[self.occurrence - 1 : self.occurrence]

    def values(self, scope: Group) -> list[Value]:
        cache = scope._values
        key = id(self)  # compiled paths live as long as the process (compile_path caches them)
        found = cache.get(key)
        if found is not None:
            return found
        segs = self.segments(scope)
        if len(segs) == 1:  # the usual case: one segment, its values shared by every scope that reads it
            seg = segs[0]
            out = seg._values.get(key)
            if out is None:
                out = seg._values[key] = self.values_in(seg)
            cache[key] = out
            return out
        out = []
        fno = self.field
        for seg in segs:
            if fno is not None and (fno >= len(seg.fields) or not seg.fields[fno]):
                continue  # an empty field has no values (OBX[**]-18[*] of twenty OBX: mostly none)
            found = seg._values.get(key)  # the same segment is read from many scopes (MSH, OBR, PID)
            if found is None:
                found = seg._values[key] = self.values_in(seg)
            out.extend(found)
        cache[key] = out
        return out

    def values_in(self, seg: Segment) -> list[Value]:
        if self.field is None:
            return [Value(((seg.name,),), seg.delimiters, seg.location, seg)]
        reps = seg.field(self.field)
        if not reps:
            return []
        comp = self.component
        if self.repetition == 1 and comp is None and self.filter is None:  # the usual path: SEG-n
            return [
                Value(
                    reps[0], seg.delimiters, (seg, self.field, 1 if len(reps) > 1 else None, None, None), seg
                )
            ]
        if self.repetition is not None:
            if self.repetition > len(reps):
                return []
            chosen = [(self.repetition, reps[self.repetition - 1])]
        else:
            chosen = list(enumerate(reps, 1))
        out: list[Value] = []
        d = seg.delimiters
        fno, sub, many = self.field, self.subcomponent, len(reps) > 1
        for n, rep in chosen:
            if self.filter is not None:
                ci, accepted = self.filter
                actual = leaf(rep[ci - 1][0], d) if ci <= len(rep) else ""
                if actual not in accepted:
                    continue
            if comp is None:
                out.append(Value(rep, d, (seg, fno, n if many else None, None, None), seg))
                continue
            if comp > len(rep):
                continue
            subs = rep[comp - 1]
            if sub is None:
                out.append(Value([(s,) for s in subs], d, (seg, fno, n if many else None, comp, None), seg))
            elif sub <= len(subs):
                out.append(Value(((subs[sub - 1],),), d, (seg, fno, n if many else None, comp, sub), seg))
        return out

    def first(self, scope: Group) -> Value | None:
        for v in self.values(scope):
            if v:
                return v
        return None


@lru_cache(maxsize=4096)
def compile_path(text: str) -> Path:
    m = _PATH.match(text.strip())
    if not m:
        raise PathSyntaxError(
            f"invalid field path {text!r}: expected SEG[-FIELD[.COMP[.SUB]]], e.g. PID-3[*].1 or OBX-5"
        )
    occ = m["occ"]
    if occ is None and m["sfield"]:
        occ = "*"
    rep = m["rep"]
    filt = None
    repetition: int | None = 1
    if rep == "*":
        repetition = None
    elif rep and rep.startswith("?"):
        comp, _, accepted = rep[1:].partition("=")
        filt = (int(comp), frozenset(accepted.split("|")))
        repetition = None
    elif rep:
        repetition = int(rep)
    return Path(
        text=text,
        segment=m["seg"],
        occurrence=None if occ in ("*", "**") else int(occ or 1),
        subtree=occ == "**",
        segment_filter=(int(m["sfield"]), frozenset(m["saccept"].split("|"))) if m["sfield"] else None,
        field=int(m["field"]) if m["field"] else None,
        repetition=repetition,
        filter=filt,
        component=int(m["comp"]) if m["comp"] else None,
        subcomponent=int(m["sub"]) if m["sub"] else None,
    )
