"""Read by id straight on the database driver: the current version's stored JSON bytes, outside any unit of work.

The read interaction is the hottest path of a FHIR server and needs no transaction, no session and no
statement compilation: one indexed lookup of (resource_type, fhir_id). Through the ordinary unit of work it
cost ~0.5 ms of CPU against ~0.15 ms for the bare driver call, plus a hop to the thread pool
(docs/benchmarks.md). So:

* **PostgreSQL** — a small pool of asyncio psycopg connections in autocommit, the one statement prepared
  on the server once per connection: the read runs on the event loop, no thread hop, one round trip.
  A connection that went stale (database restart) is dropped and the read retried once on a fresh one; a
  database that stays unreachable is :class:`~engine.errors.StoreUnavailable`.
* **SQLite** — the plain ``sqlite3`` call on a pooled connection in the thread pool (a local call; no
  session, no Core statement).

Same answers as ``SqlResourceRepository.read_raw``: ``(json_bytes, version_id, last_updated)``, NotFound
for an unknown id, Gone for a deleted one. Reads see committed data only (autocommit / WAL snapshot).
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from datetime import UTC, datetime
from typing import Any

import anyio.to_thread
import psycopg

from engine.db import Database
from engine.db.direct import read_row
from engine.errors import Gone, NotFound, StoreUnavailable

__all__ = ["RawReads", "RawRow"]

#: (stored JSON bytes, version_id, last_updated — timezone-aware UTC)
RawRow = tuple[bytes, int, datetime]

_SQL_PG = (
    "SELECT resource, version_id, last_updated, deleted FROM records_resource "
    "WHERE resource_type = %s AND fhir_id = %s"
)
_SQL_SQLITE = (
    "SELECT resource, version_id, last_updated, deleted FROM records_resource "
    "WHERE resource_type = ? AND fhir_id = ?"
)


def _answer(resource_type: str, id: str, row: Any) -> RawRow:
    if row is None:
        raise NotFound(f"{resource_type}/{id} is not known")
    resource, version_id, last_updated, deleted = row
    if deleted or resource is None:
        raise Gone(f"{resource_type}/{id} was deleted")
    if isinstance(last_updated, str):  # sqlite3 returns SQLAlchemy's DateTime storage format as text
        last_updated = datetime.fromisoformat(last_updated)
    if last_updated.tzinfo is None:
        last_updated = last_updated.replace(tzinfo=UTC)
    return resource.encode(), int(version_id), last_updated


class _PgPool:
    """Up to ``size`` asyncio connections, opened on demand and kept; LIFO so a quiet server reuses few."""

    def __init__(self, conninfo: str, size: int) -> None:
        self.conninfo = conninfo
        self.size = size
        self.idle: list[psycopg.AsyncConnection[Any]] = []
        self.opened = 0
        self.freed: asyncio.Condition | None = None
        self.loop: asyncio.AbstractEventLoop | None = None
        self.closed = False

    @asynccontextmanager
    async def connection(self) -> AsyncIterator[psycopg.AsyncConnection[Any]]:
        loop = asyncio.get_running_loop()
        if loop is not self.loop:
            self._rebind(loop)
        conn = await self._acquire()
        try:
            yield conn
        except BaseException:
            await self._discard(conn)
            raise
        await self._release(conn)

    def _rebind(self, loop: asyncio.AbstractEventLoop) -> None:
        """Connections belong to the loop that opened them: a new loop (a test client's) starts afresh."""
        for conn in self.idle:
            conn.pgconn.finish()  # the old loop may be gone: close the socket without awaiting
        self.idle, self.opened = [], 0
        self.freed = asyncio.Condition()
        self.loop = loop

    async def _acquire(self) -> psycopg.AsyncConnection[Any]:
        assert self.freed is not None
        async with self.freed:
            while not self.idle and self.opened >= self.size:
                await self.freed.wait()
            if self.idle:
                return self.idle.pop()
            self.opened += 1
        try:
            return await psycopg.AsyncConnection.connect(self.conninfo, autocommit=True)
        except BaseException:
            async with self.freed:
                self.opened -= 1
                self.freed.notify()
            raise

    async def _release(self, conn: psycopg.AsyncConnection[Any]) -> None:
        assert self.freed is not None
        if self.closed or conn.closed:
            await self._discard(conn)
            return
        async with self.freed:
            self.idle.append(conn)
            self.freed.notify()

    async def _discard(self, conn: psycopg.AsyncConnection[Any]) -> None:
        assert self.freed is not None
        try:
            await conn.close()
        finally:
            async with self.freed:
                self.opened -= 1
                self.freed.notify()

    async def close(self) -> None:
        self.closed = True
        idle, self.idle = self.idle, []
        self.opened -= len(idle)
        for conn in idle:
            await conn.close()


class RawReads:
    """``await reads.read(type, id) -> (json_bytes, version_id, last_updated)``; ``await reads.close()``."""

    def __init__(self, db: Database, pool_size: int = 8) -> None:
        self.db = db
        self._pg: _PgPool | None = None
        if not db.is_sqlite:
            conninfo = db.url.set(drivername="postgresql").render_as_string(hide_password=False)
            self._pg = _PgPool(conninfo, pool_size)

    async def read(self, resource_type: str, id: str) -> RawRow:
        if self._pg is None:
            return await anyio.to_thread.run_sync(self._read_sqlite, resource_type, id)
        for attempt in (1, 2):
            try:
                async with self._pg.connection() as conn:
                    cur = await conn.execute(_SQL_PG, (resource_type, id), prepare=True)
                    row = await cur.fetchone()
                return _answer(resource_type, id, row)
            except psycopg.OperationalError as exc:
                if attempt == 2:
                    raise StoreUnavailable("the record store is unreachable") from exc
        raise AssertionError("unreachable")

    def _read_sqlite(self, resource_type: str, id: str) -> RawRow:
        return _answer(resource_type, id, read_row(self.db.engine, _SQL_SQLITE, (resource_type, id)))

    async def close(self) -> None:
        if self._pg is not None:
            await self._pg.close()
