"""Worklist, MPPS, ImagingStudy and Storage Commitment end to end: orders in the record store, DCMTK's
findscu -W and storescu, pynetdicom as the MPPS / Storage Commitment SCU (a real peer we did not write)."""

from __future__ import annotations

import threading
import time
from pathlib import Path
from typing import Any

import pytest
from dicom_corpus import make_corpus, uid
from dicom_support import dcmtk, needs_dcmtk, pending_count
from pydicom.dataset import Dataset
from pydicom.sequence import Sequence
from pynetdicom import AE, evt
from pynetdicom.sop_class import ModalityPerformedProcedureStep, StorageCommitmentPushModel

pytestmark = [needs_dcmtk, pytest.mark.dcmtk]

ACSN_TYPE = {"coding": [{"system": "http://terminology.hl7.org/CodeSystem/v2-0203", "code": "ACSN"}]}
IMAGING = {"coding": [{"system": "http://snomed.info/sct", "code": "363679005"}]}


def _order(
    runtime: Any, *, accession: str, status: str = "active", category: Any = IMAGING
) -> tuple[str, str]:
    with runtime.db.unit_of_work() as uow:
        repo = runtime.records(uow)
        patient = repo.create(
            {
                "resourceType": "Patient",
                "identifier": [{"system": "urn:example:mrn", "value": f"MRN-{accession}"}],
                "name": [{"family": "Doe", "given": ["Jane", "Q"]}],
                "birthDate": "1970-01-02",
                "gender": "female",
            }
        )
        order = repo.create(
            {
                "resourceType": "ServiceRequest",
                "status": status,
                "intent": "order",
                "category": [category],
                "code": {
                    "coding": [{"system": "http://dicom.nema.org/resources/ontology/DCM", "code": "CT"}],
                    "text": "CT CHEST",
                },
                "identifier": [{"type": ACSN_TYPE, "value": accession}],
                "subject": {"reference": patient.reference},
                "occurrenceDateTime": "2024-06-01T09:30:00Z",
            }
        )
    return patient.id, order.id


def test_worklist_from_service_requests(scp: Any, runtime: Any) -> None:
    _order(runtime, accession="A1001")
    _order(runtime, accession="A1002", status="completed")
    _order(
        runtime,
        accession="A1003",
        category={"coding": [{"system": "http://snomed.info/sct", "code": "108252007"}]},
    )
    keys = [
        "PatientName",
        "PatientID",
        "PatientBirthDate",
        "PatientSex",
        "AccessionNumber",
        "StudyInstanceUID",
        "RequestedProcedureID",
        "ScheduledProcedureStepSequence[0].Modality=CT",
        "ScheduledProcedureStepSequence[0].ScheduledProcedureStepStartDate=20240601-20240602",
        "ScheduledProcedureStepSequence[0].ScheduledProcedureStepStartTime",
        "ScheduledProcedureStepSequence[0].ScheduledStationAETitle",
    ]
    args = ["findscu", "-v", "-W", "-aet", "CT01", "-aec", "CONDUIT"]
    for key in keys:
        args += ["-k", key]
    r = dcmtk(*args, "127.0.0.1", str(scp.port))
    text = r.stdout + r.stderr
    assert pending_count(text) == 1, text
    assert "A1001" in text and "Doe^Jane^Q" in text and "MRN-A1001" in text
    assert "19700102" in text and "093000" in text
    # a date range that excludes the order, and a modality that differs: no items
    for excluded in (
        "ScheduledProcedureStepSequence[0].ScheduledProcedureStepStartDate=20240701-",
        "ScheduledProcedureStepSequence[0].Modality=MR",
    ):
        r = dcmtk(
            "findscu",
            "-v",
            "-W",
            "-aec",
            "CONDUIT",
            "-k",
            "PatientName",
            "-k",
            excluded,
            "127.0.0.1",
            str(scp.port),
        )
        assert pending_count(r.stdout + r.stderr) == 0
    r = dcmtk(
        "findscu",
        "-v",
        "-W",
        "-aec",
        "CONDUIT",
        "-k",
        "PatientName=doe*",
        "-k",
        "AccessionNumber",
        "127.0.0.1",
        str(scp.port),
    )
    assert pending_count(r.stdout + r.stderr) == 1


