"""CRUD, versioning, history, deletion, conditional interactions, events and concurrency of the record store
(SQLite and PostgreSQL via the ``database`` fixture)."""

from __future__ import annotations

import threading
from datetime import UTC, datetime, timedelta

import pytest

from engine.db import Database
from engine.errors import Conflict, Gone, InvalidInput, NotFound, PreconditionFailed
from engine.events import RESOURCE_CREATED, RESOURCE_DELETED, RESOURCE_UPDATED, ResourceEvent
from services.records.repository import SqlResourceRepository


def patient(mrn: str = "123", family: str = "Doe", **extra):  # type: ignore[no-untyped-def]
    return {
        "resourceType": "Patient",
        "identifier": [{"system": "urn:oid:1.2.36.146.595.217.0.1", "value": mrn}],
        "name": [{"family": family, "given": ["Jane"]}],
        **extra,
    }


def test_create_assigns_id_and_meta_ignoring_client_values(records) -> None:  # type: ignore[no-untyped-def]
    with records() as repo:
        stored = repo.create(
            {**patient(), "id": "client", "meta": {"versionId": "7", "lastUpdated": "2000-01-01"}}
        )
    assert stored.id != "client" and len(stored.id) >= 32
    assert stored.version_id == 1 and stored.etag == 'W/"1"'
    assert stored.resource["meta"]["versionId"] == "1"
    assert stored.resource["meta"]["lastUpdated"] != "2000-01-01"
    assert abs(stored.last_updated - datetime.now(UTC)) < timedelta(minutes=1)
    with records() as repo:
        read = repo.read("Patient", stored.id)
        raw, version, updated = repo.read_raw("Patient", stored.id)
    assert read.resource == stored.resource
    assert (
        raw.startswith(b'{"resourceType":"Patient","id":"')
        and version == 1
        and updated == stored.last_updated
    )


def test_read_unknown_is_not_found(records) -> None:  # type: ignore[no-untyped-def]
    with records() as repo, pytest.raises(NotFound):
        repo.read("Patient", "nope")


def test_update_versions_history_and_vread(records) -> None:  # type: ignore[no-untyped-def]
    with records() as repo:
        first = repo.create(patient())
    with records() as repo:
        second, created = repo.update("Patient", first.id, patient(family="Smith"))
    assert not created and second.version_id == 2
    with records() as repo:
        assert repo.read("Patient", first.id).resource["name"][0]["family"] == "Smith"
        assert repo.vread("Patient", first.id, 1).resource["name"][0]["family"] == "Doe"
        with pytest.raises(NotFound):
            repo.vread("Patient", first.id, 9)
        history = repo.history("Patient", first.id)
    assert [(h.version_id, h.method) for h in history] == [(2, "PUT"), (1, "POST")]


def test_update_without_change_keeps_the_version(records) -> None:  # type: ignore[no-untyped-def]
    with records() as repo:
        first = repo.create(patient())
        again, created = repo.update("Patient", first.id, patient())
    assert again.version_id == 1 and not created


def test_update_creates_with_client_id_and_checks_if_match(records) -> None:  # type: ignore[no-untyped-def]
    with records() as repo:
        stored, created = repo.update("Patient", "p-1", {**patient(), "id": "p-1"})
    assert created and stored.id == "p-1" and stored.version_id == 1
    with records() as repo, pytest.raises(PreconditionFailed):
        repo.update("Patient", "p-1", patient(family="X"), if_match=5)
    with records() as repo:
        stored, created = repo.update("Patient", "p-1", patient(family="X"), if_match=1)
    assert stored.version_id == 2 and not created
    with records() as repo, pytest.raises(InvalidInput):
        repo.update("Patient", "p-1", {**patient(), "id": "other"})
    with records() as repo, pytest.raises(InvalidInput):
        repo.update("Patient", "bad/id", patient())
    with records() as repo, pytest.raises(InvalidInput):
        repo.update("Observation", "p-1", patient())


