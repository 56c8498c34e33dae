"""The inbox: store then acknowledge, group commit, duplicate window, rejected messages kept."""

from __future__ import annotations

import asyncio
import re
from dataclasses import replace

import pytest
from sqlalchemy import event, func, select

from engine.errors import Issue, StoreUnavailable
from engine.messaging.models import Message, MessageStage
from engine.messaging.ports import InboundMessage

from .conftest import hl7, inbound, terminate_backends

CHANNEL = """
name: test
source:
  url: mllp://127.0.0.1:2599
  duplicate_window: 1h
destinations:
  - name: out
    url: http://127.0.0.1:9/
"""


def count(db, table=Message) -> int:
    with db.engine.connect() as conn:
        return conn.execute(select(func.count()).select_from(table.__table__)).scalar()


def test_receive_commits_before_answering(make_stack, database):
    stack = make_stack(CHANNEL)

    async def go():
        return await stack.inbox.receive(inbound(hl7("A1")))

    outcome = asyncio.run(go())
    assert outcome.stored and outcome.ack_code == "AA" and not outcome.duplicate
    # visible from another connection: the transaction is committed, not just flushed
    detail = stack.store.get(outcome.message_id)
    assert detail.summary.control_id == "A1" and detail.summary.status == "received"
    assert detail.raw.startswith("MSH|")
    assert [s.name for s in detail.stages] == ["received"]
    assert count(database, MessageStage) == 1


def test_failing_commit_never_yields_stored(make_stack, database):
    stack = make_stack(CHANNEL)
    fail = {"on": True}

    def boom(*_):
        if fail["on"]:
            raise RuntimeError("disk on fire")

    # the commit fails where it is asked for: the transaction's (SQLite), or at the end of the pipeline
    # (psycopg), where the inbox's own fails before its COMMIT goes out
    event.listen(database.engine, "commit", boom)
    in_pipeline = stack.inbox._sql.commit_in_pipeline
    stack.inbox._sql.commit_in_pipeline = lambda cursor: boom() or in_pipeline(cursor)
    try:

        async def go():
            with pytest.raises(StoreUnavailable):
                await stack.inbox.receive(inbound(hl7("F1")))
            fail["on"] = False  # the database comes back: the next receive works without a restart
            return await stack.inbox.receive(inbound(hl7("F2")))

        outcome = asyncio.run(go())
    finally:
        event.remove(database.engine, "commit", boom)
    assert outcome.stored
    assert [m.control_id for m in stack.store.list()] == ["F2"]


def test_database_down_raises_store_unavailable_then_recovers(make_stack, database, database_url):
    from engine.db import Database

    broken = Database(
        "postgresql+psycopg://nobody@127.0.0.1:1/none"
        if "postgresql" in database_url
        else "sqlite:////nonexistent-dir/x/y.db"
    )
    stack = make_stack(CHANNEL, db=broken)

    async def go():
        with pytest.raises(StoreUnavailable):
            await stack.inbox.receive(inbound(hl7("D1")))

    try:
        asyncio.run(go())
    finally:
        broken.dispose()


def test_group_commit_under_concurrency(make_stack, database):
    stack = make_stack(CHANNEL)

    async def go():
        return await asyncio.gather(*(stack.inbox.receive(inbound(hl7(f"G{i}"))) for i in range(300)))

    outcomes = asyncio.run(go())
    assert all(o.stored and o.ack_code == "AA" for o in outcomes)
    assert len({o.message_id for o in outcomes}) == 300
    assert count(database) == 300
    assert stack.inbox.batches < 300 / 5, "concurrent receives must share transactions"


def test_duplicates_answer_original_ack_and_store_nothing(make_stack, database):
    stack = make_stack(CHANNEL)

    async def go():
        first = await stack.inbox.receive(inbound(hl7("DUP1")))
        again = await stack.inbox.receive(inbound(hl7("DUP1")))
        # same control id, other sender: not a duplicate
        other = await stack.inbox.receive(inbound(hl7("DUP1", sender="RAD")))
        # two copies inside one group-committed batch
        pair = await asyncio.gather(*(stack.inbox.receive(inbound(hl7("DUP2"))) for _ in range(2)))
        return first, again, other, pair

    first, again, other, pair = asyncio.run(go())
    assert again.duplicate and again.message_id == first.message_id and again.ack_code == first.ack_code
    assert not other.duplicate and other.message_id != first.message_id
    assert sorted(p.duplicate for p in pair) == [False, True] and pair[0].message_id == pair[1].message_id
    assert count(database) == 3


