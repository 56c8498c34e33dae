"""Write transactions that take SQLite's write lock up front, the inbox first.

In WAL mode a deferred transaction that reads first and writes later fails at once with "database is
locked" (SQLITE_BUSY_SNAPSHOT, no busy wait) when another connection committed in between. Queue workers
and the inbox writer run side by side, so every write transaction here begins with ``BEGIN IMMEDIATE`` on
SQLite. PostgreSQL needs nothing: row locks do the work.

SQLite also has a single writer, and its busy handler waits by sleeping (up to 100 ms a turn), so an inbox
commit queued behind back-to-back worker transactions could wait for seconds while senders wait for their
ACK. Inside one process the writers therefore pass a gate first, where the inbox goes before the workers.
Between processes (the MLLP ingest children of ``conduit serve --mllp-processes N``, each with an inbox
writer, beside the main process's workers) the gate's holder then takes an exclusive ``flock`` on
``<database>-writer.lock``: a waiting process is woken by the kernel the moment the lock is released,
where SQLite's busy handler would sleep 1, 2, 5, 10 ... ms a turn and let the process that just committed
take the lock again (measured: see docs/benchmarks.md). SQLite's own locking stays what keeps the
database safe; this lock only orders the writers that take it, and others (the record store, the CLI)
still wait in the busy handler.
"""

from __future__ import annotations

import os
import threading
import weakref
from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any

from sqlalchemy import Connection

from engine.db import SQLITE_BEGIN, Database

try:
    import fcntl
except ImportError:  # pragma: no cover - not POSIX: SQLite's busy handler alone
    fcntl = None  # type: ignore[assignment]

__all__ = ["write_tx", "immediate", "writer_gate", "KeptConnection"]


class _Gate:
    def __init__(self, lock_path: str | None = None) -> None:
        self._cond = threading.Condition()
        self._busy = False
        self._urgent_waiting = 0
        self._lock_path = lock_path
        self._lock_fd: int | None = None

    @contextmanager
    def hold(self, urgent: bool) -> Iterator[None]:
        with self._cond:
            if urgent:
                self._urgent_waiting += 1
            try:
                while self._busy or (not urgent and self._urgent_waiting):
                    self._cond.wait()
            finally:
                if urgent:
                    self._urgent_waiting -= 1
            self._busy = True
        try:
            locked = self._lock_file()
            try:
                yield
            finally:
                if locked is not None:
                    fcntl.flock(locked, fcntl.LOCK_UN)
        finally:
            with self._cond:
                self._busy = False
                self._cond.notify_all()

    def _lock_file(self) -> int | None:
        """Take the writers' file lock (only the gate's holder gets here); None when there is none."""
        if self._lock_path is None or fcntl is None:
            return None
        if self._lock_fd is None:
            try:
                self._lock_fd = os.open(self._lock_path, os.O_RDWR | os.O_CREAT | os.O_CLOEXEC, 0o600)
            except OSError:  # a read-only folder: SQLite's busy handler alone, as before
                self._lock_path = None
                return None
            weakref.finalize(self, os.close, self._lock_fd)  # the gate goes with its engine
        fcntl.flock(self._lock_fd, fcntl.LOCK_EX)
        return self._lock_fd


_gates: weakref.WeakKeyDictionary[Any, _Gate] = weakref.WeakKeyDictionary()
_gates_lock = threading.Lock()


@contextmanager
def writer_gate(db: Database, *, urgent: bool = False) -> Iterator[None]:
    """On SQLite, one writer of this process at a time (``urgent`` ones first); nothing on PostgreSQL.
    Not re-entrant: never open another gated transaction inside."""
    if not db.is_sqlite:
        yield
        return
    with _gates_lock:
        gate = _gates.get(db.engine)
        if gate is None:
            path = db.url.database
            gate = _gates[db.engine] = _Gate(
                f"{path}-writer.lock"
                if path and path != ":memory:" and not path.startswith("file:")
                else None
            )
    with gate.hold(urgent):
        yield


def immediate(conn: Connection) -> None:
    """Turn the just-begun (still empty) transaction on ``conn`` into BEGIN IMMEDIATE on SQLite, unless it
    began so already. Costs a round (COMMIT, BEGIN IMMEDIATE): begin with ``Database.write_transaction``
    or ``Database.unit_of_work(immediate=True)`` instead where the caller opens the transaction."""
    if conn.dialect.name == "sqlite" and conn.get_execution_options().get(SQLITE_BEGIN) != "BEGIN IMMEDIATE":
        # engine.db issues a plain (deferred) BEGIN when the transaction starts; nothing was read yet
        conn.exec_driver_sql("COMMIT")
        conn.exec_driver_sql("BEGIN IMMEDIATE")


@contextmanager
def write_tx(db: Database, *, urgent: bool = False) -> Iterator[Any]:
    with writer_gate(db, urgent=urgent), db.write_transaction() as conn:
        yield conn


class KeptConnection:
    """The connection of one writer thread, kept from one write transaction to the next: no pool checkout
    per transaction, and so on PostgreSQL no ``pool_pre_ping`` round trip per transaction (a tenth of an
    inbox commit at one sender). A connection that died meanwhile shows up on the transaction's first
    statement instead, as a ``DBAPIError`` with ``connection_invalidated``; the caller may run the
    transaction again (nothing of it was stored) and gets a fresh, pinged connection from the pool.
    Any error drops the kept connection. Used by one thread at a time; :meth:`close` when done.

    ``autocommit`` (PostgreSQL): the driver connection is in autocommit mode, so that the caller sends
    the transaction's BEGIN itself, e.g. in a psycopg pipeline with its statements (psycopg's implicit
    BEGIN waits for a round trip of its own). A transaction the caller left open is committed when the
    block ends, or rolled back on error, as usual; the pool restores the mode when the connection goes
    back."""

    def __init__(self, db: Database, *, autocommit: bool = False) -> None:
        self._db = db
        self._autocommit = autocommit and not db.is_sqlite
        self._conn: Connection | None = None
        #: the caller's scratch space for the current connection (e.g. the statements it prepared on
        #: it), emptied whenever the connection is replaced
        self.session: dict[str, Any] = {}

    @contextmanager
    def transaction(self, *, urgent: bool = False) -> Iterator[Connection]:
        """As :func:`write_tx`, on the kept connection."""
        with writer_gate(self._db, urgent=urgent):
            conn = self._conn
            if conn is None or conn.closed or conn.invalidated:
                conn = self._conn = self._db.engine.connect()
                self.session = {}
                if self._db.is_sqlite:
                    conn.execution_options(**{SQLITE_BEGIN: "BEGIN IMMEDIATE"})
                elif self._autocommit:
                    conn.execution_options(isolation_level="AUTOCOMMIT")
            try:
                with conn.begin():
                    yield conn
            except BaseException:
                self.close()
                raise

    def close(self) -> None:
        conn, self._conn = self._conn, None
        if conn is not None:
            try:
                conn.close()
            except Exception:  # a broken connection: the pool discards it
                pass
