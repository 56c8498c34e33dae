"""The PACS service on both databases: C-STORE outcomes and duplicate policies, and the C-FIND engine
(PS3.4 C.2.2.2 matching, only the requested keys, cancel), straight through the ``pacs`` port."""

from __future__ import annotations

import os
import stat
import time as clock
from typing import Any

import pytest
from pacs_support import part10
from pydicom.dataset import Dataset

from engine.events import INSTANCE_STORED


def _query(level: str, **keys: Any) -> Dataset:
    ds = Dataset()
    ds.QueryRetrieveLevel = level
    for key, value in keys.items():
        setattr(ds, key, value)
    return ds


def _answers(pacs: Any, model: str, query: Dataset) -> list[Dataset]:
    results = list(pacs.find(model, query))
    assert results[-1] == (0x0000, None)
    return [ds for status, ds in results[:-1]]


def test_store_publishes_after_commit_and_keeps_duplicates(pacs: Any, runtime: Any) -> None:
    events: list[Any] = []
    runtime.bus.subscribe(INSTANCE_STORED, events.append)
    first = pacs.store(part10(), calling_ae="CT01")
    assert (first.status, first.duplicate) == (0x0000, False)
    again = pacs.store(part10(PatientName="Changed^Name"), calling_ae="CT01")
    assert (again.status, again.duplicate) == (0x0000, True)
    assert [e.sop_instance_uid for e in events] == ["1.2.3.4.1"]
    [patient] = _answers(pacs, "patient", _query("PATIENT", PatientID="P1", PatientName=""))
    assert str(patient.PatientName) == "Doe^John"  # keep: the first copy stays


def test_overwrite_and_reject_policies(make_pacs: Any) -> None:
    pacs = make_pacs(duplicate_policy="overwrite")
    pacs.store(part10())
    assert pacs.store(part10(InstanceNumber=7)).status == 0x0000
    [image] = _answers(pacs, "study", _query("IMAGE", StudyInstanceUID="1.2.3.1", InstanceNumber=""))
    assert image.InstanceNumber == 7
    rejecting = make_pacs(duplicate_policy="reject")
    outcome = rejecting.store(part10())
    assert outcome.status == 0x0111 and outcome.duplicate


def test_lost_file_is_healed_by_a_resend(pacs: Any) -> None:
    pacs.store(part10())
    [ref] = pacs.retrieve("study", _query("IMAGE", SOPInstanceUID="1.2.3.4.1")).instances
    pacs.storage.delete(ref.storage_key)  # as if the machine died before the file reached the disk
    assert pacs.store(part10()).status == 0x0000
    assert pacs.storage.exists(ref.storage_key)


