"""The mapping registry: every mapping file of the shipped and site directories, compiled, and the choice
of mapping for a message (message type, trigger event, version range, sender MSH-3/MSH-4).

DICOM mappings (``direction: dicom-to-fhir``, implied in a ``dicom/`` folder) are kept apart in
``dicom``: they are chosen by name, never for an HL7 v2 message."""

from __future__ import annotations

import importlib
import threading
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from engine.errors import ConfigurationError, Issue, MappingError
from engine.hl7v2.message import Message
from engine.mapping.concepts import Terminology
from engine.mapping.loader import LocatedDict, load_yaml, merge
from engine.mapping.settings import SHIPPED_DIR, MappingSettings
from engine.mapping.spec import Mapping, compile_mapping

__all__ = ["Registry", "default_registry", "reset_default_registry"]


@dataclass
class _Doc:
    name: str
    file: str
    doc: LocatedDict
    folder: str = ""


def _display(path: Path) -> str:
    try:
        return str(path.relative_to(SHIPPED_DIR.parent))
    except ValueError:
        return str(path)


class Registry:
    def __init__(
        self, dirs: list[Path] | None = None, *, timezone: str | None = "UTC", full_validation: bool = True
    ):
        self.dirs = [SHIPPED_DIR] + [Path(d) for d in (dirs or [])]
        self.timezone = timezone
        self.full_validation = full_validation
        self.terminology = Terminology()
        self.mappings: dict[str, Mapping] = {}
        self.outbound: dict[str, Any] = {}
        self.dicom: dict[str, Mapping] = {}
        self._docs: dict[str, _Doc] = {}
        self.load()

    @classmethod
    def from_settings(cls, settings: MappingSettings | None = None) -> Registry:
        settings = settings or MappingSettings()
        for module in settings.function_modules:
            importlib.import_module(module)
        return cls(settings.dirs, timezone=settings.timezone, full_validation=settings.full_validation)

    def load(self) -> None:
        for root in self.dirs:
            if not root.is_dir():
                raise ConfigurationError(f"mapping directory {root} does not exist")
            self.terminology.load_dir(root)
        docs: dict[str, _Doc] = {}
        for root in self.dirs:
            for sub in ("hl7v2", "fhir", "dicom"):
                folder = root / sub
                if not folder.is_dir():
                    continue
                for path in sorted(folder.rglob("*.yaml")):
                    display = _display(path)
                    doc = load_yaml(path, display)
                    if not isinstance(doc, LocatedDict):
                        raise ConfigurationError(f"{display}: a mapping file is a YAML mapping")
                    name = str(doc.get("mapping") or path.stem)
                    docs[name] = _Doc(name, display, doc, sub)
        self._docs = docs
        mappings: dict[str, Mapping] = {}
        dicom: dict[str, Mapping] = {}
        for name, d in docs.items():
            direction = d.doc.get("direction") or ("dicom-to-fhir" if d.folder == "dicom" else None)
            if direction == "dicom-to-fhir":
                from engine.mapping.dicom import compile_dicom_mapping

                dicom[name] = compile_dicom_mapping(
                    self._resolved(name, ()), name, d.file, self.terminology, self.timezone
                )
                continue
            if d.doc.get("direction") == "fhir-to-v2":
                from engine.mapping.outbound import compile_outbound

                self.outbound[name] = compile_outbound(
                    self._resolved(name, ()), name, d.file, self.terminology
                )
                continue
            mappings[name] = compile_mapping(
                self._resolved(name, ()), name, d.file, self.terminology, self.timezone
            )
        self.mappings = mappings
        self.dicom = dicom

    def _resolved(self, name: str, seen: tuple[str, ...]) -> LocatedDict:
        d = self._docs[name]
        parent = d.doc.get("extends")
        if not parent:
            return d.doc
        if parent in seen or parent == name:
            raise ConfigurationError(f"{d.doc.where('extends')}: extends cycle through {parent!r}")
        if parent not in self._docs:
            raise ConfigurationError(f"{d.doc.where('extends')}: extends unknown mapping {parent!r}")
        base = self._resolved(parent, seen + (name,))
        own = LocatedDict(d.doc)
        own.file, own.line, own.lines = d.doc.file, d.doc.line, dict(d.doc.lines)
        merged = merge(base, own)
        merged.pop("abstract", None)
        if d.doc.get("abstract"):
            merged["abstract"] = True
        return merged

    def get(self, name: str) -> Mapping:
        try:
            return self.mappings[name]
        except KeyError:
            raise MappingError(
                f"no mapping named {name!r}", issues=[Issue(f"no mapping named {name!r}", location="MSH-9")]
            ) from None

    def get_dicom(self, name: str) -> Mapping:
        """The DICOM mapping of that name (``mappings/dicom/``)."""
        try:
            return self.dicom[name]
        except KeyError:
            raise ConfigurationError(f"no DICOM mapping named {name!r}") from None

    def select(self, message: Message) -> Mapping:
        msh = message.msh
        mtype, event, version = message.message_type, message.trigger_event, message.version
        app, facility = msh.get(3), msh.get(4)
        best: tuple[int, str] | None = None
        for name, m in self.mappings.items():
            if m.abstract:
                continue
            score = m.match.score(mtype, event, version, app, facility)
            if score is not None and (best is None or score > best[0]):
                best = (score, name)
        if best is None:
            text = f"no mapping for {mtype}^{event} (HL7 v2 {version or '?'})"
            raise MappingError(text, issues=[Issue(text, location="MSH-9")])
        return self.mappings[best[1]]


_default: Registry | None = None
_lock = threading.Lock()


def default_registry() -> Registry:
    global _default
    if _default is None:
        with _lock:
            if _default is None:
                _default = Registry.from_settings()
    return _default


def reset_default_registry(registry: Registry | None = None) -> None:
    """Drop (or replace) the process-wide registry, e.g. after mapping files changed."""
    global _default
    _default = registry
