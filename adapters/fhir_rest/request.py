"""The FHIR request model: which interaction an HTTP method and path under ``/fhir`` name (R4 §3.1.0).

=========================================  ========================================
method and path                            interaction
=========================================  ========================================
GET  metadata                              capabilities
POST ``/``                                 batch / transaction
GET  ``/`` ,  ``/_history``                search-system, history-system
GET / POST / PUT / DELETE ``/T``           search-type, create, conditional update/delete
POST ``/T/_search``                        search-type (form body)
GET  ``/T/_history``                       history-type
GET / POST ``/T/$validate``                $validate (type level)
GET / PUT / PATCH / DELETE ``/T/id``       read, update, patch, delete
GET / POST ``/T/id/$validate``             $validate (instance level)
GET  ``/T/id/_history[/vid]``              history-instance, vread
GET  ``/Patient/id/T``                     search-compartment (R4 3.1.1.2)
=========================================  ========================================
"""

from __future__ import annotations

import re
from dataclasses import dataclass

from engine.errors import InvalidInput, NotFound, NotSupported
from engine.fhir.r4_validator import UNKNOWN_TYPE, is_element_name
from engine.fhir.validation import is_resource_type

__all__ = ["FhirRequest", "MethodNotAllowed", "route", "ID_PATTERN"]

#: R4 id datatype: 1-64 of [A-Za-z0-9\-\.]
ID_PATTERN = re.compile(r"^[A-Za-z0-9\-.]{1,64}$")


@dataclass(frozen=True)
class FhirRequest:
    interaction: str
    resource_type: str | None = None
    id: str | None = None
    version_id: int | None = None
    compartment: tuple[str, str] | None = None
    """For search-compartment: (compartment type, id), e.g. ("Patient", "123"); resource_type is searched."""


_METHODS: dict[str, dict[str, str]] = {
    # shape -> method -> interaction
    "metadata": {"GET": "capabilities"},
    "root": {"GET": "search-system", "POST": "batch"},
    "system-history": {"GET": "history-system"},
    "type": {
        "GET": "search-type",
        "POST": "create",
        "PUT": "conditional-update",
        "DELETE": "conditional-delete",
    },
    "type-search": {"POST": "search-type"},
    "type-history": {"GET": "history-type"},
    "type-validate": {"GET": "validate", "POST": "validate"},
    "instance": {"GET": "read", "PUT": "update", "PATCH": "patch", "DELETE": "delete"},
    "instance-validate": {"GET": "validate", "POST": "validate"},
    "instance-history": {"GET": "history-instance"},
    "vread": {"GET": "vread"},
    "compartment": {"GET": "search-compartment"},
}


class MethodNotAllowed(NotSupported):
    """405, naming the methods the path takes (the Allow header)."""

    def __init__(self, method: str, allowed: list[str]) -> None:
        super().__init__(f"Method {method[:10]} is not allowed here (allowed: {', '.join(allowed)})", 405)
        self.allowed = allowed


def _check_type(name: str) -> str:
    if not is_resource_type(name):
        # a type name is named back; any other URL segment may be data and is not echoed
        raise NotFound(f"Unknown resource type '{name}'" if is_element_name(name) else UNKNOWN_TYPE)
    return name


def _check_id(value: str) -> str:
    if not ID_PATTERN.match(value):
        raise InvalidInput(
            "Invalid resource id: 1-64 characters of A-Z, a-z, 0-9, '-' and '.'", location="id"
        )
    return value


def _shape(parts: list[str]) -> tuple[str, dict[str, str]]:
    n = len(parts)
    if n == 0:
        return "root", {}
    if n == 1:
        if parts[0] == "metadata":
            return "metadata", {}
        if parts[0] == "_history":
            return "system-history", {}
        if parts[0].startswith("$"):
            raise NotSupported(f"Operation '{parts[0][:64]}' is not supported at the system level", 404)
        return "type", {"type": parts[0]}
    if n == 2:
        kind = {"_search": "type-search", "_history": "type-history", "$validate": "type-validate"}.get(
            parts[1]
        )
        if kind:
            return kind, {"type": parts[0]}
        if parts[1].startswith("$"):
            raise NotSupported(f"Operation '{parts[1][:64]}' is not supported", 404)
        return "instance", {"type": parts[0], "id": parts[1]}
    if n == 3 and parts[2] == "_history":
        return "instance-history", {"type": parts[0], "id": parts[1]}
    if n == 3 and parts[2] == "$validate":
        return "instance-validate", {"type": parts[0], "id": parts[1]}
    if n == 3 and not parts[2].startswith(("_", "$")):
        return "compartment", {"compartment": parts[0], "id": parts[1], "type": parts[2]}
    if n == 4 and parts[2] == "_history":
        return "vread", {"type": parts[0], "id": parts[1], "vid": parts[3]}
    raise NotFound("No FHIR interaction at this path")


def route(method: str, path: str) -> FhirRequest:
    """The interaction of ``method`` on ``path`` (relative to the base): NotFound for unknown paths or
    types, 405 (NotSupported) for a method the path does not take."""
    parts = [p for p in path.strip("/").split("/") if p] if path.strip("/") else []
    shape, found = _shape(parts)
    interaction = _METHODS[shape].get(method.upper())
    if interaction is None:
        raise MethodNotAllowed(method, sorted(_METHODS[shape]))
    resource_type = _check_type(found["type"]) if "type" in found else None
    rid = _check_id(found["id"]) if "id" in found else None
    vid = None
    if "vid" in found:
        if not found["vid"].isdigit() or len(found["vid"]) > 18:
            raise InvalidInput("A version id is a positive integer", location="vid")
        vid = int(found["vid"])
    if "compartment" in found:
        assert rid is not None
        return FhirRequest(interaction, resource_type, None, None, (_check_type(found["compartment"]), rid))
    return FhirRequest(interaction, resource_type, rid, vid)
