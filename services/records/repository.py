"""The SQL record store: :class:`engine.fhir.repository.ResourceRepository` over the records_* tables.

Writes go through SQLAlchemy Core on the caller's connection (no ORM unit of work on the hot path). New
versions go through a :class:`~services.records.writes.WriteBuffer`: flushed at once for a single write, at
the end of a transaction Bundle (or before any read inside it) so a Bundle's rows are inserted with one
statement per table. Concurrent writers are serialized per resource by optimistic versioning: the UPDATE
only applies when the row still has the version that was read (PostgreSQL also takes the row lock with
SELECT ... FOR UPDATE; SQLite writers begin IMMEDIATE); the loser gets Conflict. Conditional writes on the
same criteria are serialized (:meth:`SqlResourceRepository.lock_criteria`). Events are queued with
``uow.defer`` so they publish only after commit.
"""

from __future__ import annotations

import re
import uuid
from collections.abc import Iterator
from contextlib import contextmanager
from datetime import UTC, datetime
from typing import Any

import orjson
from sqlalchemy import Connection, delete, false, func, or_, select, tuple_, update
from sqlalchemy.exc import IntegrityError

from engine.db import UnitOfWork
from engine.errors import Conflict, Gone, InvalidInput, NotFound, NotSupported, PreconditionFailed
from engine.events import RESOURCE_CREATED, RESOURCE_DELETED, RESOURCE_UPDATED, ResourceEvent
from engine.fhir.bundle import process_bundle
from engine.fhir.repository import HistoryEntry, SearchParams, SearchResult, StoredResource
from engine.fhir.search.compartment import COMPARTMENTS, compartment_params
from engine.fhir.search.model import Include, SearchQuery
from engine.fhir.search.parse import parse_search
from engine.fhir.search.registry import COLUMN_PARAMETERS, SearchRegistry, default_registry
from services.records.indexing import Extractor
from services.records.models import HistoryRow
from services.records.projection import project_elements, summarize
from services.records.search_sql import (
    INDEX_TABLES,
    RESOURCE,
    criteria_parts,
    distinct_keys,
    inline_int,
    sort_columns,
    sorted_keys_walk,
)
from services.records.writes import WriteBuffer, contention_as_conflict

__all__ = ["SqlResourceRepository", "RecordStoreConfig"]

HISTORY = HistoryRow.__table__
_ID = re.compile(r"^[A-Za-z0-9\-.]{1,64}\Z")
_TYPE = re.compile(r"^[A-Z][A-Za-z]{1,63}\Z")
#: rounds of _include:iterate / _revinclude:iterate after the first
_ITERATE_DEPTH = 4


class RecordStoreConfig:
    """What every repository of one runtime shares: registry, compiled extraction plans, limits."""

    def __init__(
        self,
        registry: SearchRegistry | None = None,
        *,
        base_url: str | None = None,
        default_count: int = 50,
        max_count: int = 1000,
    ) -> None:
        self.registry = registry or default_registry()
        self.base_url = base_url
        self.default_count = default_count
        self.max_count = max_count
        self.extractor = Extractor(self.registry, base_url)


_DEFAULT_CONFIG: RecordStoreConfig | None = None


def _default_config() -> RecordStoreConfig:
    global _DEFAULT_CONFIG
    if _DEFAULT_CONFIG is None:
        _DEFAULT_CONFIG = RecordStoreConfig()
    return _DEFAULT_CONFIG


def _now() -> datetime:
    return datetime.now(UTC).replace(tzinfo=None)


def _instant(moment: datetime) -> str:
    return moment.isoformat(timespec="microseconds") + "Z"


def _aware(moment: datetime) -> datetime:
    return moment.replace(tzinfo=UTC) if moment.tzinfo is None else moment


def _check_id(resource_type: str, id: str) -> None:
    if not _TYPE.match(resource_type):
        raise InvalidInput(f"{resource_type!r} is not a resource type")
    if not _ID.match(id):
        raise InvalidInput(f"{id!r} is not a valid resource id ([A-Za-z0-9-.]{{1,64}})", location="id")


