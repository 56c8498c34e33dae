"""Running a compiled mapping over one message: resource instances → a FHIR R4 transaction Bundle.

Each resource block yields one instance per scope (the whole message, each group of ``for_each``, or
each value of a ``for_each`` path). Instances are built in block order; local references are resolved
once all are built, to the instance in the nearest enclosing scope (``ref: patient``), or to every
instance below the scope (``ref: observation, all: true``).

Every entry is a conditional update ``PUT Type?identifier=system|value`` (replaying a message updates,
never duplicates), or ``PUT Type/id`` with an id derived from the message for types without identifiers
(Provenance). ``fullUrl`` is ``urn:uuid:`` + a UUID derived from that request, so the same message always
gives the same Bundle.
"""

from __future__ import annotations

import hashlib
import uuid
from collections.abc import Callable
from dataclasses import dataclass, field
from functools import lru_cache
from typing import Any
from urllib.parse import quote

from engine.errors import Issue, MappingError
from engine.hl7v2.message import Message
from engine.hl7v2.paths import Value
from engine.hl7v2.structure import Group
from engine.mapping import elements
from engine.mapping.converters import ConvertContext
from engine.mapping.datetime import DateFormatError, to_instant
from engine.mapping.spec import Block, Ctx, EventRule, Mapping, PendingRef, build_object

__all__ = ["Instance", "RunState", "run", "RunOutput", "NAMESPACE", "search_value"]

#: namespace of the UUIDs Conduit derives (fullUrls, Provenance ids)
NAMESPACE = uuid.UUID("6f1d8f5e-4a0e-5c39-9b8e-2d0c7a1b3c41")


@lru_cache(maxsize=8192)
def search_value(text: str) -> str:
    """A token search value: FHIR escapes (``\\|``, ``\\,``, ``\\$``) then percent-encoding."""
    escaped = text.replace("\\", "\\\\").replace("|", "\\|").replace(",", "\\,").replace("$", "\\$")
    return quote(escaped, safe=":/@._-~!*'()")


#: SHA-1 state after the namespace: each UUID copies it instead of hashing the namespace again
_NAMESPACE_SHA1 = hashlib.sha1(NAMESPACE.bytes)


def _uuid5(name: str) -> str:
    """``str(uuid.uuid5(NAMESPACE, name))`` without building UUID objects (one per entry, twice for some):
    the SHA-1 name-based layout of RFC 4122 §4.3, version 5 and variant bits set in the hex text."""
    sha = _NAMESPACE_SHA1.copy()
    sha.update(name.encode("utf-8"))
    h = sha.hexdigest()
    return f"{h[:8]}-{h[8:12]}-5{h[13:16]}-{_VARIANT[h[16]]}{h[17:20]}-{h[20:32]}"


#: the first hex digit of byte 8 with the RFC 4122 variant bits (10xx) set
_VARIANT = {f"{n:x}": f"{(n & 0x3) | 0x8:x}" for n in range(16)}


@dataclass(eq=False, slots=True)  # made for every resource of every message
class Instance:
    block: Block
    scope: Group
    value: Value | None
    index: int
    resource: dict[str, Any]
    full_url: str = ""
    request: dict[str, str] = field(default_factory=dict)
    skip: bool = False
    create_only: bool = False
    alias: Instance | None = None


@dataclass
class RunOutput:
    bundle: dict[str, Any]
    issues: list[Issue]
    used: set[tuple[int, int]]


