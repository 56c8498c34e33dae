"""Code tables and ConceptMaps: v2 codes to FHIR codes, local codes to LOINC/SNOMED.

* A **table** maps one code to one code (HL7 Table 0001 ``F`` → ``female``); tables live in YAML files
  under ``mappings/tables/`` (``tables:`` → name → ``map``, ``unmapped``, ``default``).
* A **ConceptMap** translates a coding (system + code) into target codings. It is read from YAML, CSV
  (``source_code,target_code,target_system,target_display[,source_system]``) or FHIR ConceptMap JSON,
  under ``mappings/conceptmaps/``.
* The HL7 v2 tables (``v2-tables.json``, a trimmed copy of the official v2 CodeSystems) give displays.

``unmapped`` says what happens to a code with no entry: ``keep`` (pass it through), ``default`` (use the
default) or ``error`` (the message fails with a MappingError naming the field).
"""

from __future__ import annotations

import csv
import json
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any
from urllib.parse import quote

import yaml

from engine.errors import ConfigurationError

__all__ = ["CodeTable", "ConceptMap", "Terminology", "UNMAPPED", "CODE_SYSTEMS", "system_uri"]

UNMAPPED = ("keep", "default", "error")

#: HL7 v2 coding system names (Table 0396) to FHIR system URIs; mappings may add to it (``codesystems:``)
CODE_SYSTEMS: dict[str, str] = {
    "LN": "http://loinc.org",
    "LOINC": "http://loinc.org",
    "SCT": "http://snomed.info/sct",
    "SNM": "http://snomed.info/sct",
    "SNOMED": "http://snomed.info/sct",
    "SNOMEDCT": "http://snomed.info/sct",
    "UCUM": "http://unitsofmeasure.org",
    "ANSI+": "http://unitsofmeasure.org",
    "I10": "http://hl7.org/fhir/sid/icd-10",
    "I10C": "http://hl7.org/fhir/sid/icd-10-cm",
    "ICD10CM": "http://hl7.org/fhir/sid/icd-10-cm",
    "I9": "http://hl7.org/fhir/sid/icd-9-cm",
    "I9C": "http://hl7.org/fhir/sid/icd-9-cm",
    "ICD9": "http://hl7.org/fhir/sid/icd-9-cm",
    "CPT": "http://www.ama-assn.org/go/cpt",
    "C4": "http://www.ama-assn.org/go/cpt",
    "CVX": "http://hl7.org/fhir/sid/cvx",
    "MVX": "http://terminology.hl7.org/CodeSystem/MVX",
    "NDC": "http://hl7.org/fhir/sid/ndc",
    "RXNORM": "http://www.nlm.nih.gov/research/umls/rxnorm",
    "RXN": "http://www.nlm.nih.gov/research/umls/rxnorm",
    "CDCREC": "urn:oid:2.16.840.1.113883.6.238",
    "NCIT": "http://ncicb.nci.nih.gov/xml/owl/EVS/Thesaurus.owl",
    "NPI": "http://hl7.org/fhir/sid/us-npi",
    "ISO3166": "urn:iso:std:iso:3166",
    "ISO+": "urn:iso:std:iso:11073:10101",
    "HCPCS": "urn:oid:2.16.840.1.113883.6.285",
    "DCM": "http://dicom.nema.org/resources/ontology/DCM",
}


def uri_text(text: str) -> str:
    """A URI the sender gave (a coding system named by URL/URN, an HD universal id of type URI) with
    whitespace and other characters a URI cannot hold percent-encoded; a valid URI stays as it is."""
    return quote(text.strip(), safe="!#$%&'()*+,/:;=?@[]~-._")


def system_uri(name: str, extra: dict[str, str] | None = None) -> str | None:
    """The FHIR system URI of an HL7 v2 coding system name (CWE-3); None for local codes (``L``, ``99zzz``)."""
    if not name:
        return None
    if extra and name in extra:
        return extra[name]
    found = CODE_SYSTEMS.get(name) or CODE_SYSTEMS.get(name.upper())
    if found:
        return found
    upper = name.upper()
    if upper.startswith("HL7") and upper[3:].isascii() and upper[3:].isdigit():
        return f"http://terminology.hl7.org/CodeSystem/v2-{upper[3:].zfill(4)}"
    if upper.startswith("URN:") or "://" in name:
        return uri_text(name)
    if name.isascii() and name[0].isdigit() and all(p.isdigit() for p in name.split(".")) and "." in name:
        return f"urn:oid:{name}"
    return None


@dataclass
class CodeTable:
    name: str
    codes: dict[str, str]
    unmapped: str = "keep"
    default: str | None = None
    system: str | None = None
    source: str = ""  # file:line, for messages

    def lookup(self, code: str) -> str | None:
        """The target code, or None when unmapped and ``unmapped`` is keep-with-nothing; raises KeyError
        when unmapped is ``error``."""
        found = self.codes.get(code)
        if found is None:
            found = self.codes.get(code.upper())
        if found is not None:
            return found
        if self.unmapped == "default":
            return self.default
        if self.unmapped == "error":
            raise KeyError(code)
        return code


