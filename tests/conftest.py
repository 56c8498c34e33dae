"""Shared fixtures. Every database test runs on SQLite and, when CONDUIT_TEST_DATABASE_URL is set, on
PostgreSQL too: request the ``database`` fixture (or ``runtime``) and the test is parametrized."""

from __future__ import annotations

import os
import shutil
import uuid
from collections.abc import Iterator
from pathlib import Path

import pytest
from sqlalchemy import create_engine, inspect, text
from sqlalchemy.engine import make_url

from engine.db import Database, migrate
from engine.settings import ConduitSettings

PG_URL = os.environ.get("CONDUIT_TEST_DATABASE_URL")
BACKENDS = ["sqlite"] + (["postgresql"] if PG_URL else [])


@pytest.fixture(scope="session")
def _sqlite_template(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A migrated SQLite file; each test copies it instead of migrating again."""
    path = tmp_path_factory.mktemp("sqlite-template") / "template.db"
    db = Database(f"sqlite:///{path}")
    migrate.upgrade(db.engine)
    with db.engine.connect() as conn:
        conn.exec_driver_sql("PRAGMA wal_checkpoint(TRUNCATE)")
    db.dispose()
    return path


@pytest.fixture(scope="session")
def _pg_url() -> Iterator[str | None]:
    """A throw-away PostgreSQL database for this test session, migrated once."""
    if not PG_URL:
        yield None
        return
    base = make_url(PG_URL)
    name = f"conduit_test_{os.getpid()}_{uuid.uuid4().hex[:6]}"
    admin = create_engine(base, isolation_level="AUTOCOMMIT")
    with admin.connect() as conn:
        conn.execute(text(f'CREATE DATABASE "{name}"'))
    url = base.set(database=name).render_as_string(hide_password=False)
    db = Database(url)
    migrate.upgrade(db.engine)
    db.dispose()
    yield url
    with admin.connect() as conn:
        conn.execute(
            text(
                "SELECT pg_terminate_backend(pid) FROM pg_stat_activity WHERE datname = :n AND pid <> pg_backend_pid()"
            ),
            {"n": name},
        )
        conn.execute(text(f'DROP DATABASE IF EXISTS "{name}"'))
    admin.dispose()


def _truncate_pg(url: str) -> None:
    engine = create_engine(url)
    tables = [t for t in inspect(engine).get_table_names() if t != "alembic_version"]
    if tables:
        with engine.begin() as conn:
            conn.execute(
                text(f"TRUNCATE {', '.join(chr(34) + t + chr(34) for t in tables)} RESTART IDENTITY CASCADE")
            )
    engine.dispose()


@pytest.fixture(params=BACKENDS)
def database_url(
    request: pytest.FixtureRequest, tmp_path: Path, _sqlite_template: Path, _pg_url: str | None
) -> str:
    """URL of an empty, migrated database (SQLite file, or the session's PostgreSQL database truncated)."""
    if request.param == "sqlite":
        path = tmp_path / "conduit.db"
        shutil.copy(_sqlite_template, path)
        return f"sqlite:///{path}"
    assert _pg_url is not None
    _truncate_pg(_pg_url)
    return _pg_url


@pytest.fixture
def database(database_url: str) -> Iterator[Database]:
    db = Database(database_url)
    yield db
    db.dispose()


@pytest.fixture
def settings(tmp_path: Path, database_url: str) -> ConduitSettings:
    return ConduitSettings(data_dir=tmp_path / "data", database_url=database_url)


@pytest.fixture
def runtime(settings: ConduitSettings, database: Database):  # type: ignore[no-untyped-def]
    """A wired Runtime (all services installed) on the test database."""
    from engine.runtime import build_runtime

    return build_runtime(settings, db=database)
