import sqlite3
from pathlib import Path

import pytest
from sqlalchemy import text

from engine.db import Database, migrate
from engine.events import RESOURCE_CREATED, ResourceEvent


def test_sqlite_runs_in_wal_with_full_sync(tmp_path) -> None:
    db = Database(f"sqlite:///{tmp_path / 'x.db'}")
    with db.engine.connect() as conn:
        assert conn.exec_driver_sql("PRAGMA journal_mode").scalar() == "wal"
        assert conn.exec_driver_sql("PRAGMA synchronous").scalar() == 2  # FULL
        assert conn.exec_driver_sql("PRAGMA foreign_keys").scalar() == 1
    db.dispose()


def test_durability_check_passes_on_test_database(database: Database) -> None:
    database.check_durability()  # raises ConfigurationError on fsync/synchronous_commit off
    assert database.ping()


def test_migrations_are_current(database: Database) -> None:
    assert migrate.is_current(database.engine)
    assert migrate.current_heads(database.engine) == migrate.expected_heads()


def test_events_publish_only_after_commit(database: Database) -> None:
    seen: list[ResourceEvent] = []
    database.bus.subscribe(RESOURCE_CREATED, seen.append)
    event = ResourceEvent(RESOURCE_CREATED, "Patient", "1", 1)

    try:
        with database.unit_of_work() as uow:
            uow.defer(event)
            raise RuntimeError("boom")
    except RuntimeError:
        pass
    assert seen == []  # rolled back: nothing published

    with database.unit_of_work() as uow:
        uow.defer(event)
        uow.session.execute(text("SELECT 1"))
        assert seen == []  # not yet committed
    assert seen == [event]


def test_failing_handler_does_not_break_caller(database: Database) -> None:
    def bad(_event: object) -> None:
        raise ValueError("handler bug")

    good: list[object] = []
    database.bus.subscribe(RESOURCE_CREATED, bad)
    database.bus.subscribe(RESOURCE_CREATED, good.append)
    with database.unit_of_work() as uow:
        uow.defer(ResourceEvent(RESOURCE_CREATED, "Patient", "1", 1))
    assert len(good) == 1


def _write_lock_free(path: Path) -> bool:
    """Whether another connection could take SQLite's write lock right now (without waiting)."""
    other = sqlite3.connect(path, timeout=0, isolation_level=None)
    try:
        other.execute("BEGIN IMMEDIATE")
        other.execute("ROLLBACK")
        return True
    except sqlite3.OperationalError:
        return False
    finally:
        other.close()


def test_write_transactions_hold_sqlite_write_lock_from_their_start(tmp_path: Path) -> None:
    path = tmp_path / "x.db"
    db = Database(f"sqlite:///{path}")
    with db.engine.begin() as conn:
        conn.exec_driver_sql("CREATE TABLE t (x INTEGER)")
    try:
        with db.unit_of_work() as uow:
            uow.session.execute(text("SELECT 1"))
            assert _write_lock_free(path)  # a plain transaction stays deferred
        with db.write_transaction() as conn:
            assert _write_lock_free(path) is False  # held before any statement of the caller
            conn.exec_driver_sql("INSERT INTO t VALUES (1)")
        with db.unit_of_work(immediate=True) as uow:
            assert _write_lock_free(path) is False
            uow.session.execute(text("INSERT INTO t VALUES (2)"))
        with db.engine.connect() as conn:  # the option does not stick to the pooled connection
            with conn.begin():
                conn.exec_driver_sql("SELECT 1")
                assert _write_lock_free(path)
            assert conn.exec_driver_sql("SELECT count(*) FROM t").scalar() == 2
    finally:
        db.dispose()


def test_write_transaction_commits_and_rolls_back(database: Database) -> None:
    with database.write_transaction() as conn:
        conn.execute(text("CREATE TABLE IF NOT EXISTS wt_probe (x INTEGER)"))
    with pytest.raises(RuntimeError), database.write_transaction() as conn:
        conn.execute(text("INSERT INTO wt_probe VALUES (1)"))
        raise RuntimeError("undo")
    with database.write_transaction() as conn:
        conn.execute(text("INSERT INTO wt_probe VALUES (2)"))
    with database.engine.connect() as conn:
        assert conn.execute(text("SELECT x FROM wt_probe")).scalars().all() == [2]
        conn.execute(text("DROP TABLE wt_probe"))
        conn.commit()