def test_a_file_that_cannot_be_flushed_after_the_commit_takes_its_row_back(
    pacs: Any, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The index commit and the file's flush run side by side (both before Success): a failing flush
    answers Out of Resources and removes the new row, so nothing refers to bytes that may not be on the
    disk; the resend stores the object."""
    from services.pacs import storage as storage_module

    real_fsync = storage_module.os.fsync
    fsynced: list[int] = []

    def failing_fsync(fd: int) -> None:
        if not fsynced and stat.S_ISREG(os.fstat(fd).st_mode):  # the new file's flush, not a folder's
            fsynced.append(fd)
            raise OSError(5, "I/O error")
        real_fsync(fd)

    monkeypatch.setattr(storage_module.os, "fsync", failing_fsync)
    outcome = pacs.store(part10())
    assert outcome.status == 0xA700 and fsynced
    assert pacs.retrieve("study", _query("IMAGE", SOPInstanceUID="1.2.3.4.1")).instances == []
    assert pacs.store(part10()).status == 0x0000
    _assert_stored(pacs)


def test_a_failed_index_commit_leaves_a_stored_copy_whole(
    make_pacs: Any, monkeypatch: pytest.MonkeyPatch
) -> None:
    """An overwrite is written aside beside the index commit and renamed over the stored copy only once
    that commit succeeded; when it fails the aside copy is removed and the stored one stays as it was."""
    pacs = make_pacs(duplicate_policy="overwrite")
    assert pacs.store(part10()).status == 0x0000
    [ref] = pacs.retrieve("study", _query("IMAGE", SOPInstanceUID="1.2.3.4.1")).instances

    def failing_commit(entries: Any) -> Any:
        raise RuntimeError("database gone")

    monkeypatch.setattr(pacs.store_service._committer, "_commit", failing_commit)
    assert pacs.store(part10(InstanceNumber=7)).status == 0xA700
    with pacs.storage.open(ref.storage_key) as fh:
        assert fh.read() == part10()
    assert [p.name for p in pacs.storage.root.rglob("*") if p.is_file()] == [
        ref.storage_key.rsplit("/", 1)[1]
    ]


@pytest.mark.parametrize("error", [OSError(28, "No space left on device"), RuntimeError("unexpected")])
@pytest.mark.parametrize("writing", [True, False], ids=["while-writing", "before-writing"])
def test_a_failed_file_write_leaves_no_index_row(
    make_pacs: Any, monkeypatch: pytest.MonkeyPatch, error: Exception, writing: bool
) -> None:
    """The index row is committed beside the file write (started when the storage calls on_writing);
    when the write fails, whatever the error and whenever, a new row is taken back (never an indexed
    instance without its file) and the SCU gets a failure."""
    pacs = make_pacs()
    real_prepare = pacs.storage.prepare
    commits: list[int] = []

    def failing_prepare(key: str, data: bytes, on_writing: Any = None) -> Any:
        if writing:
            on_writing()  # the index commit starts beside the write; the write fails once it landed
            _wait_until_indexed(pacs)
            commits.append(1)
        raise error

    monkeypatch.setattr(pacs.storage, "prepare", failing_prepare)
    assert pacs.store(part10()).status == 0xA700
    assert pacs.retrieve("study", _query("IMAGE", SOPInstanceUID="1.2.3.4.1")).instances == []
    assert commits == ([1] if writing else [])
    monkeypatch.undo()
    assert pacs.storage.prepare == real_prepare
    assert pacs.store(part10()).status == 0x0000  # the resend is stored as new
    _assert_stored(pacs)


def test_a_failed_store_never_takes_back_the_row_of_a_concurrent_resend(
    make_pacs: Any, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A store whose write fails after its index row landed takes that row back; a resend of the same
    instance arriving meanwhile waits for it, so the row it commits is never the one taken back."""
    import threading

    pacs = make_pacs()
    real_prepare = pacs.storage.prepare
    failing = threading.current_thread()
    landed, go_on = threading.Event(), threading.Event()

    def prepare(key: str, data: bytes, on_writing: Any = None) -> Any:
        if threading.current_thread() is not failing:
            return real_prepare(key, data, on_writing)
        on_writing()
        _wait_until_indexed(pacs)
        landed.set()
        go_on.wait(10)
        raise OSError(28, "No space left on device")

    monkeypatch.setattr(pacs.storage, "prepare", prepare)
    resend: list[int] = []
    second = threading.Thread(target=lambda: resend.append(pacs.store(part10()).status))
    first: list[int] = []
    failing = threading.Thread(target=lambda: first.append(pacs.store(part10()).status))
    failing.start()
    assert landed.wait(10)
    second.start()
    second.join(0.3)
    assert second.is_alive()  # the resend waits for the failing store of the same instance
    go_on.set()
    failing.join(10)
    second.join(10)
    assert first == [0xA700] and resend == [0x0000]
    _assert_stored(pacs)


@pytest.mark.parametrize(
    ("data", "status"),
    [
        (b"not dicom at all", 0xC000),
        (part10(SOPInstanceUID="1.2.3/../../x"), 0xC000),
        (part10(StudyInstanceUID=""), 0xC000),
    ],
)
def test_bad_objects_fail_cleanly(pacs: Any, data: bytes, status: int) -> None:
    import warnings

    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        outcome = pacs.store(data)
    assert outcome.status == status and outcome.comment
    assert not list(pacs.storage.root.rglob("*.dcm"))


def test_request_uid_must_match_the_dataset(pacs: Any) -> None:
    assert pacs.store(part10(), sop_instance_uid="1.2.3.4.999").status == 0xA900


@pytest.fixture
def archive(pacs: Any) -> Any:
    rows = [
        # patient, name, study, date, time, accession, series, modality, sop
        ("P1", "Doe^John", "1.1", "20240115", "083000", "A1", "1.1.1", "CT", "1.1.1.1"),
        ("P1", "Doe^John", "1.1", "20240115", "083000", "A1", "1.1.1", "CT", "1.1.1.2"),
        ("P1", "Doe^John", "1.1", "20240115", "083000", "A1", "1.1.2", "SR", "1.1.2.1"),
        ("P1", "Doe^John", "1.2", "20240301", "141500.5", "A2", "1.2.1", "MR", "1.2.1.1"),
        ("P2", "DOE^JANE", "2.1", "20231231", "235959", "B1%", "2.1.1", "CT", "2.1.1.1"),
        ("P3", "Smith^Anna", "3.1", "", "", "C_1", "3.1.1", "US", "3.1.1.1"),
    ]
    for n, (pid, name, study, date, time, acc, series, modality, sop) in enumerate(rows):
        outcome = pacs.store(
            part10(
                PatientID=pid,
                PatientName=name,
                StudyInstanceUID=study,
                StudyDate=date,
                StudyTime=time,
                AccessionNumber=acc,
                SeriesInstanceUID=series,
                Modality=modality,
                SOPInstanceUID=sop,
                InstanceNumber=n + 1,
            )
        )
        assert outcome.status == 0
    return pacs


def _uids(answers: list[Dataset], keyword: str) -> set[str]:
    return {str(ds.get(keyword)) for ds in answers}


def test_matching_kinds(archive: Any) -> None:
    def study(**keys: Any) -> set[str]:
        return _uids(
            _answers(archive, "study", _query("STUDY", **{"StudyInstanceUID": "", **keys})),
            "StudyInstanceUID",
        )

    assert study() == {"1.1", "1.2", "2.1", "3.1"}  # universal
    assert study(PatientName="doe*") == {"1.1", "1.2", "2.1"}  # wildcard, case-insensitive PN
    assert study(PatientName="DOE^JOHN") == {"1.1", "1.2"}  # single value, case-insensitive
    assert study(PatientID="P?") == {"1.1", "1.2", "2.1", "3.1"}
    assert study(StudyDate="20240101-") == {"1.1", "1.2"}  # open range excludes empty dates
    assert study(StudyDate="-20240115") == {"1.1", "2.1"}
    assert study(StudyDate="20240116-20240301") == {"1.2"}
    assert study(StudyTime="0800-0900") == {"1.1"}
    assert study(StudyTime="1415-1415") == {"1.2"}  # the upper bound includes 14:15:xx.f
    assert study(StudyInstanceUID="1.1\\3.1") == {"1.1", "3.1"}  # UID list
    assert study(AccessionNumber="B1%") == {"2.1"}  # LIKE metacharacters are literals
    assert study(AccessionNumber="C_*") == {"3.1"}
    assert study(AccessionNumber="c_1") == set()  # non-PN strings are case-sensitive
    assert study(ModalitiesInStudy="SR") == {"1.1"}
    assert study(ModalitiesInStudy="MR\\US") == {"1.2", "3.1"}


@pytest.mark.parametrize(
    "keys",
    [
        {"StudyDate": "20240101-"},
        {"StudyDate": "-20240115"},
        {"StudyDate": "20240116-20240301", "PatientName": "doe*"},
        {"StudyDate": "20240101-20240115", "PatientName": "DOE^JANE"},  # same shape, other values
        {"StudyInstanceUID": "1.1\\3.1", "StudyTime": "0800-0900"},
        {"StudyInstanceUID": "2.1\\1.2", "StudyTime": "1415-1415"},
        {"ModalitiesInStudy": "MR\\US", "AccessionNumber": "C_*"},
        {"ModalitiesInStudy": "CT\\SR", "AccessionNumber": "A*"},
    ],
)
def test_cached_statements_answer_as_freshly_built_ones(archive: Any, keys: dict[str, str]) -> None:
    from services.pacs.query import FindQuery, build_select

    identifier = _query("STUDY", **{"StudyInstanceUID": "", "PatientName": "", **keys})
    stmt, returned = build_select(
        FindQuery("study", identifier), 1, sqlite=archive.db.is_sqlite, case_insensitive=True
    )
    with archive.db.engine.connect() as conn:
        expected = [dict(zip(returned, row, strict=True)) for row in conn.execute(stmt)]
    for _ in range(2):  # compiled on the first query of a shape, reused on the next
        answers = _answers(archive, "study", identifier)
        assert [str(ds.StudyInstanceUID) for ds in answers] == [r["StudyInstanceUID"] for r in expected]
        assert [str(ds.PatientName) for ds in answers] == [r["PatientName"] for r in expected]


def test_only_requested_keys_and_counts(archive: Any) -> None:
    [answer] = _answers(
        archive,
        "study",
        _query(
            "STUDY",
            AccessionNumber="A1",
            PatientName="",
            NumberOfStudyRelatedSeries="",
            NumberOfStudyRelatedInstances="",
            ModalitiesInStudy="",
            Modality="",  # a SERIES key at STUDY level: returned empty, not matched
            InstitutionName="",  # not indexed: returned empty
        ),
    )
    assert set(answer.dir()) == {
        "SpecificCharacterSet",
        "QueryRetrieveLevel",
        "AccessionNumber",
        "PatientName",
        "NumberOfStudyRelatedSeries",
        "NumberOfStudyRelatedInstances",
        "ModalitiesInStudy",
        "Modality",
        "InstitutionName",
        "StudyInstanceUID",  # the unique key of the level is always returned
    }
    assert answer.StudyInstanceUID == "1.1"
    assert (answer.NumberOfStudyRelatedSeries, answer.NumberOfStudyRelatedInstances) == (2, 3)
    assert list(answer.ModalitiesInStudy) == ["CT", "SR"]
    assert answer.Modality in (None, "")


def test_retrieve_ae_title_and_availability(archive: Any) -> None:
    query = _query("STUDY", StudyInstanceUID="1.1", RetrieveAETitle="", InstanceAvailability="")
    [answer] = [ds for status, ds in archive.find("study", query, retrieve_ae_title="CONDUIT") if ds]
    assert (answer.RetrieveAETitle, answer.InstanceAvailability) == ("CONDUIT", "ONLINE")


def test_levels_and_roots(archive: Any) -> None:
    patients = _answers(archive, "patient", _query("PATIENT", PatientID="", NumberOfPatientRelatedStudies=""))
    assert {p.PatientID: p.NumberOfPatientRelatedStudies for p in patients} == {"P1": 2, "P2": 1, "P3": 1}
    series = _answers(
        archive, "patient", _query("SERIES", PatientID="P1", StudyInstanceUID="1.1", Modality="")
    )
    assert {s.SeriesInstanceUID: s.Modality for s in series} == {"1.1.1": "CT", "1.1.2": "SR"}
    assert all(s.PatientID == "P1" for s in series)  # patient root: PatientID is a unique key above
    images = _answers(archive, "study", _query("IMAGE", SeriesInstanceUID="1.1.1", SOPInstanceUID=""))
    assert _uids(images, "SOPInstanceUID") == {"1.1.1.1", "1.1.1.2"}
    [(status, _)] = list(archive.find("study", _query("PATIENT", PatientID="")))
    assert status == 0xA900  # the Study Root has no PATIENT level
    [(status, _)] = list(archive.find("study", _query("NOPE")))
    assert status == 0xA900


def test_cancel_stops_between_matches(archive: Any) -> None:
    seen = []

    def cancelled() -> bool:
        return len(seen) >= 2

    for status, _ds in archive.find("study", _query("IMAGE", SOPInstanceUID=""), cancelled):
        seen.append(status)
    assert seen == [0xFF00, 0xFF00, 0xFE00]


def test_retrieve_selects_instances_and_refuses_empty_identifiers(archive: Any) -> None:
    outcome = archive.retrieve("patient", _query("STUDY", PatientID="P1", StudyInstanceUID="1.1"))
    assert {r.sop_instance_uid for r in outcome.instances} == {"1.1.1.1", "1.1.1.2", "1.1.2.1"}
    assert archive.read(outcome.instances[0]).startswith(b"\0" * 128 + b"DICM")
    assert archive.retrieve("study", _query("STUDY", StudyInstanceUID="")).status == 0xA900


def test_imaging_study_sync_waits_until_the_store_stream_pauses(pacs: Any) -> None:
    import time

    assert pacs.records is not None
    first = part10(StudyInstanceUID="1.2.9.1", SeriesInstanceUID="1.2.9.1.1", SOPInstanceUID="1.2.9.1.1.1")
    assert pacs.store(first).status == 0x0000
    time.sleep(1.2)
    # study 1.2.9.1 has been quiet for a second, but another study is arriving: nothing is written yet
    second = part10(StudyInstanceUID="1.2.9.2", SeriesInstanceUID="1.2.9.2.1", SOPInstanceUID="1.2.9.2.1.1")
    assert pacs.store(second).status == 0x0000
    assert pacs.sync_imaging_studies(quiet_seconds=1.0) == 0
    time.sleep(1.2)
    assert pacs.sync_imaging_studies(quiet_seconds=1.0) == 2


def _wait_until_indexed(pacs: Any) -> None:
    """Until the index row of part10()'s instance is committed (a commit running on another thread)."""
    deadline = clock.monotonic() + 10
    while not pacs.retrieve("study", _query("IMAGE", SOPInstanceUID="1.2.3.4.1")).instances:
        assert clock.monotonic() < deadline, "the index commit never landed"
        clock.sleep(0.01)


def _assert_stored(pacs: Any) -> None:
    """part10()'s instance is indexed once and its file reads back byte for byte."""
    [ref] = pacs.retrieve("study", _query("IMAGE", SOPInstanceUID="1.2.3.4.1")).instances
    with pacs.storage.open(ref.storage_key) as fh:
        assert fh.read() == part10()
