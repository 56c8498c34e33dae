"""Units of work for the read-only interactions (read, vread, search, history, $validate).

On PostgreSQL a read needs no transaction: run in autocommit on a pool of its own it costs one round trip
(the query) instead of five (pre-ping, BEGIN, query, COMMIT, reset) — the difference between serving a
stored resource near the speed of the bare driver and a fraction of it (docs/benchmarks.md). A pooled
connection that went stale (database restart) fails once and is retried on a fresh one. SQLite reads use
the ordinary unit of work: they are local calls and its BEGIN handling must stay paired with COMMIT.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from contextlib import contextmanager
from typing import Any, TypeVar

from sqlalchemy import Engine, create_engine
from sqlalchemy.exc import DBAPIError
from sqlalchemy.orm import Session

from engine.db import UnitOfWork

__all__ = ["ReadUnits", "READ_ONLY"]

T = TypeVar("T")

#: interactions that never write: served by ReadUnits
READ_ONLY = frozenset(
    {
        "read",
        "vread",
        "search-type",
        "search-compartment",
        "search-system",
        "history-instance",
        "history-type",
        "history-system",
        "validate",
    }
)


class ReadUnits:
    def __init__(self, runtime: Any, threads: int = 40) -> None:
        self.runtime = runtime
        self.engine: Engine | None = None
        if not runtime.db.is_sqlite:
            # one pooled connection per handler thread, opened on first use and kept: with "overflow"
            # connections every burst above the pool size would open and close PostgreSQL backends
            self.engine = create_engine(
                runtime.db.url,
                isolation_level="AUTOCOMMIT",
                pool_size=threads,
                max_overflow=0,
                pool_pre_ping=False,
            )

    @contextmanager
    def _autocommit(self) -> Iterator[UnitOfWork]:
        assert self.engine is not None
        with self.engine.connect() as conn:
            session = Session(bind=conn)
            try:
                yield UnitOfWork(session, self.runtime.bus)
            finally:
                session.close()

    def run(self, work: Callable[[UnitOfWork], T]) -> T:
        """``work(uow)`` in a read-only unit of work."""
        if self.engine is None:
            with self.runtime.db.unit_of_work() as uow:
                return work(uow)
        try:
            with self._autocommit() as uow:
                return work(uow)
        except DBAPIError as exc:
            if not exc.connection_invalidated:
                raise
        with self._autocommit() as uow:  # the pooled connection was stale: once more on a fresh one
            return work(uow)

    def dispose(self) -> None:
        if self.engine is not None:
            self.engine.dispose()
