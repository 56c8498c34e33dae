"""Write transactions that take SQLite's write lock up front.

In WAL mode a deferred transaction that reads first and writes later fails at once with "database is
locked" (SQLITE_BUSY_SNAPSHOT, no busy wait) when another connection committed in between. Queue workers
and the inbox writer run side by side, so every write transaction here begins with ``BEGIN IMMEDIATE`` on
SQLite (waiting up to busy_timeout for the lock instead). PostgreSQL needs nothing: row locks do the work.
"""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any

from sqlalchemy import Connection

from engine.db import Database

__all__ = ["write_tx", "immediate"]


def immediate(conn: Connection) -> None:
    """Turn the just-begun (still empty) transaction on ``conn`` into BEGIN IMMEDIATE on SQLite."""
    if conn.dialect.name == "sqlite":
        # engine.db issues a plain (deferred) BEGIN when the transaction starts; nothing was read yet
        conn.exec_driver_sql("COMMIT")
        conn.exec_driver_sql("BEGIN IMMEDIATE")


@contextmanager
def write_tx(db: Database) -> Iterator[Any]:
    with db.engine.begin() as conn:
        immediate(conn)
        yield conn