@dataclass
class ConceptMap:
    name: str
    # (source_system or "", source_code) -> [coding, ...]
    entries: dict[tuple[str, str], list[dict[str, str]]] = field(default_factory=dict)
    unmapped: str = "keep"
    default: dict[str, str] | None = None
    source: str = ""

    def translate(
        self, system: str | None, code: str, unmapped: str | None = None
    ) -> list[dict[str, str]] | None:
        found = self.entries.get((system or "", code)) or self.entries.get(("", code))
        if found:
            return found
        unmapped = unmapped or self.unmapped
        if unmapped == "default" and self.default:
            return [self.default]
        if unmapped == "error":
            raise KeyError(code)
        return None

    def add(self, source_system: str | None, source_code: str, target: dict[str, str]) -> None:
        coding = {k: v for k, v in target.items() if v}
        self.entries.setdefault((source_system or "", source_code), []).append(coding)


def _load_yaml_map(name: str, data: dict[str, Any], where: str) -> ConceptMap:
    cm = ConceptMap(name, unmapped=data.get("unmapped", "keep"), source=where)
    if cm.unmapped not in UNMAPPED:
        raise ConfigurationError(f"{where}: unmapped must be one of {', '.join(UNMAPPED)}")
    default = data.get("default")
    target_system = data.get("target_system")
    if isinstance(default, dict):
        cm.default = {"system": default.get("system", target_system), **default}
    elif default:
        cm.default = {"system": target_system, "code": str(default)}
    for row in data.get("map", []) or []:
        cm.add(
            row.get("source_system", data.get("source_system")),
            str(row["source"]),
            {
                "system": row.get("target_system", target_system),
                "code": str(row["target"]),
                "display": row.get("display", ""),
            },
        )
    return cm


def _load_csv_map(path: Path) -> ConceptMap:
    cm = ConceptMap(path.stem, source=str(path))
    with path.open(newline="", encoding="utf-8") as fh:
        for row in csv.DictReader(fh):
            cm.add(
                row.get("source_system") or None,
                row["source_code"].strip(),
                {
                    "system": row.get("target_system", "").strip(),
                    "code": row["target_code"].strip(),
                    "display": (row.get("target_display") or "").strip(),
                },
            )
    return cm


def _load_fhir_map(path: Path) -> ConceptMap:
    resource = json.loads(path.read_text(encoding="utf-8"))
    cm = ConceptMap(resource.get("name") or resource.get("id") or path.stem, source=str(path))
    for group in resource.get("group", []):
        for element in group.get("element", []):
            for target in element.get("target", []):
                if target.get("equivalence") in ("unmatched", "disjoint"):
                    continue
                cm.add(
                    group.get("source"),
                    element["code"],
                    {
                        "system": group.get("target", ""),
                        "code": target["code"],
                        "display": target.get("display", ""),
                    },
                )
        unmapped = group.get("unmapped")
        if unmapped and unmapped.get("mode") == "fixed":
            cm.unmapped, cm.default = "default", {"system": group.get("target", ""), "code": unmapped["code"]}
    return cm


class Terminology:
    """All tables and ConceptMaps of the mapping directories, by name."""

    def __init__(self) -> None:
        self.tables: dict[str, CodeTable] = {}
        self.concept_maps: dict[str, ConceptMap] = {}
        self.v2_displays: dict[str, dict[str, str]] = {}

    def load_dir(self, root: Path) -> None:
        tables = root / "tables"
        if tables.is_dir():
            for path in sorted(tables.glob("*.yaml")):
                self._load_tables(path)
            v2 = tables / "v2-tables.json"
            if v2.exists():
                for table, codes in json.loads(v2.read_text(encoding="utf-8"))["tables"].items():
                    self.v2_displays.setdefault(table, {}).update(codes)
        maps = root / "conceptmaps"
        if maps.is_dir():
            for path in sorted(maps.iterdir()):
                if path.suffix in (".yaml", ".yml"):
                    data = yaml.safe_load(path.read_text(encoding="utf-8")) or {}
                    name = data.get("conceptmap", path.stem)
                    self.concept_maps[name] = _load_yaml_map(name, data, str(path))
                elif path.suffix == ".csv":
                    self.concept_maps[path.stem] = _load_csv_map(path)
                elif path.suffix == ".json":
                    cm = _load_fhir_map(path)
                    self.concept_maps[path.stem] = cm

    def _load_tables(self, path: Path) -> None:
        data = yaml.safe_load(path.read_text(encoding="utf-8")) or {}
        for name, spec in (data.get("tables") or {}).items():
            where = f"{path}"
            unmapped = spec.get("unmapped", "keep")
            if unmapped not in UNMAPPED:
                raise ConfigurationError(
                    f"{where}: table {name}: unmapped must be one of {', '.join(UNMAPPED)}"
                )
            self.tables[name] = CodeTable(
                name,
                {str(k): str(v) for k, v in (spec.get("map") or {}).items()},
                unmapped=unmapped,
                default=spec.get("default"),
                system=spec.get("system"),
                source=where,
            )

    def table(self, name: str) -> CodeTable:
        try:
            return self.tables[name]
        except KeyError:
            raise ConfigurationError(f"unknown code table {name!r}") from None

    def concept_map(self, name: str) -> ConceptMap:
        try:
            return self.concept_maps[name]
        except KeyError:
            raise ConfigurationError(f"unknown ConceptMap {name!r}") from None

    def display(self, table: str, code: str) -> str | None:
        return self.v2_displays.get(table, {}).get(code)
