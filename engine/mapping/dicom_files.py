"""A study read from DICOM Part 10 files, presented to a DICOM mapping as the PACS sync presents it.

For ``conduit map test`` / ``map run``: staff try a DICOM mapping on files before a modality sends them.
The tree holds what :data:`engine.mapping.dicom_study.PRESENTED` names — the attributes the PACS index
keeps — taken the way the index takes them: files in name order as if stored in that order, a later
file's non-empty value replacing an earlier one (study and series level), the first copy of a SOP Instance
kept, series in SeriesNumber order and instances in InstanceNumber order (those without a number last),
SeriesNumber and InstanceNumber as integers. Other header attributes are not presented (the PACS never
has them), but they are listed, so a mapping that needs one is seen to be unable to get it.

A Part 10 file is recognised by its ``DICM`` prefix after the 128-byte preamble (PS3.10 7.1), whatever
its name.
"""

from __future__ import annotations

import warnings
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from engine.errors import InvalidInput, Issue
from engine.mapping.dicom_study import PRESENTED, DicomStudy, study_tree

__all__ = ["is_part10", "part10_files", "group_by_study", "FileStudy", "read_study"]

_PREFIX_AT = 128
#: value representations with no text form a mapping could read (bulk data, sequences, unknown)
_NO_TEXT = {"SQ", "OB", "OW", "OF", "OD", "OL", "OV", "UN"}
_INTEGERS = {"SeriesNumber", "InstanceNumber"}


def is_part10(path: Path) -> bool:
    """True when ``path`` is a file starting with a preamble and ``DICM`` (PS3.10 7.1)."""
    try:
        with path.open("rb") as f:
            head = f.read(_PREFIX_AT + 4)
    except OSError:
        return False
    return head[_PREFIX_AT:] == b"DICM"


def part10_files(folder: Path) -> list[Path]:
    """The Part 10 files below ``folder`` (recursively), in name order."""
    return sorted(p for p in folder.rglob("*") if p.is_file() and is_part10(p))


def _read(path: Path) -> Any:
    import pydicom

    try:
        return pydicom.dcmread(path, stop_before_pixels=True)
    except Exception as exc:  # pydicom raises many types for a damaged file: all mean "cannot read it"
        raise InvalidInput(
            f"{path}: not a readable DICOM file ({exc.__class__.__name__}: {exc})", location=str(path)
        ) from None


def _text(elem: Any) -> str | None:
    """The DICOM string form of an element (multiple values joined by ``\\``); None when it has none."""
    if elem.VR in _NO_TEXT or elem.value is None:
        return None
    value = elem.value
    if isinstance(value, bytes):
        return None
    if isinstance(value, list | tuple) or type(value).__name__ == "MultiValue":
        return "\\".join(str(v).strip() for v in value)
    return str(value).strip()


def _header(ds: Any, path: Path) -> dict[str, tuple[str, str]]:
    """keyword -> (tag, text) of every top-level attribute with a keyword and a text form."""
    from pydicom.datadict import keyword_for_tag

    out: dict[str, tuple[str, str]] = {}
    for key in list(ds.keys()):
        keyword = keyword_for_tag(key)
        if not keyword:  # private or unknown to the dictionary
            continue
        tag = f"({key.group:04X},{key.element:04X})"
        try:  # pydicom converts a value only when it is first read: a bad one raises here
            elem = ds[key]
            text = _text(elem)
        except (ValueError, TypeError, OverflowError) as exc:
            raise InvalidInput(
                f"{path}: {keyword} {tag} has a value that cannot be read as its VR "
                f"({exc.__class__.__name__}: {exc})",
                location=f"{keyword} {tag} in {path}",
            ) from None
        if text is not None:
            out[keyword] = (tag, text)
    return out


@dataclass
class _File:
    path: Path
    header: dict[str, tuple[str, str]]
    calling_ae: str

    def get(self, keyword: str) -> str:
        found = self.header.get(keyword)
        if found is None:
            return ""
        if keyword in _INTEGERS:  # the index keeps these as integers ("0012" and "12.0" read as 12)
            try:
                return str(int(float(found[1])))
            except (ValueError, OverflowError):  # "1e400" is a float, but no integer
                return ""
        return found[1]


def _load_one(path: Path) -> _File:
    # pydicom's warnings on values outside their VR (a StudyDate "2024") would only repeat, unlocated,
    # what the mapping reports as a warning naming the file, the attribute and the mapping line
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", UserWarning)
        ds = _read(path)
        meta = getattr(ds, "file_meta", None)
        source = str(meta.get("SourceApplicationEntityTitle", "") or "").strip() if meta is not None else ""
        return _File(path, _header(ds, path), source)


def _load(paths: list[Path]) -> list[_File]:
    return [_load_one(path) for path in paths]


def group_by_study(paths: list[Path]) -> tuple[dict[str, list[Path]], list[tuple[Path, str]]]:
    """StudyInstanceUID -> its files (name order), and the files that cannot be placed in a study (not
    readable, no StudyInstanceUID) with the reason — one bad file does not hide the others' studies."""
    studies: dict[str, list[Path]] = {}
    problems: list[tuple[Path, str]] = []
    for path in paths:
        try:
            f = _load_one(path)
        except InvalidInput as exc:
            problems.append((path, exc.message.removeprefix(f"{path}: ")))  # the path is beside it
            continue
        uid = f.get("StudyInstanceUID")
        if not uid:
            problems.append((path, "no StudyInstanceUID (0020,000D)"))
            continue
        studies.setdefault(uid, []).append(f.path)
    return studies, problems


