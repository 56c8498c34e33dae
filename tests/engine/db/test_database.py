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
