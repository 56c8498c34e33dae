"""The driver-level read by id (services.records.raw_reads) answers exactly as the repository's read_raw,
on SQLite and PostgreSQL, and survives a PostgreSQL connection that went stale."""

from __future__ import annotations

import asyncio

import pytest
from sqlalchemy import text

from engine.db import Database
from engine.errors import Gone, NotFound
from services.records.raw_reads import RawReads


def patient(family: str) -> dict[str, object]:
    return {"resourceType": "Patient", "name": [{"family": family}]}


def test_raw_reads_match_read_raw_and_report_unknown_and_deleted(records, database: Database) -> None:  # type: ignore[no-untyped-def]
    with records() as repo:
        kept = repo.create(patient("Kept"))
        gone = repo.create(patient("Gone"))
        kept = repo.update("Patient", kept.id, {**patient("Kept2"), "id": kept.id})[0]
    with records() as repo:
        repo.delete("Patient", gone.id)
        expected = repo.read_raw("Patient", kept.id)
    reads = RawReads(database)

    async def scenario() -> None:
        try:
            assert await reads.read("Patient", kept.id) == expected
            assert expected[1] == 2 and expected[2].tzinfo is not None
            with pytest.raises(NotFound):
                await reads.read("Patient", "no-such-id")
            with pytest.raises(NotFound):
                await reads.read("Observation", kept.id)  # the id of another type
            with pytest.raises(Gone):
                await reads.read("Patient", gone.id)
            # concurrent reads share the pool without mixing answers
            answers = await asyncio.gather(*(reads.read("Patient", kept.id) for _ in range(30)))
            assert set(answers) == {expected}
        finally:
            await reads.close()

    asyncio.run(scenario())


def test_a_stale_postgresql_connection_is_replaced(records, database: Database) -> None:  # type: ignore[no-untyped-def]
    if database.is_sqlite:
        pytest.skip("PostgreSQL connections only")
    with records() as repo:
        stored = repo.create(patient("Stale"))
    reads = RawReads(database, pool_size=1)

    async def scenario() -> None:
        try:
            await reads.read("Patient", stored.id)
            with database.engine.connect() as conn:  # the database drops the pooled backend (a restart)
                killed = conn.execute(
                    text(
                        "SELECT count(pg_terminate_backend(pid)) FROM pg_stat_activity "
                        "WHERE datname = current_database() AND pid <> pg_backend_pid() "
                        "AND query LIKE 'SELECT resource, version_id%'"
                    )
                ).scalar()
                conn.commit()
            assert killed == 1
            assert (await reads.read("Patient", stored.id))[1] == 1
        finally:
            await reads.close()

    asyncio.run(scenario())
