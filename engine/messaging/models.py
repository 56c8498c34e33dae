"""Tables of the message store: one row per received message and one per stage of its pipeline.

A stage row is also a queue item when ``queue`` is set: the ``received`` stage waits in
``pipeline:<channel>`` for the filter/transform step, each destination stage in
``dest:<channel>:<destination>`` for delivery. Workers claim queue items with a lease
(:mod:`engine.messaging.queue`).
"""

from __future__ import annotations

from datetime import datetime

from sqlalchemy import BigInteger, DateTime, ForeignKey, Index, Integer, LargeBinary, String, Text
from sqlalchemy.orm import Mapped, mapped_column

from engine.db import Base

__all__ = ["Message", "MessageStage", "MessageStatus", "StageStatus", "ID_TYPE"]

#: BIGINT on PostgreSQL, INTEGER (the rowid alias, so it autoincrements) on SQLite
ID_TYPE = BigInteger().with_variant(Integer(), "sqlite")


class MessageStatus:
    """Where a message is in its life (``message.status``)."""

    RECEIVED = "received"  # stored, waiting for the pipeline
    REJECTED = "rejected"  # refused at the door (unparseable header, sender not allowed); kept for staff
    FILTERED = "filtered"  # a channel filter dropped it: nothing to do
    PROCESSING = "processing"  # transformed; destinations pending or retrying
    DONE = "done"  # every destination answered (or was skipped by its own filter)
    ERROR = "error"  # the pipeline failed definitively (e.g. no mapping); reprocess once fixed
    DEAD = "dead"  # a destination gave up after its last retry (dead letter)

    UNFINISHED = (RECEIVED, PROCESSING)
    FINISHED = (REJECTED, FILTERED, DONE, ERROR, DEAD)


class StageStatus:
    QUEUED = "queued"
    PROCESSING = "processing"  # claimed by a worker (see lease_until)
    RETRY = "retry"  # failed, waiting until next_attempt_at
    DONE = "done"
    SENT = "sent"
    SKIPPED = "skipped"  # a destination filter did not match
    FILTERED = "filtered"
    ERROR = "error"
    DEAD = "dead"

    CLAIMABLE = (QUEUED, RETRY, PROCESSING)  # processing only once its lease has expired
    OPEN = (QUEUED, RETRY, PROCESSING)


class Message(Base):
    __tablename__ = "message"

    id: Mapped[int] = mapped_column(ID_TYPE, primary_key=True, autoincrement=True)
    channel: Mapped[str] = mapped_column(String(100), index=True)
    received_at: Mapped[datetime] = mapped_column(DateTime(timezone=True), index=True)
    updated_at: Mapped[datetime] = mapped_column(DateTime(timezone=True))
    peer: Mapped[str] = mapped_column(String(200), default="")
    sending_application: Mapped[str] = mapped_column(String(200), default="")  # MSH-3
    sending_facility: Mapped[str] = mapped_column(String(200), default="")  # MSH-4
    control_id: Mapped[str] = mapped_column(String(200), default="", index=True)  # MSH-10
    message_type: Mapped[str] = mapped_column(String(20), default="")  # MSH-9.1
    trigger_event: Mapped[str] = mapped_column(String(20), default="")  # MSH-9.2
    version: Mapped[str] = mapped_column(String(20), default="")  # MSH-12
    raw: Mapped[bytes] = mapped_column(LargeBinary)
    status: Mapped[str] = mapped_column(String(20), index=True)
    ack_code: Mapped[str] = mapped_column(String(2), default="")
    #: hash of MSH-3|MSH-4|MSH-10 while the message is inside its duplicate window (NULL once released)
    dedup_key: Mapped[str | None] = mapped_column(String(64), unique=True, nullable=True)
    error: Mapped[str | None] = mapped_column(Text, nullable=True)
    reprocessed: Mapped[int] = mapped_column(Integer, default=0)


class MessageStage(Base):
    __tablename__ = "message_stage"
    __table_args__ = (Index("ix_message_stage_claim", "queue", "status", "next_attempt_at"),)

    id: Mapped[int] = mapped_column(ID_TYPE, primary_key=True, autoincrement=True)
    message_id: Mapped[int] = mapped_column(ID_TYPE, ForeignKey("message.id", ondelete="CASCADE"), index=True)
    name: Mapped[str] = mapped_column(String(100))  # received, filter, transform, destination
    destination: Mapped[str | None] = mapped_column(String(100), nullable=True)
    status: Mapped[str] = mapped_column(String(20))
    queue: Mapped[str | None] = mapped_column(String(250), nullable=True)
    content: Mapped[bytes | None] = mapped_column(LargeBinary, nullable=True)
    content_type: Mapped[str | None] = mapped_column(String(100), nullable=True)
    attempts: Mapped[int] = mapped_column(Integer, default=0)
    next_attempt_at: Mapped[datetime | None] = mapped_column(DateTime(timezone=True), nullable=True)
    lease_until: Mapped[datetime | None] = mapped_column(DateTime(timezone=True), nullable=True)
    lease_owner: Mapped[str | None] = mapped_column(String(100), nullable=True)
    last_error: Mapped[str | None] = mapped_column(Text, nullable=True)
    response: Mapped[str | None] = mapped_column(Text, nullable=True)
    created_at: Mapped[datetime] = mapped_column(DateTime(timezone=True))
    updated_at: Mapped[datetime] = mapped_column(DateTime(timezone=True))
