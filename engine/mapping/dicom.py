"""DICOM → FHIR mappings: the mapping language over a study's header (``mappings/dicom/``).

A DICOM mapping is a mapping file with ``direction: dicom-to-fhir`` (implied in a ``dicom/`` folder). It
reads a :class:`engine.mapping.dicom_study.DicomStudy` — scopes STUDY → SERIES → INSTANCE — instead of an
HL7 v2 message; everything else (blocks, value specs, converters, conditions, identity, the interpreter)
is the HL7 one. What differs:

* paths name attributes by keyword or tag: ``StudyInstanceUID``, ``(0020,000D)``, ``ModalitiesInStudy[1]``
  (one value of a multi-valued attribute; without an index, every value), ``PatientName.1`` (a component),
  ``input.patient`` (a value the caller resolved beside the header). An attribute is read from the scope,
  else from the nearest enclosing one (an instance reads its study's StudyInstanceUID). Keywords and tags
  are checked against the DICOM data dictionary when the file loads;
* ``for_each: SERIES`` / ``INSTANCE`` in a block (one resource per series …) and in a nested object
  (``{for_each: SERIES, fields: {...}}``: one object per series below the scope, e.g. ImagingStudy.series);
* ``{count: INSTANCE}``: how many scopes of that level are below the scope (numberOfInstances);
* ``{join: [StudyDate, StudyTime], as: DA+TM}``: values converted together (each a component);
* no ``match:`` (a DICOM mapping is chosen by name), no ``segments:`` or ``events:``;
* the Provenance (``provenance: false`` turns it off, as in HL7) names the study, not a message: one per
  study and mapping (its id derived from both), so every re-mapping of a study updates the same one.
"""

from __future__ import annotations

import re
import uuid
from collections.abc import Callable
from dataclasses import dataclass
from datetime import UTC, datetime
from functools import lru_cache
from typing import TYPE_CHECKING, Any, cast

from engine.errors import ConfigurationError
from engine.hl7v2.escape import DEFAULT_DELIMITERS
from engine.hl7v2.paths import PathSyntaxError, Value
from engine.hl7v2.structure import Group
from engine.mapping import elements
from engine.mapping.concepts import Terminology
from engine.mapping.converters import CONVERTERS
from engine.mapping.dicom_converters import oid_uri  # importing it registers PN, DA+TM and oid
from engine.mapping.dicom_study import LEVELS, DicomScope, DicomStudy, DicomValue, attribute_values
from engine.mapping.loader import LocatedDict, where
from engine.mapping.spec import DEFAULT_CONVERTER, Block, Compiler, Ctx, Mapping, ValueFn, build_object

if TYPE_CHECKING:
    from engine.mapping.interpreter import RunOutput

__all__ = [
    "DIRECTION",
    "DicomPath",
    "DicomCompiler",
    "compile_dicom_path",
    "compile_dicom_mapping",
    "run_study",
    "study_provenance",
    "provenance_id",
]

DIRECTION = "dicom-to-fhir"

_PATH = re.compile(
    r"^(?:(?P<kw>[A-Z][A-Za-z0-9]*)|\((?P<group>[0-9A-Fa-f]{4}),(?P<elem>[0-9A-Fa-f]{4})\)|(?P<input>input\.[a-z][a-z0-9_]*))"
    r"(?:\[(?P<index>\d+|\*)\])?(?:\.(?P<comp>\d+))?$"
)


def _keyword_of_tag(tag: int) -> str:
    # the data dictionary is pydicom's; imported only when a DICOM mapping is compiled
    from pydicom.datadict import keyword_for_tag

    return str(keyword_for_tag(tag) or "")


def _is_keyword(keyword: str) -> bool:
    from pydicom.datadict import tag_for_keyword

    return tag_for_keyword(keyword) is not None


