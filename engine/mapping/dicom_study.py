"""A DICOM study as the mapping language reads it: a tree of scopes STUDY → SERIES → INSTANCE (the
Information Model of PS3.3 A.1.2, patient attributes at the study level as in the Study Root), each
holding its attributes as DICOM strings by keyword.

The scopes are :class:`engine.hl7v2.structure.Group` nodes, so the interpreter's scope machinery
(``for_each`` groups, nearest-enclosing references) works unchanged; attribute values become
:class:`engine.hl7v2.paths.Value` objects — one per value of a multi-valued attribute (``CT\\SR``), PN
components (``family^given^middle^prefix^suffix``) as components — so the converters apply unchanged.

Values the caller resolved beside the DICOM header (the Patient reference Conduit found for PatientID)
are given as ``inputs`` and read as ``input.NAME``.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from typing import Any

from engine.hl7v2.escape import DEFAULT_DELIMITERS
from engine.hl7v2.paths import Value
from engine.hl7v2.structure import Group

__all__ = ["LEVELS", "PRESENTED", "DicomScope", "DicomStudy", "DicomValue", "study_tree", "attribute_values"]

#: the scope names of the hierarchy, outermost first
LEVELS = ("STUDY", "SERIES", "INSTANCE")

#: what a study presents to a DICOM mapping, by level: the attributes the PACS index keeps of each header
#: (the Study Root keys of PS3.4 C.6.2.1 it answers C-FIND with), ModalitiesInStudy made from the series'
#: Modality. The PACS sync presents these from its index; ``conduit map test`` presents the same from
#: files, so a mapping tried there sees what it will see in production.
PRESENTED: dict[str, tuple[str, ...]] = {
    "STUDY": (
        "PatientID",
        "PatientName",
        "PatientBirthDate",
        "PatientSex",
        "StudyInstanceUID",
        "StudyDate",
        "StudyTime",
        "AccessionNumber",
        "StudyID",
        "StudyDescription",
        "ReferringPhysicianName",
        "ModalitiesInStudy",
    ),
    "SERIES": ("SeriesInstanceUID", "Modality", "SeriesNumber", "SeriesDescription", "SeriesDate"),
    "INSTANCE": ("SOPInstanceUID", "SOPClassUID", "InstanceNumber"),
}

Attributes = Mapping[str, str]


class DicomScope(Group):
    """One study, series or instance: its own attributes (keyword → DICOM string).

    Built by hand rather than by Group's dataclass constructor: a 500-instance study makes 500 of them,
    and the segment look-up caches Group also carries are never used here (no segments)."""

    def __init__(self, name: str, parent: DicomScope | None, attributes: Attributes, label: str):
        self.name = name
        self.parent = parent
        self.children = []
        self.extra = []
        self.missing = []
        self._values = {}
        self.attributes = attributes
        self.label = label  # where values come from, for messages: ``SERIES[2]/INSTANCE[14]``

    def below(self, level: str) -> list[DicomScope]:
        """The scopes of ``level`` under this one (the series of a study, the instances of a study or of a
        series), in order."""
        out: list[DicomScope] = []
        for child in self.children:
            if child.name == level:
                out.append(child)
            elif child.children:
                out.extend(child.below(level))
        return out


class _Header:
    """What the interpreter reads from an HL7 MSH, in DICOM terms: the sending application (MSH-3) is the
    AE title that sent the study, the control id (MSH-10) the StudyInstanceUID — so identifiers the
    interpreter derives for a study are stable across its re-mappings."""

    __slots__ = ("_fields",)

    def __init__(self, source_ae: str, study_uid: str):
        self._fields = {3: source_ae, 10: study_uid}

    def get(self, n: int) -> str:
        return self._fields.get(n, "")


class DicomStudy:
    """The "message" of a DICOM mapping: one study's tree (``tree``), duck-typed for the interpreter."""

    message_type = "DICOM"
    trigger_event = ""
    version = ""

    def __init__(self, tree: DicomScope, source_ae: str = "", calling_ae: str = ""):
        self.tree = tree
        self.msh = _Header(source_ae, tree.attributes.get("StudyInstanceUID", ""))
        # who sent the study, for its Provenance only: kept out of the header, where a study sent by two
        # modalities would change the identifiers the interpreter derives from one sync to the next
        self.calling_ae = calling_ae


def study_tree(
    study: Attributes,
    series: Iterable[tuple[Attributes, Iterable[Attributes]]],
    *,
    inputs: Mapping[str, str | None] | None = None,
    source_ae: str = "",
    calling_ae: str = "",
) -> DicomStudy:
    """The study's tree: ``series`` gives each series' attributes with its instances' (in output order);
    ``calling_ae``: the AE title(s) that sent it, named by its Provenance."""
    attrs = dict(study)
    for name, value in (inputs or {}).items():
        if value:
            attrs[f"input.{name}"] = value
    root = DicomScope("STUDY", None, attrs, "STUDY")
    for s_index, (s_attrs, instances) in enumerate(series, 1):
        s_label = f"SERIES[{s_index}]"
        node = DicomScope("SERIES", root, s_attrs, s_label)
        root.children.append(node)
        node.children.extend(
            DicomScope("INSTANCE", node, i_attrs, f"{s_label}/INSTANCE[{n}]")
            for n, i_attrs in enumerate(instances, 1)
        )
    return DicomStudy(root, source_ae, calling_ae)


class DicomValue(Value):
    """One value of an attribute. DICOM strings carry no HL7 escapes and arrive trimmed, so components
    are read as they are; the location is only formatted when a message needs it."""

    __slots__ = ()

    @property
    def location(self) -> str:
        loc = self._loc
        if isinstance(loc, str):
            return loc
        label, keyword, n = loc
        text = self._loc = f"{label} {keyword}" + (f"[{n}]" if n else "")
        return text

    def c(self, i: int = 1, j: int = 1) -> str:
        comps = self.comps
        if i > len(comps):
            return ""
        subs = comps[i - 1]
        return subs[j - 1] if j <= len(subs) else ""

    def text(self) -> str:
        return "^".join(comp[0] for comp in self.comps)  # as received: a PN's empty components kept


def _value(raw: str, loc: tuple[str, str, int]) -> DicomValue:
    comps = [[raw]] if "^" not in raw else [[c] for c in raw.split("^")]
    return DicomValue(comps, DEFAULT_DELIMITERS, loc)


def attribute_values(scope: Group, keyword: str) -> list[Value]:
    """The values of ``keyword`` seen from ``scope``: its own attribute, else the nearest enclosing
    scope's (an instance reads StudyInstanceUID from its study). Empty values are left out."""
    node: Any = scope
    while node is not None:
        raw = node.attributes.get(keyword)
        if raw is not None:
            break
        node = node.parent
    else:
        return []
    if not raw:
        return []
    if "\\" not in raw:  # the usual single value
        return [_value(raw, (node.label, keyword, 0))]
    return [_value(part, (node.label, keyword, n)) for n, part in enumerate(raw.split("\\"), 1) if part]