def test_delete_then_gone_then_recreate(records) -> None:  # type: ignore[no-untyped-def]
    with records() as repo:
        stored = repo.create(patient())
    with records() as repo:
        deleted = repo.delete("Patient", stored.id)
        assert deleted is not None and deleted.version_id == 2
        assert repo.delete("Patient", stored.id) is None
        assert repo.delete("Patient", "never") is None
    with records() as repo:
        with pytest.raises(Gone):
            repo.read("Patient", stored.id)
        with pytest.raises(Gone):
            repo.vread("Patient", stored.id, 2)
        assert repo.vread("Patient", stored.id, 1).version_id == 1
        assert repo.search("Patient", [("identifier", "123")]).matches == []
        assert [h.method for h in repo.history("Patient", stored.id)] == ["DELETE", "POST"]
        assert repo.history("Patient", stored.id)[0].resource is None
    with records() as repo:
        again, created = repo.update("Patient", stored.id, patient())
    assert created and again.version_id == 3
    with records() as repo:
        assert repo.search("Patient", [("identifier", "123")]).matches[0].id == stored.id


def test_history_type_system_since_and_paging(records) -> None:  # type: ignore[no-untyped-def]
    with records() as repo:
        a = repo.create(patient("1"))
        repo.create({"resourceType": "Organization", "name": "Lab"})
        repo.update("Patient", a.id, patient("1", family="B"))
    with records() as repo:
        assert len(repo.history("Patient")) == 2
        assert len(repo.history()) == 3
        assert len(repo.history(count=2)) == 2
        assert len(repo.history(count=2, offset=2)) == 1
        assert repo.history(since=datetime.now(UTC) + timedelta(minutes=1)) == []
        assert len(repo.history(since=datetime.now(UTC) - timedelta(minutes=1))) == 3


def test_conditional_update_and_create(records) -> None:  # type: ignore[no-untyped-def]
    criteria = [("identifier", "urn:oid:1.2.36.146.595.217.0.1|555")]
    with records() as repo:
        first, created = repo.conditional_update("Patient", criteria, patient("555"))
    assert created
    with records() as repo:
        second, created = repo.conditional_update("Patient", criteria, patient("555", family="Moved"))
    assert not created and second.id == first.id and second.version_id == 2
    with records() as repo:
        found, created = repo.conditional_create("Patient", criteria, patient("555"))
    assert not created and found.id == first.id
    with records() as repo:
        repo.create(patient("555"))
    with records() as repo:
        with pytest.raises(PreconditionFailed):
            repo.conditional_update("Patient", criteria, patient("555"))
        with pytest.raises(PreconditionFailed):
            repo.conditional_create("Patient", criteria, patient("555"))
        with pytest.raises(InvalidInput):
            repo.conditional_update("Patient", [("no-such-param", "1")], patient("1"))
        made, created = repo.conditional_create("Patient", [("identifier", "|none")], patient("9"))
    assert created and made.version_id == 1


def test_events_publish_only_after_commit(database: Database) -> None:
    seen: list[ResourceEvent] = []
    database.bus.subscribe("*", seen.append)
    with database.unit_of_work() as uow:
        repo = SqlResourceRepository(uow)
        stored = repo.create(patient())
        repo.update("Patient", stored.id, patient(family="B"))
        assert seen == []
    assert [e.name for e in seen] == [RESOURCE_CREATED, RESOURCE_UPDATED]
    assert seen[1].version_id == 2 and seen[1].resource is not None
    with pytest.raises(RuntimeError), database.unit_of_work() as uow:
        SqlResourceRepository(uow).delete("Patient", stored.id)
        raise RuntimeError("roll back")
    assert len(seen) == 2
    with database.unit_of_work() as uow:
        assert SqlResourceRepository(uow).read("Patient", stored.id).version_id == 2
        SqlResourceRepository(uow).delete("Patient", stored.id)
    assert seen[-1].name == RESOURCE_DELETED and seen[-1].resource is None


