"""The CapabilityStatement (R4 §2.38, fhirVersion 4.0.1), generated from what is registered.

Resource types are those with both a search-parameter registration (``engine.fhir.search``) and a model
that validates them (``engine.fhir.validation``); their search parameters and types come from the registry.
The committed artifact ``conformance/capability-statement.json`` is this function's output
(``conduit conformance generate``); a test fails when the two drift.
"""

from __future__ import annotations

from typing import Any

from engine.fhir.search import default_registry, supported_search_parameters
from engine.fhir.validation import is_resource_type

__all__ = [
    "capability_statement",
    "supported_resource_types",
    "TYPE_INTERACTIONS",
    "SYSTEM_INTERACTIONS",
    "STATEMENT_DATE",
]

#: the date the statement describes; bumped when the interfaces change (kept fixed so the artifact is
#: reproducible)
STATEMENT_DATE = "2026-11-21"

#: what every supported type answers (TypeRestfulInteraction, R4 value set)
TYPE_INTERACTIONS = (
    "read",
    "vread",
    "update",
    "patch",
    "delete",
    "history-instance",
    "history-type",
    "create",
    "search-type",
)
#: SystemRestfulInteraction
SYSTEM_INTERACTIONS = ("transaction", "batch", "search-system", "history-system")

_VALIDATE = {"name": "validate", "definition": "http://hl7.org/fhir/OperationDefinition/Resource-validate"}


def supported_resource_types() -> list[str]:
    return [t for t in default_registry().resource_types() if is_resource_type(t)]


def _resource(resource_type: str) -> dict[str, Any]:
    params = supported_search_parameters(resource_type)
    references = [p.code for p in params if p.type == "reference"]
    return {
        "type": resource_type,
        "profile": f"http://hl7.org/fhir/StructureDefinition/{resource_type}",
        "interaction": [{"code": code} for code in TYPE_INTERACTIONS],
        "versioning": "versioned-update",
        "readHistory": True,
        "updateCreate": True,
        "conditionalCreate": True,
        "conditionalRead": "not-supported",
        "conditionalUpdate": True,
        "conditionalDelete": "single",
        **({"searchInclude": [f"{resource_type}:{code}" for code in references]} if references else {}),
        "searchParam": [
            {"name": p.code, "definition": p.url, "type": p.type}
            for p in params
            if p.code not in _RESULT_PARAMS
        ],
        "operation": [_VALIDATE],
    }


#: result parameters are described by the server, not listed as search parameters
_RESULT_PARAMS = frozenset({"_count", "_sort", "_include", "_revinclude", "_summary", "_elements", "_total"})


def capability_statement(*, software_version: str = "0.1.0") -> dict[str, Any]:
    """The server's CapabilityStatement as R4 JSON (deterministic for a given code base)."""
    return {
        "resourceType": "CapabilityStatement",
        "id": "conduit",
        "url": "urn:conduit:capability-statement",
        "name": "ConduitFhirServer",
        "title": "Conduit FHIR R4 server",
        "status": "active",
        "experimental": False,
        "date": STATEMENT_DATE,
        "publisher": "Conduit",
        "kind": "instance",
        "software": {"name": "Conduit", "version": software_version},
        "implementation": {"description": "Conduit FHIR R4 REST API"},
        "fhirVersion": "4.0.1",
        "format": ["json", "application/fhir+json"],
        "patchFormat": ["application/json-patch+json"],
        "rest": [
            {
                "mode": "server",
                "documentation": "JSON only. Paging with _count and _offset; Prefer return= and handling= "
                "honoured; If-Match, If-None-Exist and conditional update/delete supported.",
                "security": {
                    "cors": False,
                    "description": "Bearer token (Authorization: Bearer ...) when the server is configured "
                    "with one; TLS when configured.",
                },
                "resource": [_resource(t) for t in supported_resource_types()],
                "interaction": [{"code": code} for code in SYSTEM_INTERACTIONS],
                "compartment": ["http://hl7.org/fhir/CompartmentDefinition/patient"],
                "searchParam": [
                    {"name": p.code, "definition": p.url, "type": p.type}
                    for p in sorted(default_registry().params(None).values(), key=lambda p: p.code)
                ],
                "operation": [_VALIDATE],
            }
        ],
    }
