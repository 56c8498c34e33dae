"""An in-memory twin of engine.fhir.repository.ResourceRepository, for unit tests of the HTTP layer only
(the interaction tests run on the real record store, SQLite and PostgreSQL). Search knows ``_id`` and
``identifier`` (exact ``system|value``); every other non-result parameter is reported as ignored."""

from __future__ import annotations

import copy
import itertools
from datetime import UTC, datetime
from typing import Any

from engine.errors import Gone, InvalidInput, NotFound, PreconditionFailed
from engine.fhir.repository import HistoryEntry, SearchResult, StoredResource

_RESULT = {"_count", "_offset", "_sort", "_total", "_summary", "_elements", "_include", "_revinclude"}


class MemoryStore:
    def __init__(self) -> None:
        self.versions: dict[tuple[str, str], list[HistoryEntry]] = {}
        self.ids = itertools.count(1)

    def repository(self, uow: Any = None) -> MemoryRepository:
        return MemoryRepository(self)


class MemoryRepository:
    def __init__(self, store: MemoryStore) -> None:
        self.store = store

    def _put(self, rtype: str, rid: str, resource: dict[str, Any] | None, method: str) -> StoredResource:
        history = self.store.versions.setdefault((rtype, rid), [])
        version = len(history) + 1
        now = datetime.now(UTC)
        body = None
        if resource is not None:
            body = copy.deepcopy(resource)
            body["id"] = rid
            body["meta"] = {**body.get("meta", {}), "versionId": str(version), "lastUpdated": now.isoformat()}
        history.append(HistoryEntry(rtype, rid, version, now, method, body))
        return StoredResource(rtype, rid, version, now, body or {})

    def create(self, resource: dict[str, Any], *, id: str | None = None) -> StoredResource:
        return self._put(resource["resourceType"], id or str(next(self.store.ids)), resource, "POST")

    def read(self, resource_type: str, id: str) -> StoredResource:
        history = self.store.versions.get((resource_type, id))
        if not history:
            raise NotFound(f"{resource_type}/{id} not found")
        last = history[-1]
        if last.resource is None:
            raise Gone(f"{resource_type}/{id} was deleted")
        return StoredResource(resource_type, id, last.version_id, last.last_updated, last.resource)

    def vread(self, resource_type: str, id: str, version_id: int) -> StoredResource:
        history = self.store.versions.get((resource_type, id)) or []
        if not 1 <= version_id <= len(history):
            raise NotFound(f"{resource_type}/{id}/_history/{version_id} not found")
        h = history[version_id - 1]
        if h.resource is None:
            raise Gone("deleted version")
        return StoredResource(resource_type, id, h.version_id, h.last_updated, h.resource)

    def update(self, resource_type: str, id: str, resource: dict[str, Any], *, if_match: int | None = None):
        history = self.store.versions.get((resource_type, id))
        if if_match is not None and (not history or history[-1].version_id != if_match):
            raise PreconditionFailed("stale version")
        return self._put(resource_type, id, resource, "PUT"), not history

    def _matches(
        self, resource_type: str | None, params
    ) -> tuple[list[StoredResource], list[tuple[str, str]]]:
        ignored = [(k, v) for k, v in params if k not in _RESULT and k not in ("_id", "identifier")]
        out = []
        for (rtype, rid), history in sorted(self.store.versions.items()):
            last = history[-1]
            if last.resource is None or (resource_type and rtype != resource_type):
                continue
            ok = True
            for k, v in params:
                if k == "_id" and rid != v:
                    ok = False
                if k == "identifier":
                    ids = [
                        f"{i.get('system', '')}|{i.get('value', '')}"
                        for i in last.resource.get("identifier", [])
                    ]
                    ok = ok and v in ids
            if ok:
                out.append(StoredResource(rtype, rid, last.version_id, last.last_updated, last.resource))
        return out, ignored

    def conditional_create(self, resource_type: str, criteria, resource: dict[str, Any]):
        found, _ = self._matches(resource_type, criteria)
        if len(found) > 1:
            raise PreconditionFailed("several match")
        return (found[0], False) if found else (self.create(resource), True)

    def conditional_update(self, resource_type: str, criteria, resource: dict[str, Any]):
        found, _ = self._matches(resource_type, criteria)
        if len(found) > 1:
            raise PreconditionFailed("several match")
        if found:
            return self.update(resource_type, found[0].id, resource)
        return self.create(resource, id=resource.get("id")), True

    def delete(self, resource_type: str, id: str) -> StoredResource | None:
        history = self.store.versions.get((resource_type, id))
        if not history or history[-1].resource is None:
            return None
        return self._put(resource_type, id, None, "DELETE")

    def search(self, resource_type: str | None, params) -> SearchResult:
        found, ignored = self._matches(resource_type, params)
        values = dict(params)
        count = int(values.get("_count", 20))
        offset = int(values.get("_offset", 0))
        page = found[offset : offset + count]
        return SearchResult(page, [], len(found), offset, count, offset + count < len(found), ignored)

    def history(self, resource_type=None, id=None, *, since=None, count=100, offset=0) -> list[HistoryEntry]:
        entries = [
            h
            for (rtype, rid), history in self.store.versions.items()
            if (resource_type in (None, rtype)) and (id in (None, rid))
            for h in history
            if since is None or h.last_updated >= since
        ]
        entries.sort(key=lambda h: h.last_updated, reverse=True)
        return entries[offset : offset + count]

    def transaction(self, bundle: dict[str, Any]) -> dict[str, Any]:
        out = []
        for entry in bundle.get("entry", []):
            request = entry.get("request", {})
            if request.get("method") != "POST":
                raise InvalidInput("the fake only creates")
            stored = self.create(entry["resource"])
            out.append({"response": {"status": "201 Created", "location": f"{stored.reference}/_history/1"}})
        return {"resourceType": "Bundle", "type": f"{bundle['type']}-response", "entry": out}
