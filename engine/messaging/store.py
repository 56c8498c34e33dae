"""Reading and managing stored messages: list, show, reprocess from raw, prune (CLI and admin API)."""

from __future__ import annotations

from collections.abc import Callable, Iterable
from dataclasses import asdict, dataclass
from datetime import datetime, timedelta
from typing import Any

from sqlalchemy import delete, func, select, update

from engine.db import Database
from engine.errors import NotFound
from engine.messaging.channels import Channel
from engine.messaging.inbox import as_utc, pipeline_queue
from engine.messaging.models import Message, MessageStage, MessageStatus, StageStatus
from engine.messaging.queue import now_utc
from engine.messaging.tx import write_tx

__all__ = ["MessageStore", "MessageSummary", "MessageDetail", "StageView"]

_M = Message.__table__
_S = MessageStage.__table__


@dataclass(frozen=True)
class MessageSummary:
    id: int
    channel: str
    received_at: str
    status: str
    control_id: str
    message_type: str
    trigger_event: str
    version: str
    sender: str
    peer: str
    ack_code: str
    error: str | None

    def as_dict(self) -> dict[str, Any]:
        return asdict(self)


@dataclass(frozen=True)
class StageView:
    id: int
    name: str
    destination: str | None
    status: str
    attempts: int
    next_attempt_at: str | None
    last_error: str | None
    response: str | None
    content_type: str | None
    content: str | None
    updated_at: str

    def as_dict(self) -> dict[str, Any]:
        return asdict(self)


@dataclass(frozen=True)
class MessageDetail:
    summary: MessageSummary
    raw: str
    reprocessed: int
    stages: list[StageView]

    def as_dict(self) -> dict[str, Any]:
        return {**self.summary.as_dict(), "raw": self.raw, "reprocessed": self.reprocessed,
                "stages": [s.as_dict() for s in self.stages]}  # fmt: skip


def _iso(value: datetime | None) -> str | None:
    return as_utc(value).isoformat() if value is not None else None


def _summary(r: Any) -> MessageSummary:
    return MessageSummary(
        id=r.id, channel=r.channel, received_at=_iso(r.received_at) or "", status=r.status,
        control_id=r.control_id, message_type=r.message_type, trigger_event=r.trigger_event, version=r.version,
        sender=f"{r.sending_application}^{r.sending_facility}" if (r.sending_application or r.sending_facility) else "",
        peer=r.peer, ack_code=r.ack_code, error=r.error,
    )  # fmt: skip


_SUMMARY_COLUMNS = (
    _M.c.id, _M.c.channel, _M.c.received_at, _M.c.status, _M.c.control_id, _M.c.message_type,
    _M.c.trigger_event, _M.c.version, _M.c.sending_application, _M.c.sending_facility, _M.c.peer,
    _M.c.ack_code, _M.c.error,
)  # fmt: skip


def _text(content: bytes | None, content_type: str | None) -> str | None:
    if content is None:
        return None
    return content.decode("utf-8", errors="replace")