def test_duplicate_window_expires(make_stack, database):
    stack = make_stack(CHANNEL.replace("duplicate_window: 1h", "duplicate_window: 0s"))

    async def go():
        a = await stack.inbox.receive(inbound(hl7("W1")))
        await asyncio.sleep(0.01)
        b = await stack.inbox.receive(inbound(hl7("W1")))
        return a, b

    a, b = asyncio.run(go())
    assert not b.duplicate and a.message_id != b.message_id
    assert count(database) == 2


def test_enhanced_mode_and_rejections_are_kept(make_stack, database):
    stack = make_stack(
        CHANNEL.replace("  duplicate_window: 1h", "  duplicate_window: 1h\n  allowed_senders: ['LAB^*']")
    )

    async def go():
        enhanced = await stack.inbox.receive(inbound(hl7("E1", msh15="AL")))
        garbage = await stack.inbox.receive(replace(inbound(hl7("G")), raw=b"not hl7 at all", header=None))
        stranger = await stack.inbox.receive(inbound(hl7("S1", sender="EVIL")))
        nowhere = await stack.inbox.receive(inbound(hl7("N1"), channel="nope"))
        miscounted = await stack.inbox.receive(
            replace(
                inbound(hl7("B1")),
                header=None,
                problems=(Issue("BTS-1 says 5 messages, the batch holds 1", location="BTS-1", code="100"),),
            )
        )
        return enhanced, garbage, stranger, nowhere, miscounted

    enhanced, garbage, stranger, nowhere, miscounted = asyncio.run(go())
    # the transport's reason is what staff see, not a generic "MSH could not be parsed"
    assert miscounted.ack_code == "AR" and miscounted.issues[0].location == "BTS-1"
    assert "BTS-1 says 5 messages" in stack.store.get(miscounted.message_id).summary.error
    assert enhanced.ack_code == "CA"
    for rejected in (garbage, stranger, nowhere):
        assert rejected.stored and rejected.ack_code == "AR" and rejected.issues
        assert stack.store.get(rejected.message_id).summary.status == "rejected"
    assert garbage.issues[0].location == "MSH"
    assert "not allowed" in stack.store.get(stranger.message_id).summary.error
    assert isinstance(garbage, type(enhanced)) and isinstance(inbound(hl7()), InboundMessage)


def test_store_only_channel_needs_no_pipeline(make_stack, database):
    stack = make_stack("name: test\nsource: {url: 'mllp://127.0.0.1:2599'}\n")

    async def go():
        return await stack.inbox.receive(inbound(hl7("S1")))

    outcome = asyncio.run(go())
    detail = stack.store.get(outcome.message_id)
    assert outcome.ack_code == "AA" and detail.summary.status == "done"
    assert [(s.name, s.status) for s in detail.stages] == [("received", "done")]


def test_allowed_peers_by_network(make_stack):
    stack = make_stack(
        CHANNEL.replace(
            "  duplicate_window: 1h", "  duplicate_window: 1h\n  allowed_peers: ['10.0.0.0/8', '::1']"
        )
    )

    async def go():
        inside = await stack.inbox.receive(inbound(hl7("P1"), peer="10.1.2.3:4000"))
        v6 = await stack.inbox.receive(inbound(hl7("P2"), peer="[::1]:4000"))
        outside = await stack.inbox.receive(inbound(hl7("P3"), peer="192.168.1.9:4000"))
        return inside, v6, outside

    inside, v6, outside = asyncio.run(go())
    assert inside.ack_code == "AA" and v6.ack_code == "AA" and outside.ack_code == "AR"


def test_recovers_after_the_database_dropped_its_connections(make_stack, database, database_url):
    """PostgreSQL restarted or connections killed: the next receive reconnects (pool_pre_ping)."""
    if "postgresql" not in database_url:
        pytest.skip("connection loss is a PostgreSQL matter (SQLite has no server)")
    from sqlalchemy import create_engine, text
    from sqlalchemy.engine import make_url

    stack = make_stack(CHANNEL)

    async def receive(cid):
        return await stack.inbox.receive(inbound(hl7(cid)))

    assert asyncio.run(receive("K1")).stored
    admin = create_engine(make_url(database_url).set(database="postgres"), isolation_level="AUTOCOMMIT")
    with admin.connect() as conn:
        conn.execute(
            text(
                "SELECT pg_terminate_backend(pid) FROM pg_stat_activity WHERE datname = :d AND pid <> pg_backend_pid()"
            ),
            {"d": make_url(database_url).database},
        )
    admin.dispose()
    outcome = asyncio.run(receive("K2"))
    assert outcome.stored and not outcome.duplicate
    assert {m.control_id for m in stack.store.list()} == {"K1", "K2"}


