"""The record-store port: what every service and adapter may ask of the shared FHIR resource store.

services/records implements it over SQL (typed search-index tables); the runtime provides it as the
``records`` port, a factory ``records(uow) -> ResourceRepository`` bound to the caller's unit of work.
Nothing here commits: the caller's ``Database.unit_of_work()`` does, and events
(``resource.created/updated/deleted``) are published after that commit.

Resources travel as plain JSON dicts (R4 JSON). Errors are engine.errors classes
(NotFound, Gone, PreconditionFailed, InvalidInput, Conflict).

The SQL store also offers ``read_raw(type, id) -> (json_bytes, version_id, last_updated)`` (the stored
bytes, for serving a read without re-serializing) — optional: callers use ``getattr`` and fall back to read.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any, Protocol

__all__ = ["StoredResource", "SearchResult", "HistoryEntry", "ResourceRepository", "SearchParams"]

#: search parameters as the ordered (name[:modifier], value) pairs of a query string; repeated names are AND,
#: commas inside a value are OR, e.g. [("subject", "Patient/1"), ("code", "http://loinc.org|718-7")]
SearchParams = Sequence[tuple[str, str]]


@dataclass(frozen=True)
class StoredResource:
    resource_type: str
    id: str
    version_id: int
    last_updated: datetime
    resource: dict[str, Any]
    """The full resource JSON including ``id`` and ``meta.versionId``/``meta.lastUpdated``."""

    @property
    def etag(self) -> str:
        return f'W/"{self.version_id}"'

    @property
    def reference(self) -> str:
        return f"{self.resource_type}/{self.id}"


@dataclass(frozen=True)
class HistoryEntry:
    resource_type: str
    id: str
    version_id: int
    last_updated: datetime
    method: str  # POST, PUT or DELETE
    resource: dict[str, Any] | None  # None for a deletion


@dataclass
class SearchResult:
    matches: list[StoredResource]
    included: list[StoredResource] = field(default_factory=list)
    total: int | None = None
    """Number of matches overall when asked for (``_total=accurate``) or cheaply known."""
    offset: int = 0
    count: int = 0
    has_more: bool = False
    ignored: list[tuple[str, str]] = field(default_factory=list)
    """Parameters that were unknown and ignored (lenient handling), reported in an OperationOutcome."""


class ResourceRepository(Protocol):
    def create(self, resource: dict[str, Any], *, id: str | None = None) -> StoredResource:
        """Store a new resource; a server id is assigned unless ``id`` is given (update-as-create)."""
        ...

    def read(self, resource_type: str, id: str) -> StoredResource:
        """Current version. NotFound if it never existed, Gone if deleted."""
        ...

    def vread(self, resource_type: str, id: str, version_id: int) -> StoredResource: ...

    def update(
        self, resource_type: str, id: str, resource: dict[str, Any], *, if_match: int | None = None
    ) -> tuple[StoredResource, bool]:
        """Replace (or create with this id). Returns (stored, created). PreconditionFailed if stale."""
        ...

    def conditional_update(
        self, resource_type: str, criteria: SearchParams, resource: dict[str, Any]
    ) -> tuple[StoredResource, bool]:
        """Update the single match of ``criteria`` (e.g. [("identifier", "sys|val")]) or create when none;
        PreconditionFailed when several match. Returns (stored, created)."""
        ...

    def conditional_create(
        self, resource_type: str, criteria: SearchParams, resource: dict[str, Any]
    ) -> tuple[StoredResource, bool]:
        """Create unless exactly one resource matches (then return it, created=False)."""
        ...

    def delete(self, resource_type: str, id: str) -> StoredResource | None:
        """Delete; returns the deleted version, None when there was nothing to delete."""
        ...

    def search(
        self, resource_type: str | None, params: SearchParams, *, compartment: tuple[str, str] | None = None
    ) -> SearchResult:
        """Search one type (or all types when None) with FHIR search semantics, including the result
        parameters _count, _offset, _sort, _include, _revinclude, _total, _summary, _elements.
        ``compartment=("Patient", id)`` searches that patient's compartment (``GET Patient/[id]/[type]``)."""
        ...

    def history(
        self,
        resource_type: str | None = None,
        id: str | None = None,
        *,
        since: datetime | None = None,
        count: int = 100,
        offset: int = 0,
    ) -> list[HistoryEntry]:
        """Versions newest first, of one resource, one type, or the whole system."""
        ...

    def transaction(self, bundle: dict[str, Any]) -> dict[str, Any]:
        """Process a batch or transaction Bundle inside the caller's unit of work; returns the response
        Bundle. A transaction raises on the first failure (the caller rolls back)."""
        ...
