"""``_summary=true``: the elements the R4 definitions mark isSummary, per resource type.

Read from the fhir.resources R4B models (``summary_element_property`` on each field; R4B keeps R4's summary
flags for the resource types in scope). Only top-level elements are filtered: nested elements of a kept
element are returned whole, which the spec allows (the result is marked SUBSETTED either way).
"""

from __future__ import annotations

from functools import lru_cache

__all__ = ["summary_elements"]


@lru_cache(maxsize=256)
def summary_elements(resource_type: str) -> frozenset[str] | None:
    """JSON names of the summary elements of ``resource_type`` (choice types expanded, e.g.
    ``valueQuantity``), or None when the type is unknown to the models."""
    try:
        from fhir.resources.R4B import get_fhir_model_class

        model = get_fhir_model_class(resource_type)
    except (KeyError, ValueError, ImportError, AttributeError):
        return None
    names = set()
    for name, field in model.model_fields.items():
        extra = field.json_schema_extra if isinstance(field.json_schema_extra, dict) else {}
        if extra.get("summary_element_property"):
            names.add(field.alias or name)
    return frozenset(names)
