"""One Database per process: the SQLAlchemy engine, session factory and durability checks."""

from __future__ import annotations

import logging
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

from sqlalchemy import Connection, Engine, create_engine, event, text
from sqlalchemy.engine import make_url
from sqlalchemy.orm import Session, sessionmaker

from engine.errors import ConfigurationError, StoreUnavailable
from engine.events import Event, EventBus

__all__ = ["Database", "UnitOfWork", "SQLITE_BEGIN"]

log = logging.getLogger(__name__)

#: Execution option of a Connection: the statement its transactions begin with on SQLite (plain ``BEGIN``,
#: deferred, when unset). ``BEGIN IMMEDIATE`` takes the write lock at once: see :meth:`Database.write_transaction`.
SQLITE_BEGIN = "conduit_sqlite_begin"
_IMMEDIATE = {SQLITE_BEGIN: "BEGIN IMMEDIATE"}


class UnitOfWork:
    """A session plus the events to publish once it commits."""

    def __init__(self, session: Session, bus: EventBus) -> None:
        self.session = session
        self._bus = bus
        self._pending: list[Event] = []

    def defer(self, event: Event) -> None:
        """Publish ``event`` after a successful commit (dropped on rollback)."""
        self._pending.append(event)

    def _flush_events(self) -> None:
        pending, self._pending = self._pending, []
        for ev in pending:
            self._bus.publish(ev)


class Database:
    """Engine + session factory for ``url``. SQLite runs in WAL with synchronous=FULL; PostgreSQL is
    checked for fsync and synchronous_commit, because an acknowledgement must mean 'on disk'."""

    def __init__(self, url: str, *, bus: EventBus | None = None, echo: bool = False, **engine_kw: Any):
        self.url = make_url(url)
        self.bus = bus or EventBus()
        if self.url.get_backend_name() == "sqlite":
            if self.url.database and self.url.database != ":memory:":
                Path(self.url.database).parent.mkdir(parents=True, exist_ok=True)
            engine_kw.setdefault("connect_args", {}).setdefault("timeout", 30)
            self.engine: Engine = create_engine(url, echo=echo, **engine_kw)
            event.listen(self.engine, "connect", _sqlite_pragmas)
            # pysqlite's own transaction handling defers BEGIN; take control so BEGIN IMMEDIATE is possible
            event.listen(self.engine, "begin", _sqlite_begin)
        else:
            # Plan each statement for its actual values (psycopg prepares repeated statements and PostgreSQL
            # may then reuse a generic plan that ignores the codes and the LIMIT: 80 ms instead of 11 ms for
            # a sorted search at 100k resources), and spare page-sized queries the start-up of parallel
            # workers. Set at connect so they hold on every connection, whatever a transaction does.
            if self.dialect == "postgresql":
                engine_kw.setdefault("connect_args", {}).setdefault(
                    "options", "-c plan_cache_mode=force_custom_plan -c max_parallel_workers_per_gather=0"
                )
            engine_kw.setdefault("pool_pre_ping", True)
            # enough steady connections for the HTTP worker threads, the inbox writer and the queue
            # workers, so bursts do not open and close connections
            engine_kw.setdefault("pool_size", 20)
            engine_kw.setdefault("max_overflow", 20)
            self.engine = create_engine(url, echo=echo, **engine_kw)
        self.session_factory = sessionmaker(self.engine, expire_on_commit=False)

    @property
    def dialect(self) -> str:
        return self.url.get_backend_name()

    @property
    def is_sqlite(self) -> bool:
        return self.dialect == "sqlite"

    @contextmanager
    def write_transaction(self) -> Iterator[Connection]:
        """A Core transaction (committed when the block ends) that holds SQLite's write lock from its
        start: ``BEGIN IMMEDIATE`` waits for the lock, where a deferred transaction that reads first
        would fail with "database is locked" on its first write if another connection committed in
        between. On PostgreSQL an ordinary transaction (row locks do the work)."""
        with self.engine.connect() as conn:
            if self.is_sqlite:
                conn.execution_options(**_IMMEDIATE)
            with conn.begin():
                yield conn

    @contextmanager
    def unit_of_work(self, *, immediate: bool = False) -> Iterator[UnitOfWork]:
        """Begin a transaction; commit when the block ends, roll back on error, then publish events.
        ``immediate``: begin it as :meth:`write_transaction` does (SQLite's write lock up front)."""
        session = self.session_factory()
        uow = UnitOfWork(session, self.bus)
        try:
            if immediate and self.is_sqlite:
                session.connection(execution_options=_IMMEDIATE)
            yield uow
            session.commit()
        except BaseException:
            session.rollback()
            raise
        finally:
            session.close()
        uow._flush_events()

    def check_durability(self) -> None:
        """Refuse to run on a PostgreSQL whose commits are not durable (fsync/synchronous_commit off)."""
        if self.dialect != "postgresql":
            return
        try:
            with self.engine.connect() as conn:
                fsync = conn.execute(text("SHOW fsync")).scalar()
                sync_commit = conn.execute(text("SHOW synchronous_commit")).scalar()
        except Exception as exc:
            raise StoreUnavailable(f"cannot reach the database: {exc.__class__.__name__}") from exc
        if fsync != "on" or sync_commit not in ("on", "remote_write", "remote_apply"):
            raise ConfigurationError(
                f"PostgreSQL has fsync={fsync} synchronous_commit={sync_commit}: acknowledged data could "
                "be lost on a crash. Set both to 'on'."
            )

    def ping(self) -> bool:
        try:
            with self.engine.connect() as conn:
                conn.execute(text("SELECT 1"))
            return True
        except Exception:
            return False

    def dispose(self) -> None:
        self.engine.dispose()


def _sqlite_begin(conn: Connection) -> None:
    conn.exec_driver_sql(conn.get_execution_options().get(SQLITE_BEGIN, "BEGIN"))


def _sqlite_pragmas(dbapi_conn: Any, _record: Any) -> None:
    # The driver must not open transactions implicitly: the "begin" listener issues BEGIN itself.
    dbapi_conn.isolation_level = None
    cur = dbapi_conn.cursor()
    cur.execute("PRAGMA journal_mode=WAL")
    cur.execute("PRAGMA synchronous=FULL")
    cur.execute("PRAGMA foreign_keys=ON")
    cur.execute("PRAGMA busy_timeout=30000")
    cur.close()