def _content_equal(old: dict[str, Any], new: dict[str, Any]) -> bool:
    """Same resource apart from the server-managed meta.versionId/lastUpdated (a no-op update)."""

    def strip(r: dict[str, Any]) -> dict[str, Any]:
        meta = {k: v for k, v in (r.get("meta") or {}).items() if k not in ("versionId", "lastUpdated")}
        out = {k: v for k, v in r.items() if k != "meta"}
        if meta:
            out["meta"] = meta
        return out

    return strip(old) == strip(new)


class SqlResourceRepository:
    """The ``records`` port bound to one unit of work."""

    def __init__(self, uow: UnitOfWork, config: RecordStoreConfig | None = None) -> None:
        self.uow = uow
        self.config = config or _default_config()
        self._buffer = WriteBuffer()
        self._batching = False
        self._fresh_ids: set[str] = set()

    def new_id(self) -> str:
        """A server id for a resource about to be created with :meth:`create` (bundles map fullUrls to it
        before writing); being fresh, its create skips the existence check."""
        fresh = str(uuid.uuid4())
        self._fresh_ids.add(fresh)
        return fresh

    def _begin_write(self) -> None:
        """On SQLite, start a write transaction with BEGIN IMMEDIATE when nothing was read yet, so it waits
        for the write lock instead of failing with SQLITE_BUSY_SNAPSHOT after reading a stale snapshot."""
        session = self.uow.session
        if session.in_transaction():
            return
        conn = session.connection()
        if conn.dialect.name == "sqlite":
            conn.exec_driver_sql("COMMIT")
            conn.exec_driver_sql("BEGIN IMMEDIATE")

    @property
    def _conn(self) -> Connection:
        return self.uow.session.connection()

    @property
    def _pg(self) -> bool:
        return self._conn.dialect.name == "postgresql"

    # -- writes -------------------------------------------------------------------------------------------
    def _prepare(
        self, resource: dict[str, Any], resource_type: str, id: str, version: int, now: datetime
    ) -> dict[str, Any]:
        if not isinstance(resource, dict) or not isinstance(resource.get("resourceType"), str):
            raise InvalidInput("a resource must be a JSON object with resourceType")
        if resource["resourceType"] != resource_type:
            raise InvalidInput(
                f"resourceType {resource['resourceType']!r} does not match {resource_type!r}",
                location="resourceType",
            )
        stored = dict(resource)
        stored["id"] = id
        meta = dict(stored.get("meta") or {})
        meta["versionId"] = str(version)
        meta["lastUpdated"] = _instant(now)
        # keep resourceType and id first: what clients (and humans) expect at the top of the JSON
        ordered = {"resourceType": resource_type, "id": id, "meta": meta}
        ordered.update((k, v) for k, v in stored.items() if k not in ordered)
        return ordered

    def _write(
        self, resource_type: str, id: str, resource: dict[str, Any] | None, **kw: Any
    ) -> StoredResource:
        with contention_as_conflict(f"{resource_type}/{id}"):
            return self._write_version(resource_type, id, resource, **kw)

    def _write_version(
        self,
        resource_type: str,
        id: str,
        resource: dict[str, Any] | None,
        *,
        method: str,
        current: Any | None,
    ) -> StoredResource:
        """Store a new version (``resource`` None: a deletion) of a resource whose current row is
        ``current`` (None when it never existed). New resources are buffered (see :class:`_WriteBuffer`);
        new versions of existing rows update the row at once, under the version check."""
        now = _now()
        version = 1 if current is None else current.version_id + 1
        doc = self._prepare(resource, resource_type, id, version, now) if resource is not None else None
        try:
            text = orjson.dumps(doc).decode() if doc is not None else None
        except orjson.JSONEncodeError as exc:  # e.g. a lone surrogate in a string
            raise InvalidInput(f"the resource cannot be stored as JSON: {exc}") from None
        history = {
            "resource_type": resource_type,
            "fhir_id": id,
            "version_id": version,
            "last_updated": now,
            "method": method,
            "resource": text,
        }
        index_rows = self.config.extractor.extract(doc) if doc is not None else {}
        if current is None:
            row = {
                "resource_type": resource_type,
                "fhir_id": id,
                "version_id": version,
                "last_updated": now,
                "deleted": False,
                "resource": text,
            }
            self._buffer.add(row, None, history, index_rows)
        else:
            conn = self._conn
            done = conn.execute(
                update(RESOURCE)
                .where(RESOURCE.c.pk == current.pk, RESOURCE.c.version_id == current.version_id)
                .values(version_id=version, last_updated=now, deleted=doc is None, resource=text)
            )
            if done.rowcount != 1:
                raise Conflict(
                    f"{resource_type}/{id} was changed concurrently; retry with the current version"
                )
            for table in INDEX_TABLES.values():
                conn.execute(delete(table).where(table.c.resource_pk == current.pk))
            self._buffer.add(None, current.pk, history, index_rows)
        if doc is None:
            name = RESOURCE_DELETED
        elif current is None or current.deleted:
            name = RESOURCE_CREATED
        else:
            name = RESOURCE_UPDATED
        if not self._batching:
            self._flush()  # before the event is queued: a failed insert must not leave an event behind
        self.uow.defer(ResourceEvent(name, resource_type, id, version, doc))
        return StoredResource(resource_type, id, version, _aware(now), doc if doc is not None else {})

    def _flush(self) -> None:
        if self._buffer:
            try:
                with contention_as_conflict("the new resources"):
                    self._buffer.flush(self._conn)
            except IntegrityError:
                raise Conflict("a resource with this id was created concurrently") from None

    def _current(self, resource_type: str, id: str, *, lock: bool = False) -> Any | None:
        self._flush()
        stmt = select(
            RESOURCE.c.pk,
            RESOURCE.c.version_id,
            RESOURCE.c.deleted,
            RESOURCE.c.resource,
            RESOURCE.c.last_updated,
        ).where(RESOURCE.c.resource_type == resource_type, RESOURCE.c.fhir_id == id)
        if lock and self._pg:
            stmt = stmt.with_for_update()
        with contention_as_conflict(f"{resource_type}/{id}"):
            return self._conn.execute(stmt).first()

    def create(self, resource: dict[str, Any], *, id: str | None = None) -> StoredResource:
        resource_type = resource.get("resourceType") if isinstance(resource, dict) else None
        if not isinstance(resource_type, str) or not _TYPE.match(resource_type):
            raise InvalidInput(
                "a resource must be a JSON object with a valid resourceType", location="resourceType"
            )
        self._begin_write()
        if id is None:
            return self._write(resource_type, str(uuid.uuid4()), resource, method="POST", current=None)
        _check_id(resource_type, id)
        if id in self._fresh_ids:
            self._fresh_ids.discard(id)
            return self._write(resource_type, id, resource, method="POST", current=None)
        current = self._current(resource_type, id, lock=True)
        if current is not None and not current.deleted:
            raise Conflict(f"{resource_type}/{id} already exists")
        return self._write(resource_type, id, resource, method="POST", current=current)

    def update(
        self, resource_type: str, id: str, resource: dict[str, Any], *, if_match: int | None = None
    ) -> tuple[StoredResource, bool]:
        self._begin_write()
        _check_id(resource_type, id)
        if isinstance(resource, dict) and resource.get("id") not in (None, id):
            raise InvalidInput(
                f"the resource id {resource.get('id')!r} does not match the URL id {id!r}", location="id"
            )
        current = self._current(resource_type, id, lock=True)
        if if_match is not None and (current is None or current.deleted or current.version_id != if_match):
            have = "none" if current is None or current.deleted else current.version_id
            raise PreconditionFailed(
                f"{resource_type}/{id}: If-Match version {if_match} is not current ({have})"
            )
        if current is not None and not current.deleted:
            old = orjson.loads(current.resource)
            if (
                isinstance(resource, dict)
                and resource.get("resourceType") == resource_type
                and _content_equal(old, {**resource, "id": id})
            ):
                return self._stored(
                    resource_type, id, current.version_id, current.last_updated, current.resource
                ), False
        created = current is None or current.deleted
        return self._write(resource_type, id, resource, method="PUT", current=current), created

    def delete(self, resource_type: str, id: str) -> StoredResource | None:
        self._begin_write()
        _check_id(resource_type, id)
        current = self._current(resource_type, id, lock=True)
        if current is None or current.deleted:
            return None
        gone = self._write(resource_type, id, None, method="DELETE", current=current)
        return StoredResource(
            resource_type, id, gone.version_id, gone.last_updated, orjson.loads(current.resource)
        )

    def lock_criteria(self, resource_type: str, criteria: SearchParams) -> None:
        """Serialize conditional writes with the same criteria until this transaction ends, so two
        concurrent ``identifier=X`` conditional creates cannot both find nothing and both create: a
        PostgreSQL transaction-scoped advisory lock on the criteria; SQLite holds its write lock from
        BEGIN IMMEDIATE on."""
        self._begin_write()
        if self._pg:
            key = resource_type + "?" + "&".join(f"{k}={v}" for k, v in sorted(criteria))
            with contention_as_conflict(f"{resource_type} conditional write"):  # a deadlock is a retry
                self._conn.execute(select(func.pg_advisory_xact_lock(func.hashtextextended(key, 0))))

    def _matches(self, resource_type: str, criteria: SearchParams) -> list[StoredResource]:
        if not criteria:
            raise InvalidInput("a conditional interaction needs search criteria")
        self.lock_criteria(resource_type, criteria)
        result = self.search(resource_type, [*criteria, ("_count", "2")])
        if result.ignored:
            names = ", ".join(name for name, _ in result.ignored)
            raise InvalidInput(f"unknown search parameter(s) in conditional criteria: {names}")
        return result.matches

    def conditional_update(
        self, resource_type: str, criteria: SearchParams, resource: dict[str, Any]
    ) -> tuple[StoredResource, bool]:
        matches = self._matches(resource_type, criteria)
        if len(matches) > 1:
            raise PreconditionFailed(
                f"{resource_type}: several resources match the conditional update criteria"
            )
        if matches:
            given = resource.get("id") if isinstance(resource, dict) else None
            if given not in (None, matches[0].id):
                raise InvalidInput(
                    f"the resource id {given!r} is not that of the matching resource", location="id"
                )
            return self.update(resource_type, matches[0].id, resource)
        if isinstance(resource, dict) and resource.get("id"):
            return self.update(resource_type, str(resource["id"]), resource)
        return self.create(resource), True

    def conditional_create(
        self, resource_type: str, criteria: SearchParams, resource: dict[str, Any]
    ) -> tuple[StoredResource, bool]:
        matches = self._matches(resource_type, criteria)
        if len(matches) > 1:
            raise PreconditionFailed(f"{resource_type}: several resources match the If-None-Exist criteria")
        if matches:
            return matches[0], False
        return self.create(resource), True

    # -- reads --------------------------------------------------------------------------------------------
    @staticmethod
    def _stored(resource_type: str, id: str, version: int, updated: datetime, text: str) -> StoredResource:
        return StoredResource(resource_type, id, version, _aware(updated), orjson.loads(text))

    def read_raw(self, resource_type: str, id: str) -> tuple[bytes, int, datetime]:
        """The current version's stored JSON bytes, for serving without re-serializing (one indexed lookup)."""
        self._flush()
        row = self._conn.execute(
            select(
                RESOURCE.c.resource, RESOURCE.c.version_id, RESOURCE.c.last_updated, RESOURCE.c.deleted
            ).where(RESOURCE.c.resource_type == resource_type, RESOURCE.c.fhir_id == id)
        ).first()
        if row is None:
            raise NotFound(f"{resource_type}/{id} is not known")
        if row.deleted:
            raise Gone(f"{resource_type}/{id} was deleted")
        return row.resource.encode(), row.version_id, _aware(row.last_updated)

    def read(self, resource_type: str, id: str) -> StoredResource:
        raw, version, updated = self.read_raw(resource_type, id)
        return StoredResource(resource_type, id, version, updated, orjson.loads(raw))

    def vread(self, resource_type: str, id: str, version_id: int) -> StoredResource:
        self._flush()
        row = self._conn.execute(
            select(HISTORY.c.resource, HISTORY.c.last_updated, HISTORY.c.method).where(
                HISTORY.c.resource_type == resource_type,
                HISTORY.c.fhir_id == id,
                HISTORY.c.version_id == version_id,
            )
        ).first()
        if row is None:
            raise NotFound(f"{resource_type}/{id} has no version {version_id}")
        if row.resource is None:
            raise Gone(f"{resource_type}/{id} version {version_id} is a deletion")
        return self._stored(resource_type, id, version_id, row.last_updated, row.resource)

    def history(
        self,
        resource_type: str | None = None,
        id: str | None = None,
        *,
        since: datetime | None = None,
        count: int = 100,
        offset: int = 0,
    ) -> list[HistoryEntry]:
        self._flush()
        stmt = select(
            HISTORY.c.resource_type,
            HISTORY.c.fhir_id,
            HISTORY.c.version_id,
            HISTORY.c.last_updated,
            HISTORY.c.method,
            HISTORY.c.resource,
        )
        if resource_type is not None:
            stmt = stmt.where(HISTORY.c.resource_type == resource_type)
        if id is not None:
            stmt = stmt.where(HISTORY.c.fhir_id == id)
        if since is not None:
            stmt = stmt.where(
                HISTORY.c.last_updated
                >= (since.astimezone(UTC).replace(tzinfo=None) if since.tzinfo else since)
            )
        count, offset = max(0, min(count, 2**31 - 1)), max(0, min(offset, 2**31 - 1))
        stmt = (
            stmt.order_by(HISTORY.c.last_updated.desc(), HISTORY.c.pk.desc())
            .limit(inline_int(count))
            .offset(inline_int(offset))
        )
        return [
            HistoryEntry(
                r.resource_type,
                r.fhir_id,
                r.version_id,
                _aware(r.last_updated),
                r.method,
                orjson.loads(r.resource) if r.resource else None,
            )
            for r in self._conn.execute(stmt)
        ]

    # -- search -------------------------------------------------------------------------------------------
    def parse(self, resource_type: str | None, params: SearchParams) -> SearchQuery:
        if resource_type is not None and not self.config.registry.supports(resource_type):
            if not _TYPE.match(resource_type):
                raise InvalidInput(f"{resource_type!r} is not a resource type")
        return parse_search(
            resource_type,
            params,
            registry=self.config.registry,
            base_url=self.config.base_url,
            default_count=self.config.default_count,
            max_count=self.config.max_count,
        )

    def search(
        self, resource_type: str | None, params: SearchParams, *, compartment: tuple[str, str] | None = None
    ) -> SearchResult:
        """FHIR search; ``compartment=("Patient", id)`` limits it to that patient's compartment (R4 3.1.1.2,
        ``GET Patient/[id]/[type]``): resources that refer to the patient through one of the
        CompartmentDefinition's parameters (and the Patient itself). NotSupported for other compartments."""
        self._flush()
        query = self.parse(resource_type, params)
        r = RESOURCE
        conn = self._conn
        keys, clauses = criteria_parts(r, resource_type, query.criteria, self.config.base_url)
        if compartment is not None:
            clauses.append(self._in_compartment(r, resource_type, compartment))
        column_sort = any(k.param.code in COLUMN_PARAMETERS for k in query.sort)
        # ties fall in the direction of the first sort key, as they do walking a sort index backwards
        tie_desc = bool(query.sort) and query.sort[0].descending
        walk: Any = None
        if keys is not None and not clauses and not column_sort:
            # only index criteria: page over the matching keys alone, then fetch just that page's rows
            k = distinct_keys(keys).subquery("k")
            kpk = k.c.resource_pk
            count_stmt = select(func.count()).select_from(k)
            page = select(kpk).order_by(
                *sort_columns(r, query.sort, kpk), kpk.desc() if tie_desc else kpk.asc()
            )
            if len(query.sort) == 1:
                walk = sorted_keys_walk(keys, resource_type, query.sort[0])
        else:
            where = [r.c.deleted == false(), *clauses]
            if resource_type is not None:
                where.append(r.c.resource_type == resource_type)
            if keys is not None:
                where.append(r.c.pk.in_(keys))
            count_stmt = select(func.count()).select_from(r).where(*where)
            page = (
                select(r.c.pk)
                .where(*where)
                .order_by(*sort_columns(r, query.sort), r.c.pk.desc() if tie_desc else r.c.pk.asc())
            )
        if query.summary == "count":
            total = conn.execute(count_stmt).scalar_one()
            return SearchResult([], total=total, offset=query.offset, count=0, ignored=query.ignored)
        if query.count <= 0:
            pks: list[int] = []
        elif walk is not None:
            pks = walk.page(conn, query.offset, query.count + 1)
        else:
            pks = [
                row[0]
                for row in conn.execute(
                    page.limit(inline_int(query.count + 1)).offset(inline_int(query.offset))
                )
            ]
        has_more = len(pks) > query.count
        pks = pks[: query.count]
        fetched = (
            {x.pk: x for x in conn.execute(select(r.c.pk, *_columns()).where(r.c.pk.in_(pks)))} if pks else {}
        )
        rows = [fetched[pk] for pk in pks if pk in fetched]
        matches = [
            self._stored(x.resource_type, x.fhir_id, x.version_id, x.last_updated, x.resource) for x in rows
        ]
        total: int | None = None
        if query.total == "accurate" or (query.count == 0 and query.total != "none"):
            total = conn.execute(count_stmt).scalar_one()
        elif not has_more and query.total != "none" and (rows or query.offset == 0):
            total = query.offset + len(rows)
        included = self._includes(query, [x.pk for x in rows], {(x.resource_type, x.fhir_id) for x in rows})
        if query.elements:
            matches = [project_elements(m, query.elements) for m in matches]
        elif query.summary in ("true", "text", "data"):
            matches = [summarize(m, query.summary) for m in matches]
        return SearchResult(matches, included, total, query.offset, len(matches), has_more, query.ignored)

    @staticmethod
    def _in_compartment(r: Any, resource_type: str | None, compartment: tuple[str, str]) -> Any:
        kind, owner = compartment
        if kind not in COMPARTMENTS:
            raise NotSupported(f"the {kind} compartment is not supported")
        if resource_type is None:
            raise InvalidInput("a compartment search names the resource type it searches")
        params = compartment_params(kind, resource_type)
        if params is None:
            return false()  # the type has no member in this compartment
        ref = INDEX_TABLES["reference"]
        linked = r.c.pk.in_(
            select(ref.c.resource_pk).where(
                ref.c.resource_type == resource_type,
                ref.c.param.in_(params),
                ref.c.target_type == kind,
                ref.c.target_id == owner,
                ref.c.url.is_(None),
            )
        )
        return or_(linked, r.c.fhir_id == owner) if resource_type == kind else linked

    def _includes(
        self, query: SearchQuery, pks: list[int], seen: set[tuple[str, str]]
    ) -> list[StoredResource]:
        """_include and _revinclude of the page's matches; the ``:iterate`` ones are applied again to what
        they brought in, up to :data:`_ITERATE_DEPTH` rounds (R4 3.1.1.5.4)."""
        if not pks or not (query.includes or query.revincludes):
            return []
        seen = set(seen)
        found: list[StoredResource] = []
        frontier = list(pks)
        includes, revincludes = query.includes, query.revincludes
        for _ in range(_ITERATE_DEPTH):
            added = self._include_round(includes, revincludes, frontier, seen)
            found.extend(stored for _, stored in added)
            includes = [i for i in query.includes if i.iterate]
            revincludes = [i for i in query.revincludes if i.iterate]
            frontier = [pk for pk, _ in added]
            if not frontier or not (includes or revincludes):
                break
        return found

    def _include_round(
        self, includes: list[Include], revincludes: list[Include], pks: list[int], seen: set[tuple[str, str]]
    ) -> list[tuple[int, StoredResource]]:
        ref = INDEX_TABLES["reference"]
        conn = self._conn
        added: list[tuple[int, StoredResource]] = []

        def take(stmt: Any) -> None:
            for x in conn.execute(stmt):
                if (x.resource_type, x.fhir_id) not in seen:
                    seen.add((x.resource_type, x.fhir_id))
                    added.append(
                        (
                            x.pk,
                            self._stored(
                                x.resource_type, x.fhir_id, x.version_id, x.last_updated, x.resource
                            ),
                        )
                    )

        targets: set[tuple[str, str]] = set()
        for inc in includes:
            stmt = select(ref.c.target_type, ref.c.target_id).where(
                ref.c.resource_pk.in_(pks),
                ref.c.resource_type == inc.source_type,
                ref.c.url.is_(None),
                ref.c.target_id.is_not(None),
            )
            if inc.param is not None:
                stmt = stmt.where(ref.c.param == inc.param.code)
            if inc.target_type:
                stmt = stmt.where(ref.c.target_type == inc.target_type)
            targets.update((t, i) for t, i in conn.execute(stmt) if t)
        wanted = sorted(targets - seen)
        for chunk in range(0, len(wanted), 500):
            part = wanted[chunk : chunk + 500]
            take(
                select(RESOURCE.c.pk, *_columns()).where(
                    RESOURCE.c.deleted == false(),
                    tuple_(RESOURCE.c.resource_type, RESOURCE.c.fhir_id).in_(part),
                )
            )
        if revincludes:
            keys = list(
                conn.execute(
                    select(RESOURCE.c.resource_type, RESOURCE.c.fhir_id).where(RESOURCE.c.pk.in_(pks))
                )
            )
            for rev in revincludes:
                wanted_keys = [
                    (t, i)
                    for t, i in keys
                    if rev.param is None or not rev.param.targets or t in rev.param.targets
                ]
                if not wanted_keys:
                    continue
                sub = select(ref.c.resource_pk).where(
                    ref.c.resource_type == rev.source_type,
                    ref.c.url.is_(None),
                    tuple_(ref.c.target_type, ref.c.target_id).in_(wanted_keys),
                )
                if rev.param is not None:
                    sub = sub.where(ref.c.param == rev.param.code)
                take(
                    select(RESOURCE.c.pk, *_columns()).where(
                        RESOURCE.c.deleted == false(), RESOURCE.c.pk.in_(sub)
                    )
                )
        return added

    # -- bundles ------------------------------------------------------------------------------------------
    @contextmanager
    def _savepoint(self) -> Iterator[None]:
        with self.uow.session.begin_nested():
            yield

    def transaction(self, bundle: dict[str, Any]) -> dict[str, Any]:
        self._begin_write()
        if not isinstance(bundle, dict) or bundle.get("type") != "transaction":
            return process_bundle(self, bundle, savepoint=self._savepoint)
        # a transaction is all-or-nothing anyway: buffer its new rows and insert them together
        self._batching = True
        try:
            response = process_bundle(self, bundle, savepoint=self._savepoint)
            self._flush()
        finally:
            self._batching = False
            self._buffer.items.clear()
        return response


def _columns() -> Any:
    return (
        RESOURCE.c.resource_type,
        RESOURCE.c.fhir_id,
        RESOURCE.c.version_id,
        RESOURCE.c.last_updated,
        RESOURCE.c.resource,
    )