class RunState:
    def __init__(self, message: Message, mapping: Mapping, *, track: bool = False):
        self.message = message
        self.mapping = mapping
        self.track = track
        self.used: set[tuple[int, int]] = set()
        self.issues: list[Issue] = []
        self.pending = False
        self.ref_slots: list[tuple[dict[str, Any], str, PendingRef, Any]] = []
        self.to_prune: set[int] = set()
        self.merged: list[Instance] = []
        self.instances: dict[str, list[Instance]] = {}
        self.extra_entries: list[dict[str, Any]] = []
        msh = message.msh
        self.sender = msh.get(4) or msh.get(3) or "unknown"
        self.sender_app = msh.get(3)
        self.control_id = msh.get(10)
        self.cx = ConvertContext(
            tz=mapping.tz,
            terminology=mapping.terminology,
            systems=mapping.systems,
            codesystems=mapping.codesystems,
            sender=self.sender,
            used=self.used if track else None,  # only a tracking run reports what was read
        )

    def warn(self, text: str, location: str | None = None) -> None:
        self.issues.append(Issue(text, location=location, code="processing", severity="warning"))

    def mark_used(self, values: list[Value]) -> None:
        for v in values:
            if v.segment is not None:
                head = v.location.split("-", 1)
                fld = head[1].split("[")[0].split(".")[0] if len(head) > 1 else "0"
                self.used.add((v.segment.index, int(fld) if fld.isdigit() else 0))

    def derived_uuid(self, *parts: str) -> str:
        return _uuid5("|".join(parts))


def _scopes(block: Block, root: Group, state: RunState) -> list[tuple[Group, Value | None]]:
    if block.for_each_group:
        groups = [root] if root.name == block.for_each_group else root.groups(block.for_each_group)
        if not groups and block.segment and root.find(block.segment):
            groups = [root]  # a version whose structure has no such group (ADT_A30 in v2.3): the message
        scopes: list[tuple[Group, Value | None]] = [(g, None) for g in groups]
    elif block.for_each_paths:
        found = [v for p in block.for_each_paths for v in p.values(root) if v]
        if state.track:
            state.mark_used(found)
        scopes = [(v.segment.group or root if v.segment else root, v) for v in found]
    else:
        scopes = [(root, None)]
    if block.segment:
        scopes = [
            (g, v)
            for g, v in scopes
            if g.find(block.segment) or (v is not None and v.segment and v.segment.name == block.segment)
        ]
    return scopes


def _identify(inst: Instance, ctx: Ctx, state: RunState) -> None:
    block, res = inst.block, inst.resource
    type_name = block.type
    if block.identity == "none":
        inst.request = {"method": "POST", "url": type_name}
        inst.full_url = "urn:uuid:" + state.derived_uuid(
            state.sender, state.control_id, block.name, str(inst.index)
        )
        return
    if block.identity == "id":
        rid = state.derived_uuid(
            state.sender, state.control_id, state.mapping.name, block.name, str(inst.index)
        )
        res["id"] = rid
        inst.request = {"method": "PUT", "url": f"{type_name}/{rid}"}
        inst.full_url = f"urn:uuid:{rid}"
        return
    system = value = ""
    if block.identity == "spec" and block.identity_fn is not None:
        for ident in block.identity_fn(ctx):
            if not isinstance(ident, dict) or not ident.get("value"):
                continue
            ident = dict(ident)  # a copy without ``use``, in the same order
            ident.pop("use", None)
            if not ident.get("system"):
                ident["system"] = f"urn:conduit:authority:{search_value(state.sender)}"
            system, value = ident["system"], ident["value"]
            if _has_identifier(type_name):
                existing = res.setdefault("identifier", [])
                for i in existing:
                    if i.get("system") == system and i.get("value") == value:
                        break
                else:
                    existing.insert(0, ident)
            break
    else:
        for ident in res.get("identifier", ()):
            if ident.get("system") and ident.get("value") and ident.get("use") != "old":
                system, value = ident["system"], ident["value"]
                break
    if not value:
        # no business identifier in the message: derive one from the message so a replay still updates
        system = f"urn:conduit:hl7v2:{search_value(state.sender)}:{block.name}"
        value = f"{state.control_id}.{inst.index}"
        res.setdefault("identifier", []).append({"system": system, "value": value})
        state.warn(
            f"{type_name} ({block.name}) has no business identifier; derived one from MSH-10",
            f"({block.where})",
        )
    criteria = f"identifier={search_value(system)}|{search_value(value)}"
    url = f"{type_name}?{criteria}"
    inst.full_url = "urn:uuid:" + _uuid5(url)  # state.derived_uuid of the one part
    if inst.create_only:
        inst.request = {"method": "POST", "url": type_name, "ifNoneExist": criteria}
    else:
        inst.request = {"method": "PUT", "url": url}


