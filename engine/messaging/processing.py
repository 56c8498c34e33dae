"""What a worker does with a claimed item: the pipeline step of a received message, or one delivery.

Pipeline (queue ``pipeline:<channel>``): channel filters -> transform (mapping) -> one stage per
destination (its own filter decides ``skipped``), all recorded in one transaction with the guarded
completion of the ``received`` stage.

Delivery (queue ``dest:<channel>:<destination>``): send, then ``sent``; a failure schedules a retry with
the destination's backoff, and after the last attempt (or a definitive rejection) the stage is ``dead``
with the reason. The ``records`` destination writes the Bundle and completes its stage in ONE transaction.
"""

from __future__ import annotations

import asyncio
import json
import logging
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from typing import Any

import orjson
from sqlalchemy import insert, select, update

from engine import metrics
from engine.db import Database, UnitOfWork
from engine.errors import ConfigurationError, Conflict, Issue, ProcessingError
from engine.events import MESSAGE_PROCESSED, MessageEvent
from engine.hl7v2.header import MessageHeader
from engine.messaging.channels import Channel, DestinationConfig
from engine.messaging.conditions import MessageView
from engine.messaging.logsafe import describe
from engine.messaging.models import Message, MessageStage, MessageStatus, StageStatus
from engine.messaging.ports import Destination, SendResult
from engine.messaging.queue import Claimed, now_utc
from engine.messaging.tx import write_tx, writer_gate

__all__ = ["Attempt", "Processor", "PipelineResult", "LostLease", "destination_queue", "header_of"]

log = logging.getLogger(__name__)

_M = Message.__table__
_S = MessageStage.__table__

HL7_TYPE = "x-application/hl7-v2+er7"
FHIR_TYPE = "application/fhir+json"


class LostLease(Exception):
    """The item's lease expired and another worker took it: this worker's result is discarded."""


def destination_queue(channel: str, destination: str) -> str:
    return f"dest:{channel}:{destination}"


def header_of(item: Claimed) -> MessageHeader:
    """The MSH fields the store keeps, plus the separators read from the raw bytes."""
    raw = item.raw
    fs = chr(raw[3]) if len(raw) > 3 and raw[:3] == b"MSH" else "|"
    enc = raw[4:9].split(fs.encode())[0].decode("ascii", "replace") if len(raw) > 4 else "^~\\&"
    return MessageHeader(
        field_separator=fs,
        encoding_characters=enc or "^~\\&",
        sending_application=item.sending_application,
        sending_facility=item.sending_facility,
        control_id=item.control_id,
        message_type=item.message_type,
        trigger_event=item.trigger_event,
        version=item.version,
    )


@dataclass
class PipelineResult:
    status: str
    issues: list[Issue] = field(default_factory=list)
    queues: list[str] = field(default_factory=list)
    """Destination queues that received new items (their workers are woken)."""


@dataclass(frozen=True)
class Attempt:
    """One delivery attempt of a claimed destination stage, waiting to be recorded."""

    item: Claimed
    dest: DestinationConfig | None
    result: SendResult
    error: str | None


@dataclass
class _Plan:
    item: Claimed
    result: PipelineResult
    stages: list[dict[str, Any]]
    error: str | None = None


def _issues_json(issues: list[Issue]) -> str:
    return json.dumps(
        [
            {"severity": i.severity, "code": i.code, "location": i.location, "message": i.message}
            for i in issues
        ]
    )


def _finish_held(conn: Any, item: Claimed, now: datetime, **values: Any) -> bool:
    """Complete the stage only while this worker still holds its lease; whether it did."""
    result = conn.execute(
        update(_S)
        .where(
            _S.c.id == item.stage_id, _S.c.lease_owner == item.owner, _S.c.status == StageStatus.PROCESSING
        )
        .values(lease_owner=None, lease_until=None, updated_at=now, **values)
    )
    return bool(result.rowcount == 1)


def _guarded_finish(conn: Any, item: Claimed, now: datetime, **values: Any) -> None:
    if not _finish_held(conn, item, now, **values):
        raise LostLease(f"stage {item.stage_id}: lease lost")


