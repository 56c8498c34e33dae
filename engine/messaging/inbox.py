"""The ``inbox`` port: store each received message durably, group-committed, then decide its ACK.

Receivers (MLLP connections) call :meth:`GroupCommitInbox.receive` from the event loop. Each call puts its
row on a queue and awaits a future; one writer thread drains whatever has queued up and commits it in ONE
transaction (duplicate lookup, inserts of the messages and of their first stage), then resolves every
caller's future. While a commit (an fsync) is in progress the next batch fills up, so concurrency buys
throughput without giving up "store, then acknowledge": a future resolves with ``stored=True`` only after
its transaction committed, and a failed commit resolves every caller of that batch with StoreUnavailable.

Duplicates: MSH-3 + MSH-4 + MSH-10 is hashed into ``message.dedup_key`` (unique). Seen within the channel's
window, the receive is answered with the original ACK code and nothing new is stored; older, the old row
releases the key (dedup_key = NULL) and the message is stored as new. On SQLite the keys are looked up in
the batch's transaction, under the write lock (BEGIN IMMEDIATE), so no other writer can take one in
between. On PostgreSQL the batch is inserted with ``ON CONFLICT (dedup_key) DO NOTHING`` and no look-up
first (one round trip: inserts and COMMIT); the few messages whose key was taken — by an earlier message
of the batch, or another inbox (another ingest process) — are then looked up and decided as above in a
second transaction. A unique violation all the same (a race between look-up and insert) redoes the
batch, then each message alone: one raced key never fails the other messages of a batch.
"""

from __future__ import annotations

import asyncio
import fnmatch
import hashlib
import ipaddress
import logging
import queue
import threading
import time
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from typing import Any, cast

from sqlalchemy import update
from sqlalchemy.exc import DBAPIError, IntegrityError, SQLAlchemyError

from engine import metrics
from engine.db import Database
from engine.db.one_wait import OneWait
from engine.errors import Issue, StoreUnavailable
from engine.events import MESSAGE_RECEIVED, MessageEvent
from engine.messaging.channels import Channel
from engine.messaging.inbox_sql import InboxSql, driver_cursor
from engine.messaging.logsafe import describe
from engine.messaging.loop_commit import LoopCommitter
from engine.messaging.models import Message, MessageStatus, StageStatus
from engine.messaging.ports import InboundMessage, ReceiveOutcome
from engine.messaging.tx import KeptConnection

__all__ = ["GroupCommitInbox", "dedup_key", "as_utc", "pipeline_queue"]

log = logging.getLogger(__name__)

_M = Message.__table__


def as_utc(value: datetime) -> datetime:
    """SQLite hands datetimes back naive; every time stored here is UTC."""
    return value.replace(tzinfo=UTC) if value.tzinfo is None else value.astimezone(UTC)


def pipeline_queue(channel: str) -> str:
    return f"pipeline:{channel}"


#: SQLSTATEs of a transaction PostgreSQL rolled back for a conflict with another one (deadlock victim,
#: serialization failure): nothing of it was stored and running it again is safe
_RETRYABLE_SQLSTATES = frozenset({"40P01", "40001"})


def _lost_to_another_writer(exc: DBAPIError) -> bool:
    return getattr(exc.orig, "sqlstate", None) in _RETRYABLE_SQLSTATES


def dedup_key(sending_application: str, sending_facility: str, control_id: str) -> str | None:
    """Hash of MSH-3|MSH-4|MSH-10 (fixed width for the unique index); None without a control id."""
    if not control_id:
        return None
    text = f"{sending_application}\x1f{sending_facility}\x1f{control_id}"
    return hashlib.sha256(text.encode("utf-8", "surrogatepass")).hexdigest()


def _peer_host(peer: str) -> str:
    """The address in ``host:port``, ``[v6]:port`` or a bare address."""
    if peer.startswith("[") and "]" in peer:
        return peer[1 : peer.index("]")]
    try:
        ipaddress.ip_address(peer)
        return peer
    except ValueError:
        return peer.rsplit(":", 1)[0]


def _peer_allowed(peer: str, networks: tuple[str, ...]) -> bool:
    if not networks:
        return True
    try:
        addr = ipaddress.ip_address(_peer_host(peer))
    except ValueError:
        return False
    return any(addr in ipaddress.ip_network(n, strict=False) for n in networks)