class MessageStore:
    def __init__(self, db: Database, channels: Callable[[str], Channel | None] | None = None) -> None:
        self.db = db
        self.channels = channels

    def list(
        self,
        *,
        channel: str | None = None,
        status: str | None = None,
        control_id: str | None = None,
        since: datetime | None = None,
        limit: int = 50,
        offset: int = 0,
    ) -> list[MessageSummary]:
        q = select(*_SUMMARY_COLUMNS)
        if channel:
            q = q.where(_M.c.channel == channel)
        if status:
            q = q.where(_M.c.status == status)
        if control_id:
            q = q.where(_M.c.control_id == control_id)
        if since is not None:
            q = q.where(_M.c.received_at >= since)
        q = q.order_by(_M.c.id.desc()).limit(max(1, min(limit, 10000))).offset(max(0, offset))
        with self.db.engine.connect() as conn:
            return [_summary(r) for r in conn.execute(q)]

    def counts(self) -> dict[str, dict[str, int]]:
        """channel -> status -> number of messages."""
        out: dict[str, dict[str, int]] = {}
        with self.db.engine.connect() as conn:
            for ch, st, n in conn.execute(
                select(_M.c.channel, _M.c.status, func.count()).group_by(_M.c.channel, _M.c.status)
            ):
                out.setdefault(ch, {})[st] = int(n)
        return out

    def get(self, message_id: int) -> MessageDetail:
        with self.db.engine.connect() as conn:
            row = conn.execute(
                select(*_SUMMARY_COLUMNS, _M.c.raw, _M.c.reprocessed).where(_M.c.id == message_id)
            ).first()
            if row is None:
                raise NotFound(f"no message with id {message_id}")
            stages = [
                StageView(
                    id=s.id,
                    name=s.name,
                    destination=s.destination,
                    status=s.status,
                    attempts=s.attempts,
                    next_attempt_at=_iso(s.next_attempt_at),
                    last_error=s.last_error,
                    response=s.response,
                    content_type=s.content_type,
                    content=_text(s.content, s.content_type),
                    updated_at=_iso(s.updated_at) or "",
                )  # fmt: skip
                for s in conn.execute(select(_S).where(_S.c.message_id == message_id).order_by(_S.c.id))
            ]
        return MessageDetail(
            _summary(row), row.raw.decode("utf-8", errors="replace"), row.reprocessed, stages
        )

    def ids_with_status(self, status: str, channel: str | None = None) -> list[int]:
        q = select(_M.c.id).where(_M.c.status == status)
        if channel:
            q = q.where(_M.c.channel == channel)
        with self.db.engine.connect() as conn:
            return [r[0] for r in conn.execute(q.order_by(_M.c.id))]

    def reprocess(self, message_id: int) -> None:
        """Run the message again from its raw bytes: derived stages are dropped, the pipeline re-queued.

        Refused (Conflict) while the message is still being processed, so a delivery in flight is not
        duplicated.
        """
        from engine.errors import Conflict

        now = now_utc()
        with write_tx(self.db) as conn:
            row = conn.execute(
                select(_M.c.channel, _M.c.status).where(_M.c.id == message_id).with_for_update()
            ).first()
            if row is None:
                raise NotFound(f"no message with id {message_id}")
            open_stages = conn.execute(
                select(func.count()).where(
                    _S.c.message_id == message_id, _S.c.status == StageStatus.PROCESSING
                )
            ).scalar()
            if open_stages:
                raise Conflict(f"message {message_id} is being processed right now; try again shortly")
            conn.execute(delete(_S).where(_S.c.message_id == message_id, _S.c.name != "received"))
            conn.execute(
                update(_S)
                .where(_S.c.message_id == message_id, _S.c.name == "received")
                .values(status=StageStatus.QUEUED, queue=pipeline_queue(row.channel), attempts=0,
                        next_attempt_at=None, lease_owner=None, lease_until=None, last_error=None, updated_at=now)
            )  # fmt: skip
            conn.execute(
                update(_M)
                .where(_M.c.id == message_id)
                .values(
                    status=MessageStatus.RECEIVED,
                    error=None,
                    updated_at=now,
                    reprocessed=_M.c.reprocessed + 1,
                )
            )

    def prune(
        self, *, default_days: float | None, channels: Iterable[Channel] = (), now: datetime | None = None
    ) -> int:
        """Delete FINISHED messages older than their channel's retention (never unfinished ones)."""
        now = now or now_utc()
        per_channel = {c.name: c.retention_days for c in channels}
        total = 0
        with write_tx(self.db) as conn:
            names = [r[0] for r in conn.execute(select(_M.c.channel).distinct())]
            for name in names:
                days = per_channel.get(name) if per_channel.get(name) is not None else default_days
                if days is None:
                    continue
                cutoff = now - timedelta(days=days)
                doomed = select(_M.c.id).where(
                    _M.c.channel == name, _M.c.status.in_(MessageStatus.FINISHED), _M.c.updated_at < cutoff
                )
                conn.execute(delete(_S).where(_S.c.message_id.in_(doomed)))
                total += conn.execute(
                    delete(_M).where(
                        _M.c.channel == name,
                        _M.c.status.in_(MessageStatus.FINISHED),
                        _M.c.updated_at < cutoff,
                    )
                ).rowcount
        return total
