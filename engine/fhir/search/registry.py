"""The search-parameter registry, loaded from the official R4 SearchParameter definitions that Conduit ships
(``conformance/fhir-r4/search-parameters.json``, trimmed from the 4.0.1 Bundle by ``trim.py``).

Each parameter keeps the standard's code, type, FHIRPath expression (one per base type) and reference
targets. Parameters whose expression falls outside the FHIRPath subset of :mod:`engine.fhir.fhirpath` are
left out of the index and listed by :meth:`SearchRegistry.unsupported`, rather than indexed wrongly.

The CapabilityStatement is generated from :func:`supported_search_parameters`.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from functools import lru_cache
from pathlib import Path

from engine.fhir.fhirpath import Expression, FHIRPathError, compile_expression

__all__ = [
    "RESOURCE_LEVEL",
    "COLUMN_PARAMETERS",
    "SearchParameterDef",
    "SearchRegistry",
    "default_registry",
    "supported_search_parameters",
    "DEFINITIONS_PATH",
]

# engine/ imports no other project folder; it only reads the shipped definitions file.
DEFINITIONS_PATH = Path(__file__).resolve().parents[3] / "conformance" / "fhir-r4" / "search-parameters.json"

#: parameters every resource type has (R4 3.1.1.5.x, base Resource)
RESOURCE_LEVEL = ("_id", "_lastUpdated", "_tag", "_profile", "_security", "_source")
#: parameters answered from columns of the resource table instead of index rows
COLUMN_PARAMETERS = ("_id", "_lastUpdated")


@dataclass(frozen=True)
class SearchParameterDef:
    code: str
    type: str  # number | date | string | token | reference | quantity | uri
    resource_type: str
    expression: str
    description: str
    url: str
    targets: tuple[str, ...] = ()

    def compiled(self) -> Expression:
        return compile_expression(self.expression)


def _own_description(description: str, base: str) -> str:
    """Shared definitions describe every base in one markdown list; keep the line about ``base``."""
    if not description.startswith("Multiple Resources"):
        return description
    for line in description.splitlines():
        if line.startswith(f"* [{base}]("):
            return line.split("): ", 1)[-1].strip()
    return description


class SearchRegistry:
    """Search parameters by resource type and code."""

    def __init__(self, definitions: list[dict[str, object]]) -> None:
        self._by_type: dict[str, dict[str, SearchParameterDef]] = {}
        self._unsupported: list[SearchParameterDef] = []
        resource_level: list[SearchParameterDef] = []
        for item in definitions:
            expressions: dict[str, str] = item["expressions"]  # type: ignore[assignment]
            for base, expression in expressions.items():
                spd = SearchParameterDef(
                    code=str(item["code"]),
                    type=str(item["type"]),
                    resource_type=base,
                    expression=expression,
                    description=_own_description(str(item.get("description", "")), base),
                    url=str(item["url"]),
                    targets=tuple(item.get("target", ())),  # type: ignore[arg-type]
                )
                try:
                    compile_expression(expression)
                except FHIRPathError:
                    self._unsupported.append(spd)
                    continue
                if base == "Resource":
                    resource_level.append(spd)
                else:
                    self._by_type.setdefault(base, {})[spd.code] = spd
        for resource_type, params in self._by_type.items():
            for spd in resource_level:
                params.setdefault(
                    spd.code,
                    SearchParameterDef(
                        spd.code,
                        spd.type,
                        resource_type,
                        spd.expression.replace("Resource.", f"{resource_type}.", 1),
                        spd.description,
                        spd.url,
                        spd.targets,
                    ),
                )
        self._resource_level = {spd.code: spd for spd in resource_level}

    @classmethod
    def load(cls, path: Path = DEFINITIONS_PATH) -> SearchRegistry:
        return cls(json.loads(path.read_text(encoding="utf-8"))["parameters"])

    def resource_types(self) -> list[str]:
        return sorted(self._by_type)

    def supports(self, resource_type: str) -> bool:
        return resource_type in self._by_type

    def params(self, resource_type: str | None) -> dict[str, SearchParameterDef]:
        """Parameters of ``resource_type`` (None: the Resource-level ones valid across all types)."""
        if resource_type is None:
            return self._resource_level
        return self._by_type.get(resource_type, {})

    def get(self, resource_type: str | None, code: str) -> SearchParameterDef | None:
        return self.params(resource_type).get(code)

    def unsupported(self) -> list[SearchParameterDef]:
        """Definitions whose expression the FHIRPath subset cannot evaluate (not indexed)."""
        return list(self._unsupported)


@lru_cache(maxsize=1)
def default_registry() -> SearchRegistry:
    return SearchRegistry.load()


def supported_search_parameters(resource_type: str) -> list[SearchParameterDef]:
    """Per resource type, the searchable parameters (code, type, description, url) sorted by code — what
    the CapabilityStatement lists under ``rest.resource.searchParam``."""
    return sorted(default_registry().params(resource_type).values(), key=lambda p: p.code)