def _stage_row(message_id: int, name: str, status: str, now: datetime, **values: Any) -> dict[str, Any]:
    row = {
        "message_id": message_id, "name": name, "destination": None, "status": status, "queue": None,
        "content": None, "content_type": None, "attempts": 0, "next_attempt_at": None, "lease_until": None,
        "lease_owner": None, "last_error": None, "response": None, "created_at": now, "updated_at": now,
    }  # fmt: skip
    row.update(values)
    return row


def _summary(response: Any) -> str:
    """``201 Created Patient/1/_history/1`` per entry of a transaction-response Bundle."""
    lines = []
    for entry in (response or {}).get("entry", []):
        answer = entry.get("response", {})
        lines.append(" ".join(filter(None, [answer.get("status"), answer.get("location")])))
    return "\n".join(lines)[:4000]


def _lock_message(conn: Any, message_id: int) -> None:
    _lock_messages(conn, [message_id])


def _lock_messages(conn: Any, message_ids: list[int]) -> None:
    # serialises the status roll-up of a message between workers delivering to its destinations; locked in
    # id order (the sort comes before the row locks), so two workers locking overlapping sets cannot deadlock
    conn.execute(select(_M.c.id).where(_M.c.id.in_(message_ids)).order_by(_M.c.id).with_for_update()).all()


def _roll_up(conn: Any, message_id: int, now: datetime) -> str:
    return _roll_up_many(conn, [message_id], now)[message_id]


def _roll_up_many(conn: Any, message_ids: list[int], now: datetime) -> dict[int, str]:
    """The message statuses implied by their destination stages (one query, one UPDATE per status)."""
    stages: dict[int, list[str]] = {mid: [] for mid in message_ids}
    rows = conn.execute(
        select(_S.c.message_id, _S.c.status).where(
            _S.c.message_id.in_(message_ids), _S.c.name == "destination"
        )
    )
    for mid, stage_status in rows:
        stages[mid].append(stage_status)
    rolled: dict[int, str] = {}
    for mid, statuses in stages.items():
        if any(s in StageStatus.OPEN for s in statuses):
            rolled[mid] = MessageStatus.PROCESSING
        elif any(s == StageStatus.DEAD for s in statuses):
            rolled[mid] = MessageStatus.DEAD
        else:
            rolled[mid] = MessageStatus.DONE
    for status in sorted(set(rolled.values())):
        ids = [mid for mid, s in rolled.items() if s == status]
        conn.execute(update(_M).where(_M.c.id.in_(ids)).values(status=status, updated_at=now))
    return rolled


