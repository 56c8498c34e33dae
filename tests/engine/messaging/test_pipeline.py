"""The pipeline: filters, transform, destinations with their own filters, retries, dead letter, records."""

from __future__ import annotations

import asyncio
from pathlib import Path

from engine.errors import InvalidInput
from engine.messaging.ports import SendResult

from .conftest import FakeRecords, hl7, inbound, wait_for

PIPELINE = """
name: test
source:
  url: mllp://127.0.0.1:2599
filters:
  - message_type: [ADT, ZZZ]
  - not: {field: PID-8, equals: X}
transform: auto
destinations:
  - name: records
    url: records
  - name: women
    url: http://example.invalid/women
    filter: [{field: PID-8, in: [F]}]
    retry: {attempts: 3, initial_delay: 10ms, max_delay: 50ms, jitter: 0}
  - name: archive
    url: file://{folder}
"""


async def _run_until(stack, predicate, timeout=15.0):
    task = asyncio.create_task(stack.pool.run())
    try:
        await wait_for(predicate, timeout)
    finally:
        task.cancel()
        await asyncio.gather(task, return_exceptions=True)


def _status(stack, message_id):
    return stack.store.get(message_id).summary.status


def test_filter_transform_and_fan_out(make_stack, tmp_path: Path):
    archive = tmp_path / "archive"
    stack = make_stack(PIPELINE.replace("{folder}", str(archive)))

    async def go():
        ids = {}
        for key, raw in {
            "woman": hl7("P1", pid8="F"),
            "man": hl7("P2", pid8="M"),
            "oru": hl7("P3", msg_type="ORU^R01"),  # filtered by message type
            "x": hl7("P4", pid8="X"),  # filtered by the field condition
            "nomap": hl7("P5", msg_type="ZZZ^Z01"),  # the mapping fails
        }.items():
            ids[key] = (await stack.inbox.receive(inbound(raw))).message_id
        final = ("done", "filtered", "error", "dead")
        await _run_until(stack, lambda: all(_status(stack, i) in final for i in ids.values()))
        return ids

    ids = asyncio.run(go())
    assert _status(stack, ids["woman"]) == "done"
    assert _status(stack, ids["man"]) == "done"
    assert _status(stack, ids["oru"]) == "filtered"
    assert _status(stack, ids["x"]) == "filtered"
    nomap = stack.store.get(ids["nomap"])
    assert nomap.summary.status == "error" and "no mapping for ZZZ" in nomap.summary.error
    transform = [s for s in nomap.stages if s.name == "transform"][0]
    assert transform.status == "error" and "MSH-9" in transform.response

    woman = stack.store.get(ids["woman"])
    by_dest = {s.destination: s for s in woman.stages if s.name == "destination"}
    assert by_dest["records"].status == "sent" and "Patient/1" in by_dest["records"].response
    assert by_dest["women"].status == "sent" and by_dest["archive"].status == "sent"
    man = {s.destination: s.status for s in stack.store.get(ids["man"]).stages if s.name == "destination"}
    assert man == {"records": "sent", "women": "skipped", "archive": "sent"}
    # records got the transformed Bundles, the http fake and the folder the raw HL7
    assert sorted(b["id"] for b in stack.records.bundles) == ["P1", "P2"]
    assert [p.split(b"|")[9] for p in stack.fakes["http://example.invalid/women"].received] == [b"P1"]
    files = sorted(archive.glob("*.hl7"))
    assert len(files) == 2 and all(f.read_bytes().startswith(b"MSH|") for f in files)
    assert not list(archive.glob(".*.tmp"))


RETRY = """
name: test
source:
  url: mllp://127.0.0.1:2599
destinations:
  - name: flaky
    url: http://example.invalid/flaky
    retry: {attempts: 3, initial_delay: 20ms, multiplier: 2, max_delay: 100ms, jitter: 0}
"""


def test_retries_with_backoff_then_success(make_stack):
    stack = make_stack(RETRY)
    fake = stack.fakes.setdefault(
        "http://example.invalid/flaky",
        __import__("tests.engine.messaging.conftest", fromlist=["x"]).FakeDestination(),
    )
    fake.script = [SendResult(False, "HTTP 503"), ConnectionError("refused")]

    async def go():
        mid = (await stack.inbox.receive(inbound(hl7("R1")))).message_id
        await _run_until(stack, lambda: _status(stack, mid) == "done")
        return mid

    mid = asyncio.run(go())
    stage = [s for s in stack.store.get(mid).stages if s.name == "destination"][0]
    assert stage.status == "sent" and stage.attempts == 3 and fake.calls == 3


def test_dead_letter_after_last_attempt_and_definitive_rejection(make_stack):
    from .conftest import FakeDestination

    stack = make_stack(RETRY)
    fake = stack.fakes.setdefault("http://example.invalid/flaky", FakeDestination())
    fake.script = [SendResult(False, "HTTP 503 Service Unavailable")] * 3 + [
        SendResult(False, "HTTP 400", retryable=False)
    ]

    async def go():
        first = (await stack.inbox.receive(inbound(hl7("D1")))).message_id
        await _run_until(stack, lambda: _status(stack, first) == "dead")
        second = (await stack.inbox.receive(inbound(hl7("D2")))).message_id
        await _run_until(stack, lambda: _status(stack, second) == "dead")
        return first, second

    first, second = asyncio.run(go())
    one = stack.store.get(first)
    stage = [s for s in one.stages if s.name == "destination"][0]
    assert stage.attempts == 3 and "gave up after 3 attempt(s)" in stage.last_error
    assert "flaky" in one.summary.error
    two = [s for s in stack.store.get(second).stages if s.name == "destination"][0]
    assert two.attempts == 1 and two.status == "dead"