def test_a_writer_keeps_its_connection_and_writes_again_when_it_was_found_dead(
    make_stack, database, database_url
):
    """The writer's connection is kept between commits (no pool checkout, so no pre-ping per commit);
    killed meanwhile, the next batch finds it dead before its commit and is written once on a fresh one."""
    from engine.messaging.inbox import GroupCommitInbox

    stack = make_stack(CHANNEL)
    inbox = GroupCommitInbox(stack.db, stack.registry.get, writers=1, on_loop=False)
    checkouts = []

    def checked_out(*_):
        checkouts.append(1)

    event.listen(stack.db.engine, "checkout", checked_out)
    try:

        async def receive(cid):
            return await inbox.receive(inbound(hl7(cid)))

        assert asyncio.run(receive("K1")).stored
        assert asyncio.run(receive("K2")).stored
        assert len(checkouts) == 1
        if "postgresql" in database_url:
            terminate_backends(database_url)
            outcome = asyncio.run(receive("K3"))
            assert outcome.stored and not outcome.duplicate
            assert len(checkouts) == 2
            assert sorted(m.control_id for m in stack.store.list()) == ["K1", "K2", "K3"]
    finally:
        event.remove(stack.db.engine, "checkout", checked_out)
        inbox.close()


def test_one_sender_at_a_time_is_served_by_one_writer_and_close_stops_the_idle_ones(make_stack):
    """Writers beyond the one listening sleep until a message finds none listening: messages received one
    after the other end up committed by one writer (after each writer got its first one at most)."""
    import threading

    from engine.events import MESSAGE_RECEIVED
    from engine.messaging.inbox import GroupCommitInbox

    stack = make_stack(CHANNEL)
    inbox = GroupCommitInbox(stack.db, stack.registry.get, writers=4, on_loop=False)
    writers: list[int] = []
    unsubscribe = stack.db.bus.subscribe(MESSAGE_RECEIVED, lambda _: writers.append(threading.get_ident()))

    async def receive_in_turn(count):
        for i in range(count):
            assert (await inbox.receive(inbound(hl7(f"T{i}")))).stored

    async def receive_together(count):
        outcomes = await asyncio.gather(*(inbox.receive(inbound(hl7(f"G{i}"))) for i in range(count)))
        assert all(o.stored for o in outcomes)

    try:
        asyncio.run(receive_in_turn(12))
        assert len(set(writers[4:])) == 1
        asyncio.run(receive_together(40))
    finally:
        unsubscribe()
        inbox.close()  # returns: the idle writers were woken to stop
    assert not any(t.is_alive() for t in threading.enumerate() if t.name == "conduit-inbox-writer")
    assert count(stack.db) == 52


def _hold_a_commit_and_queue(make_stack, wake_at, wake_after_s, first_wait, then_wait):
    """Four messages in turn (one writer ends up listening, the other asleep), then one whose commit is
    held; ``first_wait`` messages queue up behind it, and after 0.3 s ``then_wait`` more. Checks that the
    first ones did not wake the sleeping writer and that the next ones did, which took them all in one
    transaction."""
    import threading

    from engine.messaging.inbox import GroupCommitInbox

    stack = make_stack(CHANNEL)
    inbox = GroupCommitInbox(
        stack.db, stack.registry.get, writers=2, wake_at=wake_at, wake_after_s=wake_after_s, on_loop=False
    )
    write = inbox._write
    entered, release = threading.Event(), threading.Event()

    def held_write(conn, batch, commit, *rest):
        if batch[0].row["control_id"] == "H0":
            entered.set()
            assert release.wait(30)
        return write(conn, batch, commit, *rest)

    inbox._write = held_write

    async def until(predicate):
        for _ in range(500):
            if predicate():
                return
            await asyncio.sleep(0.01)
        raise AssertionError("timed out")

    def queue(count, prefix):
        return [asyncio.create_task(inbox.receive(inbound(hl7(f"{prefix}{i}")))) for i in range(count)]

    async def go():
        for i in range(4):
            assert (await inbox.receive(inbound(hl7(f"W{i}")))).stored
        before = inbox.batches
        held = asyncio.create_task(inbox.receive(inbound(hl7("H0"))))
        await until(entered.is_set)
        waiting = queue(first_wait, "Q")
        await asyncio.sleep(0.3)
        assert inbox._queue.qsize() == first_wait, "these must not wake the sleeping writer"
        waiting += queue(then_wait, "R")
        await until(lambda: inbox._queue.qsize() == 0)  # woken, it took all that waited
        release.set()
        outcomes = await asyncio.gather(held, *waiting)
        assert all(o.stored for o in outcomes)
        assert inbox.batches - before == 2

    try:
        asyncio.run(go())
    finally:
        release.set()
        inbox.close()
    assert count(stack.db) == 5 + first_wait + then_wait


