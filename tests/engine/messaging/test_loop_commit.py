"""The inbox's PostgreSQL commits on the caller's event loop: no writer thread for the common case, one
kept connection per loop, what it cannot decide handed to the writer thread, nothing left behind."""

from __future__ import annotations

import asyncio
import threading

import pytest
from sqlalchemy import event, text

from engine.errors import StoreUnavailable
from engine.messaging.inbox import GroupCommitInbox

from .conftest import hl7, inbound, terminate_backends
from .test_inbox import CHANNEL, count


@pytest.fixture
def pg_only(database_url):
    if "postgresql" not in database_url:
        pytest.skip("the inbox commits on the event loop on PostgreSQL (psycopg) only")


def _writer_threads() -> list[threading.Thread]:
    return [t for t in threading.enumerate() if t.name == "conduit-inbox-writer" and t.is_alive()]


def test_the_loop_commits_new_messages_itself_and_shares_commits(make_stack, pg_only):
    """New messages are stored and answered with no writer thread started; received together they share
    transactions."""
    stack = make_stack(CHANNEL)
    inbox = GroupCommitInbox(stack.db, stack.registry.get)
    before = set(_writer_threads())

    async def go():
        one = await inbox.receive(inbound(hl7("A0")))
        many = await asyncio.gather(*(inbox.receive(inbound(hl7(f"A{i}"))) for i in range(1, 41)))
        return [one, *many]

    try:
        outcomes = asyncio.run(go())
        assert set(_writer_threads()) == before, "the common case needs no writer thread"
    finally:
        inbox.close()
    assert all(o.stored and o.ack_code == "AA" and not o.duplicate for o in outcomes)
    assert len({o.message_id for o in outcomes}) == 41
    assert inbox.batches < 20, "received together, they share commits"
    assert count(stack.db) == 41


def test_a_duplicate_is_answered_by_the_writer_thread_with_the_original_ack(make_stack, pg_only):
    """``ON CONFLICT DO NOTHING`` leaves a taken key out of the loop's commit; the writer thread looks it up
    and answers with the original's ACK, in the same batch as new messages or alone."""
    stack = make_stack(CHANNEL)
    inbox = GroupCommitInbox(stack.db, stack.registry.get)

    async def go():
        first = await inbox.receive(inbound(hl7("D1")))
        again = await asyncio.gather(
            inbox.receive(inbound(hl7("D1"))),
            inbox.receive(inbound(hl7("D2"))),
            inbox.receive(inbound(hl7("D2"))),
        )
        return first, again

    try:
        first, (dup, new, dup_in_batch) = asyncio.run(go())
    finally:
        inbox.close()
    assert first.stored and not first.duplicate
    assert dup.duplicate and dup.message_id == first.message_id and dup.ack_code == "AA"
    assert new.stored and not new.duplicate
    assert dup_in_batch.duplicate and dup_in_batch.message_id == new.message_id
    assert count(stack.db) == 2


def test_the_loop_keeps_its_connection_and_goes_on_when_it_was_found_dead(make_stack, database_url, pg_only):
    """One connection per event loop, kept between commits; killed meanwhile, the next message is stored
    all the same (nothing was sent: the writer thread writes it) and the loop then takes a fresh one."""
    stack = make_stack(CHANNEL)
    inbox = GroupCommitInbox(stack.db, stack.registry.get)
    checkouts = []

    def checked_out(*_):
        checkouts.append(1)

    event.listen(stack.db.engine, "checkout", checked_out)

    async def go():
        for cid in ("K1", "K2", "K3"):
            assert (await inbox.receive(inbound(hl7(cid)))).stored
        assert len(checkouts) == 1
        await asyncio.to_thread(terminate_backends, database_url)
        outcome = await inbox.receive(inbound(hl7("K4")))
        assert outcome.stored and not outcome.duplicate
        for cid in ("K5", "K6"):
            assert (await inbox.receive(inbound(hl7(cid)))).stored

    try:
        asyncio.run(go())
    finally:
        event.remove(stack.db.engine, "checkout", checked_out)
        inbox.close()
    assert sorted(m.control_id for m in stack.store.list()) == [f"K{i}" for i in range(1, 7)]


