"""The R4 Patient compartment (CompartmentDefinition/patient): which reference parameters of which resource
types place a resource in a patient's compartment, for ``GET [base]/Patient/[id]/[type]`` (R4 3.1.1.2)."""

from __future__ import annotations

import json
from functools import lru_cache

from engine.fhir.search.registry import DEFINITIONS_PATH

__all__ = ["COMPARTMENTS", "compartment_params"]

COMPARTMENT_PATH = DEFINITIONS_PATH.parent / "compartment-patient.json"
#: compartment types with a shipped definition
COMPARTMENTS = ("Patient",)


@lru_cache(maxsize=1)
def _patient() -> dict[str, tuple[str, ...]]:
    body = json.loads(COMPARTMENT_PATH.read_text(encoding="utf-8"))
    return {rtype: tuple(params) for rtype, params in body["resource"].items()}


def compartment_params(compartment: str, resource_type: str) -> tuple[str, ...] | None:
    """Parameters of ``resource_type`` that link it to a ``compartment`` resource; None when the type is not
    in the compartment (or the compartment is not one Conduit ships)."""
    if compartment != "Patient":
        return None
    return _patient().get(resource_type)