def test_another_writer_is_woken_only_when_enough_messages_wait(make_stack):
    """While the only listening writer commits, messages queue up for it; a sleeping writer is woken for
    them only once ``wake_at`` of them wait."""
    _hold_a_commit_and_queue(make_stack, wake_at=3, wake_after_s=60, first_wait=2, then_wait=1)


def test_another_writer_is_woken_when_none_listened_for_long(make_stack):
    """Fewer than ``wake_at`` waiting, a message that comes when no writer has listened for
    ``wake_after_s`` (the running commit is slow) wakes one all the same."""
    _hold_a_commit_and_queue(make_stack, wake_at=100, wake_after_s=0.2, first_wait=1, then_wait=1)


def _before_the_commit_once(make_stack, database_url, action, on_loop):
    """An inbox (one writer; committing on the event loop or not) whose next batch runs ``action(tx)``
    just before its COMMIT is queued, and how to receive a message on it (PostgreSQL only)."""
    if "postgresql" not in database_url:
        pytest.skip("the COMMIT in the pipeline is psycopg's")
    from engine.messaging.inbox import GroupCommitInbox

    stack = make_stack(CHANNEL)
    inbox = GroupCommitInbox(stack.db, stack.registry.get, writers=1, on_loop=on_loop)
    in_pipeline = inbox._sql.commit_in_pipeline

    def hooked(tx):
        inbox._sql.commit_in_pipeline = in_pipeline  # once: a second write would succeed
        action(tx)
        return in_pipeline(tx)

    def receive(cid, *, hook=False):
        if hook:
            inbox._sql.commit_in_pipeline = hooked
        return asyncio.run(inbox.receive(inbound(hl7(cid))))

    return stack, inbox, receive


@pytest.mark.parametrize("on_loop", [False, True], ids=["thread", "loop"])
def test_a_connection_lost_once_the_commit_went_out_is_not_written_again(make_stack, database_url, on_loop):
    """On psycopg the COMMIT goes out with the inserts; a connection lost after the server began to carry
    them out may have committed the batch, so its callers get StoreUnavailable (their senders resend)
    instead of a second write. (Here the backend dies after the inserts, before the COMMIT: nothing is
    stored, and the inbox cannot know it.)"""

    def terminate_after_the_inserts(tx):
        tx.execute(b"SELECT pg_terminate_backend(pg_backend_pid())")

    stack, inbox, receive = _before_the_commit_once(
        make_stack, database_url, terminate_after_the_inserts, on_loop
    )
    try:
        assert receive("L1").stored
        with pytest.raises(StoreUnavailable):
            receive("L2", hook=True)
        assert receive("L3").stored
    finally:
        inbox.close()
    assert sorted(m.control_id for m in stack.store.list()) == ["L1", "L3"]


@pytest.mark.parametrize("on_loop", [False, True], ids=["thread", "loop"])
def test_a_connection_found_dead_when_nothing_was_done_is_written_again(make_stack, database_url, on_loop):
    """The backend was terminated just before the batch went out (its FATAL answers the BEGIN): the
    server did nothing, so the batch is written again on a fresh connection and acknowledged."""
    from sqlalchemy import create_engine, text
    from sqlalchemy.engine import make_url

    def terminate_first(tx):
        admin = create_engine(make_url(database_url).set(database="postgres"), isolation_level="AUTOCOMMIT")
        with admin.connect() as conn:
            conn.execute(
                text("SELECT pg_terminate_backend(:pid, 10000)"), {"pid": tx.connection.info.backend_pid}
            )
        admin.dispose()

    stack, inbox, receive = _before_the_commit_once(make_stack, database_url, terminate_first, on_loop)
    try:
        assert receive("N1").stored
        outcome = receive("N2", hook=True)
        assert outcome.stored and not outcome.duplicate
    finally:
        inbox.close()
    assert sorted(m.control_id for m in stack.store.list()) == ["N1", "N2"]


