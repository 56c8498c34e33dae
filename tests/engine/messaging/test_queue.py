"""Claiming: concurrent workers never take the same item, leases expire, ordered queues keep order."""

from __future__ import annotations

import asyncio
import threading
import time
from collections import Counter

import pytest

from engine.db import Database
from engine.messaging.ports import SendResult
from engine.messaging.processing import LostLease, Processor
from engine.messaging.queue import claim, claim_stage

from .conftest import FakeDestination, hl7, inbound, wait_for

CHANNEL = """
name: test
source:
  url: mllp://127.0.0.1:2599
destinations:
  - name: out
    url: http://example.invalid/out
    retry: {attempts: 5, initial_delay: 10ms, max_delay: 20ms, jitter: 0}
"""


def _receive(stack, n, prefix="Q"):
    async def go():
        return [
            o.message_id
            for o in await asyncio.gather(
                *(stack.inbox.receive(inbound(hl7(f"{prefix}{i}"))) for i in range(n))
            )
        ]

    return asyncio.run(go())


def test_two_claimers_never_share_an_item(make_stack, database_url):
    stack = make_stack(CHANNEL)
    _receive(stack, 120)
    taken: list[list[int]] = [[], []]
    dbs = [Database(database_url), Database(database_url)]  # two "processes": separate pools

    def worker(index: int) -> None:
        while True:
            items = claim(dbs[index], "pipeline:test", f"w{index}", lease_s=60, limit=7, ordered=False)
            if not items:
                return
            taken[index].extend(i.stage_id for i in items)
            time.sleep(0.001)

    threads = [threading.Thread(target=worker, args=(i,)) for i in range(2)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(60)
    for db in dbs:
        db.dispose()
    assert not set(taken[0]) & set(taken[1])
    assert len(taken[0]) + len(taken[1]) == 120


def test_two_pools_deliver_each_message_exactly_once(make_stack, database_url):
    first = make_stack(CHANNEL)
    ids = _receive(first, 60)
    other_db = Database(database_url)
    second = make_stack(CHANNEL, db=other_db)
    shared = FakeDestination(delay=0.002)
    for stack in (first, second):
        stack.fakes["http://example.invalid/out"] = shared

    async def go():
        tasks = [asyncio.create_task(s.pool.run()) for s in (first, second)]
        try:
            await wait_for(lambda: all(m.status == "done" for m in first.store.list(limit=100)), 30)
        finally:
            for t in tasks:
                t.cancel()
            await asyncio.gather(*tasks, return_exceptions=True)

    try:
        asyncio.run(go())
    finally:
        other_db.dispose()
    counts = Counter(p.split(b"|")[9] for p in shared.received)
    assert len(counts) == len(ids) and set(counts.values()) == {1}


def test_expired_lease_is_taken_over_and_the_late_worker_cannot_finish(make_stack, database):
    stack = make_stack(CHANNEL)
    _receive(stack, 1)
    crashed = claim(database, "pipeline:test", "crashed", lease_s=0.05, limit=1, ordered=False)
    assert len(crashed) == 1
    assert claim(database, "pipeline:test", "other", lease_s=60, limit=1, ordered=False) == []
    time.sleep(0.1)
    again = claim(database, "pipeline:test", "other", lease_s=60, limit=1, ordered=False)
    assert [i.stage_id for i in again] == [crashed[0].stage_id] and again[0].attempts == 2
    processor: Processor = stack.pool.processor
    with pytest.raises(LostLease):
        processor.run_pipeline(crashed[0])
    assert processor.run_pipeline(again[0]).status == "processing"


def test_ordered_destination_waits_for_its_head(make_stack):
    # channel-level ordered: the pipeline runs in arrival order and destinations inherit it
    stack = make_stack(CHANNEL.replace("destinations:", "ordered: true\ndestinations:"))
    fake = FakeDestination(script=[SendResult(False, "busy"), SendResult(False, "busy")])
    stack.fakes["http://example.invalid/out"] = fake
    ids = []

    async def go():
        for i in range(5):
            ids.append((await stack.inbox.receive(inbound(hl7(f"O{i}")))).message_id)
        task = asyncio.create_task(stack.pool.run())
        try:
            await wait_for(lambda: len(fake.received) == 5, 20)
        finally:
            task.cancel()
            await asyncio.gather(task, return_exceptions=True)

    asyncio.run(go())
    assert [p.split(b"|")[9] for p in fake.received] == [f"O{i}".encode() for i in range(5)]


class _Flaky(FakeDestination):
    """Refuses every 4th attempt (retryable), otherwise accepts."""

    async def send(self, payload: bytes, *, content_type: str) -> SendResult:
        self.calls += 1
        if self.calls % 4 == 0:
            return SendResult(False, "busy")
        self.received.append(payload)
        return SendResult(True, "ok")


def test_ordered_channel_keeps_order_with_two_pools_and_failures(make_stack, database_url):
    text = CHANNEL.replace("destinations:", "ordered: true\ndestinations:")
    first = make_stack(text)
    other_db = Database(database_url)
    second = make_stack(text, db=other_db)
    shared = _Flaky()
    for stack in (first, second):
        stack.fakes["http://example.invalid/out"] = shared

    async def go():
        tasks = [asyncio.create_task(s.pool.run()) for s in (first, second)]
        try:
            for i in range(30):
                await first.inbox.receive(inbound(hl7(f"S{i:02d}")))
            await wait_for(lambda: len(shared.received) == 30, 30)
        finally:
            for t in tasks:
                t.cancel()
            await asyncio.gather(*tasks, return_exceptions=True)

    try:
        asyncio.run(go())
    finally:
        other_db.dispose()
    assert [p.split(b"|")[9] for p in shared.received] == [f"S{i:02d}".encode() for i in range(30)]


def test_one_poison_item_does_not_hold_back_its_batch(make_stack, monkeypatch):
    from engine.messaging.processing import Processor, _stage_row

    stack = make_stack(CHANNEL)
    original = Processor._plan

    def plan(self, item):
        result = original(self, item)
        if item.control_id == "POISON":  # a row the database refuses (NOT NULL): the batch commit fails
            result.stages.append(_stage_row(item.message_id, "bogus", None, result.stages[0]["created_at"]))
        return result

    monkeypatch.setattr(Processor, "_plan", plan)

    async def go():
        ids = {}
        for cid in ("G1", "POISON", "G2"):
            ids[cid] = (await stack.inbox.receive(inbound(hl7(cid)))).message_id
        task = asyncio.create_task(stack.pool.run())
        try:
            await wait_for(
                lambda: all(stack.store.get(ids[c]).summary.status == "done" for c in ("G1", "G2"))
            )
        finally:
            task.cancel()
            await asyncio.gather(task, return_exceptions=True)
        return ids

    ids = asyncio.run(go())
    poisoned = stack.store.get(ids["POISON"])
    assert poisoned.summary.status == "received" and poisoned.stages[0].status == "processing"


def test_a_claimed_batch_of_deliveries_is_recorded_in_one_transaction(make_stack, monkeypatch):
    stack = make_stack(CHANNEL)
    fake = FakeDestination(script=[SendResult(False, "busy")])  # the first attempt fails: a retry recorded
    stack.fakes["http://example.invalid/out"] = fake
    batches: list[int] = []
    original = Processor.finish_deliveries

    def finish(self, attempts):
        batches.append(len(attempts))
        return original(self, attempts)

    monkeypatch.setattr(Processor, "finish_deliveries", finish)
    ids = _receive(stack, 20, "B")  # stored before the workers start: the pipeline fans out in one batch

    async def go():
        task = asyncio.create_task(stack.pool.run())
        try:
            await wait_for(lambda: all(m.status == "done" for m in stack.store.list(limit=100)), 20)
        finally:
            task.cancel()
            await asyncio.gather(task, return_exceptions=True)

    asyncio.run(go())
    assert len(fake.received) == 20 and len(ids) == 20
    assert batches[0] == 20, "the 20 sends of one claim are recorded together"
    assert sum(batches) == 21 and len(batches) == 2  # plus the retry of the refused one
    dests = [
        s
        for m in stack.store.list(limit=100)
        for s in stack.store.get(m.id).stages
        if s.name == "destination"
    ]
    assert {s.status for s in dests} == {"sent"}


def test_a_lost_lease_leaves_that_delivery_alone_and_records_the_others(make_stack, database):
    from engine.messaging.processing import Attempt

    stack = make_stack(CHANNEL)
    _receive(stack, 3, "L")
    processor: Processor = stack.pool.processor
    processor.run_pipeline_batch(claim(database, "pipeline:test", "w", lease_s=60, limit=10, ordered=False))
    mine = claim(database, "dest:test:out", "late", lease_s=0.05, limit=10, ordered=False)
    assert len(mine) == 3
    time.sleep(0.1)
    taken = claim_stage(database, mine[1].stage_id, "other", lease_s=60)  # the late worker's lease ran out
    assert taken is not None
    ok = SendResult(True, "ok")
    statuses = processor.finish_deliveries([Attempt(i, None, ok, None) for i in mine])
    assert statuses == [None if i.stage_id == taken.stage_id else "sent" for i in mine]
    stages = {s.id: s for m in stack.store.list() for s in stack.store.get(m.id).stages}
    assert stages[taken.stage_id].status == "processing"
    assert sorted(s.status for s in stages.values() if s.name == "destination") == [
        "processing",
        "sent",
        "sent",
    ]


def test_a_claim_takes_no_more_than_its_limit(make_stack, database):
    stack = make_stack(CHANNEL)
    _receive(stack, 5, "P")
    first = claim(database, "pipeline:test", "a", lease_s=60, limit=1, ordered=False)
    second = claim(database, "pipeline:test", "b", lease_s=60, limit=2, ordered=False)
    rest = claim(database, "pipeline:test", "c", lease_s=60, limit=10, ordered=False)
    assert [len(first), len(second), len(rest)] == [1, 2, 2]
    taken = [i.stage_id for i in first + second + rest]
    assert taken == sorted(taken) and len(set(taken)) == 5  # oldest first, none twice


class _Staggered(FakeDestination):
    """Accepts every message; the first few quickly, the others only after a long while."""

    async def send(self, payload: bytes, *, content_type: str) -> SendResult:
        self.calls += 1
        await asyncio.sleep(0.02 if self.calls <= 4 else 30)
        self.received.append(payload)
        return SendResult(True, "ok")


@pytest.mark.parametrize("ordered", [True, False], ids=["ordered", "side-by-side"])
def test_sends_that_went_through_are_recorded_when_the_worker_is_cancelled(make_stack, ordered):
    # shutdown or a channel reload cancels the worker mid-batch: what the destination accepted must be
    # recorded as sent, or it would be sent again once its lease expired
    text = CHANNEL.replace("destinations:", "ordered: true\ndestinations:") if ordered else CHANNEL
    stack = make_stack(text)
    fake = _Staggered()
    stack.fakes["http://example.invalid/out"] = fake
    _receive(stack, 12, "C")

    async def go():
        task = asyncio.create_task(stack.pool.run())
        try:
            await wait_for(lambda: len(fake.received) >= 4, 20)
        finally:
            task.cancel()
            await asyncio.gather(task, return_exceptions=True)

    asyncio.run(go())
    accepted = {p.split(b"|")[9] for p in fake.received}
    sent = {
        m.control_id.encode()
        for m in stack.store.list(limit=100)
        for s in stack.store.get(m.id).stages
        if s.name == "destination" and s.status == "sent"
    }
    assert accepted and sent == accepted


def test_a_failed_delivery_is_counted_once_when_its_batch_is_recorded_one_by_one(make_stack, monkeypatch):
    # the batch's recording transaction fails (a deadlock, say): the worker records each attempt again on
    # its own; the ERRORS metric counts the failed deliveries, not the tries to record them
    from prometheus_client import REGISTRY

    from engine.messaging import processing

    stack = make_stack(CHANNEL)
    fake = FakeDestination(script=[SendResult(False, "HTTP 400", retryable=False)] * 3)  # 3 rejections
    stack.fakes["http://example.invalid/out"] = fake
    original = processing._roll_up_many
    batches: list[int] = []

    def roll_up_many(conn, message_ids, now):
        batches.append(len(message_ids))
        if len(message_ids) > 1:
            raise RuntimeError("deadlock detected")
        return original(conn, message_ids, now)

    monkeypatch.setattr(processing, "_roll_up_many", roll_up_many)

    def errors() -> float:
        return (
            REGISTRY.get_sample_value("conduit_errors_total", {"channel": "test", "stage": "delivery"}) or 0
        )

    before = errors()
    _receive(stack, 3, "E")

    async def go():
        task = asyncio.create_task(stack.pool.run())
        try:
            await wait_for(lambda: all(m.status == "dead" for m in stack.store.list(limit=10)), 20)
        finally:
            task.cancel()
            await asyncio.gather(task, return_exceptions=True)

    asyncio.run(go())
    assert batches[0] == 3 and batches[1:] == [1, 1, 1], "recorded together, failed, then one by one"
    assert errors() - before == 3


def test_a_queue_worker_cancelled_as_its_event_is_set_stops(make_stack):
    """Cancelled in the same loop turn as its wake-up event is set (a shutdown while messages arrive), a
    queue worker must stop: Python 3.11's asyncio.wait_for returned normally then (gh-86296), the worker
    looped on and the pool's shutdown waited for it for ever (a test hung once so)."""
    stack = make_stack(CHANNEL, poll_seconds=30.0)  # idle workers wait on their events, not the poll
    pool = stack.pool

    async def go():
        pool._loop = asyncio.get_running_loop()
        pool._reconcile()  # one worker per queue, each waiting on its event once idle
        tasks = dict(pool._tasks)
        assert tasks
        await asyncio.sleep(0.5)  # claimed nothing, now waiting for the event or the poll
        for name, task in tasks.items():
            pool._events[name].set()
            task.cancel()
        done, pending = await asyncio.wait(tasks.values(), timeout=5)
        for task in pending:  # do not leave them running in the next test
            task.cancel()
        return pending

    assert not asyncio.run(go()), "a queue worker went on after it was cancelled"
