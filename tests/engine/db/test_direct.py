"""CompiledStatement: the plain mapping of values onto parameters gives what SQLAlchemy's
construct_params gives, on both dialects' paramstyles; a statement needing a Python-side default is refused."""

from __future__ import annotations

from datetime import UTC, datetime

import pytest
from sqlalchemy import Column, DateTime, Integer, MetaData, String, Table, bindparam, insert, select, update
from sqlalchemy.dialects import postgresql, sqlite
from sqlalchemy.sql.compiler import SQLCompiler

from engine.db.direct import CompiledStatement

_T = Table(
    "t",
    MetaData(),
    Column("id", Integer, primary_key=True),
    Column("name", String),
    Column("at", DateTime(timezone=True)),
    Column("flag", Integer, default=0),
)
VALUES = {"name": "a|b", "at": datetime(2026, 11, 22, 3, 4, 5, tzinfo=UTC), "flag": 1}


def _compiled(stmt, dialect, keys=None) -> CompiledStatement:  # type: ignore[no-untyped-def]
    compiled = stmt.compile(dialect=dialect, column_keys=keys)
    assert isinstance(compiled, SQLCompiler)
    return CompiledStatement(compiled, dialect)


@pytest.mark.parametrize("dialect", [sqlite.dialect(), postgresql.dialect()], ids=["sqlite", "postgresql"])
def test_plain_parameters_are_those_construct_params_gives(dialect) -> None:  # type: ignore[no-untyped-def]
    form = _compiled(insert(_T), dialect, list(VALUES))
    assert form._plain
    plain = form.parameters(VALUES)
    form._plain = False  # the general way, SQLAlchemy's own
    general = form.parameters(VALUES)
    assert list(plain) == list(general) if isinstance(plain, tuple) else plain == general
    # the DateTime went through the dialect's bind processor (SQLite stores text)
    at = plain[list(VALUES).index("at")] if isinstance(plain, tuple) else plain["at"]
    assert isinstance(at, str) == (dialect.name == "sqlite")


@pytest.mark.parametrize("dialect", [sqlite.dialect(), postgresql.dialect()], ids=["sqlite", "postgresql"])
def test_literal_values_take_the_general_way(dialect) -> None:  # type: ignore[no-untyped-def]
    form = _compiled(
        update(_T).where(_T.c.id == bindparam("key")).values(flag=1, name=bindparam("n")), dialect
    )
    assert not form._plain  # flag=1 is an anonymous bind carrying its own value
    params = form.parameters({"key": 7, "n": "x"})
    assert sorted(map(str, params if isinstance(params, list) else params.values())) == ["1", "7", "x"]
    select_form = _compiled(select(_T.c.id).where(_T.c.name == bindparam("n")), dialect)
    assert select_form._plain


def test_a_python_side_default_is_refused() -> None:
    with pytest.raises(ValueError, match="flag"):
        _compiled(insert(_T), sqlite.dialect(), ["name", "at"])
