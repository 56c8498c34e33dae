"""Modality Performed Procedure Step (PS3.4 F.7) as FHIR Procedure resources.

Choice: each MPPS instance is mirrored by one FHIR **Procedure** (identifier ``urn:dicom:uid`` /
``urn:oid:<MPPS SOP Instance UID>``), ``basedOn`` the ServiceRequest whose ACSN identifier equals the
step's Accession Number, subject the Patient of its PatientID (created when unknown). N-CREATE (status
IN PROGRESS) creates it ``in-progress``; N-SET to COMPLETED makes it ``completed`` and the ServiceRequest
``completed`` (so it leaves the worklist); DISCONTINUED makes it ``stopped`` and leaves the order active
(it may be rescheduled). The step's own attributes are kept as DICOM JSON in ``pacs_mpps`` and merged on
every N-SET; a step that is no longer IN PROGRESS refuses further N-SETs (PS3.4 F.7.2.2.4).
"""

from __future__ import annotations

import json
import logging
from datetime import UTC, datetime
from typing import Any

from pydicom.dataset import Dataset
from sqlalchemy import select

from engine.db import Database, UnitOfWork
from services.pacs import status
from services.pacs.fhir import DICOM_UID_SYSTEM, ensure_patient, fhir_datetime, find_service_request
from services.pacs.models import PacsMpps
from services.pacs.tx import write_uow
from services.pacs.uids import is_valid_uid

__all__ = ["MppsService"]

log = logging.getLogger(__name__)

_PROCEDURE_STATUS = {"IN PROGRESS": "in-progress", "COMPLETED": "completed", "DISCONTINUED": "stopped"}


def _first(ds: Dataset, sequence: str, keyword: str) -> str:
    seq = ds.get(sequence)
    if seq:
        return str(seq[0].get(keyword, "") or "").strip()
    return ""


class MppsService:
    def __init__(self, db: Database, records: Any, patient_id_system: str | None) -> None:
        self.db = db
        self.records = records  # callable(uow) -> ResourceRepository
        self.patient_id_system = patient_id_system

    def create(self, sop_instance_uid: str, attributes: Dataset) -> tuple[int, Dataset | None]:
        uid = sop_instance_uid.rstrip("\x00 ")
        if not is_valid_uid(uid):
            return status.INVALID_OBJECT_INSTANCE, None
        state = str(attributes.get("PerformedProcedureStepStatus", "") or "").strip().upper()
        if state != "IN PROGRESS":
            # PS3.4 F.7.2.1.1: a step is created IN PROGRESS
            return status.INVALID_ATTRIBUTE_VALUE, None
        accession = _first(attributes, "ScheduledStepAttributesSequence", "AccessionNumber")
        patient_id = str(attributes.get("PatientID", "") or "").strip()
        with write_uow(self.db) as uow:
            if uow.session.scalar(select(PacsMpps.pk).where(PacsMpps.sop_instance_uid == uid)) is not None:
                return status.DUPLICATE_SOP_INSTANCE, None
            procedure_id = self._write_procedure(uow, uid, attributes, accession, patient_id, None)
            uow.session.add(
                PacsMpps(
                    sop_instance_uid=uid,
                    status=state,
                    accession_number=accession[:16],
                    patient_id=patient_id[:64],
                    procedure_id=procedure_id,
                    attributes=attributes.to_json(),
                    updated_at=datetime.now(UTC),
                )
            )
        return status.SUCCESS, attributes

    def set(self, sop_instance_uid: str, modifications: Dataset) -> tuple[int, Dataset | None]:
        uid = sop_instance_uid.rstrip("\x00 ")
        with write_uow(self.db) as uow:
            row = uow.session.scalar(select(PacsMpps).where(PacsMpps.sop_instance_uid == uid))
            if row is None:
                return status.NO_SUCH_OBJECT_INSTANCE, None
            if row.status != "IN PROGRESS":
                return status.PROCESSING_FAILURE, None  # completed/discontinued steps are final
            merged = Dataset.from_json(json.loads(row.attributes))
            for elem in modifications:
                merged[elem.tag] = elem
            state = str(merged.get("PerformedProcedureStepStatus", "") or "").strip().upper()
            if state not in _PROCEDURE_STATUS:
                return status.INVALID_ATTRIBUTE_VALUE, None
            row.procedure_id = self._write_procedure(
                uow, uid, merged, row.accession_number, row.patient_id, row.procedure_id
            )
            row.status = state
            row.attributes = merged.to_json()
            row.updated_at = datetime.now(UTC)
        return status.SUCCESS, modifications

    def _write_procedure(
        self,
        uow: UnitOfWork,
        uid: str,
        ds: Dataset,
        accession: str,
        patient_id: str,
        procedure_id: str | None,
    ) -> str | None:
        repo = self.records(uow)
        state = str(ds.get("PerformedProcedureStepStatus", "") or "").strip().upper()
        patient = ensure_patient(
            repo,
            patient_id=patient_id,
            system=self.patient_id_system,
            name=str(ds.get("PatientName", "") or ""),
            birth_date=str(ds.get("PatientBirthDate", "") or ""),
            sex=str(ds.get("PatientSex", "") or ""),
        )
        order = find_service_request(repo, accession)
        if patient is None and order is not None:
            subject = order.resource.get("subject")
        else:
            subject = {"reference": patient.reference} if patient else None
        if subject is None:
            log.warning("MPPS without PatientID or matching order: no Procedure recorded")
            return procedure_id
        procedure: dict[str, Any] = {
            "resourceType": "Procedure",
            "identifier": [{"system": DICOM_UID_SYSTEM, "value": f"urn:oid:{uid}"}],
            "status": _PROCEDURE_STATUS[state],
            "subject": subject,
        }
        if order is not None:
            procedure["basedOn"] = [{"reference": order.reference}]
            if order.resource.get("code"):
                procedure["code"] = order.resource["code"]
        description = str(ds.get("PerformedProcedureStepDescription", "") or "")
        if description and "code" not in procedure:
            procedure["code"] = {"text": description}
        start = fhir_datetime(
            str(ds.get("PerformedProcedureStepStartDate", "") or ""),
            str(ds.get("PerformedProcedureStepStartTime", "") or ""),
        )
        end = fhir_datetime(
            str(ds.get("PerformedProcedureStepEndDate", "") or ""),
            str(ds.get("PerformedProcedureStepEndTime", "") or ""),
        )
        if start or end:
            procedure["performedPeriod"] = {k: v for k, v in (("start", start), ("end", end)) if v}
        if procedure_id:
            procedure["id"] = procedure_id
            stored, _ = repo.update("Procedure", procedure_id, procedure)
        else:
            stored = repo.create(procedure)
        if order is not None and state == "COMPLETED" and order.resource.get("status") == "active":
            updated = dict(order.resource)
            updated["status"] = "completed"
            repo.update("ServiceRequest", order.id, updated)
        return str(stored.id)