@dataclass
class _Pending:
    row: dict[str, Any]
    window_s: float
    enhanced: bool
    loop: asyncio.AbstractEventLoop
    future: asyncio.Future[ReceiveOutcome]
    issues: list[Issue] = field(default_factory=list)
    started: float = 0.0


class _Meters:
    """The metric children of one channel, looked up once: ``labels()`` takes a lock and builds a key,
    as much again as the observation itself, and the inbox counts several times per message."""

    def __init__(self, channel: str) -> None:
        self.channel = channel
        self.receive_seconds = metrics.RECEIVE_SECONDS.labels(channel)
        self.received = metrics.MESSAGES_RECEIVED.labels(channel)
        self.duplicate = metrics.MESSAGES_DUPLICATE.labels(channel)
        self.done = metrics.MESSAGES_PROCESSED.labels(channel, MessageStatus.DONE)
        self._acks: dict[str, Any] = {}

    def ack(self, code: str) -> Any:
        child = self._acks.get(code)
        if child is None:
            child = self._acks[code] = metrics.ACKS.labels(self.channel, code)
        return child


def _ack(enhanced: bool, kind: str) -> str:
    """Table 0008: AA/AE/AR in original mode, CA/CE/CR for an enhanced-mode accept acknowledgement."""
    return ("C" if enhanced else "A") + kind


