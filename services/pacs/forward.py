"""The auto-forward queue (``pacs_forward_job``): rows are added in the same transaction as the index row
of the instance they forward, so a stored instance is never forgotten; the DICOM adapter's sender
claims due jobs, C-STOREs them and reports back. Claims are leases (``claimed_until``), taken with
``FOR UPDATE SKIP LOCKED`` on PostgreSQL so several processes can share the queue."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import UTC, datetime, timedelta

from sqlalchemy import func, or_, select

from engine.db import Database
from services.pacs.models import PacsForwardJob, PacsInstance
from services.pacs.retrieve import INSTANCE_REF_COLUMNS, InstanceRef
from services.pacs.tx import write_uow

__all__ = ["ForwardJob", "claim_jobs", "finish_job"]

_LEASE = timedelta(seconds=120)
_MAX_DELAY = 600.0


@dataclass(frozen=True)
class ForwardJob:
    job_id: int
    destination: str
    attempts: int
    instance: InstanceRef | None
    """None when the instance is no longer stored (the job is then dropped as failed)."""


def claim_jobs(db: Database, limit: int = 20) -> list[ForwardJob]:
    now = datetime.now(UTC)
    with write_uow(db) as uow:
        stmt = (
            select(PacsForwardJob)
            .where(
                PacsForwardJob.status == "pending",
                PacsForwardJob.next_attempt_at <= now,
                or_(PacsForwardJob.claimed_until.is_(None), PacsForwardJob.claimed_until < now),
            )
            .order_by(PacsForwardJob.pk)
            .limit(limit)
        )
        if not db.is_sqlite:
            stmt = stmt.with_for_update(skip_locked=True)
        jobs = uow.session.scalars(stmt).all()
        claimed = []
        for job in jobs:
            job.claimed_until = now + _LEASE
            row = uow.session.execute(
                select(*INSTANCE_REF_COLUMNS).where(PacsInstance.sop_instance_uid == job.sop_instance_uid)
            ).first()
            claimed.append(
                ForwardJob(job.pk, job.destination, job.attempts, InstanceRef(*row) if row else None)
            )
    return claimed


def finish_job(
    db: Database,
    job_id: int,
    *,
    ok: bool,
    error: str = "",
    retry: bool = True,
    max_attempts: int,
    first_delay: float,
) -> None:
    now = datetime.now(UTC)
    with write_uow(db) as uow:
        job = uow.session.get(PacsForwardJob, job_id)
        if job is None:
            return
        job.claimed_until = None
        job.attempts += 1
        if ok:
            job.status = "sent"
            job.last_error = ""
            return
        job.last_error = error[:256]
        if not retry or job.attempts >= max_attempts:
            job.status = "failed"
            return
        delay = min(first_delay * (2 ** (job.attempts - 1)), _MAX_DELAY)
        job.next_attempt_at = now + timedelta(seconds=delay)


def job_counts(db: Database) -> dict[str, int]:

    with db.engine.connect() as conn:
        rows = conn.execute(select(PacsForwardJob.status, func.count()).group_by(PacsForwardJob.status))
        return {status: count for status, count in rows}
