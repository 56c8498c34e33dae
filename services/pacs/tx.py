"""Write units of work that take SQLite's write lock up front (BEGIN IMMEDIATE), so a transaction that
reads before it writes waits for the lock instead of failing with "database is locked" when the ImagingStudy
sync or another writer committed in between (see engine.messaging.tx). PostgreSQL needs nothing."""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager

from engine.db import Database, UnitOfWork

__all__ = ["write_uow"]


@contextmanager
def write_uow(db: Database) -> Iterator[UnitOfWork]:
    with db.unit_of_work(immediate=True) as uow:
        yield uow