class GroupCommitInbox:
    """Implements :class:`engine.messaging.ports.Inbox` over the message tables."""

    def __init__(
        self,
        db: Database,
        channels: Callable[[str], Channel | None],
        *,
        max_batch: int = 500,
        writers: int | None = None,
        wake_at: int = 4,
        wake_after_s: float = 0.005,
        on_stored: Callable[[set[str]], None] | None = None,
        after_store: Callable[[Channel, int], Awaitable[tuple[str, list[Issue]] | None]] | None = None,
        on_loop: bool | None = None,
    ) -> None:
        self._db = db
        self._channels = channels
        self._max_batch = max_batch
        #: called from a writer thread with the channels whose pipeline got work (wakes the workers)
        self.on_stored = on_stored
        #: ack_after: transformed — runs the pipeline for the message and returns (ack kind, issues)
        self.after_store = after_store
        self._queue: queue.SimpleQueue[_Pending | None] = queue.SimpleQueue()
        # One writer by default. SQLite has one writer at a time anyway. On PostgreSQL, since a commit is one
        # write and one wait (engine.db.one_wait), one writer taking all that queued during its last commit
        # beats several splitting it: 16 senders, alternating A/B on this machine, 1 writer ~1.15-1.2x the
        # messages a second of 4, at ~20% less CPU a message, in the server and in PostgreSQL (fewer,
        # larger commits). More writers (``inbox_writers``) suit a store whose commit waits long.
        self._writers = writers if writers is not None else 1
        self._threads: list[threading.Thread] = []
        self._start_lock = threading.Lock()
        # Writers wait for work only as many as needed: one listens on the queue, the others sleep (the
        # last one idle on top) until a message comes while no writer listens. One sender at a time is
        # then served by one writer, its connection and its database backend warm, instead of the writers
        # in turn (PostgreSQL, one sender, measured: 1.3-1.5x the messages a second, ~15% less CPU each).
        self._lock = threading.Lock()
        # ... and one more is woken only when `wake_at` messages wait for it, or none has listened for
        # `wake_after_s`: a writer woken for the first message to come took batches of ~4.5 at 16 senders
        # (a commit each, 0.26-0.32 ms CPU a message against 0.18-0.22 for one writer alone). Measured at
        # 16 senders on PostgreSQL: wake_at 4 ~1.2x the messages a second of wake_at 1 at ~15% less CPU
        # each, wake_at 8 in between.
        self._wake_at = wake_at
        self._wake_after_s = wake_after_s
        self._unheard_since = 0.0  # when the last listening writer took a batch
        self._listening = 0
        self._idle: list[threading.Event] = []
        self._closing = False
        self.batches = 0  # commits made (tests and benchmarks look at the batching)
        self._sql = InboxSql(db.engine.dialect)
        self._meters: dict[str, _Meters] = {}
        # PostgreSQL (psycopg): each event loop commits its callers' messages itself (engine.messaging.
        # loop_commit), the writer threads take only what that leaves to them (duplicates, retries).
        # Measured here, alternating A/B under load, 16 senders: ~1.2x the messages a second of the
        # writer thread, at less server CPU a message; one sender: level to slightly ahead.
        self._on_loop = self._sql.skips_duplicates and (on_loop is None or on_loop)
        self._committers: dict[asyncio.AbstractEventLoop, LoopCommitter] = {}
        self._committers_lock = threading.Lock()
        # set by close(): a message that still comes (listeners stop after the inbox on shutdown) goes to
        # the writer thread, which close() ends as before, not to a new committer nobody would close
        self._loops_closed = False

    # -- the port --------------------------------------------------------------------------------------
    async def receive(self, message: InboundMessage) -> ReceiveOutcome:
        started = time.perf_counter()
        channel = self._channels(message.channel)
        h = message.header
        enhanced = False
        if channel is not None and channel.source is not None:
            mode = channel.source.ack_mode
            enhanced = mode == "enhanced" or (mode == "auto" and h is not None and h.enhanced_mode)
        elif h is not None:
            enhanced = h.enhanced_mode
        status, reason, issues = MessageStatus.RECEIVED, None, []
        if h is None or message.problems:
            # the transport's own reason when it has one (a bad MSH field, batch counts that disagree)
            issues = list(message.problems) or [
                Issue("the MSH segment could not be parsed", location="MSH", code="100")
            ]
            status, reason = MessageStatus.REJECTED, "; ".join(i.message for i in issues)
        elif channel is None:
            status, reason = MessageStatus.REJECTED, f"no channel named {message.channel!r} is configured"
            issues = [Issue("no channel accepts this message", location="MSH-5", code="207")]
        elif (
            channel.source is not None
            and channel.source.allowed_senders
            and not any(
                fnmatch.fnmatchcase(f"{h.sending_application}^{h.sending_facility}", p)
                for p in channel.source.allowed_senders
            )
        ):
            status, reason = MessageStatus.REJECTED, "sender (MSH-3^MSH-4) is not allowed on this channel"
            issues = [Issue(reason, location="MSH-3", code="204")]
        elif channel.source is not None and not _peer_allowed(message.peer, channel.source.allowed_peers):
            status, reason = MessageStatus.REJECTED, "peer address is not allowed on this channel"
            issues = [Issue(reason, location="MSH-4", code="204")]
        elif channel.filter is None and channel.transform is None and not channel.destinations:
            status = MessageStatus.DONE  # a store-only channel: no pipeline step, no queue item, no commit
        now = datetime.now(UTC)
        received_at = as_utc(message.received_at) if message.received_at else now
        row = {
            "channel": message.channel,
            "received_at": received_at,
            "updated_at": now,
            "peer": message.peer[:200],
            "sending_application": (h.sending_application if h else "")[:200],
            "sending_facility": (h.sending_facility if h else "")[:200],
            "control_id": (h.control_id if h else "")[:200],
            "message_type": (h.message_type if h else "")[:20],
            "trigger_event": (h.trigger_event if h else "")[:20],
            "version": (h.version if h else "")[:20],
            "raw": message.raw,
            "status": status,
            "ack_code": _ack(enhanced, "R" if status == MessageStatus.REJECTED else "A"),
            "dedup_key": dedup_key(h.sending_application, h.sending_facility, h.control_id)
            if h is not None and status != MessageStatus.REJECTED
            else None,
            "error": reason,
            "reprocessed": 0,
        }
        window = channel.source.duplicate_window_s if channel and channel.source else 86400.0
        loop = asyncio.get_running_loop()
        pending = _Pending(row, window, enhanced, loop, loop.create_future(), issues, started)
        if self._on_loop and not self._loops_closed:
            self._committer(loop).submit(pending)
        else:
            self._to_writer(pending)
        outcome = await pending.future
        meters = self._meters_of(message.channel)
        meters.receive_seconds.observe(time.perf_counter() - started)
        if (
            self.after_store is not None
            and channel is not None
            and channel.source is not None
            and channel.source.ack_after == "transformed"
            and not outcome.duplicate
            and status == MessageStatus.RECEIVED
            and outcome.message_id is not None
        ):
            decided = await self.after_store(channel, outcome.message_id)
            if decided is not None:
                kind, found = decided
                outcome = ReceiveOutcome(True, outcome.message_id, _ack(enhanced, kind), issues=found)
        meters.ack(outcome.ack_code).inc()
        return outcome

    def _meters_of(self, channel: str) -> _Meters:
        meters = self._meters.get(channel)
        if meters is None:  # a race makes two, the same children: harmless
            meters = self._meters[channel] = _Meters(channel)
        return meters

    # -- commits on the caller's event loop (PostgreSQL) -----------------------------------------------
    def _committer(self, loop: asyncio.AbstractEventLoop) -> LoopCommitter:
        committer = self._committers.get(loop)
        if committer is None:
            with self._committers_lock:
                for closed in [other for other in self._committers if other.is_closed()]:
                    self._committers.pop(closed).close()  # gives its connection back to the pool
                committer = self._committers[loop] = LoopCommitter(
                    loop,
                    self._db,
                    prepare=self._new_messages,
                    answer=self._answer_on_loop,
                    hand_over=self._hand_over,
                    max_batch=self._max_batch,
                )
        return committer

    def _answer_on_loop(
        self, batch: list[_Pending], results: Sequence[ReceiveOutcome | BaseException]
    ) -> None:
        if not all(isinstance(r, BaseException) for r in results):
            self.batches += 1
        answers, touched = self._account(batch, list(results))
        for _, setter, future, value in answers:  # the callers wait on this loop: no hand-off
            setter(future, value)
        self._wake_pipeline(touched)

    def _hand_over(self, batch: list[_Pending]) -> None:
        for p in batch:
            self._to_writer(p)

    # -- the writer thread -----------------------------------------------------------------------------
    def _to_writer(self, pending: _Pending) -> None:
        self._ensure_writer()
        self._queue.put(pending)
        self._wake_one()

    def _ensure_writer(self) -> None:
        if self._threads and all(t.is_alive() for t in self._threads):
            return
        with self._start_lock:
            self._threads = [t for t in self._threads if t.is_alive()]
            while len(self._threads) < self._writers:
                thread = threading.Thread(target=self._run, name="conduit-inbox-writer", daemon=True)
                thread.start()
                self._threads.append(thread)

    def _wake_one(self) -> None:
        """Have another writer listen when none does (all committing or idle) and enough messages wait
        for it, or the running commits have kept them waiting long enough; else they go with the next
        writer whose commit ends (one always does: none listening means one is committing)."""
        with self._lock:
            if (
                self._listening == 0
                and self._idle
                and (
                    self._queue.qsize() >= self._wake_at
                    or time.perf_counter() - self._unheard_since >= self._wake_after_s
                )
            ):
                self._listening += 1  # counted now, so the next message does not wake another
                self._idle.pop().set()

    def close(self) -> None:
        """Let the event loops' commits finish, then stop the writers after they have committed what is
        queued."""
        with self._committers_lock:
            self._loops_closed = True
            committers = list(self._committers.values())
            self._committers.clear()
        for committer in committers:
            committer.close()
        alive = [t for t in self._threads if t.is_alive()]
        with self._lock:
            self._closing = True  # every writer listens from now on, so each takes its stop mark
            self._listening += len(self._idle)
            for idle in self._idle:
                idle.set()
            self._idle.clear()
        for _ in alive:
            self._queue.put(None)
        for thread in alive:
            thread.join(timeout=30)
        self._threads = []
        with self._lock:
            self._closing = False

    def _run(self) -> None:
        kept = KeptConnection(self._db, autocommit=self._sql.begins_in_pipeline)
        woken = threading.Event()
        with self._lock:
            self._listening += 1
        try:
            while True:
                first = self._queue.get()
                if first is None:
                    with self._lock:
                        self._listening -= 1
                    return
                batch = [first]
                stop = False
                while len(batch) < self._max_batch:
                    try:
                        item = self._queue.get_nowait()
                    except queue.Empty:
                        break
                    if item is None:
                        stop = True
                        break
                    batch.append(item)
                with self._lock:
                    self._listening -= 1
                    if not self._listening:
                        self._unheard_since = time.perf_counter()
                idle = False

                def settle() -> None:
                    # decided before the callers get their answers: their next messages must find this
                    # writer listening again, not wake another one
                    nonlocal idle
                    with self._lock:
                        idle = bool(self._listening) and not self._closing and self._queue.empty()
                        if idle:
                            woken.clear()
                            self._idle.append(woken)
                        else:
                            self._listening += 1

                self._commit(batch, kept, None if stop else settle)
                if stop:
                    return
                if idle:
                    woken.wait()  # the waker counted this writer as listening
        finally:
            kept.close()

    def _commit(
        self, batch: list[_Pending], kept: KeptConnection, settle: Callable[[], None] | None = None
    ) -> None:
        """Store ``batch`` (one transaction, as a rule) and answer its callers; ``settle`` runs just
        before."""
        results = self._store(batch, kept, skip_duplicates=self._sql.skips_duplicates)
        if not all(isinstance(r, BaseException) for r in results):
            self.batches += 1
        answers, touched = self._account(batch, results)
        if settle is not None:
            settle()
        _deliver_all(answers)
        self._wake_pipeline(touched)

    def _account(
        self, batch: list[_Pending], results: list[ReceiveOutcome | BaseException]
    ) -> tuple[list[tuple[asyncio.AbstractEventLoop, Any, Any, Any]], set[str]]:
        """Count and announce each message's outcome; the answers to give its caller, and the channels
        whose pipeline got work."""
        touched: set[str] = set()
        answers = []
        for p, outcome in zip(batch, results, strict=True):
            channel = p.row["channel"]
            if isinstance(outcome, BaseException):
                metrics.ERRORS.labels(channel, "store").inc()
                answers.append((p.loop, _set_exception, p.future, outcome))
                continue
            meters = self._meters_of(channel)
            if outcome.duplicate:
                meters.duplicate.inc()
            else:
                meters.received.inc()
                if p.row["status"] == MessageStatus.RECEIVED:
                    touched.add(channel)
                elif p.row["status"] == MessageStatus.DONE:
                    meters.done.inc()
                assert outcome.message_id is not None
                self._db.bus.publish(
                    MessageEvent(MESSAGE_RECEIVED, outcome.message_id, channel, p.row["status"])
                )
            answers.append((p.loop, _set_result, p.future, outcome))
        return answers, touched

    def _wake_pipeline(self, touched: set[str]) -> None:
        if touched and self.on_stored is not None:
            try:
                self.on_stored(touched)
            except Exception as exc:
                log.error("inbox: wake-up callback failed: %s", describe(exc))

    def _store(
        self, batch: list[_Pending], kept: KeptConnection, *, skip_duplicates: bool
    ) -> list[ReceiveOutcome | BaseException]:
        """Write ``batch`` in one transaction: each message's outcome once committed, or the exception
        its caller gets when it could not be stored.

        ``skip_duplicates`` (PostgreSQL): the inserts leave out a message whose dedup_key is taken, with
        no look-up before them (one round trip); those few are then written again the ordinary way (look
        up, answer a duplicate with the original's ACK code or release a key past its window) in a
        transaction of their own."""
        results: list[ReceiveOutcome | None] | None = None
        error: BaseException | None = None
        integrity_retry = reconnect_retry = True
        while True:
            written: list[ReceiveOutcome | None] | None = None
            commit = _CommitSent()
            try:
                with kept.transaction(urgent=True) as conn:
                    written = self._write(conn, batch, commit, skip_duplicates, kept.session)
                results = written  # only once the commit went through
                break
            except IntegrityError as exc:
                # another process stored the same MSH-3/4/10 between the look-up and the insert: the
                # second pass sees it; lost twice, each message goes on its own, so that a key raced
                # for cannot keep the rest of the batch from being stored
                error = exc
                if integrity_retry:
                    integrity_retry = False
                    continue
                if len(batch) > 1:
                    log.warning(
                        "inbox: duplicate key raced twice; storing %d message(s) one by one", len(batch)
                    )
                    return [r for p in batch for r in self._store([p], kept, skip_duplicates=False)]
                break
            except DBAPIError as exc:
                error = exc
                if _lost_to_another_writer(exc):
                    # PostgreSQL chose this transaction as a deadlock victim (two writers, e.g. two ingest
                    # processes, inserting shared keys in opposite orders) and rolled it back, its COMMIT
                    # too if pipelined: nothing of it is stored. Once more whole, then one by one, as for
                    # a raced key above
                    if integrity_retry:
                        integrity_retry = False
                        continue
                    if len(batch) > 1:
                        log.warning("inbox: deadlocked twice; storing %d message(s) one by one", len(batch))
                        return [r for p in batch for r in self._store([p], kept, skip_duplicates=False)]
                    break
                # the kept connection was found dead before the commit was asked for: nothing of this
                # batch is stored, so it is written again once on a fresh connection (the pool pings it)
                if exc.connection_invalidated and written is None and not commit.sent and reconnect_retry:
                    reconnect_retry = False
                    continue
                break
            except (SQLAlchemyError, OSError) as exc:
                error = exc
                break
            except Exception as exc:  # never leave a caller waiting on a future that will not resolve
                log.error("inbox commit failed unexpectedly: %s", describe(exc))
                error = exc
                break
        if results is None:
            log.error(
                "inbox: commit of %d message(s) failed: %s", len(batch), describe(error) if error else "?"
            )
            return [
                StoreUnavailable("the message store is unavailable; the message was not stored")
                for _ in batch
            ]
        merged: list[ReceiveOutcome | BaseException | None] = list(results)
        skipped = [i for i, outcome in enumerate(results) if outcome is None]
        if skipped:
            again = self._store([batch[i] for i in skipped], kept, skip_duplicates=False)
            for i, outcome in zip(skipped, again, strict=True):
                merged[i] = outcome
        return cast(list[ReceiveOutcome | BaseException], merged)  # no None is left

    def _write(
        self,
        conn: Any,
        batch: list[_Pending],
        commit: _CommitSent,
        skip_duplicates: bool = False,
        session: dict[str, Any] | None = None,
    ) -> list[ReceiveOutcome | None]:
        """``skip_duplicates`` (psycopg): the one-write one-wait transaction of ``InboxSql.one_wait`` on
        the writer's connection, whose scratch space ``session`` is; otherwise a pipeline on psycopg,
        plain statements on SQLite."""
        with driver_cursor(conn) as cursor:
            if skip_duplicates:
                # PostgreSQL: BEGIN, the inserts and COMMIT in one write, the answers in one wait
                assert session is not None
                tx, outcomes = self._new_messages(cursor.connection, session, batch)
                commit.sent = True  # marked first: a COMMIT whose sending failed may have gone out
                try:
                    results = tx.run()
                except Exception:
                    # retried elsewhere only when the server's first answer was its refusal of the BEGIN
                    # (a backend terminated just now): nothing was stored. A connection reset before any
                    # answer may hide a COMMIT the server did: no retry, no positive ACK.
                    commit.sent = not tx.refused
                    raise
                return outcomes(results)
            with self._sql.pipeline(cursor):
                answer = self._write_rows(conn, cursor, batch)
                # marked first: a COMMIT whose sending failed may have gone out all the same
                commit.sent = self._sql.commits_in_pipeline
                self._sql.commit_in_pipeline(cursor)
            return answer()  # the inserted ids are read once the pipeline has ended

    def _new_messages(
        self, connection: Any, session: dict[str, Any], batch: list[_Pending]
    ) -> tuple[OneWait, Callable[[list[Any]], list[ReceiveOutcome | None]]]:
        """psycopg: ``batch`` as one transaction ready to run on ``connection`` (BEGIN, the inserts with
        ``ON CONFLICT (dedup_key) DO NOTHING``, COMMIT), and how to read each message's outcome from its
        results (None for one whose key was taken). Raises psycopg's OperationalError, before anything is
        sent, when the connection is found closed."""
        tx = self._sql.one_wait(connection, session)
        now = datetime.now(UTC)
        ids = self._sql.queue_new_messages_and_stages(
            tx, session, [p.row for p in batch], [_first_stage(p.row, now) for p in batch]
        )
        self._sql.commit_in_pipeline(tx)
        return tx, lambda results: _new_outcomes(batch, ids(results))

    def _write_rows(
        self, conn: Any, cursor: Any, batch: list[_Pending]
    ) -> Callable[[], list[ReceiveOutcome]]:
        now = datetime.now(UTC)
        keys = list({p.row["dedup_key"] for p in batch if p.row["dedup_key"]})
        existing: dict[str, tuple[int, datetime, str]] = {}
        if keys:
            rows = self._sql.lookup(cursor, keys)
            existing = {key: (mid, as_utc(at), ack) for mid, key, at, ack in rows}
        release: list[int] = []
        to_insert: list[_Pending] = []
        outcome_of: list[
            ReceiveOutcome | int | None
        ] = []  # outcome, or index into to_insert (a dup in batch)
        first_in_batch: dict[str, int] = {}
        for p in batch:
            key = p.row["dedup_key"]
            if key and key in existing:
                old_id, old_at, old_ack = existing[key]
                if old_at >= now - timedelta(seconds=p.window_s):
                    outcome_of.append(ReceiveOutcome(True, old_id, old_ack, duplicate=True))
                    continue
                release.append(old_id)
                del existing[key]
            if key and key in first_in_batch:
                outcome_of.append(-1 - first_in_batch[key])
                continue
            if key:
                first_in_batch[key] = len(to_insert)
            outcome_of.append(None)
            to_insert.append(p)
        if release:  # rare (a key reused after its window): the ordinary Core statement will do
            conn.execute(update(_M).where(_M.c.id.in_(release)).values(dedup_key=None))
        inserted_ids: Callable[[], list[int]] = list
        if to_insert:
            rows = [p.row for p in to_insert]
            stages = [_first_stage(p.row, now) for p in to_insert]
            if self._sql.writes_both_at_once:
                inserted_ids = self._sql.insert_messages_and_stages(cursor, rows, stages)
            else:
                ids = self._sql.insert_messages(cursor, rows)
                self._sql.insert_stages(
                    cursor, [{"message_id": mid, **stage} for mid, stage in zip(ids, stages, strict=True)]
                )
                inserted_ids = ids.copy

        def answer() -> list[ReceiveOutcome]:
            ids = inserted_ids()
            outcomes: list[ReceiveOutcome] = []
            inserted = iter(zip(to_insert, ids, strict=True))
            for entry in outcome_of:
                if isinstance(entry, ReceiveOutcome):
                    outcomes.append(entry)
                elif entry is None:
                    p, mid = next(inserted)
                    outcomes.append(ReceiveOutcome(True, mid, p.row["ack_code"], issues=list(p.issues)))
                else:
                    original, mid = to_insert[-1 - entry], ids[-1 - entry]
                    outcomes.append(ReceiveOutcome(True, mid, original.row["ack_code"], duplicate=True))
            return outcomes

        return answer


