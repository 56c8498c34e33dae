"""The inbox's driver-level statements: what they store equals what Core reads back, errors as SQLAlchemy's."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

import pytest
from sqlalchemy import select, text
from sqlalchemy.exc import DBAPIError, IntegrityError

from engine.db import Database
from engine.messaging.inbox import as_utc
from engine.messaging.inbox_sql import InboxSql, driver_cursor
from engine.messaging.models import Message, MessageStage

_M = Message.__table__
_S = MessageStage.__table__


def _row(control_id: str, at: datetime, key: str | None) -> dict:
    return {
        "channel": "c", "received_at": at, "updated_at": at, "peer": "127.0.0.1:1", "sending_application": "A",
        "sending_facility": "F", "control_id": control_id, "message_type": "ADT", "trigger_event": "A01",
        "version": "2.5.1", "raw": b"MSH|^~\\&|A|F\r\x00\xff", "status": "received", "ack_code": "AA",
        "dedup_key": key, "error": None, "reprocessed": 0,
    }  # fmt: skip


def test_rows_round_trip_and_ids_follow_the_rows(database: Database) -> None:
    sql = InboxSql(database.engine.dialect)
    at = datetime(2026, 1, 2, 3, 4, 5, 678901, tzinfo=UTC)
    rows = [_row(f"C{i}", at + timedelta(seconds=i), f"k{i}" if i % 2 else None) for i in range(7)]
    with database.write_transaction() as conn, driver_cursor(conn) as cursor:
        ids = sql.insert_messages(cursor, rows)
        sql.insert_stages(
            cursor,
            [{"message_id": mid, "name": "received", "status": "queued", "queue": "q", "attempts": 0,
              "created_at": at, "updated_at": at} for mid in ids],
        )  # fmt: skip
    assert len(set(ids)) == 7
    with database.engine.connect() as conn:
        stored = {r.id: r for r in conn.execute(select(_M))}
        stages = conn.execute(select(_S.c.message_id, _S.c.created_at, _S.c.queue)).all()
    for mid, row in zip(ids, rows, strict=True):
        got = stored[mid]
        assert got.control_id == row["control_id"] and got.dedup_key == row["dedup_key"]
        assert got.raw == row["raw"]
        assert as_utc(got.received_at) == row["received_at"]
    assert sorted(s.message_id for s in stages) == sorted(ids) and {s.queue for s in stages} == {"q"}

    with database.engine.connect() as conn, driver_cursor(conn) as cursor:
        found = sql.lookup(cursor, ["k1", "k3", "nope"])
    assert {(key, mid) for mid, key, _, _ in found} == {("k1", ids[1]), ("k3", ids[3])}
    assert all(as_utc(at_) in (rows[1]["received_at"], rows[3]["received_at"]) for _, _, at_, _ in found)


def test_a_unique_key_clash_is_sqlalchemys_integrity_error(database: Database) -> None:
    sql = InboxSql(database.engine.dialect)
    now = datetime.now(UTC)
    with database.write_transaction() as conn, driver_cursor(conn) as cursor:
        sql.insert_messages(cursor, [_row("X1", now, "same")])
    # the inbox retries on IntegrityError: another process stored the same MSH-3/4/10 meanwhile
    with pytest.raises(IntegrityError), database.write_transaction() as conn, driver_cursor(conn) as cursor:
        sql.insert_messages(cursor, [_row("X2", now, "same")])
    with database.engine.connect() as conn:
        assert conn.execute(select(_M.c.control_id)).scalars().all() == ["X1"]


def test_a_lost_server_connection_is_invalidated(database: Database, database_url: str) -> None:
    if "postgresql" not in database_url:
        pytest.skip("connection loss is a PostgreSQL matter (SQLite has no server)")
    sql = InboxSql(database.engine.dialect)
    with pytest.raises(DBAPIError) as caught, database.write_transaction() as conn:
        with driver_cursor(conn) as cursor:
            cursor.execute("SELECT pg_terminate_backend(pg_backend_pid())")
    assert caught.value.connection_invalidated
    # the pool hands out a working connection next
    with database.write_transaction() as conn, driver_cursor(conn) as cursor:
        assert len(sql.insert_messages(cursor, [_row("Y1", datetime.now(UTC), "y")])) == 1
    with database.engine.connect() as conn:
        assert conn.execute(text("SELECT count(*) FROM message")).scalar() == 1


def test_messages_and_their_stages_in_one_statement(database: Database) -> None:
    """On psycopg each message goes with its stage in one statement (the stage gets the message's id)."""
    sql = InboxSql(database.engine.dialect)
    if not sql.writes_both_at_once:
        pytest.skip("one statement for both is psycopg's, in its pipeline")
    at = datetime(2026, 1, 2, 3, 4, 5, 678901, tzinfo=UTC)
    rows = [_row(f"B{i}", at + timedelta(seconds=i), f"b{i}" if i % 2 else None) for i in range(5)]
    stages = [{"name": "received", "status": "queued", "queue": f"q{i}", "attempts": i, "last_error": None,
               "created_at": at + timedelta(minutes=i), "updated_at": at} for i in range(5)]  # fmt: skip
    with database.write_transaction() as conn, driver_cursor(conn) as cursor:
        with sql.pipeline(cursor):
            read_ids = sql.insert_messages_and_stages(cursor, rows, stages)
        ids = read_ids()  # after the pipeline: its end fetched them
    with database.engine.connect() as conn:
        stored = {r.id: r.control_id for r in conn.execute(select(_M.c.id, _M.c.control_id))}
        got = {r.message_id: r for r in conn.execute(select(_S))}
    assert [stored[mid] for mid in ids] == [r["control_id"] for r in rows]
    for i, mid in enumerate(ids):
        assert (got[mid].queue, got[mid].attempts, as_utc(got[mid].created_at)) == (
            f"q{i}",
            i,
            at + timedelta(minutes=i),
        )


def test_new_messages_in_one_wait_store_what_core_reads_back(database: Database) -> None:
    """psycopg: the inbox's one-write one-wait transaction (libpq pipeline, bytes in binary and other
    values in text, a prepared statement) stores the same values as the other paths; a key taken earlier in the batch
    reads None; the statement is prepared once per connection session; a failure is psycopg's error."""
    sql = InboxSql(database.engine.dialect)
    if not sql.skips_duplicates:
        pytest.skip("the one-wait transaction is psycopg's")
    from engine.messaging.inbox import _first_stage

    at = datetime(2026, 1, 2, 3, 4, 5, 678901, tzinfo=UTC)
    rows = [_row("W0", at, "w0"), _row("W1", at + timedelta(seconds=1), None), _row("W2", at, "w0")]
    session: dict = {}
    with database.engine.connect() as conn:
        conn = conn.execution_options(isolation_level="AUTOCOMMIT")
        for attempt in range(2):
            batch = [dict(r, control_id=f"{r['control_id']}-{attempt}") for r in rows]
            if attempt:
                batch = [dict(r, dedup_key=r["dedup_key"] and r["dedup_key"] + "b") for r in batch]
            with driver_cursor(conn) as cursor:
                tx = sql.one_wait(cursor.connection, session)
                read = sql.queue_new_messages_and_stages(
                    tx, session, batch, [_first_stage(r, at) for r in batch]
                )
                sql.commit_in_pipeline(tx)
                ids = read(tx.run())
            assert ids[0] is not None and ids[1] is not None and ids[2] is None
        assert len(session["prepared"]) == 1
        # a failing statement (a NOT NULL column left NULL) raises SQLAlchemy's error; nothing is kept
        bad = [dict(rows[0], control_id="X", dedup_key="x", channel=None)]
        with pytest.raises(IntegrityError), driver_cursor(conn) as cursor:
            tx = sql.one_wait(cursor.connection, session)
            read = sql.queue_new_messages_and_stages(tx, session, bad, [_first_stage(bad[0], at)])
            sql.commit_in_pipeline(tx)
            tx.run()
    with database.engine.connect() as conn:
        stored = conn.execute(select(_M).order_by(_M.c.id)).all()
        stages = conn.execute(select(_S.c.message_id, _S.c.status, _S.c.created_at)).all()
    assert [m.control_id for m in stored] == ["W0-0", "W1-0", "W0-1", "W1-1"]
    for m in stored:
        assert m.raw == rows[0]["raw"] and m.peer == "127.0.0.1:1" and m.error is None
    assert as_utc(stored[0].received_at) == at and as_utc(stored[1].received_at) == at + timedelta(seconds=1)
    assert sorted(s.message_id for s in stages) == [m.id for m in stored]
    assert all(as_utc(s.created_at) == at and s.status == "queued" for s in stages)
