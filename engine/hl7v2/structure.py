"""Message structures (HL7 v2 abstract message syntax): which segment belongs to which group.

``ORU_R01`` groups OBX under the OBR of its ORDER_OBSERVATION, so a mapping never has to guess which OBX
belongs to which OBR (the data loss behind FHIR-Converter #325/#605 and LinuxForHealth #533).

The definitions in ``structures.json`` were derived offline from hl7apy's structure tables
(``python -m engine.hl7v2.structure --generate``); hl7apy is not imported at run time. Each node is
``[name, min, max, children?]`` (max -1 = unbounded; children only for groups).

Grouping is greedy and lenient, like receivers in the field must be: a segment the structure does not
place where it appears (Z segments, segments out of order) is kept in the group being read, never dropped.
"""

from __future__ import annotations

import json
import sys
from dataclasses import dataclass, field
from functools import lru_cache
from pathlib import Path
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from engine.hl7v2.message import Message, Segment

__all__ = ["Group", "group_message", "structure_for", "structure_problems", "EVENT_STRUCTURES", "VERSIONS"]

_DATA = Path(__file__).with_name("structures.json")

#: versions whose tables were generated; a message's MSH-12 uses the nearest version not above it
VERSIONS = ("2.3", "2.3.1", "2.4", "2.5", "2.5.1", "2.6", "2.7", "2.8")

#: Table 0354 (message structure) for the trigger events Conduit maps, when MSH-9.3 is absent (v2.3)
#: or names a structure the version does not define; candidates are tried in order.
EVENT_STRUCTURES: dict[str, tuple[str, ...]] = {
    **{f"ADT^{e}": ("ADT_A01",) for e in ("A01", "A04", "A08", "A13")},
    "ADT^A02": ("ADT_A02",),
    "ADT^A03": ("ADT_A03",),
    **{f"ADT^{e}": ("ADT_A05", "ADT_A01") for e in ("A05", "A14", "A28", "A31")},
    **{f"ADT^{e}": ("ADT_A06",) for e in ("A06", "A07")},
    **{f"ADT^{e}": ("ADT_A09", "ADT_A21") for e in ("A09", "A10", "A11", "A12")},
    **{f"ADT^{e}": ("ADT_A39",) for e in ("A34", "A35", "A36", "A39", "A40", "A41", "A42")},
    "ADT^A47": ("ADT_A30", "ADT_A43"),
    "ORM^O01": ("ORM_O01",),
    "OML^O21": ("OML_O21",),
    "OML^O33": ("OML_O33",),
    "OMI^O23": ("OMI_O23",),
    "ORU^R01": ("ORU_R01",),
    "OUL^R22": ("OUL_R22",),
    **{f"SIU^S{n}": ("SIU_S12",) for n in range(12, 27)},
    **{f"MDM^T{n:02d}": ("MDM_T02",) for n in (2, 4, 6, 8, 10)},
    **{f"MDM^T{n:02d}": ("MDM_T01",) for n in (1, 3, 5, 7, 9, 11)},
    "VXU^V04": ("VXU_V04",),
}

#: structures generated into structures.json
GENERATED = sorted(
    {s for names in EVENT_STRUCTURES.values() for s in names} | {"ACK", "ADT_A21", "ADT_A43", "ADT_A30"}
)


