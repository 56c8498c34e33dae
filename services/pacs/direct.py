"""Core statements run straight on the DBAPI cursor of a SQLAlchemy connection, inside its transaction.

For the statements every C-STORE runs (find the instance, insert it, touch its study). SQLAlchemy's
``Connection.execute`` spends several times the statement's own cost on events, its compiled cache and
result objects (~70 us a statement against ~15 us on SQLite). Here each statement is compiled once per
dialect and set of parameter names, its parameters still pass through the column types' bind processors
(a DateTime becomes SQLite's text form exactly as through ``execute``), and the transaction stays the
connection's: begin, commit and rollback are unchanged. Python-side column defaults are not applied: a
statement that would need one is refused (ValueError) rather than run with NULLs.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from sqlalchemy import Connection
from sqlalchemy.engine import Dialect
from sqlalchemy.sql.compiler import SQLCompiler
from sqlalchemy.sql.expression import Executable

__all__ = ["DirectStatement"]


class _Form:
    __slots__ = ("compiled", "sql", "positions", "processors")

    def __init__(self, compiled: SQLCompiler, dialect: Dialect) -> None:
        missing = [column.key for column in (*compiled.insert_prefetch, *compiled.update_prefetch)]
        if missing:
            # Python-side column defaults are filled in by SQLAlchemy's execution context, not here
            raise ValueError(f"give these columns a value for a direct statement: {', '.join(missing)}")
        self.compiled = compiled
        self.sql = compiled.string
        #: parameter order for positional paramstyles (sqlite3: qmark); None for named ones (psycopg)
        self.positions = compiled.positiontup
        self.processors: dict[str, Callable[[Any], Any]] = {}
        for bind, name in compiled.bind_names.items():  # name as rendered (anonymous binds too)
            # the dialect's implementation of the type (SQLite's DATETIME, not the generic DateTime)
            processor = bind.type.dialect_impl(dialect).bind_processor(dialect)
            if processor is not None:
                self.processors[name] = processor

    def parameters(self, values: dict[str, Any]) -> Any:
        params = self.compiled.construct_params(values)
        for name, processor in self.processors.items():
            params[name] = processor(params[name])
        if self.positions is None:
            return params
        return [params[name] for name in self.positions]


class DirectStatement:
    """A Core statement (select, insert, update) with a direct execution path."""

    def __init__(self, statement: Executable) -> None:
        self.statement = statement
        self._forms: dict[tuple[str, tuple[str, ...]], _Form] = {}

    def _form(self, dialect: Dialect, names: tuple[str, ...]) -> _Form:
        form = self._forms.get((dialect.name, names))
        if form is None:
            compiled = self.statement.compile(dialect=dialect, column_keys=list(names))
            assert isinstance(compiled, SQLCompiler)
            form = self._forms[(dialect.name, names)] = _Form(compiled, dialect)
        return form

    def _run(self, conn: Connection, values: dict[str, Any]) -> Any:
        form = self._form(conn.dialect, tuple(values))
        cursor = conn.connection.cursor()
        cursor.execute(form.sql, form.parameters(values))
        return cursor

    def execute(self, conn: Connection, values: dict[str, Any]) -> None:
        self._run(conn, values).close()

    def first(self, conn: Connection, values: dict[str, Any]) -> tuple[Any, ...] | None:
        """The first row of a select, as a plain tuple in the order of its columns."""
        cursor = self._run(conn, values)
        try:
            row = cursor.fetchone()
        finally:
            cursor.close()
        return tuple(row) if row is not None else None
