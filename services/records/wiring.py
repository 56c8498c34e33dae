"""Installs the record store as the ``records`` port: ``runtime.records(uow)`` → SqlResourceRepository."""

from __future__ import annotations

from engine.db import UnitOfWork
from engine.runtime import Runtime
from services.records.raw_reads import RawReads
from services.records.repository import RecordStoreConfig, SqlResourceRepository
from services.records.settings import RecordsSettings
from services.records.statistics import analyze_task

__all__ = ["install"]


def install(runtime: Runtime) -> None:
    settings = RecordsSettings()
    config = RecordStoreConfig(
        base_url=settings.base_url, default_count=settings.default_count, max_count=settings.max_count
    )

    def records(uow: UnitOfWork) -> SqlResourceRepository:
        return SqlResourceRepository(uow, config)

    runtime.provide("records", records)
    # read by id on the driver, outside a unit of work: a factory, each HTTP app owns (and closes) its pool
    runtime.provide("records_raw_reads", lambda: RawReads(runtime.db))
    if runtime.db.is_sqlite and settings.analyze_interval > 0:
        runtime.background.append(analyze_task(runtime.db, settings.analyze_interval))