@lru_cache(maxsize=256)
def _has_identifier(type_name: str) -> bool:
    return elements.element(type_name, "identifier") is not None


def _resolve(obj: Any, state: RunState, by_block: dict[str, list[Instance]]) -> Any:
    if isinstance(obj, PendingRef):
        targets = _targets(obj, by_block)
        refs = [{"reference": t.full_url} for t in targets]
        if obj.display:
            for r in refs:
                r["display"] = obj.display
        return refs if obj.all else (refs[0] if refs else None)
    if isinstance(obj, dict):
        out = {}
        for k, v in obj.items():
            r = _resolve(v, state, by_block)
            if r is not None and r != []:
                out[k] = r
        return out
    if isinstance(obj, list):
        out_l = []
        for v in obj:
            r = _resolve(v, state, by_block)
            if isinstance(v, PendingRef) and v.all and isinstance(r, list):
                out_l.extend({"reference": x["reference"]} if isinstance(x, dict) else x for x in r)
            elif r is not None and r != {}:
                out_l.append(r)
        return out_l
    return obj


def _resolve_slots(state: RunState, by_block: dict[str, list[Instance]]) -> None:
    """Replace every PendingRef where build_object put it: a Reference, several (``all``), or nothing
    (then the element, or the emptied object holding it, is left out by _prune)."""
    held: dict[tuple[str, int, str | None], list[Instance]] = {}
    holders: dict[str, set[int]] = {}
    for obj, key, ref, inst in state.ref_slots:
        targets = _targets(ref, by_block, held, holders)
        if len(targets) == 1:  # the usual case, without a comprehension's frame
            refs = [{"reference": targets[0].full_url}]
        else:
            refs = [{"reference": t.full_url} for t in targets]
        if ref.display:
            for r in refs:
                r["display"] = ref.display
        current = obj.get(key)
        if isinstance(current, list):
            out: list[Any] = []
            for item in current:
                if item is ref:
                    out.extend(refs if ref.all else refs[:1])
                else:
                    out.append(item)
            if out:
                obj[key] = out
            else:
                del obj[key]
                if inst is not None and obj is not inst.resource:
                    state.to_prune.add(id(inst))
        elif refs:
            obj[key] = refs[0]
        elif key in obj:
            del obj[key]
            if inst is not None and obj is not inst.resource:
                state.to_prune.add(id(inst))


def _prune(value: Any) -> Any:
    """Drop objects and arrays emptied by references that resolved to nothing (R4 forbids empty ones)."""
    if isinstance(value, dict):
        out = {}
        for k, v in value.items():
            p = _prune(v)
            if p not in (None, {}, []):
                out[k] = p
        return out
    if isinstance(value, list):
        return [p for p in (_prune(v) for v in value) if p not in (None, {}, [])]
    return value


def _is_within(node: Group | None, ancestor: Group) -> bool:
    while node is not None:
        if node is ancestor:
            return True
        node = node.parent
    return False