@dataclass(eq=False)
class Group:
    """One group instance (or the whole message). ``children`` holds segments and groups in message
    order; ``extra`` marks segments the structure did not expect here (kept, not dropped)."""

    name: str
    parent: Group | None = None
    children: list[Any] = field(default_factory=list)  # Segment | Group
    extra: list[Segment] = field(default_factory=list)
    missing: list[str] = field(default_factory=list)  # required children (segments, groups) not found
    # lookups are asked again and again by a mapping (every OBX asks for PID-3): remembered per group
    _nearest: dict[str, list[Segment]] = field(default_factory=dict, repr=False)
    _all: dict[str, list[Segment]] = field(default_factory=dict, repr=False)
    _values: dict[int, list[Any]] = field(default_factory=dict, repr=False)  # engine.hl7v2.paths
    _found: dict[tuple[str, str | None], list[Segment]] = field(default_factory=dict, repr=False)
    _seen: dict[tuple[str, str], list[Segment]] = field(default_factory=dict, repr=False)  # see _upward

    def __repr__(self) -> str:
        return f"<Group {self.path}>"

    @property
    def path(self) -> str:
        names = []
        node: Group | None = self
        while node is not None and node.parent is not None:
            names.append(node.name)
            node = node.parent
        return "/".join(reversed(names)) or "(message)"

    def segments(self) -> list[Segment]:
        """All segments of this group and its descendants, in message order."""
        out: list[Segment] = []
        for child in self.children:
            if isinstance(child, Group):
                out.extend(child.segments())
            else:
                out.append(child)
        return out

    def groups(self, name: str) -> list[Group]:
        """Descendant groups called ``name`` (at any depth), in message order."""
        out: list[Group] = []
        for child in self.children:
            if isinstance(child, Group):
                if child.name == name:
                    out.append(child)
                out.extend(child.groups(name))
        return out

    def find(self, name: str, exclude: str | None = None) -> list[Segment]:
        """Segments called ``name`` belonging to this group: its own first, then those of the first child
        group holding some (child groups called ``exclude`` skipped)."""
        key = (name, exclude)
        cached = self._found.get(key)
        if cached is not None:
            return cached
        found = [c for c in self.children if not isinstance(c, Group) and c.name == name]
        if not found:
            for child in self.children:
                if isinstance(child, Group) and child.name != exclude:
                    found = child.find(name)
                    if found:
                        break
        self._found[key] = found
        return found

    def find_all(self, name: str) -> list[Segment]:
        """Segments called ``name`` anywhere in this group's subtree, in message order."""
        found = self._all.get(name)
        if found is None:
            if not self._all:  # the first question: index every name in one walk (OBX, SPM, OBR … follow)
                for seg in self.segments():
                    self._all.setdefault(seg.name, []).append(seg)
                found = self._all.get(name)
            if found is None:  # none here (which also marks the index as made)
                found = self._all[name] = []
        return found

    def nearest(self, name: str) -> list[Segment]:
        """Segments ``name`` seen from this group: in it, else in its parent, and so on upward — but never
        in another repetition of a group it sits in (the ORC of the *next* ORDER_OBSERVATION is not this
        order's ORC), only in the enclosing groups' own segments and their other groups (PATIENT)."""
        cached = self._nearest.get(name)
        if cached is not None:
            return cached
        found = self.find(name)
        if not found and self.parent is not None:
            found = self.parent._upward(name, self.name)
        self._nearest[name] = found
        return found

    def _upward(self, name: str, came: str) -> list[Segment]:
        """What a child group called ``came`` sees of ``name`` from this group upward; remembered here,
        since every repetition of that child (the twenty OBSERVATION of an order) asks the same."""
        key = (name, came)
        found = self._seen.get(key)
        if found is None:
            found = self.find(name, exclude=came)
            if not found and self.parent is not None:
                found = self.parent._upward(name, self.name)
            self._seen[key] = found
        return found

    def holds(self, other: Group, exclude: str | None = None) -> bool:
        """True when ``other`` is this group or below it, not inside a child group called ``exclude``."""
        prev: Group | None = None
        node: Group | None = other
        while node is not None:
            if node is self:
                return prev is None or exclude is None or prev.name != exclude
            prev, node = node, node.parent
        return False


# -- definitions ------------------------------------------------------------------------------------


@dataclass(frozen=True)
class _Node:
    name: str
    min: int
    max: int  # -1 unbounded
    children: tuple[_Node, ...] | None  # None for a segment

    @property
    def is_group(self) -> bool:
        return self.children is not None


def _build(node: list[Any]) -> _Node:
    children = tuple(_build(c) for c in node[3]) if len(node) > 3 else None
    return _Node(node[0], node[1], node[2], children)


@lru_cache(maxsize=1)
def _tables() -> dict[str, dict[str, list[Any]]]:
    return json.loads(_DATA.read_text())


def _version_key(version: str) -> tuple[int, ...]:
    out = []
    for part in version.split("."):
        digits = "".join(ch for ch in part if ch in "0123456789")
        out.append(int(digits) if digits else 0)
    return tuple(out)


def _table_version(version: str) -> str:
    key = _version_key(version or "2.5.1")
    best = VERSIONS[0]
    for v in VERSIONS:
        if _version_key(v) <= key:
            best = v
    return best


@lru_cache(maxsize=512)
def structure_for(
    message_type: str, trigger: str, structure_id: str, version: str
) -> tuple[str, _Node] | None:
    """The structure definition for a message, or None when Conduit has none (then all segments sit flat
    in the message group)."""
    tables = _tables().get(_table_version(version), {})
    candidates = [structure_id] if structure_id else []
    candidates += EVENT_STRUCTURES.get(f"{message_type}^{trigger}", ())
    candidates.append(f"{message_type}_{trigger}")
    for name in candidates:
        if name in tables:
            return name, _build([name, 1, 1, tables[name]])
    return None