@dataclass(frozen=True)
class DicomPath:
    """A compiled attribute path. The HL7 path attributes the compiler inspects (``occurrence``,
    ``segment`` …) are given values that send every lookup through :meth:`values`."""

    text: str
    keyword: str
    index: int | None  # None = every value
    component: int | None
    segment: str = ""
    occurrence: int | None = None
    subtree: bool = False
    segment_filter: None = None
    field: None = None

    def values(self, scope: Group) -> list[Value]:
        cache = scope._values
        key = id(self)  # compiled paths live as long as the process (compile_dicom_path caches them)
        found = cache.get(key)
        if found is not None:
            return found
        found = attribute_values(scope, self.keyword)
        if self.index is not None:
            found = found[self.index - 1 : self.index]
        if self.component is not None:
            comp = self.component
            found = [
                DicomValue([v.comps[comp - 1]], DEFAULT_DELIMITERS, f"{v.location}.{comp}")
                for v in found
                if comp <= len(v.comps)
            ]
        cache[key] = found
        return found


@lru_cache(maxsize=4096)
def compile_dicom_path(text: str) -> DicomPath:
    m = _PATH.match(text.strip())
    if not m:
        raise PathSyntaxError(
            f"invalid DICOM attribute path {text!r}: expected a keyword (StudyInstanceUID), a tag "
            "((0020,000D)) or input.name, optionally [n] and .component"
        )
    if m["input"]:
        keyword = m["input"]
    elif m["kw"]:
        keyword = m["kw"]
        if not _is_keyword(keyword):
            raise PathSyntaxError(f"{keyword!r} is not a DICOM attribute keyword (PS3.6)")
    else:
        keyword = _keyword_of_tag(int(m["group"] + m["elem"], 16))
        if not keyword:
            raise PathSyntaxError(f"tag ({m['group']},{m['elem']}) has no keyword in the DICOM dictionary")
    index = m["index"]
    return DicomPath(
        text=text,
        keyword=keyword,
        index=None if index in (None, "*") else int(index),
        component=int(m["comp"]) if m["comp"] else None,
    )


def _integer(raw: str) -> int | None:
    return int(raw) if raw.isdigit() else None  # anything else takes the converter's way, with its warning


#: converters whose result on one plain string is known without a Value (the same result, faster)
_SHORTCUTS: dict[Any, Callable[[str], Any]] = {
    CONVERTERS["string"]: str,
    CONVERTERS["code"]: str,
    CONVERTERS["integer"]: _integer,
    oid_uri: lambda raw: f"urn:oid:{raw}",
}


def _below(scope: Group, level: str) -> list[Any]:
    return scope.below(level) if isinstance(scope, DicomScope) else scope.groups(level)