def _mpps(accession: str, patient_id: str, state: str) -> Dataset:
    ds = Dataset()
    step = Dataset()
    step.AccessionNumber = accession
    step.StudyInstanceUID = uid("mpps-study", accession)
    ds.ScheduledStepAttributesSequence = Sequence([step])
    ds.PatientID = patient_id
    ds.PatientName = "DOE^JANE"
    ds.PerformedProcedureStepStatus = state
    ds.PerformedProcedureStepStartDate = "20240601"
    ds.PerformedProcedureStepStartTime = "093500"
    ds.Modality = "CT"
    return ds


def test_mpps_imaging_study_and_worklist_closure(scp: Any, runtime: Any, tmp_path: Path) -> None:
    patient_id, order_id = _order(runtime, accession="ACC0000000")
    ae = AE(ae_title="CT01")
    ae.add_requested_context(ModalityPerformedProcedureStep)
    assoc = ae.associate("127.0.0.1", scp.port, ae_title="CONDUIT")
    assert assoc.is_established
    mpps_uid = uid("mpps", 1)
    status, _ = assoc.send_n_create(
        _mpps("ACC0000000", "MRN-ACC0000000", "IN PROGRESS"), ModalityPerformedProcedureStep, mpps_uid
    )
    assert status.Status == 0x0000
    again, _ = assoc.send_n_create(
        _mpps("ACC0000000", "MRN-ACC0000000", "IN PROGRESS"), ModalityPerformedProcedureStep, mpps_uid
    )
    assert again.Status == 0x0111  # Duplicate SOP Instance
    with runtime.db.unit_of_work() as uow:
        [procedure] = (
            runtime.records(uow).search("Procedure", [("based-on", f"ServiceRequest/{order_id}")]).matches
        )
    assert procedure.resource["status"] == "in-progress"
    assert procedure.resource["subject"]["reference"] == f"Patient/{patient_id}"

    # the modality stores the images of the order (AccessionNumber = the order's ACSN, PatientID = MRN)
    plan = make_corpus(tmp_path / "c", count=4, patients=1, studies_per_patient=1)
    for path in plan.files:
        import pydicom

        ds = pydicom.dcmread(path)
        ds.PatientID = "MRN-ACC0000000"
        ds.save_as(path, enforce_file_format=True)
    r = dcmtk("storescu", "-v", "-aec", "CONDUIT", "127.0.0.1", str(scp.port), *map(str, plan.files))
    assert (r.stdout + r.stderr).count("(Success)") == 4
    pacs = runtime.port("pacs")
    assert pacs.sync_imaging_studies() == 1
    study_uid = plan.studies[0]["StudyInstanceUID"]
    with runtime.db.unit_of_work() as uow:
        repo = runtime.records(uow)
        by_patient = repo.search("ImagingStudy", [("patient", f"Patient/{patient_id}")]).matches
        by_identifier = repo.search(
            "ImagingStudy", [("identifier", f"urn:dicom:uid|urn:oid:{study_uid}")]
        ).matches
        by_accession = repo.search("ImagingStudy", [("identifier", "ACC0000000")]).matches
    assert [s.id for s in by_patient] == [s.id for s in by_identifier] == [s.id for s in by_accession]
    study = by_patient[0].resource
    assert study["status"] == "available"
    assert study["numberOfSeries"] == 2 and study["numberOfInstances"] == 4
    assert study["basedOn"] == [{"reference": f"ServiceRequest/{order_id}"}]
    assert {s["modality"]["code"] for s in study["series"]} == {"CT", "MR"}
    assert study["started"].startswith("2024-01-01")
    # nothing new: the next pass writes nothing
    assert pacs.sync_imaging_studies() == 0

    done = Dataset()
    done.PerformedProcedureStepStatus = "COMPLETED"
    done.PerformedProcedureStepEndDate = "20240601"
    done.PerformedProcedureStepEndTime = "094500"
    status, _ = assoc.send_n_set(done, ModalityPerformedProcedureStep, mpps_uid)
    assert status.Status == 0x0000
    later, _ = assoc.send_n_set(done, ModalityPerformedProcedureStep, mpps_uid)
    assert later.Status == 0x0110  # a completed step is final
    assoc.release()
    with runtime.db.unit_of_work() as uow:
        repo = runtime.records(uow)
        assert repo.read("Procedure", procedure.id).resource["status"] == "completed"
        assert repo.read("ServiceRequest", order_id).resource["status"] == "completed"
    r = dcmtk(
        "findscu",
        "-v",
        "-W",
        "-aec",
        "CONDUIT",
        "-k",
        "AccessionNumber=ACC0000000",
        "127.0.0.1",
        str(scp.port),
    )
    assert pending_count(r.stdout + r.stderr) == 0  # a completed order leaves the worklist


