"""Retention never touches unfinished messages; metrics count what happened."""

from __future__ import annotations

import asyncio
from datetime import UTC, datetime, timedelta

from prometheus_client import REGISTRY
from sqlalchemy import update

from engine.messaging.models import Message

from .conftest import FakeDestination, hl7, inbound, wait_for

CHANNEL = """
name: test
source:
  url: mllp://127.0.0.1:2599
filters: [{message_type: ADT}]
destinations:
  - name: out
    url: http://example.invalid/out
    retry: {attempts: 2, initial_delay: 10ms, max_delay: 10ms, jitter: 0}
retention: {days: 7}
"""


def test_prune_keeps_unfinished_and_recent(make_stack, database):
    stack = make_stack(CHANNEL)

    async def go():
        ids = [(await stack.inbox.receive(inbound(hl7(f"K{i}")))).message_id for i in range(3)]
        task = asyncio.create_task(stack.pool.run())
        try:
            await wait_for(lambda: all(stack.store.get(i).summary.status == "done" for i in ids))
        finally:
            task.cancel()
            await asyncio.gather(task, return_exceptions=True)
        pending = (await stack.inbox.receive(inbound(hl7("K-pending")))).message_id
        return ids, pending

    (old_done, recent_done, _), pending = asyncio.run(go())
    long_ago = datetime.now(UTC) - timedelta(days=30)
    m = Message.__table__
    with database.engine.begin() as conn:
        conn.execute(
            update(m).where(m.c.id.in_([old_done, pending])).values(updated_at=long_ago, received_at=long_ago)
        )
    assert stack.store.prune(default_days=None, channels=stack.registry.all()) == 1
    remaining = {s.id for s in stack.store.list()}
    assert old_done not in remaining and {recent_done, pending} <= remaining
    # no retention anywhere -> nothing pruned
    assert stack.store.prune(default_days=None, channels=[]) == 0


def _value(name: str, **labels: str) -> float:
    return REGISTRY.get_sample_value(name, labels) or 0.0


def test_metrics_follow_the_traffic(make_stack):
    stack = make_stack(CHANNEL.replace("name: test", "name: metered").replace("test", "metered"))
    stack.fakes["http://example.invalid/out"] = FakeDestination(fail_when=b"|Z1|")
    before = {
        "received": _value("conduit_messages_received_total", channel="metered"),
        "dup": _value("conduit_messages_duplicate_total", channel="metered"),
        "aa": _value("conduit_acks_total", channel="metered", code="AA"),
        "filtered": _value("conduit_messages_processed_total", channel="metered", status="filtered"),
        "dead": _value("conduit_messages_processed_total", channel="metered", status="dead"),
        "done": _value("conduit_messages_processed_total", channel="metered", status="done"),
        "errors": _value("conduit_errors_total", channel="metered", stage="delivery"),
        "latency": _value("conduit_receive_seconds_count", channel="metered"),
    }

    async def go():
        dead = (await stack.inbox.receive(inbound(hl7("Z1"), channel="metered"))).message_id
        await stack.inbox.receive(inbound(hl7("Z1"), channel="metered"))  # duplicate
        filtered = (
            await stack.inbox.receive(inbound(hl7("Z2", msg_type="ORU^R01"), channel="metered"))
        ).message_id
        done = (await stack.inbox.receive(inbound(hl7("Z3"), channel="metered"))).message_id
        task = asyncio.create_task(stack.pool.run())
        try:
            final = ("dead", "filtered", "done")
            await wait_for(
                lambda: all(stack.store.get(i).summary.status in final for i in (dead, filtered, done))
            )
        finally:
            task.cancel()
            await asyncio.gather(task, return_exceptions=True)

    asyncio.run(go())
    assert _value("conduit_messages_received_total", channel="metered") - before["received"] == 3
    assert _value("conduit_messages_duplicate_total", channel="metered") - before["dup"] == 1
    assert _value("conduit_acks_total", channel="metered", code="AA") - before["aa"] == 4
    assert (
        _value("conduit_messages_processed_total", channel="metered", status="filtered") - before["filtered"]
        == 1
    )
    assert _value("conduit_messages_processed_total", channel="metered", status="dead") - before["dead"] == 1
    assert _value("conduit_messages_processed_total", channel="metered", status="done") - before["done"] == 1
    assert _value("conduit_errors_total", channel="metered", stage="delivery") - before["errors"] == 2
    assert _value("conduit_receive_seconds_count", channel="metered") - before["latency"] == 4


def test_queue_depth_gauge(make_stack):
    stack = make_stack(CHANNEL.replace("name: test", "name: deep").replace("test", "deep"))

    async def go():
        for i in range(3):
            await stack.inbox.receive(inbound(hl7(f"Q{i}"), channel="deep"))
        await stack.pool.refresh_depths()

    asyncio.run(go())
    assert _value("conduit_queue_depth", channel="deep", queue="pipeline:deep") == 3
    assert _value("conduit_queue_depth", channel="deep", queue="dest:deep:out") == 0