@pytest.mark.parametrize("on_loop", [False, True], ids=["thread", "loop"])
def test_a_connection_reset_before_the_answers_is_not_written_again(make_stack, database_url, on_loop):
    """The server carried out BEGIN, inserts and COMMIT, then the connection broke before its answers were
    read: nothing tells the inbox that nothing was stored, so there is no second write and no positive
    answer (the sender resends; its MSH-10 then finds the stored message)."""
    import time

    import psycopg

    class _ResetOnRead:
        def __init__(self, real):
            self._real = real

        def __getattr__(self, name):
            return getattr(self._real, name)

        def consume_input(self):
            time.sleep(0.5)  # the server has the whole pipeline: it commits meanwhile
            raise psycopg.OperationalError("connection reset by peer")

    class _Connection:
        def __init__(self, real):
            self._real, self.pgconn = real, _ResetOnRead(real.pgconn)

        def __getattr__(self, name):
            return getattr(self._real, name)

    def reset_when_reading(tx):
        tx.connection = _Connection(tx.connection)

    stack, inbox, receive = _before_the_commit_once(make_stack, database_url, reset_when_reading, on_loop)
    try:
        assert receive("R1").stored
        with pytest.raises(StoreUnavailable):
            receive("R2", hook=True)
        assert receive("R3").stored
    finally:
        inbox.close()
    assert sorted(m.control_id for m in stack.store.list()) == ["R1", "R2", "R3"]


def _pg_only(database_url):
    if "postgresql" not in database_url:
        pytest.skip("the one-round-trip commit is psycopg's")


@pytest.mark.parametrize("on_loop", [False, True], ids=["thread", "loop"])
def test_a_commit_is_one_round_trip_with_its_begin_and_commit(
    make_stack, database, database_url, tmp_path, on_loop
):
    """On PostgreSQL the writer sends BEGIN, the inserts and COMMIT, then waits once (libpq's protocol
    trace: one block of frontend messages ending with Sync, then the backend's answers): psycopg's own
    BEGIN would wait for a sync of its own, an ``executemany(returning=True)`` for its ids."""
    _pg_only(database_url)
    import psycopg

    from engine.messaging.inbox import GroupCommitInbox

    stack = make_stack(CHANNEL)
    inbox = GroupCommitInbox(stack.db, stack.registry.get, writers=1, on_loop=on_loop)
    trace = tmp_path / "trace.txt"
    out = trace.open("w")
    traced = []

    def on_checkout(dbapi_conn, *_):
        if not traced:  # the writer's kept connection: its first checkout
            dbapi_conn.pgconn.trace(out.fileno())
            dbapi_conn.pgconn.set_trace_flags(psycopg.pq.Trace.SUPPRESS_TIMESTAMPS)
            traced.append(dbapi_conn)

    event.listen(stack.db.engine, "checkout", on_checkout)

    async def receive_in_turn():
        for i in range(8):  # one after the other: one commit each
            assert (await inbox.receive(inbound(hl7(f"R{i}")))).stored

    try:
        asyncio.run(receive_in_turn())
    finally:
        event.remove(stack.db.engine, "checkout", on_checkout)
        inbox.close()
        for conn in traced:
            conn.pgconn.untrace()
        out.close()
    blocks: list[tuple[str, list[str]]] = []  # runs of messages in one direction: (F or B, their names)
    for line in trace.read_text().splitlines():
        found = re.match(r"([FB])\t\d+\t(\w+)(.*)", line)  # other lines continue a multi-line SQL text
        if found is None:
            continue
        direction, what = found.group(1), found.group(2) + found.group(3)
        if blocks and blocks[-1][0] == direction:
            blocks[-1][1].append(what)
        else:
            blocks.append((direction, [what]))
    assert [direction for direction, _ in blocks] == ["F", "B"] * 8, "one wait per message"
    for direction, messages in blocks:
        if direction == "F":
            assert "Sync" in messages[-2:]
        else:
            done = [m.split(maxsplit=1)[1] for m in messages if m.startswith("CommandComplete")]
            assert done == ['"BEGIN"', '"SET"', '"INSERT 0 1"', '"COMMIT"'] and messages[-1].startswith(
                "Ready"
            )
    assert sorted(m.control_id for m in stack.store.list()) == [f"R{i}" for i in range(8)]


