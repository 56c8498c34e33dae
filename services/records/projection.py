"""Result shaping for search: ``_elements`` and ``_summary`` (R4 3.1.1.5.6-7). A shaped resource is marked
with the SUBSETTED tag, so no client mistakes it for the whole resource."""

from __future__ import annotations

from typing import Any

from engine.fhir.repository import StoredResource
from services.records.summary import summary_elements

__all__ = ["SUBSETTED", "MANDATORY", "project_elements", "summarize"]

SUBSETTED = {"system": "http://terminology.hl7.org/CodeSystem/v3-ObservationValue", "code": "SUBSETTED"}
MANDATORY = ("resourceType", "id", "meta")


def _subsetted(stored: StoredResource, resource: dict[str, Any]) -> StoredResource:
    meta = dict(resource.get("meta") or {})
    tags = [t for t in meta.get("tag", []) if t.get("code") != "SUBSETTED"]
    meta["tag"] = [*tags, SUBSETTED]
    resource["meta"] = meta
    return StoredResource(stored.resource_type, stored.id, stored.version_id, stored.last_updated, resource)


def project_elements(stored: StoredResource, elements: tuple[str, ...]) -> StoredResource:
    """_elements: the named top-level elements (choice names match value[x]) plus the mandatory ones."""
    keep = {}
    for key, value in stored.resource.items():
        if (
            key in MANDATORY
            or key in elements
            or any(key.startswith(e) and key[len(e) : len(e) + 1].isupper() for e in elements)
        ):
            keep[key] = value
    return _subsetted(stored, keep)


def summarize(stored: StoredResource, mode: str) -> StoredResource:
    """_summary=true (the isSummary elements), text (narrative and mandatory) or data (all but narrative)."""
    if mode == "true":
        names = summary_elements(stored.resource_type)
        if names is None:  # a type the models do not know: nothing is left out
            return stored
        keep = {k: v for k, v in stored.resource.items() if k in MANDATORY or k in names}
    elif mode == "text":
        keep = {k: v for k, v in stored.resource.items() if k in (*MANDATORY, "text")}
    else:  # data: everything but the narrative
        keep = {k: v for k, v in stored.resource.items() if k != "text"}
    return _subsetted(stored, keep)