def _targets(
    ref: PendingRef,
    by_block: dict[str, list[Instance]],
    held: dict[tuple[str, int, str | None], list[Instance]] | None = None,
    holders: dict[str, set[int]] | None = None,
) -> list[Instance]:
    """The instances a reference means: those in the smallest group that holds both the referring scope
    and them (the OBR of this OBX, the SPM of this order), never one from another order. ``held``
    remembers, while nothing is merged, which candidates a group holds: the twenty OBX of an order all
    climb through the same groups to find their patient. ``holders`` remembers the groups that hold some
    candidate (their scopes and the groups above them): any other group holds none, without asking each
    candidate (an OBX group holds no patient, encounter or order)."""
    candidates = by_block.get(ref.block, [])
    if not candidates:
        return []
    above: set[int] | None = None
    if holders is not None:
        above = holders.get(ref.block)
        if above is None:
            above = holders[ref.block] = _holding(candidates)
    node: Group | None = ref.scope
    came: str | None = None
    while node is not None:
        if above is not None and id(node) not in above:
            came, node = node.name, node.parent
            continue
        key = (ref.block, id(node), came)
        found = held.get(key) if held is not None else None
        if found is None:
            found = [c for c in candidates if node.holds(c.scope, came)]
            if held is not None:
                held[key] = found
        if found:
            if not ref.all:  # one target: nothing to dedupe
                return [_canonical(found[0])]
            return _dedupe([_canonical(c) for c in found])
        came, node = node.name, node.parent
    return []


def _holding(candidates: list[Instance]) -> set[int]:
    """Ids of the groups that hold some candidate: each one's scope and the groups above it."""
    out: set[int] = set()
    for c in candidates:
        node: Group | None = c.scope
        while node is not None and id(node) not in out:
            out.add(id(node))
            node = node.parent
    return out


def _canonical(inst: Instance) -> Instance:
    while inst.alias is not None:
        inst = inst.alias
    return inst


def _dedupe(items: list[Instance]) -> list[Instance]:
    seen: set[int] = set()
    out = []
    for i in items:
        if id(i) not in seen:
            seen.add(id(i))
            out.append(i)
    return out


def _anchor(inst: Instance) -> str:
    """The message position an instance was made from: its value, else the first segment of its scope."""
    if inst.value is not None:
        return inst.value.location
    for child in inst.scope.children:
        if not isinstance(child, Group):
            return child.location
    return inst.scope.path


@lru_cache(maxsize=256)
def _rules(type_name: str) -> tuple[tuple[str, ...], dict[str, frozenset[str]]]:
    """Required elements and the code lists of required bindings of a type, precompiled once."""
    coded = {n: frozenset(spec[2]) for n, spec in elements.elements_of(type_name).items() if spec[2]}
    return elements.required_of(type_name), coded


def _check(inst: Instance, errors: list[Issue]) -> None:
    """The cheap structural check on the hot path: required elements and required-binding codes."""
    res, type_name = inst.resource, inst.block.type
    required, coded = _rules(type_name)
    for name in required:
        if name not in res:
            errors.append(
                Issue(f"{type_name}.{name} is required but the message gave no value", location=_where(inst))
            )
    for name, allowed in coded.items():
        value = res.get(name)
        if isinstance(value, str) and value not in allowed:
            errors.append(
                Issue(f"{type_name}.{name}: {value!r} is not one of the allowed codes", location=_where(inst))
            )


def _where(inst: Instance) -> str:
    """Where a failed check points (made only for a failure: most instances pass)."""
    return f"{_anchor(inst)} ({inst.block.where})"


def _key(inst: Instance) -> str:
    req = inst.request
    return f"{inst.block.type}?{req['ifNoneExist']}" if "ifNoneExist" in req else req["url"]


def _same(a: Any, b: Any, by_block: dict[str, list[Instance]]) -> bool:
    if isinstance(a, PendingRef) and isinstance(b, PendingRef):
        return a.block == b.block and _targets(a, by_block) == _targets(b, by_block)
    if isinstance(a, dict) and isinstance(b, dict):
        return a.keys() == b.keys() and all(_same(a[k], b[k], by_block) for k in a)
    if isinstance(a, list) and isinstance(b, list):
        return len(a) == len(b) and all(_same(x, y, by_block) for x, y in zip(a, b, strict=True))
    return bool(a == b)