def _commit_request(stored: list[tuple[str, str]], missing: str) -> Dataset:
    ds = Dataset()
    ds.TransactionUID = uid("transaction", missing)
    items = []
    for sop_class, sop_uid in [*stored, (stored[0][0], missing)]:
        item = Dataset()
        item.ReferencedSOPClassUID = sop_class
        item.ReferencedSOPInstanceUID = sop_uid
        items.append(item)
    ds.ReferencedSOPSequence = Sequence(items)
    return ds


def test_storage_commitment_same_association(scp: Any, tmp_path: Path) -> None:
    plan = make_corpus(tmp_path / "c", count=2, patients=1, studies_per_patient=1)
    dcmtk("storescu", "-aec", "CONDUIT", "127.0.0.1", str(scp.port), *map(str, plan.files))
    reports: list[tuple[int, Dataset]] = []
    got = threading.Event()

    def on_report(event: Any) -> int:
        reports.append((event.request.EventTypeID, event.event_information))
        got.set()
        return 0x0000

    ae = AE(ae_title="COMMITSCU")
    ae.add_requested_context(StorageCommitmentPushModel)
    assoc = ae.associate(
        "127.0.0.1", scp.port, ae_title="CONDUIT", evt_handlers=[(evt.EVT_N_EVENT_REPORT, on_report)]
    )
    assert assoc.is_established
    stored = [
        ("1.2.840.10008.5.1.4.1.1.2", plan.sop_instance_uids[0]),
        ("1.2.840.10008.5.1.4.1.1.4", plan.sop_instance_uids[1]),
    ]
    status, _ = assoc.send_n_action(
        _commit_request(stored, uid("never-stored")), 1, StorageCommitmentPushModel, "1.2.840.10008.1.20.1.1"
    )
    assert status.Status == 0x0000
    deadline = time.monotonic() + 10
    while not got.is_set() and time.monotonic() < deadline:
        time.sleep(0.05)
    assoc.release()
    assert got.is_set(), "no N-EVENT-REPORT"
    [(event_type, info)] = reports
    assert event_type == 2  # completed, failures exist
    assert {i.ReferencedSOPInstanceUID for i in info.ReferencedSOPSequence} == {u for _, u in stored}
    [failed] = info.FailedSOPSequence
    assert failed.ReferencedSOPInstanceUID == uid("never-stored")
    assert failed.FailureReason == 0x0112


def test_storage_commitment_new_association(start_scp: Any, tmp_path: Path) -> None:
    """The SCU releases right after N-ACTION: the report comes on a new association to its own SCP."""
    from support import free_port

    reports: list[Dataset] = []
    got = threading.Event()

    def on_report(event: Any) -> int:
        reports.append(event.event_information)
        got.set()
        return 0x0000

    scu_port = free_port()
    listener_ae = AE(ae_title="COMMITSCU")
    listener_ae.add_supported_context(StorageCommitmentPushModel, scu_role=True, scp_role=True)
    server = listener_ae.start_server(
        ("127.0.0.1", scu_port), block=False, evt_handlers=[(evt.EVT_N_EVENT_REPORT, on_report)]
    )
    try:
        scp = start_scp(remotes=f"COMMITSCU@127.0.0.1:{scu_port}")
        plan = make_corpus(tmp_path / "c", count=1, patients=1, studies_per_patient=1)
        dcmtk("storescu", "-aec", "CONDUIT", "127.0.0.1", str(scp.port), str(plan.files[0]))
        ae = AE(ae_title="COMMITSCU")
        ae.add_requested_context(StorageCommitmentPushModel)
        assoc = ae.associate("127.0.0.1", scp.port, ae_title="CONDUIT")
        status, _ = assoc.send_n_action(
            _commit_request([("1.2.840.10008.5.1.4.1.1.2", plan.sop_instance_uids[0])], uid("gone")),
            1,
            StorageCommitmentPushModel,
            "1.2.840.10008.1.20.1.1",
        )
        assoc.release()
        assert status.Status == 0x0000
        assert got.wait(10), "no N-EVENT-REPORT on a new association"
        [info] = reports
        assert len(info.ReferencedSOPSequence) == 1 and len(info.FailedSOPSequence) == 1
    finally:
        server.shutdown()
