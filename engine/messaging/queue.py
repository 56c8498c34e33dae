"""The durable queue over ``message_stage``: claim with a lease, finish only while holding it.

PostgreSQL: ``UPDATE … WHERE id IN (SELECT … FOR UPDATE SKIP LOCKED LIMIT n)``, so workers in several
processes each take different items without waiting on each other. SQLite has a single writer: the same
UPDATE is atomic there (the FOR UPDATE clause is not emitted), which is the equivalent.

A claim sets ``status=processing``, ``lease_owner`` and ``lease_until``; an item whose lease ran out (its
worker crashed) is claimable again. Finishing is a guarded UPDATE (``WHERE lease_owner = me``), done in the
same transaction as the work's own writes when the work is a database write (the records destination), so
an item whose lease was taken over by another worker is never completed twice.

An ordered queue (``ordered: true``) only offers its oldest open items, in message order, to one worker at a
time; the worker handles them one after the other and gives the rest back at the first failure, so while
the head waits for a retry nothing behind it moves.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import Any

from sqlalchemy import and_, func, or_, select, update

from engine.db import Database
from engine.messaging.inbox import as_utc
from engine.messaging.models import Message, MessageStage, StageStatus
from engine.messaging.tx import write_tx

__all__ = ["Claimed", "claim", "claim_stage", "claimable", "queue_depths", "now_utc", "release"]

_M = Message.__table__
_S = MessageStage.__table__


def now_utc() -> datetime:
    return datetime.now(UTC)


@dataclass(frozen=True)
class Claimed:
    stage_id: int
    message_id: int
    queue: str
    name: str
    destination: str | None
    attempts: int
    content: bytes | None
    content_type: str | None
    owner: str
    channel: str
    raw: bytes
    received_at: datetime
    sending_application: str
    sending_facility: str
    control_id: str
    message_type: str
    trigger_event: str
    version: str


def claimable(now: datetime) -> Any:
    return or_(
        and_(
            _S.c.status.in_((StageStatus.QUEUED, StageStatus.RETRY)),
            or_(_S.c.next_attempt_at.is_(None), _S.c.next_attempt_at <= now),
        ),
        and_(_S.c.status == StageStatus.PROCESSING, _S.c.lease_until < now),
    )


def _due(row: Any, now: datetime) -> bool:
    if row.status in (StageStatus.QUEUED, StageStatus.RETRY):
        return row.next_attempt_at is None or as_utc(row.next_attempt_at) <= now
    return row.lease_until is not None and as_utc(row.lease_until) < now


def release(db: Database, items: list[Claimed]) -> None:
    """Give claimed items back untouched (an ordered queue stops at its first failure)."""
    if not items:
        return
    now = now_utc()
    with write_tx(db) as conn:
        for item in items:
            conn.execute(
                update(_S)
                .where(_S.c.id == item.stage_id, _S.c.lease_owner == item.owner, _S.c.status == StageStatus.PROCESSING)
                .values(status=StageStatus.QUEUED, lease_owner=None, lease_until=None, attempts=_S.c.attempts - 1,
                        updated_at=now)
            )  # fmt: skip


def _load(conn: Any, ids: list[int], owner: str) -> list[Claimed]:
    if not ids:
        return []
    rows = conn.execute(
        select(
            _S.c.id,
            _S.c.message_id,
            _S.c.queue,
            _S.c.name,
            _S.c.destination,
            _S.c.attempts,
            _S.c.content,
            _S.c.content_type,
            _M.c.channel,
            _M.c.raw,
            _M.c.received_at,
            _M.c.sending_application,
            _M.c.sending_facility,
            _M.c.control_id,
            _M.c.message_type,
            _M.c.trigger_event,
            _M.c.version,
        )  # fmt: skip
        .join(_M, _M.c.id == _S.c.message_id)
        .where(_S.c.id.in_(ids))
        .order_by(_S.c.id)
    )
    return [
        Claimed(
            stage_id=r.id,
            message_id=r.message_id,
            queue=r.queue,
            name=r.name,
            destination=r.destination,
            attempts=r.attempts,
            content=r.content,
            content_type=r.content_type,
            owner=owner,
            channel=r.channel,
            raw=r.raw,
            received_at=as_utc(r.received_at),
            sending_application=r.sending_application,
            sending_facility=r.sending_facility,
            control_id=r.control_id,
            message_type=r.message_type,
            trigger_event=r.trigger_event,
            version=r.version,
        )  # fmt: skip
        for r in rows
    ]


def _take(conn: Any, where: Any, owner: str, lease_s: float, now: datetime) -> list[int]:
    result = conn.execute(
        update(_S)
        .where(where)
        .values(
            status=StageStatus.PROCESSING,
            lease_owner=owner,
            lease_until=now + timedelta(seconds=lease_s),
            attempts=_S.c.attempts + 1,
            updated_at=now,
        )
        .returning(_S.c.id)
    )
    return sorted(r[0] for r in result)


class _Contended(Exception):
    pass


def claim(
    db: Database, queue: str, owner: str, *, lease_s: float, limit: int, ordered: bool
) -> list[Claimed]:
    """Claim up to ``limit`` due items of ``queue`` (the due prefix, in message order, when ``ordered``)."""
    try:
        return _claim(db, queue, owner, lease_s=lease_s, limit=limit, ordered=ordered)
    except _Contended:
        return []


def _claim(
    db: Database, queue: str, owner: str, *, lease_s: float, limit: int, ordered: bool
) -> list[Claimed]:
    now = now_utc()
    with write_tx(db) as conn:
        if ordered:
            # the oldest open items in MESSAGE order (stage ids follow pipeline completion order); only the
            # prefix that is due may go, and only all of it: a partial claim would let a later item overtake
            rows = conn.execute(
                select(_S.c.id, _S.c.status, _S.c.next_attempt_at, _S.c.lease_until)
                .where(_S.c.queue == queue, _S.c.status.in_(StageStatus.OPEN))
                .order_by(_S.c.message_id, _S.c.id)
                .limit(limit)
            ).all()
            prefix = []
            for r in rows:
                if not _due(r, now):
                    break
                prefix.append(r.id)
            if not prefix:
                return []
            ids = _take(conn, and_(_S.c.id.in_(prefix), claimable(now)), owner, lease_s, now)
            if len(ids) != len(prefix):
                raise _Contended  # another worker got part of it: undo, take nothing this round
        else:
            # A CTE, materialized: as an IN (subquery) PostgreSQL may run the subquery again for each row
            # the UPDATE visits, and each run skips the rows just updated and yields the next ones, so
            # LIMIT bound nothing (measured: limit=1 claimed all 5 due items).
            candidates = (
                select(_S.c.id)
                .where(_S.c.queue == queue, claimable(now))
                .order_by(_S.c.id)
                .limit(limit)
                .with_for_update(skip_locked=True)
                .cte("candidates")
            )
            if not db.is_sqlite:
                candidates = candidates.prefix_with("MATERIALIZED")
            ids = _take(conn, and_(_S.c.id.in_(select(candidates.c.id)), claimable(now)), owner, lease_s, now)
        return _load(conn, ids, owner)


def claim_stage(db: Database, stage_id: int, owner: str, *, lease_s: float) -> Claimed | None:
    """Claim one given item (the inline pipeline run of ``ack_after: transformed``)."""
    now = now_utc()
    with write_tx(db) as conn:
        ids = _take(conn, and_(_S.c.id == stage_id, claimable(now)), owner, lease_s, now)
        found = _load(conn, ids, owner)
    return found[0] if found else None


def queue_depths(db: Database) -> dict[str, int]:
    """Open items per queue (for the queue-depth gauge and the admin API)."""
    with db.engine.connect() as conn:
        rows = conn.execute(
            select(_S.c.queue, func.count())
            .where(_S.c.queue.is_not(None), _S.c.status.in_(StageStatus.OPEN))
            .group_by(_S.c.queue)
        )
        return {r[0]: int(r[1]) for r in rows}