def _merged(
    first: dict[str, Any], other: dict[str, Any], by_block: dict[str, list[Instance]]
) -> dict[str, Any] | None:
    """``first`` with what ``other`` adds (arrays united), or None when they disagree on a value."""
    out = dict(first)
    for key, value in other.items():
        if key not in out:
            out[key] = value
        elif _same(out[key], value, by_block):
            continue
        elif isinstance(out[key], list) and isinstance(value, list):
            out[key] = out[key] + [v for v in value if not any(_same(v, x, by_block) for x in out[key])]
        else:
            return None
    return out


def _consolidate(ordered: list[Instance], state: RunState) -> list[Instance]:
    """One entry per identity. The same resource named twice (one specimen under two orders, a doctor in
    ORC-12 and OBR-16) becomes one entry; two *different* resources that the message gives the same
    identifier (a sender reusing a placer number for two tests) are both kept, each made distinct by a
    derived identifier, and a warning says so."""
    groups: dict[str, list[Instance]] = {}
    for inst in ordered:
        groups.setdefault(_key(inst), []).append(inst)
    if all(len(g) == 1 for g in groups.values()):
        return ordered
    by_block = state.instances
    dropped: set[int] = set()
    for key, group in groups.items():
        if len(group) == 1:
            continue
        first = group[0]
        merged: dict[str, Any] | None = first.resource
        for other in group[1:]:
            merged = _merged(merged, other.resource, by_block) if merged is not None else None
        if merged is not None or any(o.block is not first.block for o in group[1:]):
            if merged is None:  # different roles of one resource: keep what the first said
                merged = first.resource
                for other in group[1:]:
                    for k, v in other.resource.items():
                        merged.setdefault(k, v)
            first.resource = merged
            state.merged.append(first)
            for other in group[1:]:
                other.alias = first
                dropped.add(id(other))
            continue
        state.warn(
            f"{len(group)} different {first.block.type} resources in this message have the same identifier; "
            "each is kept under a derived identifier",
            f"({first.block.where})",
        )
        system = f"urn:conduit:hl7v2:{search_value(state.sender)}:{first.block.name}"
        for n, inst in enumerate(group, 1):
            value = f"{key.split('|', 1)[-1]}#{n}"
            inst.resource.setdefault("identifier", []).append({"system": system, "value": value})
            url = f"{inst.block.type}?identifier={search_value(system)}|{search_value(value)}"
            inst.request = {"method": "PUT", "url": url}
            inst.full_url = "urn:uuid:" + state.derived_uuid(url)
    return [i for i in ordered if id(i) not in dropped]


def _provenance(state: RunState, entries: list[dict[str, Any]]) -> dict[str, Any]:
    msg, mapping = state.message, state.mapping
    msh = msg.msh
    try:
        recorded = to_instant(msh.get(7), mapping.tz) if msh.get(7) else None
    except DateFormatError:
        recorded = None
    if recorded is None:
        from datetime import UTC, datetime

        recorded = datetime.now(UTC).isoformat(timespec="seconds")
    # one Provenance per distinct message: the same bytes replayed update it, another message (even one
    # reusing a control id) gets its own
    digest = hashlib.sha256(msg.text.encode("utf-8", "surrogatepass")).hexdigest()
    rid = state.derived_uuid(
        "provenance", state.sender_app, state.sender, state.control_id, mapping.name, digest
    )
    event = f"{msg.message_type}^{msg.trigger_event}"
    sender = "^".join(p for p in (state.sender_app, state.sender) if p)
    resource = {
        "resourceType": "Provenance",
        "id": rid,
        "target": [{"reference": e["fullUrl"]} for e in entries],
        "recorded": recorded,
        "activity": {
            "coding": [
                {"system": "http://terminology.hl7.org/CodeSystem/v3-DataOperation", "code": "UPDATE"}
            ],
            "text": f"HL7 v2 {event} mapped by {mapping.name} {mapping.version}",
        },
        "agent": [
            {
                "type": {
                    "coding": [
                        {
                            "system": "http://terminology.hl7.org/CodeSystem/provenance-participant-type",
                            "code": "assembler",
                        }
                    ]
                },
                "who": {"display": f"Conduit mapping {mapping.name} {mapping.version}"},
            },
            {
                "type": {
                    "coding": [
                        {
                            "system": "http://terminology.hl7.org/CodeSystem/provenance-participant-type",
                            "code": "author",
                        }
                    ]
                },
                "who": {"display": sender or "unknown sender"},
            },
        ],
        "entity": [
            {
                "role": "source",
                "what": {
                    "identifier": {
                        "system": f"urn:conduit:hl7v2:{search_value(sender or 'unknown')}",
                        "value": state.control_id or "unknown",
                    },
                    "display": f"{event} {state.control_id} (HL7 v2 {msg.version})",
                },
            }
        ],
    }
    return {
        "fullUrl": f"urn:uuid:{rid}",
        "resource": resource,
        "request": {"method": "PUT", "url": f"Provenance/{rid}"},
    }