@pytest.mark.parametrize("on_loop", [False, True], ids=["thread", "loop"])
def test_a_commit_the_server_refuses_gets_no_positive_answer_and_the_writer_goes_on(
    make_stack, database, database_url, on_loop
):
    """The COMMIT itself fails (a deferred constraint trigger raises when it runs): nothing of the batch
    is stored, its callers get StoreUnavailable (the MLLP handler then answers AE, never AA), the writer's
    connection goes back to the pool out of autocommit, and the next message is stored."""
    _pg_only(database_url)
    from sqlalchemy import text

    from engine.messaging.inbox import GroupCommitInbox

    ddl = [
        "CREATE FUNCTION conduit_test_refuse() RETURNS trigger LANGUAGE plpgsql AS $$ BEGIN "
        "IF NEW.control_id LIKE 'BAD%' THEN RAISE EXCEPTION 'refused at commit'; END IF; RETURN NULL; END $$",
        "CREATE CONSTRAINT TRIGGER conduit_test_refuse AFTER INSERT ON message DEFERRABLE INITIALLY DEFERRED "
        "FOR EACH ROW EXECUTE FUNCTION conduit_test_refuse()",
    ]
    with database.engine.begin() as conn:
        for statement in ddl:
            conn.execute(text(statement))
    stack = make_stack(CHANNEL)
    inbox = GroupCommitInbox(stack.db, stack.registry.get, writers=1, on_loop=on_loop)
    modes = []

    def on_checkin(dbapi_conn, *_):
        if dbapi_conn is not None:
            modes.append(dbapi_conn.autocommit)

    event.listen(stack.db.engine, "checkin", on_checkin)

    async def receive(cid):
        return await inbox.receive(inbound(hl7(cid)))

    try:
        assert asyncio.run(receive("OK1")).stored
        with pytest.raises(StoreUnavailable):
            asyncio.run(receive("BAD1"))
        assert asyncio.run(receive("OK2")).stored

        async def together():
            return await asyncio.gather(*(receive(c) for c in ("OK3", "BAD2", "OK4")), return_exceptions=True)

        results = asyncio.run(together())
        # in one batch all three fail; in several, the good ones may be stored: never a BAD one
        assert isinstance(results[1], StoreUnavailable)
        assert all(r.stored for r in results if not isinstance(r, BaseException))
    finally:
        event.remove(stack.db.engine, "checkin", on_checkin)
        inbox.close()
        with database.engine.begin() as conn:
            conn.execute(text("DROP TRIGGER conduit_test_refuse ON message"))
            conn.execute(text("DROP FUNCTION conduit_test_refuse()"))
    stored = {m.control_id for m in stack.store.list()}
    assert {"OK1", "OK2"} <= stored and not {"BAD1", "BAD2"} & stored
    assert stored <= {"OK1", "OK2", "OK3", "OK4"}
    assert modes and not any(modes), "connections go back to the pool out of autocommit"


def test_a_batch_larger_than_the_socket_buffers_is_stored_whole(make_stack, database):
    """Many large messages at once: on PostgreSQL one commit's statements outgrow the socket's buffers
    and go out in several writes before the one wait; every message is stored byte for byte."""
    stack = make_stack(CHANNEL)
    bulky = "".join(f"OBX|{i}|TX|||{'x' * 200}\\X0D\\é\r" for i in range(100)).encode()

    async def go():
        calls = [stack.inbox.receive(inbound(hl7(f"B{i}") + bulky)) for i in range(200)]
        return await asyncio.gather(*calls)

    outcomes = asyncio.run(go())
    assert all(o.stored and o.ack_code == "AA" for o in outcomes)
    assert stack.inbox.batches < 100, "they must share commits"
    with database.engine.connect() as conn:
        raws = conn.execute(select(Message.raw)).scalars().all()
    assert len(raws) == 200 and all(r.endswith(bulky) for r in raws)