class DicomCompiler(Compiler):
    """The HL7 compiler with DICOM attribute paths and the study hierarchy's scopes."""

    _VALUE_KEYS = Compiler._VALUE_KEYS | {"count"}
    _NOT_FOR_DICOM = ("match", "segments", "events", "codesystems")

    def path(self, text: Any, at: str) -> Any:
        if not isinstance(text, str):
            raise self.fail(at, f"a field path must be a string, not {text!r}")
        if text == "$" or text.startswith("$."):
            return None
        try:
            path = compile_dicom_path(text)
        except PathSyntaxError as exc:
            raise self.fail(at, str(exc)) from None
        self._reads.add(path.keyword)
        return path

    def _level(self, name: Any, at: str) -> str:
        if name not in LEVELS[1:]:
            raise self.fail(at, f"{name!r} is not a level below the study (SERIES, INSTANCE)")
        return str(name)

    def _value_dict(self, node: dict[str, Any], at: str, target: str | None) -> ValueFn:
        if "for_each" in node:
            return self._for_each(node, at, target)
        return super()._value_dict(node, at, target)

    def _for_each(self, node: dict[str, Any], at: str, target: str | None) -> ValueFn:
        """``{for_each: SERIES, when: ..., fields: {...}}``: one object per scope of that level below this
        one, ``when`` asked of each (a series' own Modality), like a block's."""
        fat = where(node, "for_each", at)
        unknown = set(node) - {"for_each", "when", "fields"}
        if unknown:
            raise self.fail(
                fat, f"for_each: takes when: and fields:, not {', '.join(sorted(map(str, unknown)))}"
            )
        level = self._level(node["for_each"], fat)
        if "fields" not in node or target is None or not elements.is_known_type(target):
            raise self.fail(fat, "for_each: in a value spec makes objects: it needs fields:")
        specs = self.fields(node["fields"], target, where(node, "fields", at))
        when = self.condition(node["when"], where(node, "when", at)) if "when" in node else None

        def per_scope(ctx: Ctx) -> list[Any]:
            out = []
            for scope in _below(ctx.scope, level):
                sub = Ctx(scope, None, ctx.state, ctx.instance)
                if when is not None and not when(sub):
                    continue
                obj = build_object(specs, sub)
                if obj:
                    out.append(obj)
            return out

        return per_scope

    def _value_base(self, node: dict[str, Any], at: str, target: str | None) -> ValueFn:
        if "count" in node:
            level = self._level(node["count"], where(node, "count", at))
            return lambda ctx: [len(_below(ctx.scope, level))]
        if "join" in node and "as" in node:
            return self._converted_join(node, at)
        if "path" in node and "translate" not in node:
            return self._attribute(node, at, target)
        return super()._value_base(node, at, target)

    def _converted_join(self, node: dict[str, Any], at: str) -> ValueFn:
        """``{join: [StudyDate, StudyTime], as: DA+TM}``: the values handed to the converter together, each
        a component of one value — never glued into one text, where a short date and a time would read
        as another date."""
        if "sep" in node:
            raise self.fail(where(node, "sep", at), "sep: has no meaning with as: (the values stay apart)")
        conv = self._converter(node["as"], where(node, "as", at))
        opts = self._options(node)
        parts = [self.value(n, where(node, "join", at), "string") for n in node["join"]]
        source = "+".join(str(p) if isinstance(p, str) else "..." for p in node["join"])
        convert_all = self._convert_all

        def converted(ctx: Ctx) -> list[Any]:
            comps = []
            for part in parts:
                found = part(ctx)
                comps.append([str(found[0]) if found else ""])
            if not any(c[0] for c in comps):
                return []
            return convert_all(conv, [DicomValue(comps, DEFAULT_DELIMITERS, source)], ctx, opts, at)

        return converted

    def _attribute(self, node: dict[str, Any], at: str, target: str | None) -> ValueFn:
        """A path spec, with a shortcut for the usual case — one plain value, a converter that only
        copies or wraps the string — that skips making a Value (a 500-instance study reads 1500)."""
        generic = super()._value_base(node, at, target)
        path = self.path(node["path"], where(node, "path", at))
        conv = self._converter(
            node.get("as") or DEFAULT_CONVERTER.get(target or "", "string"), where(node, "as", at)
        )
        shortcut = _SHORTCUTS.get(conv)
        if path is None or path.index is not None or path.component is not None or shortcut is None:
            return generic
        keyword = path.keyword

        def from_attribute(ctx: Ctx) -> list[Any]:
            scope: Any = ctx.scope
            raw = scope.attributes.get(keyword)
            while raw is None:
                scope = scope.parent
                if scope is None:
                    return []
                raw = scope.attributes.get(keyword)
            if not raw:
                return []
            if "\\" in raw or "^" in raw:
                return generic(ctx)
            r = shortcut(raw)
            return generic(ctx) if r is None else [r]

        return from_attribute

    def block(self, name: str, node: Any, at: str) -> Block:
        if isinstance(node, dict):
            if "segment" in node:
                raise self.fail(where(node, "segment", at), "segment: is for HL7 v2 mappings")
            fe = node.get("for_each")
            if fe is not None:
                self._level(fe, where(node, "for_each", at))
        return super().block(name, node, at)

    def compile(self, name: str, file: str) -> Mapping:
        doc = self.doc
        at = f"{file}:{doc.line}" if isinstance(doc, LocatedDict) else file
        for key in self._NOT_FOR_DICOM:
            if key in doc:
                raise self.fail(where(doc, key, at), f"{key}: is not available in a DICOM mapping")
        if doc.get("direction", DIRECTION) != DIRECTION:
            raise self.fail(where(doc, "direction", at), f"a DICOM mapping has direction: {DIRECTION}")
        self._reads: set[str] = set()
        mapping = super().compile(name, file)  # direction is not v2-to-fhir: no blocks compiled there
        resources = doc.get("resources") or {}
        mapping.blocks = [self.block(str(b), n, where(resources, b, at)) for b, n in resources.items()]
        mapping.direction = DIRECTION
        mapping.reads = frozenset(k for k in self._reads if not k.startswith("input."))
        return mapping


