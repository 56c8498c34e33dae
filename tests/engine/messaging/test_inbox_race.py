"""Two inboxes on one database (as the ingest processes of ``conduit serve --mllp-processes N`` are)
racing the same MSH-3/4/10: each key stored once, every caller answered with the original's ACK code; and
a batch that keeps losing a unique key is stored message by message rather than failed as a whole."""

from __future__ import annotations

import asyncio
import threading

from sqlalchemy import func, select
from sqlalchemy.exc import IntegrityError

from engine.db import Database
from engine.messaging.inbox import GroupCommitInbox
from engine.messaging.models import Message

from .conftest import hl7, inbound

CHANNEL = """
name: test
source:
  url: mllp://127.0.0.1:2599
  duplicate_window: 1h
"""


def test_two_inboxes_racing_the_same_keys(make_stack, database, database_url):
    other = Database(database_url)  # its own engine and connections, like another process
    try:
        a, b = make_stack(CHANNEL), make_stack(CHANNEL, db=other)

        async def go():
            calls = [
                inbox.receive(inbound(hl7(f"K{k}")))
                for k in range(40)
                for inbox in (a.inbox, b.inbox, a.inbox, b.inbox)
            ]
            return await asyncio.gather(*calls)

        outcomes = asyncio.run(go())
        a.inbox.close()
        b.inbox.close()
    finally:
        other.dispose()
    assert all(o.stored and o.ack_code == "AA" for o in outcomes)
    by_key: dict[int, list] = {}
    for i, outcome in enumerate(outcomes):
        by_key.setdefault(i // 4, []).append(outcome)
    for found in by_key.values():
        assert sum(not o.duplicate for o in found) == 1, found
        assert len({o.message_id for o in found}) == 1, found
    with database.engine.connect() as conn:
        assert conn.execute(select(func.count()).select_from(Message.__table__)).scalar() == 40


def test_a_batch_losing_a_key_twice_is_stored_one_by_one(make_stack, database):
    stack = make_stack(CHANNEL)
    inbox = GroupCommitInbox(stack.db, stack.registry.get, writers=1, on_loop=False)
    write = inbox._write
    entered, release = threading.Event(), threading.Event()
    sizes: list[int] = []

    def racing_write(conn, batch, commit, *rest):
        sizes.append(len(batch))
        if batch[0].row["control_id"] == "H0":
            entered.set()
            assert release.wait(30)
        elif len(batch) > 1:  # as if another process always took one of the keys first
            raise IntegrityError("INSERT", {}, Exception("duplicate key value"))
        return write(conn, batch, commit, *rest)

    inbox._write = racing_write

    async def go():
        first = asyncio.create_task(inbox.receive(inbound(hl7("H0"))))
        await asyncio.to_thread(entered.wait, 30)
        rest = [asyncio.create_task(inbox.receive(inbound(hl7(f"R{i}")))) for i in range(9)]
        await asyncio.sleep(0.05)  # all queued behind the held commit
        release.set()
        return await asyncio.gather(first, *rest)

    outcomes = asyncio.run(go())
    inbox.close()
    assert all(o.stored and not o.duplicate for o in outcomes)
    assert sizes[:3] == [1, 9, 9] and sizes[3:] == [1] * 9, sizes
    with database.engine.connect() as conn:
        assert conn.execute(select(func.count()).select_from(Message.__table__)).scalar() == 10


def test_sqlite_writers_of_every_process_take_turns_on_a_file_lock(database, tmp_path):
    """The writer gate's holder also holds ``<database>-writer.lock`` (flock): another process's
    writers wait for it there, woken at its release, instead of in SQLite's sleeping busy handler."""
    import fcntl
    import os

    from engine.messaging.tx import write_tx

    if not database.is_sqlite:
        return  # PostgreSQL: row locks, no file lock
    path = f"{database.url.database}-writer.lock"

    def free() -> bool:
        fd = os.open(path, os.O_RDWR | os.O_CREAT)  # another open file description: as another process
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
            fcntl.flock(fd, fcntl.LOCK_UN)
            return True
        except BlockingIOError:
            return False
        finally:
            os.close(fd)

    with write_tx(database) as conn:
        conn.exec_driver_sql("SELECT 1")
        assert not free()
    assert free()


def test_two_inboxes_taking_shared_keys_in_opposite_orders(make_stack, database, database_url):
    """On PostgreSQL the two batches can deadlock; the victim is written again (whole, then one by one),
    never answered 'store unavailable' for the whole batch."""
    other = Database(database_url)
    try:
        a, b = make_stack(CHANNEL), make_stack(CHANNEL, db=other)

        async def go():
            n = 200
            forward = [a.inbox.receive(inbound(hl7(f"K{k}"))) for k in range(n)]
            backward = [b.inbox.receive(inbound(hl7(f"K{k}"))) for k in reversed(range(n))]
            return await asyncio.gather(*[c for pair in zip(forward, backward, strict=True) for c in pair])

        outcomes = asyncio.run(go())
        a.inbox.close()
        b.inbox.close()
    finally:
        other.dispose()
    assert all(o.stored and o.ack_code == "AA" for o in outcomes)
    assert sum(not o.duplicate for o in outcomes) == 200
    with database.engine.connect() as conn:
        assert conn.execute(select(func.count()).select_from(Message.__table__)).scalar() == 200