def _new_outcomes(batch: list[_Pending], ids: list[int | None]) -> list[ReceiveOutcome | None]:
    """Each message's outcome from the id its insert returned; None for one whose key was taken."""
    return [
        None if mid is None else ReceiveOutcome(True, mid, p.row["ack_code"], issues=list(p.issues))
        for p, mid in zip(batch, ids, strict=True)
    ]


@dataclass
class _CommitSent:
    """Whether the batch's COMMIT went out with its statements: a connection lost after that may have
    committed it, so the batch is not written again."""

    sent: bool = False


def _first_stage(row: dict[str, Any], now: datetime) -> dict[str, Any]:
    """The ``received`` stage of a message about to be stored, but its ``message_id``."""
    received = row["status"] == MessageStatus.RECEIVED
    return {
        "name": "received",
        "destination": None,
        "status": StageStatus.QUEUED
        if received
        else StageStatus.DONE
        if row["status"] == MessageStatus.DONE
        else StageStatus.ERROR,
        "queue": pipeline_queue(row["channel"]) if received else None,
        "content": None,
        "content_type": None,
        "attempts": 0,
        "next_attempt_at": None,
        "lease_until": None,
        "lease_owner": None,
        "last_error": row["error"],
        "response": None,
        "created_at": now,
        "updated_at": now,
    }


def _deliver_all(items: list[tuple[asyncio.AbstractEventLoop, Any, Any, Any]]) -> None:
    """Resolve the callers' futures: ONE thread-safe wake-up per event loop and batch (each wake-up is a
    write to the loop's self-pipe, ~1.7 ms per batch when done per message)."""
    by_loop: dict[asyncio.AbstractEventLoop, list[tuple[Any, Any, Any]]] = {}
    for loop, setter, future, value in items:
        by_loop.setdefault(loop, []).append((setter, future, value))
    for loop, calls in by_loop.items():
        try:
            loop.call_soon_threadsafe(_resolve, calls)
        except RuntimeError:  # the caller's event loop is closed (shutdown): nobody is waiting any more
            pass


def _resolve(calls: list[tuple[Any, Any, Any]]) -> None:
    for setter, future, value in calls:
        setter(future, value)


def _set_result(future: asyncio.Future[ReceiveOutcome], outcome: ReceiveOutcome) -> None:
    if not future.done():
        future.set_result(outcome)


def _set_exception(future: asyncio.Future[ReceiveOutcome], exc: BaseException) -> None:
    if not future.done():
        future.set_exception(exc)