@dataclass
class FileStudy:
    """One study read from files: what the mapping reads, and where each presented value came from."""

    study: DicomStudy
    files: list[Path]
    origins: dict[tuple[str, str], tuple[Path, str]]
    """(scope label, keyword) -> (file, tag) the presented value was taken from."""
    header: dict[str, str]
    """Every attribute keyword present (non-empty) in any of the files -> its tag."""
    notes: list[str] = field(default_factory=list)

    def presented(self) -> set[str]:
        """The keywords presented to the mapping with a value (at any level)."""
        out: set[str] = set()
        stack = [self.study.tree]
        while stack:
            scope = stack.pop()
            out.update(k for k, v in scope.attributes.items() if v and not k.startswith("input."))
            stack.extend(scope.children)
        return out

    def locate(self, issue: Issue) -> str:
        """An issue's location with the file and tag of the value it names: ``SERIES[1] SeriesNumber
        (mapping.yaml:12)`` -> ``... [ct/1.dcm (0020,0011)]``; a joined value (``StudyDate+StudyTime``)
        names the tag of each part."""
        location = issue.location or ""
        head = location.split(" (", 1)[0]
        found: list[str] = []
        if " " in head:
            label, keyword = head.split(" ", 1)
            origin = self.origins.get((label, keyword.split("[")[0].split(".")[0]))
            if origin is not None:
                found.append(f"{origin[0]} {origin[1]}")
        else:
            for keyword in head.split("+"):
                origin = self.origins.get(("STUDY", keyword)) or next(
                    (o for (_, k), o in self.origins.items() if k == keyword), None
                )
                if origin is not None:
                    found.append(f"{keyword} {origin[1]} in {origin[0]}")
        return f"{location} [{'; '.join(found)}]" if found else location


def read_study(
    paths: list[Path], *, inputs: dict[str, str | None] | None = None, calling_ae: str = ""
) -> FileStudy:
    """The study of ``paths`` (one study: InvalidInput naming each StudyInstanceUID otherwise)."""
    files = _load(sorted(paths))
    if not files:
        raise InvalidInput("no DICOM Part 10 files (no 'DICM' prefix) given")
    by_study: dict[str, list[_File]] = {}
    for f in files:
        by_study.setdefault(f.get("StudyInstanceUID"), []).append(f)
    if "" in by_study:
        raise InvalidInput(
            f"{by_study[''][0].path}: no StudyInstanceUID (0020,000D)", location="StudyInstanceUID"
        )
    if len(by_study) > 1:
        listed = "; ".join(
            f"{uid} ({len(fs)} file(s), e.g. {fs[0].path})" for uid, fs in sorted(by_study.items())
        )
        raise InvalidInput(
            f"the files belong to {len(by_study)} studies, not one: {listed}", location="StudyInstanceUID"
        )
    notes: list[str] = []
    origins: dict[tuple[str, str], tuple[Path, str]] = {}

    def take(attrs: dict[str, str], origin: dict[str, tuple[Path, str]], f: _File, level: str) -> None:
        for keyword in PRESENTED[level]:
            value = f.get(keyword)
            if value:  # a later file's value replaces an earlier one, an empty one never does
                attrs[keyword] = value
                origin[keyword] = (f.path, f.header[keyword][0])

    study: dict[str, str] = {}
    study_origin: dict[str, tuple[Path, str]] = {}
    series: dict[str, tuple[dict[str, str], dict[str, tuple[Path, str]], list[_File]]] = {}
    seen: set[str] = set()
    modalities: list[str] = []
    for f in files:
        sop = f.get("SOPInstanceUID")
        if not sop or sop in seen:
            notes.append(
                f"{f.path}: "
                + ("no SOPInstanceUID: left out" if not sop else f"a second copy of {sop}: left out")
            )
            continue
        seen.add(sop)
        take(study, study_origin, f, "STUDY")
        attrs, origin, members = series.setdefault(f.get("SeriesInstanceUID"), ({}, {}, []))
        take(attrs, origin, f, "SERIES")
        members.append(f)
        modality = f.get("Modality")
        if modality and modality not in modalities:
            modalities.append(modality)
    if modalities and "ModalitiesInStudy" not in study:
        study["ModalitiesInStudy"] = "\\".join(modalities)

    def number(value: str) -> tuple[bool, int]:
        return (not value, int(value) if value else 0)

    ordered = sorted(
        series.values(), key=lambda s: number(s[0].get("SeriesNumber", ""))
    )  # stable: file order
    tree_series = []
    for s_index, (attrs, origin, members) in enumerate(ordered, 1):
        s_label = f"SERIES[{s_index}]"
        origins.update(((s_label, k), v) for k, v in origin.items())
        instances = []
        for n, f in enumerate(sorted(members, key=lambda m: number(m.get("InstanceNumber"))), 1):
            i_attrs: dict[str, str] = {}
            i_origin: dict[str, tuple[Path, str]] = {}
            take(i_attrs, i_origin, f, "INSTANCE")
            origins.update(((f"{s_label}/INSTANCE[{n}]", k), v) for k, v in i_origin.items())
            instances.append(i_attrs)
        tree_series.append((attrs, instances))
    origins.update((("STUDY", k), v) for k, v in study_origin.items())
    ae = calling_ae or ", ".join(sorted({f.calling_ae for f in files if f.calling_ae}))
    header = {k: tag for f in files for k, (tag, text) in f.header.items() if text}
    return FileStudy(
        study_tree(study, tree_series, inputs=inputs, calling_ae=ae),
        [f.path for f in files],
        origins,
        header,
        notes,
    )
