"""The write path's batching: new versions wait in a :class:`WriteBuffer` and go to the database together,
one statement per table (COPY on PostgreSQL); writer contention is answered as Conflict."""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any

from sqlalchemy import Connection, insert
from sqlalchemy.exc import OperationalError

from engine.errors import Conflict
from services.records.indexing import IndexRows
from services.records.models import HistoryRow
from services.records.search_sql import INDEX_TABLES, RESOURCE

__all__ = ["WriteBuffer", "contention_as_conflict", "copy_rows"]

HISTORY = HistoryRow.__table__


@contextmanager
def contention_as_conflict(what: str) -> Iterator[None]:
    """Another writer in the way is the client's retry, not a server fault: SQLite's "database is locked"
    (a deferred transaction whose snapshot went stale, or busy_timeout exceeded) and PostgreSQL's
    serialization failure, deadlock and lock timeout become Conflict (409)."""
    try:
        yield
    except OperationalError as exc:
        state = getattr(exc.orig, "sqlstate", None)
        text = str(exc.orig).lower()
        if state in ("40001", "40P01", "55P03") or "database is locked" in text or "database is busy" in text:
            raise Conflict(f"{what}: another writer holds the record store; retry") from None
        raise


class WriteBuffer:
    """Rows of new versions waiting to be inserted together: one executemany per table per flush (the
    resource rows with RETURNING, in parameter order, to learn their primary keys)."""

    def __init__(self) -> None:
        self.items: list[tuple[dict[str, Any] | None, int | None, dict[str, Any], IndexRows]] = []

    def __bool__(self) -> bool:
        return bool(self.items)

    def add(
        self, row: dict[str, Any] | None, pk: int | None, history: dict[str, Any], index: IndexRows
    ) -> None:
        self.items.append((row, pk, history, index))

    def flush(self, conn: Connection) -> None:
        items, self.items = self.items, []
        new_rows = [row for row, _, _, _ in items if row is not None]
        new_pks: list[int] = []
        if len(new_rows) == 1:
            new_pks = [conn.execute(insert(RESOURCE).returning(RESOURCE.c.pk), new_rows[0]).scalar_one()]
        elif new_rows:
            result = conn.execute(
                insert(RESOURCE).returning(RESOURCE.c.pk, sort_by_parameter_order=True), new_rows
            )
            new_pks = list(result.scalars())
        fresh = iter(new_pks)
        histories: list[dict[str, Any]] = []
        by_kind: dict[str, list[dict[str, Any]]] = {}
        for row, pk, history, index in items:
            resource_pk = next(fresh) if row is not None else pk
            history["resource_pk"] = resource_pk
            histories.append(history)
            for kind, rows in index.items():
                for index_row in rows:
                    index_row["resource_pk"] = resource_pk
                by_kind.setdefault(kind, []).extend(rows)
        pg = conn.dialect.name == "postgresql"
        for table, rows in [(HISTORY, histories), *((INDEX_TABLES[k], v) for k, v in by_kind.items())]:
            if pg and len(rows) > 1:
                copy_rows(conn, table, rows)
            else:
                conn.execute(insert(table), rows)


def copy_rows(conn: Connection, table: Any, rows: list[dict[str, Any]]) -> None:
    """PostgreSQL COPY of many rows in the current transaction: psycopg's executemany would send one INSERT
    per row, and a multi-row VALUES statement costs more to build than to run."""
    columns = list(rows[0])
    cursor = conn.connection.dbapi_connection.cursor()  # type: ignore[union-attr]
    try:
        with cursor.copy(f"COPY {table.name} ({', '.join(columns)}) FROM STDIN") as copy:
            for row in rows:
                copy.write_row([row[c] for c in columns])
    finally:
        cursor.close()
