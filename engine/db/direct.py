"""Core statements run straight on the DBAPI cursor of a SQLAlchemy connection, inside its transaction.

For the few statements on the hottest write paths (the MLLP inbox's batch write, the C-STORE index).
SQLAlchemy's ``Connection.execute`` spends several times the statement's own cost on events, its
compiled cache and result objects (~70 us a statement against ~15 us on SQLite). Here a statement is
still built from the tables and compiled by the dialect, and every parameter still passes through its
column type's bind processor (a DateTime becomes SQLite's text form exactly as through ``execute``), but
compiling happens once and the values go straight to the driver; the transaction stays the connection's
(begin, commit and rollback unchanged) and driver errors come out as SQLAlchemy's (``driver_cursor``).
Python-side column defaults are not applied: a statement that would need one is refused (ValueError)
rather than run with NULLs.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator, Mapping
from contextlib import contextmanager
from typing import Any

from sqlalchemy import Connection, Engine
from sqlalchemy.engine import Dialect
from sqlalchemy.exc import DBAPIError
from sqlalchemy.sql.compiler import SQLCompiler
from sqlalchemy.sql.expression import Executable

__all__ = ["CompiledStatement", "DirectStatement", "driver_cursor", "read_row", "read_rows"]


class CompiledStatement:
    """A compiled statement's SQL text and how to turn values (bind name -> value) into the driver's
    parameters: positional (sqlite3's qmark) or named (psycopg), each through its type's bind processor."""

    __slots__ = ("compiled", "sql", "_positions", "_processors", "_plain")

    def __init__(self, compiled: SQLCompiler, dialect: Dialect) -> None:
        missing = [column.key for column in (*compiled.insert_prefetch, *compiled.update_prefetch)]
        if missing:
            # Python-side column defaults are filled in by SQLAlchemy's execution context, not here
            raise ValueError(f"give these columns a value for a direct statement: {', '.join(missing)}")
        self.compiled = compiled
        self.sql = compiled.string
        #: parameter order for positional paramstyles; None for named ones
        self._positions = compiled.positiontup
        self._processors: dict[str, Callable[[Any], Any]] = {}
        for bind, name in compiled.bind_names.items():  # name as rendered (anonymous binds too)
            # the dialect's implementation of the type (SQLite's DATETIME, not the generic DateTime)
            processor = bind.type.dialect_impl(dialect).bind_processor(dialect)
            if processor is not None:
                self._processors[name] = processor
        # every bind named by the caller and valued by it (an INSERT's columns, bindparam("x")): the values
        # map straight onto the parameters; otherwise (a literal such as ``fhir_dirty=True`` became an
        # anonymous bind with its own value) SQLAlchemy's construct_params fills them in
        self._plain = all(
            not b.unique and b.callable is None and (b.required or b.value is None) and name == b.key
            for b, name in compiled.bind_names.items()
        )

    def parameters(self, values: Mapping[str, Any]) -> Any:
        if self._plain:
            processors = self._processors
            if self._positions is not None:
                return tuple(
                    processors[n](values[n]) if n in processors else values[n] for n in self._positions
                )
            return {
                n: processors[n](v) if n in processors else v
                for n, v in values.items()
                if n in self.compiled.binds
            }
        params = self.compiled.construct_params(dict(values))
        for name, processor in self._processors.items():
            params[name] = processor(params[name])
        if self._positions is None:
            return params
        return [params[name] for name in self._positions]


class DirectStatement:
    """A Core statement (select, insert, update) with a direct execution path, compiled once per dialect
    and set of value names."""

    def __init__(self, statement: Executable) -> None:
        self.statement = statement
        self._forms: dict[tuple[str, str, tuple[str, ...]], CompiledStatement] = {}

    def compiled(self, dialect: Dialect, names: tuple[str, ...]) -> CompiledStatement:
        form = self._forms.get((dialect.name, dialect.driver, names))
        if form is None:
            compiled = self.statement.compile(dialect=dialect, column_keys=list(names))
            assert isinstance(compiled, SQLCompiler)
            form = self._forms[(dialect.name, dialect.driver, names)] = CompiledStatement(compiled, dialect)
        return form

    def execute(self, conn: Connection, values: dict[str, Any]) -> None:
        form = self.compiled(conn.dialect, tuple(values))
        with driver_cursor(conn) as cursor:
            cursor.execute(form.sql, form.parameters(values))

    def first(self, conn: Connection, values: dict[str, Any]) -> tuple[Any, ...] | None:
        """The first row of a select, as a plain tuple in the order of its columns."""
        form = self.compiled(conn.dialect, tuple(values))
        with driver_cursor(conn) as cursor:
            cursor.execute(form.sql, form.parameters(values))
            row = cursor.fetchone()
        return tuple(row) if row is not None else None


def read_row(engine: Engine, sql: str, params: Any) -> tuple[Any, ...] | None:
    """One row of a read on a pooled driver connection, outside any unit of work (the one-row lookups
    on the read and C-STORE hot paths, where a Session or Core connection costs more than the query).
    The driver's implicit read transaction is ended before the connection goes back to the pool."""
    rows = read_rows(engine, sql, params, limit=1)
    return rows[0] if rows else None


def read_rows(engine: Engine, sql: str, params: Any, *, limit: int | None = None) -> list[tuple[Any, ...]]:
    """All rows (at most ``limit``) of a read, the same way as ``read_row`` (C-FIND's index query)."""
    conn = engine.raw_connection()
    try:
        cur = conn.cursor()
        try:
            cur.execute(sql, params)
            rows = cur.fetchall() if limit is None else cur.fetchmany(limit)
        finally:
            cur.close()
        conn.rollback()
    finally:
        conn.close()
    return [tuple(row) for row in rows]


@contextmanager
def driver_cursor(conn: Connection) -> Iterator[Any]:
    """A DBAPI cursor inside ``conn``'s transaction; driver errors leave it as SQLAlchemy's, the
    connection invalidated when the server went away (the pool then hands out a fresh one)."""
    fairy = conn.connection
    cursor = fairy.cursor()
    dbapi = conn.dialect.loaded_dbapi
    try:
        yield cursor
    except dbapi.Error as exc:
        disconnect = conn.dialect.is_disconnect(exc, fairy.dbapi_connection, cursor)
        _close(cursor)
        if disconnect:
            conn.invalidate(exc)
        raise DBAPIError.instance(
            None, None, exc, dbapi.Error, connection_invalidated=disconnect, dialect=conn.dialect
        ) from exc
    else:
        _close(cursor)


def _close(cursor: Any) -> None:
    try:
        cursor.close()
    except Exception:  # a cursor of a broken connection: nothing left to release
        pass