def compile_dicom_mapping(
    doc: LocatedDict, name: str, file: str, terminology: Terminology, default_tz: str | None
) -> Mapping:
    if "direction" not in doc:  # a file of a dicom/ folder: the direction is implied
        implied = LocatedDict(doc)
        implied.file, implied.line, implied.lines = doc.file, doc.line, dict(doc.lines)
        implied["direction"] = DIRECTION
        doc = implied
    return DicomCompiler(doc, terminology, default_tz).compile(name, file)


def provenance_id(mapping_name: str, study_instance_uid: str) -> str:
    """The id of a study's Provenance: derived from the study and the mapping, not the mapping's version
    nor the content, so re-mapping a study (new instances, a re-sync, a new mapping version) updates one
    Provenance — its history keeps the earlier ones — instead of adding another each time."""
    from engine.mapping.interpreter import NAMESPACE

    return str(uuid.uuid5(NAMESPACE, f"provenance|dicom|{study_instance_uid}|{mapping_name}"))


def study_provenance(
    mapping: Mapping, study: DicomStudy, targets: list[str], recorded: str
) -> dict[str, Any]:
    """The Provenance of what ``mapping`` made of ``study``, shaped like the HL7 one (engine.mapping.
    interpreter): the mapping as assembler, the sending AE as author, the study (its UID) as source."""
    uid = study.tree.attributes.get("StudyInstanceUID", "") or "unknown"
    ae = study.calling_ae
    return {
        "resourceType": "Provenance",
        "id": provenance_id(mapping.name, uid),
        "target": [{"reference": t} for t in targets],
        "recorded": recorded,
        "activity": {
            "coding": [
                {"system": "http://terminology.hl7.org/CodeSystem/v3-DataOperation", "code": "UPDATE"}
            ],
            "text": f"DICOM study mapped by {mapping.name} {mapping.version}",
        },
        "agent": [
            {
                "type": {"coding": [{"system": _PARTICIPANT, "code": "assembler"}]},
                "who": {"display": f"Conduit mapping {mapping.name} {mapping.version}"},
            },
            {
                "type": {"coding": [{"system": _PARTICIPANT, "code": "author"}]},
                "who": {"display": f"DICOM AE {ae}" if ae else "unknown sender"},
            },
        ],
        "entity": [
            {
                "role": "source",
                "what": {
                    "identifier": {"system": "urn:dicom:uid", "value": f"urn:oid:{uid}"},
                    "display": f"DICOM study {uid}" + (f" from {ae}" if ae else ""),
                },
            }
        ],
    }


_PARTICIPANT = "http://terminology.hl7.org/CodeSystem/provenance-participant-type"


def run_study(mapping: Mapping, study: DicomStudy, *, recorded: str | None = None) -> RunOutput:
    """Run a DICOM mapping over one study: a transaction Bundle of what it declares, then (unless the
    mapping says ``provenance: false``) a Provenance naming every entry, ``PUT Provenance/<id>`` with the
    id :func:`provenance_id` derives. ``recorded`` defaults to now."""
    from engine.mapping.interpreter import run

    if mapping.direction != DIRECTION:
        raise ConfigurationError(f"mapping {mapping.name!r} is not a DICOM mapping ({mapping.file})")

    def provenance(entries: list[dict[str, Any]]) -> dict[str, Any]:
        when = recorded or datetime.now(UTC).isoformat(timespec="seconds")
        resource = study_provenance(mapping, study, [e["fullUrl"] for e in entries], when)
        rid = resource["id"]
        return {
            "fullUrl": f"urn:uuid:{rid}",
            "resource": resource,
            "request": {"method": "PUT", "url": f"Provenance/{rid}"},
        }

    return run(mapping, cast(Any, study), provenance=provenance)