def _rules_by_block(mapping: Mapping) -> dict[str, list[EventRule]]:
    """The event rules of each block, in table order (worked out once per mapping)."""
    found = mapping.rules_by_block
    if found is None:
        found = mapping.rules_by_block = {
            b.name: [r for r in mapping.events if r.blocks is None or b.name in r.blocks]
            for b in mapping.blocks
        }
    return found


def run(
    mapping: Mapping,
    message: Message,
    *,
    track: bool = False,
    provenance: Callable[[list[dict[str, Any]]], dict[str, Any]] | None = None,
) -> RunOutput:
    """``provenance``: builds the Provenance entry from the entries made, for an input that is no HL7 v2
    message (a DICOM study); the HL7 one otherwise. Only called when the mapping makes a Provenance."""
    from engine.mapping.actions import ACTIONS

    state = RunState(message, mapping, track=track)
    root = message.tree
    ordered: list[Instance] = []
    rules_of = _rules_by_block(mapping)
    for block in mapping.blocks:
        instances = state.instances.setdefault(block.name, [])
        rules = rules_of[block.name]
        for index, (scope, value) in enumerate(_scopes(block, root, state)):
            ctx = Ctx(scope, value, state, None)
            if block.when is not None and not block.when(ctx):
                continue
            inst = Instance(block, scope, value, index, {"resourceType": block.type})
            ctx.instance = inst
            build_object(block.fields, ctx, into=inst.resource)
            for rule in rules:
                if rule.when is not None and not rule.when(ctx):
                    continue
                ACTIONS[rule.action](inst, ctx, rule)
                if rule.set_fields:
                    build_object(rule.set_fields, ctx, into=inst.resource)
            if inst.skip:
                continue
            _identify(inst, ctx, state)
            instances.append(inst)
            ordered.append(inst)
    ordered = _consolidate(ordered, state)
    by_block = state.instances
    entries: list[dict[str, Any]] = []
    errors: list[Issue] = []
    _resolve_slots(state, by_block)
    for inst in state.merged:  # merged copies may hold references the slots do not point at
        inst.resource = _resolve(inst.resource, state, by_block)
    for inst in ordered:
        if id(inst) in state.to_prune:
            inst.resource = _prune(inst.resource)
        _check(inst, errors)
        entries.append({"fullUrl": inst.full_url, "resource": inst.resource, "request": inst.request})
    for extra in state.extra_entries:
        survivor = extra.pop("_survivor", None)
        if survivor is not None:
            extra["resource"]["link"][0]["other"]["reference"] = _canonical(survivor).full_url
        entries.append(extra)
    if errors:
        raise MappingError(
            f"{mapping.name}: the message does not give what FHIR requires ({errors[0].message})",
            issues=errors,
        )
    if not entries:
        raise MappingError(
            f"{mapping.name}: the message produced no resource",
            issues=[Issue("no resource produced", location=f"({mapping.file})")],
        )
    if mapping.provenance:
        entries.append(provenance(entries) if provenance is not None else _provenance(state, entries))
    bundle = {"resourceType": "Bundle", "type": "transaction", "entry": entries}
    return RunOutput(bundle, state.issues, state.used)