def test_close_lets_the_commits_in_flight_finish_and_gives_the_connection_back(make_stack, pg_only):
    """``close`` from another thread while the loop still commits: every caller gets its answer, the
    messages are stored, and the loop's connection is back in the pool."""
    stack = make_stack(CHANNEL)
    inbox = GroupCommitInbox(stack.db, stack.registry.get)

    async def go():
        calls = [asyncio.create_task(inbox.receive(inbound(hl7(f"C{i}")))) for i in range(30)]
        await asyncio.sleep(0)  # queued on the loop's committer
        await asyncio.to_thread(inbox.close)
        return await asyncio.gather(*calls)

    outcomes = asyncio.run(go())
    assert all(o.stored for o in outcomes)
    assert count(stack.db) == 30
    assert stack.db.engine.pool.checkedout() == 0


def test_a_loop_that_ended_gives_its_connection_back(make_stack, pg_only):
    """Each event loop keeps a connection; one whose loop has closed goes back to the pool when another
    loop first commits, so loops run one after the other hold one connection, not one each."""
    stack = make_stack(CHANNEL)
    inbox = GroupCommitInbox(stack.db, stack.registry.get)
    try:
        for i in range(8):
            assert asyncio.run(inbox.receive(inbound(hl7(f"E{i}")))).stored
            assert stack.db.engine.pool.checkedout() <= 1
    finally:
        inbox.close()
    assert stack.db.engine.pool.checkedout() == 0
    assert count(stack.db) == 8


def test_a_commit_outlasting_close_is_given_up_on_its_loop(make_stack, database, pg_only):
    """``close`` whose wait runs out while a commit is stuck (a table lock here) leaves the connection to
    the loop, which gives the commit up: its caller gets StoreUnavailable, never no answer, and the
    connection is dropped on the loop's own thread, not handed back to the pool under its feet."""
    stack = make_stack(CHANNEL)
    inbox = GroupCommitInbox(stack.db, stack.registry.get)
    locker = database.engine.connect()

    async def go():
        assert (await inbox.receive(inbound(hl7("S1")))).stored
        locker.execute(text("LOCK TABLE message IN ACCESS EXCLUSIVE MODE"))
        stuck = asyncio.create_task(inbox.receive(inbound(hl7("S2"))))
        await asyncio.sleep(0.2)  # its INSERT waits for the lock
        committer = inbox._committers[asyncio.get_running_loop()]
        await asyncio.to_thread(committer.close, 0.5)
        with pytest.raises(StoreUnavailable):
            await asyncio.wait_for(stuck, 10)

    try:
        asyncio.run(go())
    finally:
        locker.rollback()
        locker.close()
        inbox.close()
    assert stack.db.engine.pool.checkedout() == 0
    # S2's COMMIT had gone out: its backend, waiting for the lock, may still do it once the lock goes,
    # which is why its caller got no positive answer (the sender resends; MSH-10 finds the stored copy)
    assert sorted(m.control_id for m in stack.store.list()) in (["S1"], ["S1", "S2"])


def test_a_message_after_close_goes_to_the_writer_thread(make_stack, pg_only):
    """Listeners stop after the inbox on shutdown: a message that still comes is stored by the writer
    thread (which the next close ends), not by a new committer that nothing would close."""
    stack = make_stack(CHANNEL)
    inbox = GroupCommitInbox(stack.db, stack.registry.get)

    async def go():
        assert (await inbox.receive(inbound(hl7("L1")))).stored
        await asyncio.to_thread(inbox.close)
        assert (await inbox.receive(inbound(hl7("L2")))).stored
        assert not inbox._committers

    asyncio.run(go())
    inbox.close()
    assert stack.db.engine.pool.checkedout() == 0
    assert count(stack.db) == 2