def _first_set(node: _Node) -> frozenset[str]:
    if not node.is_group:
        return frozenset((node.name,))
    out: set[str] = set()
    for child in node.children or ():
        out |= _first_set(child)
        if child.min >= 1 and node.name != "CHOICE":  # a CHOICE starts with any of its alternatives
            break
    return frozenset(out)


_FIRST: dict[int, frozenset[str]] = {}


def _first(node: _Node) -> frozenset[str]:
    key = id(node)
    found = _FIRST.get(key)
    if found is None:
        found = _FIRST[key] = _first_set(node)
    return found


def _all_names(node: _Node) -> set[str]:
    if not node.is_group:
        return {node.name}
    out: set[str] = set()
    for child in node.children or ():
        out |= _all_names(child)
    return out


def _match(defn: _Node, segs: list[Segment], i: int, group: Group, known: set[str], is_root: bool) -> int:
    """Read segments from ``i`` into ``group`` following ``defn``; return the index of the first segment
    that belongs to an enclosing group."""
    children = defn.children or ()
    if defn.name == "CHOICE":  # exactly one of the alternatives (ORM_O01 ORDER_DETAIL: OBR | RQD | RXO ...)
        if i < len(segs) and any(c.name == segs[i].name for c in children):
            group.children.append(segs[i])
            segs[i].group = group
            return i + 1
        return i
    pos = 0
    counts = [0] * len(children)
    n = len(segs)
    while i < n:
        seg = segs[i]
        placed = False
        for q in range(pos, len(children)):
            child = children[q]
            if child.max != -1 and counts[q] >= child.max:
                continue
            if child.is_group:
                if seg.name in _first(child):
                    sub = Group(child.name, parent=group)
                    group.children.append(sub)
                    i = _match(child, segs, i, sub, known, False)
                    counts[q] += 1
                    pos = q
                    placed = True
                    break
            elif seg.name == child.name:
                group.children.append(seg)
                seg.group = group
                counts[q] += 1
                pos = q
                i += 1
                placed = True
                break
        if placed:
            continue
        if seg.name in known and not is_root:
            return i  # the structure places it in an enclosing group
        group.children.append(seg)  # unexpected here (Z segment, out of order): keep it in this group
        group.extra.append(seg)
        seg.group = group
        i += 1
    for child, count in zip(children, counts, strict=True):
        if child.min >= 1 and count == 0:
            group.missing.append(child.name)
    return i


def structure_problems(root: Group) -> list[str]:
    """What keeps a grouped message from conforming to its structure: required segments or groups that
    are missing, segments where the structure has no place for them."""
    out: list[str] = []

    def walk(group: Group) -> None:
        out.extend(f"{group.path}: required {name} is missing" for name in group.missing)
        out.extend(f"{seg.location}: not expected in {group.path}" for seg in group.extra)
        for child in group.children:
            if isinstance(child, Group):
                walk(child)

    walk(root)
    return out


def group_message(message: Message) -> Group:
    """Group the segments of ``message`` by its structure; a flat root group when it has none."""
    root = Group(message.structure_id or f"{message.message_type}_{message.trigger_event}")
    found = structure_for(message.message_type, message.trigger_event, message.structure_id, message.version)
    if found is None:
        root.children.extend(message.segments)
        for seg in message.segments:
            seg.group = root
        return root
    root.name = found[0]
    _match(found[1], message.segments, 0, root, _all_names(found[1]), True)
    return root


# -- offline generation from hl7apy ------------------------------------------------------------------


def _strip(name: str, structure: str) -> str:
    prefix = structure + "_"
    return name[len(prefix) :] if name.startswith(prefix) else name


def _convert(entry: Any, structure: str) -> list[Any]:
    name, definition, (lo, hi), kind = entry
    node: list[Any] = [_strip(name, structure), lo, hi]
    if kind == "GRP":
        node.append([_convert(c, structure) for c in definition[1]])
    return node


def generate() -> dict[str, dict[str, list[Any]]]:  # pragma: no cover - offline tool
    import importlib

    out: dict[str, dict[str, list[Any]]] = {}
    for version in VERSIONS:
        module = importlib.import_module(f"hl7apy.v{version.replace('.', '_')}.messages")
        out[version] = {
            name: [_convert(c, name) for c in module.MESSAGES[name][1]]
            for name in GENERATED
            if name in module.MESSAGES
        }
    return out


if __name__ == "__main__" and "--generate" in sys.argv:  # pragma: no cover
    _DATA.write_text(json.dumps(generate(), separators=(",", ":")))
    print(f"wrote {_DATA}")
