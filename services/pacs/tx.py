"""Write transactions that take SQLite's write lock up front (BEGIN IMMEDIATE), so a transaction that
reads before it writes waits for the lock instead of failing with "database is locked" when the ImagingStudy
sync or another writer committed in between (see engine.messaging.tx). PostgreSQL needs nothing."""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager

from sqlalchemy import Connection

from engine.db import Database, UnitOfWork
from engine.events import Event

__all__ = ["write_uow", "write_core", "CoreWork"]


@contextmanager
def write_uow(db: Database) -> Iterator[UnitOfWork]:
    with db.unit_of_work(immediate=True) as uow:
        yield uow


class CoreWork:
    """A write transaction's Core connection and the events to publish once it commits: a UnitOfWork
    without the ORM session, for the C-STORE index path (one per stored image), where the session's own
    begin/flush/commit bookkeeping cost more CPU than the statements."""

    def __init__(self, conn: Connection) -> None:
        self.conn = conn
        self.pending: list[Event] = []

    def defer(self, event: Event) -> None:
        """Publish ``event`` after a successful commit (dropped on rollback)."""
        self.pending.append(event)


@contextmanager
def write_core(db: Database) -> Iterator[CoreWork]:
    """Begin (IMMEDIATE on SQLite); commit when the block ends, roll back on error, then publish."""
    with db.write_transaction() as conn:
        work = CoreWork(conn)
        yield work
    for event in work.pending:
        db.bus.publish(event)