class Processor:
    def __init__(
        self,
        db: Database,
        channels: Callable[[str], Channel | None],
        destinations: Callable[[Channel, DestinationConfig], Destination],
        records: Callable[[UnitOfWork], Any] | None,
        mapper: Callable[..., Any] | None = None,
    ) -> None:
        self.db = db
        self.channels = channels
        self.destinations = destinations
        self.records = records
        self._mapper = mapper

    # -- pipeline --------------------------------------------------------------------------------------
    def mapper(self) -> Callable[..., Any]:
        if self._mapper is None:
            from engine.mapping import map_message  # lazily: the mapping engine is another part's work

            self._mapper = map_message
        return self._mapper

    def _final(self, item: Claimed, status: str) -> None:
        metrics.MESSAGES_PROCESSED.labels(item.channel, status).inc()
        elapsed = (now_utc() - item.received_at).total_seconds()
        metrics.PROCESS_SECONDS.labels(item.channel).observe(max(0.0, elapsed))
        self.db.bus.publish(MessageEvent(MESSAGE_PROCESSED, item.message_id, item.channel, status))

    def run_pipeline(self, item: Claimed) -> PipelineResult:
        """Filter, transform and fan out one claimed ``received`` stage (blocking; run in a thread).
        Raises LostLease when another worker took the item over meanwhile."""
        [result] = self.run_pipeline_batch([item])
        if result is None:
            raise LostLease(f"stage {item.stage_id}: lease lost")
        return result

    def run_pipeline_batch(self, items: list[Claimed]) -> list[PipelineResult | None]:
        """The pipeline step of several claimed items, recorded in ONE transaction (one fsync for the
        batch). An item whose lease was lost meanwhile is left alone (None in its place)."""
        plans = [self._plan(item) for item in items]
        now = now_utc()
        kept: list[bool] = []
        with write_tx(self.db) as conn:
            for plan in plans:
                # a lost lease skips this item instead of undoing the batch
                claimed = _finish_held(conn, plan.item, now, status=StageStatus.DONE)
                kept.append(claimed)
                if not claimed:
                    log.warning("stage %s: lease lost, result discarded", plan.item.stage_id)
                    continue
                if plan.stages:
                    conn.execute(insert(_S), plan.stages)
                conn.execute(
                    update(_M).where(_M.c.id == plan.item.message_id).values(status=plan.result.status,
                                                                            error=plan.error, updated_at=now)
                )  # fmt: skip
        out: list[PipelineResult | None] = []
        for plan, claimed in zip(plans, kept, strict=True):
            if not claimed:
                out.append(None)
                continue
            if plan.result.status == MessageStatus.ERROR:
                metrics.ERRORS.labels(plan.item.channel, "transform").inc()
            if plan.result.status in MessageStatus.FINISHED:
                self._final(plan.item, plan.result.status)
            out.append(plan.result)
        return out

    def _plan(self, item: Claimed) -> _Plan:
        """What the pipeline makes of one message, computed without touching the database."""
        channel = self.channels(item.channel)
        now = now_utc()
        if channel is None:
            return self._error_plan(item, f"channel {item.channel!r} is no longer configured", [])
        charset = channel.source.default_charset if channel.source else "utf-8"
        view = MessageView(header_of(item), item.raw, charset)
        stages: list[dict[str, Any]] = []
        if channel.filter is not None and not channel.filter(view):
            stages.append(_stage_row(item.message_id, "filter", StageStatus.FILTERED, now,
                                     response="a channel filter did not match"))  # fmt: skip
            return _Plan(item, PipelineResult(MessageStatus.FILTERED), stages)
        if channel.filter is not None:
            stages.append(_stage_row(item.message_id, "filter", StageStatus.DONE, now, response="matched"))
        bundle: bytes | None = None
        if channel.transform:
            try:
                mapper = self.mapper()
            except ImportError:
                return self._error_plan(item, "no mapping engine is installed in this build", stages)
            try:
                result = mapper(item.raw, mapping=None if channel.transform == "auto" else channel.transform)
            except ProcessingError as exc:  # MappingError and friends: located issues for staff
                return self._error_plan(item, exc.message, stages, exc.issues)
            except Exception as exc:  # a mapping bug must not take the worker down; keep it for staff
                log.error("transform of message %s failed unexpectedly: %s", item.message_id, describe(exc))
                return self._error_plan(item, f"transform failed: {exc.__class__.__name__}: {exc}", stages)
            bundle = orjson.dumps(result.bundle)
            stages.append(_stage_row(item.message_id, "transform", StageStatus.DONE, now, content=bundle,
                                     content_type=FHIR_TYPE, response=f"mapping {getattr(result, 'mapping', '')}"))  # fmt: skip
        queues: list[str] = []
        for dest in channel.destinations:
            if dest.filter is not None and not dest.filter(view):
                stages.append(_stage_row(item.message_id, "destination", StageStatus.SKIPPED, now,
                                         destination=dest.name, response="the destination filter did not match"))  # fmt: skip
                continue
            transformed = dest.payload == "transformed" and bundle is not None
            q = destination_queue(channel.name, dest.name)
            queues.append(q)
            stages.append(_stage_row(item.message_id, "destination", StageStatus.QUEUED, now, destination=dest.name,
                                     queue=q, content=bundle if transformed else item.raw,
                                     content_type=FHIR_TYPE if transformed else HL7_TYPE))  # fmt: skip
        status = MessageStatus.PROCESSING if queues else MessageStatus.DONE
        return _Plan(item, PipelineResult(status, queues=queues), stages)

    def _error_plan(
        self, item: Claimed, reason: str, stages: list[dict[str, Any]], issues: list[Issue] | None = None
    ) -> _Plan:
        issues = issues or [Issue(reason, code="processing")]
        row = _stage_row(item.message_id, "transform", StageStatus.ERROR, now_utc(), last_error=reason,
                         response=_issues_json(issues), content_type="application/json")  # fmt: skip
        return _Plan(item, PipelineResult(MessageStatus.ERROR, issues), [*stages, row], reason)

    # -- delivery --------------------------------------------------------------------------------------
    async def attempt(self, item: Claimed) -> Attempt | str:
        """Send one claimed destination stage. Returns the attempt, to be recorded with
        :meth:`finish_deliveries`, or — the records destination, which writes and completes its stage in
        one transaction — the stage's new status."""
        channel = self.channels(item.channel)
        dest = channel.destination(item.destination or "") if channel else None
        if channel is None or dest is None:
            return Attempt(item, None, SendResult(False, "", retryable=False),
                           "the destination is no longer configured")  # fmt: skip
        started = asyncio.get_running_loop().time()
        try:
            if dest.scheme == "records":
                return await asyncio.to_thread(self._deliver_records, item, dest)
            transport = self.destinations(channel, dest)
            timeout = float(dest.options.get("timeout", 30))  # type: ignore[arg-type]
            async with asyncio.timeout(timeout):  # not wait_for: it may swallow a cancellation (gh-86296)
                result = await transport.send(item.content or b"", content_type=item.content_type or HL7_TYPE)
            error = None if result.ok else (result.response or "the destination refused the message")
        except ConfigurationError as exc:
            result, error = SendResult(False, "", retryable=False), str(exc)
        except TimeoutError:
            result, error = SendResult(False, "", retryable=True), "no answer within the timeout"
        except Exception as exc:  # a transport's failure is a failed attempt, not a worker crash
            result, error = SendResult(False, "", retryable=True), f"{exc.__class__.__name__}: {exc}"
        finally:
            elapsed = asyncio.get_running_loop().time() - started
            metrics.DELIVERY_SECONDS.labels(item.channel, item.destination or "").observe(elapsed)
        return Attempt(item, dest, result, error)

    def finish_deliveries(self, attempts: list[Attempt]) -> list[str | None]:
        """Record delivery attempts in ONE transaction (one flush for a whole claimed batch): each stage's
        new status, None where the lease was lost meanwhile (that stage is left alone, the rest recorded)."""
        now = now_utc()
        values = [self._delivery_values(a, now) for a in attempts]
        statuses: list[str | None] = [None] * len(attempts)
        with write_tx(self.db) as conn:
            _lock_messages(conn, sorted({a.item.message_id for a in attempts}))
            held = [i for i, a in enumerate(attempts) if _finish_held(conn, a.item, now, **values[i])]
            rolled = (
                _roll_up_many(conn, sorted({attempts[i].item.message_id for i in held}), now) if held else {}
            )
            for i in held:
                item = attempts[i].item
                statuses[i] = str(values[i]["status"])
                if rolled[item.message_id] == MessageStatus.DEAD:
                    conn.execute(update(_M).where(_M.c.id == item.message_id).values(
                        error=f"destination {item.destination}: {values[i]['last_error']}"))  # fmt: skip
        for i in held:
            item = attempts[i].item
            # counted once the attempt is recorded: a batch that fails to commit is recorded again one by
            # one (the queue worker's fallback), and counting before the commit counted it twice
            if not attempts[i].result.ok:
                metrics.ERRORS.labels(item.channel, "delivery").inc()
            if rolled[item.message_id] in MessageStatus.FINISHED:
                self._final(item, rolled[item.message_id])
        return statuses

    def _finish_delivery(
        self, item: Claimed, dest: DestinationConfig | None, result: SendResult, error: str | None
    ) -> str:
        [status] = self.finish_deliveries([Attempt(item, dest, result, error)])
        if status is None:
            raise LostLease(f"stage {item.stage_id}: lease lost")
        return status

    @staticmethod
    def _delivery_values(attempt: Attempt, now: datetime) -> dict[str, Any]:
        item, dest, result, error = attempt.item, attempt.dest, attempt.result, attempt.error
        if result.ok:
            return {"status": StageStatus.SENT, "response": result.response[:4000], "last_error": None}
        if dest is None or not result.retryable or dest.retry.exhausted(item.attempts):
            why = error or "failed"
            if dest is not None and result.retryable:
                why = f"gave up after {item.attempts} attempt(s): {why}"
            return {"status": StageStatus.DEAD, "response": result.response[:4000], "last_error": why}
        return {
            "status": StageStatus.RETRY,
            "response": result.response[:4000],
            "last_error": error,
            "next_attempt_at": now + timedelta(seconds=dest.retry.delay(item.attempts)),
        }

    def records_destination(self, item: Claimed) -> DestinationConfig | None:
        channel = self.channels(item.channel)
        dest = channel.destination(item.destination or "") if channel else None
        return dest if dest is not None and dest.scheme == "records" else None

    def deliver_records_batch(self, items: list[Claimed]) -> int:
        """Write claimed Bundles into the record store in ONE transaction (one flush), in order; returns
        how many of the first items were written (the caller gives the rest back).

        All or nothing: 0 when anything failed — nothing was committed, and the caller delivers the items
        one by one, which records each failure on its own item.
        """
        if self.records is None or not items:
            return 0
        try:
            bundles = [orjson.loads(item.content or b"{}") for item in items]
        except orjson.JSONDecodeError:
            return 0
        now = now_utc()
        finished: list[tuple[Claimed, str]] = []
        started = time.perf_counter()
        # SQLite has one writer: a long transaction would hold every ACK back, so it stops after a budget
        budget = 0.05 if self.db.is_sqlite else 0.5
        try:
            with writer_gate(self.db), self.db.unit_of_work(immediate=True) as uow:
                conn = uow.session.connection()
                for item, bundle in zip(items, bundles, strict=True):
                    if finished and time.perf_counter() - started > budget:
                        break
                    _lock_message(conn, item.message_id)
                    response = self.records(uow).transaction(bundle)
                    _guarded_finish(conn, item, now, status=StageStatus.SENT, last_error=None,
                                    response=_summary(response))  # fmt: skip
                    finished.append((item, _roll_up(conn, item.message_id, now)))
        except Exception as exc:  # any failure: the one-by-one path reports it on its own item
            log.info(
                "batched record store write of %d item(s) undone (%s); one by one", len(items), describe(exc)
            )
            return 0
        elapsed = (time.perf_counter() - started) / max(1, len(finished))
        for item, status in finished:
            metrics.DELIVERY_SECONDS.labels(item.channel, item.destination or "").observe(elapsed)
            if status in MessageStatus.FINISHED:
                self._final(item, status)
        return len(finished)

    def _deliver_records(self, item: Claimed, dest: DestinationConfig) -> str:
        if self.records is None:
            return self._finish_delivery(
                item, dest, SendResult(False, "", True), "the record store is not installed"
            )
        try:
            bundle = orjson.loads(item.content or b"{}")
        except orjson.JSONDecodeError:
            return self._finish_delivery(
                item, dest, SendResult(False, "", False), "the stage holds no FHIR Bundle"
            )
        now = now_utc()
        try:
            with writer_gate(self.db), self.db.unit_of_work(immediate=True) as uow:
                conn = uow.session.connection()
                _lock_message(conn, item.message_id)
                response = self.records(uow).transaction(bundle)
                _guarded_finish(conn, item, now, status=StageStatus.SENT, last_error=None,
                                response=_summary(response))  # fmt: skip
                status = _roll_up(conn, item.message_id, now)
        except LostLease:
            log.warning("message %s: lease lost before the record store write committed", item.message_id)
            return StageStatus.PROCESSING
        except ProcessingError as exc:
            text = exc.message + (" — " + "; ".join(i.message for i in exc.issues[:5]) if exc.issues else "")
            # a version conflict with a concurrent writer may pass on a retry; anything else is definitive
            retryable = isinstance(exc, Conflict)
            return self._finish_delivery(item, dest, SendResult(False, "", retryable=retryable), text)
        except Exception as exc:
            return self._finish_delivery(
                item, dest, SendResult(False, "", retryable=True), f"{exc.__class__.__name__}: {exc}"
            )
        if status in MessageStatus.FINISHED:
            self._final(item, status)
        return StageStatus.SENT