def test_records_rejection_is_dead_with_reason(make_stack):
    stack = make_stack(
        PIPELINE.replace("{folder}", "/tmp/unused").split("  - name: women")[0],
        records=FakeRecords(
            fail=InvalidInput("Patient.birthDate: invalid date", location="Patient.birthDate")
        ),
    )

    async def go():
        mid = (await stack.inbox.receive(inbound(hl7("B1")))).message_id
        await _run_until(stack, lambda: _status(stack, mid) == "dead")
        return mid

    detail = stack.store.get(asyncio.run(go()))
    stage = [s for s in detail.stages if s.name == "destination"][0]
    assert stage.status == "dead" and "birthDate" in stage.last_error and stage.attempts == 1


def test_reprocess_from_raw(make_stack):
    stack = make_stack(RETRY)
    from .conftest import FakeDestination

    fake = stack.fakes.setdefault("http://example.invalid/flaky", FakeDestination())
    fake.script = [SendResult(False, "HTTP 400", retryable=False)]

    async def go():
        mid = (await stack.inbox.receive(inbound(hl7("X1")))).message_id
        await _run_until(stack, lambda: _status(stack, mid) == "dead")
        stack.store.reprocess(mid)
        assert _status(stack, mid) == "received"
        await _run_until(stack, lambda: _status(stack, mid) == "done")
        return mid

    mid = asyncio.run(go())
    detail = stack.store.get(mid)
    assert detail.reprocessed == 1
    assert [(s.name, s.status) for s in detail.stages] == [("received", "done"), ("destination", "sent")]
    assert len(fake.received) == 1


def test_ack_after_transformed_answers_ae_with_mapping_issues(make_stack):
    stack = make_stack(
        PIPELINE.replace("{folder}", "/tmp/unused").replace(
            "url: mllp://127.0.0.1:2599", "url: mllp://127.0.0.1:2599\n  ack_after: transformed"
        )
    )

    async def go():
        ok = await stack.inbox.receive(inbound(hl7("T1")))
        bad = await stack.inbox.receive(inbound(hl7("T2", msg_type="ZZZ^Z01")))
        return ok, bad

    ok, bad = asyncio.run(go())
    assert ok.ack_code == "AA" and bad.ack_code == "AE" and bad.stored
    assert bad.issues and bad.issues[0].location == "MSH-9"
    assert _status(stack, bad.message_id) == "error"


def test_a_mapping_bug_is_kept_for_staff_but_not_logged(make_stack, caplog):
    stack = make_stack(PIPELINE.replace("{folder}", "/tmp/unused").split("  - name: women")[0])

    def buggy(raw, *, mapping=None):
        raise RuntimeError("cannot handle DOE^JANE born 19800101")

    stack.pool.processor._mapper = buggy

    async def go():
        mid = (await stack.inbox.receive(inbound(hl7("BUG1")))).message_id
        await _run_until(stack, lambda: _status(stack, mid) == "error")
        return mid

    with caplog.at_level("DEBUG"):
        detail = stack.store.get(asyncio.run(go()))
    assert "DOE^JANE" in detail.summary.error  # staff see the reason in the store
    assert "RuntimeError at" in caplog.text and "DOE" not in caplog.text  # the log does not


def test_records_conflict_is_retried(make_stack):
    from engine.errors import Conflict

    records = FakeRecords(fail=Conflict("Patient/1 was updated meanwhile"))
    text = PIPELINE.replace("{folder}", "/tmp/unused").split("  - name: women")[0]
    text = text.replace(
        "    url: records\n", "    url: records\n    retry: {attempts: 3, initial_delay: 10ms, jitter: 0}\n"
    )
    stack = make_stack(text, records=records)

    async def go():
        mid = (await stack.inbox.receive(inbound(hl7("CF1")))).message_id
        await _run_until(stack, lambda: _status(stack, mid) == "dead")
        return mid

    detail = stack.store.get(asyncio.run(go()))
    stage = [s for s in detail.stages if s.name == "destination"][0]
    assert stage.attempts == 3 and "gave up after 3" in stage.last_error


class _PickyRecords(FakeRecords):
    """Refuses the Bundle of one control id; remembers what it was given (not transactional)."""

    def transaction(self, bundle):
        if bundle["id"] == "B3":
            raise InvalidInput("Patient.birthDate: invalid date")
        return super().transaction(bundle)


def test_records_batch_in_order_and_a_refused_bundle_alone_is_dead(make_stack, monkeypatch):
    from engine.messaging.processing import Processor

    batches = []
    original = Processor.deliver_records_batch

    def spy(self, items):
        written = original(self, items)
        batches.append(written)
        return written

    monkeypatch.setattr(Processor, "deliver_records_batch", spy)
    text = (
        PIPELINE.replace("{folder}", "/tmp/unused")
        .split("  - name: women")[0]
        .replace("transform: auto", "ordered: true\ntransform: auto")
    )
    stack = make_stack(text, records=_PickyRecords())

    async def go():
        ids = [(await stack.inbox.receive(inbound(hl7(f"B{i}")))).message_id for i in range(6)]
        await _run_until(stack, lambda: all(_status(stack, i) in ("done", "dead") for i in ids))
        return ids

    ids = asyncio.run(go())
    assert [_status(stack, i) for i in ids] == ["done", "done", "done", "dead", "done", "done"]
    seen = list(dict.fromkeys(b["id"] for b in stack.records.bundles))
    assert seen == ["B0", "B1", "B2", "B4", "B5"]
    assert any(n > 1 for n in batches), "several Bundles were written in one transaction"
