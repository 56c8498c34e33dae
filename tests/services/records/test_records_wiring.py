"""The records port as the runtime provides it, with its settings (CONDUIT_RECORDS_*)."""

from __future__ import annotations

import pytest

from engine.db import Database
from engine.events import EventBus
from engine.runtime import Runtime
from engine.settings import ConduitSettings
from services.records import wiring
from services.records.repository import SqlResourceRepository


def test_install_provides_the_port_with_settings(
    monkeypatch: pytest.MonkeyPatch, settings: ConduitSettings, database: Database
) -> None:
    monkeypatch.setenv("CONDUIT_RECORDS_BASE_URL", "https://fhir.example.org/fhir")
    monkeypatch.setenv("CONDUIT_RECORDS_DEFAULT_COUNT", "2")
    runtime = Runtime(settings=settings, db=database, bus=EventBus())
    wiring.install(runtime)
    with database.unit_of_work() as uow:
        repo = runtime.records(uow)
        assert isinstance(repo, SqlResourceRepository)
        patient = repo.create({"resourceType": "Patient"})
        for _ in range(3):
            repo.create(
                {
                    "resourceType": "Observation",
                    "status": "final",
                    "code": {"text": "x"},
                    "subject": {"reference": f"https://fhir.example.org/fhir/Patient/{patient.id}"},
                }
            )
        repo.create(
            {
                "resourceType": "Observation",
                "status": "final",
                "code": {"text": "x"},
                "subject": {"reference": f"https://elsewhere.example/fhir/Patient/{patient.id}"},
            }
        )
    with database.unit_of_work() as uow:
        repo = runtime.records(uow)
        local = repo.search("Observation", [("subject", f"Patient/{patient.id}"), ("_total", "accurate")])
        assert local.total == 3 and local.count == 2 and local.has_more  # default_count from the settings
        same = repo.search(
            "Observation", [("subject", f"https://fhir.example.org/fhir/Patient/{patient.id}")]
        )
        assert len(same.matches) == 2 and same.has_more
        remote = repo.search(
            "Observation", [("subject", f"https://elsewhere.example/fhir/Patient/{patient.id}")]
        )
        assert len(remote.matches) == 1 and not remote.has_more


def test_sqlite_statistics_are_refreshed_in_the_background(
    settings: ConduitSettings, database: Database
) -> None:
    import asyncio

    from services.records.statistics import analyze, analyze_task

    with database.unit_of_work() as uow:
        SqlResourceRepository(uow).create({"resourceType": "Patient", "gender": "female"})
    analyze(database)  # a no-op on PostgreSQL, ANALYZE on SQLite
    if database.is_sqlite:
        with database.engine.connect() as conn:
            tables = {row[0] for row in conn.exec_driver_sql("SELECT tbl FROM sqlite_stat1")}
        assert "records_idx_token" in tables
    runtime = Runtime(settings=settings, db=database, bus=EventBus())
    wiring.install(runtime)
    assert len(runtime.background) == (1 if database.is_sqlite else 0)

    async def one_round() -> None:
        task = asyncio.create_task(analyze_task(database, interval=3600, first_delay=0)())
        await asyncio.sleep(0.5)
        task.cancel()
        try:
            await task
        except asyncio.CancelledError:
            pass

    asyncio.run(one_round())