def test_two_writers_do_not_both_win(database: Database) -> None:
    """Two units of work update the same version: exactly one commits, the other fails cleanly."""
    with database.unit_of_work() as uow:
        stored = SqlResourceRepository(uow).create(patient())
    barrier = threading.Barrier(2, timeout=20)
    outcomes: list[str] = []

    def writer(family: str) -> None:
        try:
            with database.unit_of_work() as uow:
                repo = SqlResourceRepository(uow)
                current = repo.read("Patient", stored.id)
                barrier.wait()
                repo.update("Patient", stored.id, patient(family=family), if_match=current.version_id)
            outcomes.append("ok")
        except (Conflict, PreconditionFailed):  # SQLite: the loser's snapshot went stale -> Conflict
            outcomes.append("refused")
        except Exception as exc:
            outcomes.append(f"error:{type(exc).__name__}")

    threads = [threading.Thread(target=writer, args=(name,)) for name in ("A", "B")]
    for t in threads:
        t.start()
    for t in threads:
        t.join(60)
    assert sorted(outcomes) == ["ok", "refused"]
    with database.unit_of_work() as uow:
        repo = SqlResourceRepository(uow)
        assert repo.read("Patient", stored.id).version_id == 2
        assert [h.version_id for h in repo.history("Patient", stored.id)] == [2, 1]


def test_hostile_values_are_stored_or_refused_cleanly(records) -> None:  # type: ignore[no-untyped-def]
    """Values a database would choke on never reach it raw: NUL characters (PostgreSQL text), integers
    beyond JSON's range, instants past year 9999; what cannot be encoded is InvalidInput, not a crash."""
    with records() as repo:
        stored = repo.create(
            {
                "resourceType": "Observation",
                "status": "final",
                "code": {"coding": [{"system": "urn:x\x00", "code": "a\x00b"}], "text": "nul\x00text"},
                "subject": {"reference": "Patient/p\x001"},
                "effectiveDateTime": "9999-12-31T23:00:00-05:00",
                "valueQuantity": {"value": 1.7e308, "code": "1"},
                "note": [{"text": "x" * 10000}],
            }
        )
        repo.create({"resourceType": "Patient", "name": [{"family": "Ø" * 1000}]})
    with records() as repo:
        assert repo.read("Observation", stored.id).resource["code"]["text"] == "nul\x00text"
        assert [m.id for m in repo.search("Observation", [("code", "urn:x|ab")]).matches] == [stored.id]
        assert len(repo.search("Patient", [("family", "ooo")]).matches) == 1
        with pytest.raises(InvalidInput):
            repo.create({"resourceType": "Patient", "name": [{"family": "\ud800"}]})
        with pytest.raises(InvalidInput):
            repo.create({"resourceType": "Observation", "valueInteger": 10**400})


def test_concurrent_conditional_creates_make_one_resource(database: Database) -> None:
    """Two writers run `identifier=X` conditional creates at once: one creates, the other finds it."""
    criteria = [("identifier", "urn:oid:1.2.36.146.595.217.0.1|race")]
    barrier = threading.Barrier(2, timeout=20)
    results: list[str] = []

    def writer() -> None:
        try:
            barrier.wait()
            with database.unit_of_work() as uow:
                stored, created = SqlResourceRepository(uow).conditional_create(
                    "Patient", criteria, patient("race")
                )
            results.append("created" if created else "found")
        except Conflict:  # SQLite under contention may refuse instead of waiting: never a duplicate
            results.append("refused")

    threads = [threading.Thread(target=writer) for _ in range(2)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(60)
    assert sorted(results) in (["created", "found"], ["created", "refused"])
    with database.unit_of_work() as uow:
        assert len(SqlResourceRepository(uow).search("Patient", criteria).matches) == 1


def test_ids_with_a_trailing_newline_are_refused(records) -> None:  # type: ignore[no-untyped-def]
    with records() as repo:
        with pytest.raises(InvalidInput):
            repo.update("Patient", "abc\n", patient())
        with pytest.raises(InvalidInput):
            repo.create(patient(), id="abc\n")
        with pytest.raises(InvalidInput):
            repo.search("Observation", [("subject", "Patient/abc\n")])
