"""Keep one FHIR ImagingStudy per stored study current (R4 ImagingStudy), built from the index.

C-STORE only marks the study (``fhir_dirty``, ``change_seq``, ``updated_at``) inside its own index
transaction; this sync runs beside it (``runtime.background``) and writes a study once it has been quiet
for a moment (or has waited ``max_delay``), coalescing a whole burst of instances into one resource
version — rewriting a 500-instance ImagingStudy twice a second would cost the C-STORE path its CPU and
the database's write lock. Each study is written in its own unit of work together with
clearing its marker — only if ``change_seq`` did not move meanwhile, so nothing that arrives during the
write is missed. A crash between the two simply leaves the study dirty for the next pass.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable
from datetime import UTC, datetime
from typing import Any

from sqlalchemy import select, update

from engine.db import Database, UnitOfWork
from services.pacs.fhir import (
    DICOM_UID_SYSTEM,
    ensure_patient,
    fhir_datetime,
    find_service_request,
)
from services.pacs.logs import log_failure
from services.pacs.models import PacsInstance, PacsPatient, PacsSeries, PacsStudy
from services.pacs.tx import write_uow

__all__ = ["sync_dirty_studies", "build_imaging_study", "STUDY_IDENTIFIER"]

log = logging.getLogger(__name__)

DCM = "http://dicom.nema.org/resources/ontology/DCM"


def STUDY_IDENTIFIER(study_instance_uid: str) -> str:  # noqa: N802 - reads like the identifier it builds
    return f"{DICOM_UID_SYSTEM}|urn:oid:{study_instance_uid}"


def build_imaging_study(
    uow: UnitOfWork, study: PacsStudy, patient: PacsPatient, subject: str | None, based_on: str | None
) -> dict[str, Any]:
    series_rows = uow.session.scalars(
        select(PacsSeries)
        .where(PacsSeries.study_pk == study.pk)
        .order_by(PacsSeries.series_number, PacsSeries.pk)
    ).all()
    instances = uow.session.execute(
        select(
            PacsInstance.series_pk,
            PacsInstance.sop_instance_uid,
            PacsInstance.sop_class_uid,
            PacsInstance.instance_number,
        )
        .join(PacsSeries, PacsSeries.pk == PacsInstance.series_pk)
        .where(PacsSeries.study_pk == study.pk)
        .order_by(PacsInstance.instance_number, PacsInstance.pk)
    ).all()
    by_series: dict[int, list[Any]] = {}
    for row in instances:
        by_series.setdefault(row.series_pk, []).append(row)
    series_json = []
    for s in series_rows:
        members = by_series.get(s.pk, [])
        entry: dict[str, Any] = {
            "uid": s.series_instance_uid,
            "modality": {"system": DCM, "code": s.modality or "OT"},
            "numberOfInstances": len(members),
            "instance": [
                {
                    "uid": m.sop_instance_uid,
                    "sopClass": {"system": "urn:ietf:rfc:3986", "code": f"urn:oid:{m.sop_class_uid}"},
                    **({"number": m.instance_number} if m.instance_number is not None else {}),
                }
                for m in members
            ],
        }
        if s.series_number is not None:
            entry["number"] = s.series_number
        if s.series_description:
            entry["description"] = s.series_description
        series_json.append(entry)
    resource: dict[str, Any] = {
        "resourceType": "ImagingStudy",
        "identifier": [{"system": DICOM_UID_SYSTEM, "value": f"urn:oid:{study.study_instance_uid}"}],
        "status": "available",
        "subject": {"reference": subject} if subject else {"display": patient.patient_name or "unknown"},
        "numberOfSeries": len(series_rows),
        "numberOfInstances": len(instances),
        "series": series_json,
    }
    modalities = [c for c in study.modalities_in_study.split("\\") if c]
    if modalities:
        resource["modality"] = [{"system": DCM, "code": c} for c in modalities]
    started = fhir_datetime(study.study_date, study.study_time)
    if started:
        resource["started"] = started
    if study.study_description:
        resource["description"] = study.study_description
    if based_on:
        resource["basedOn"] = [{"reference": based_on}]
    if study.accession_number:
        resource["identifier"].append(
            {
                "type": {
                    "coding": [{"system": "http://terminology.hl7.org/CodeSystem/v2-0203", "code": "ACSN"}]
                },
                "value": study.accession_number,
            }
        )
    return resource


def due_studies(
    db: Database, *, limit: int, quiet_seconds: float, max_delay: float, first_seen: dict[int, float]
) -> list[tuple[int, int]]:
    """Dirty studies to write now: quiet for ``quiet_seconds`` (no instance arrived), or dirty for
    ``max_delay`` already — so a burst of 500 instances gives one or two versions, not hundreds, and a
    study that keeps receiving is still refreshed regularly. ``first_seen`` (pk -> monotonic time) is
    the caller's memory of when it first saw each study dirty."""
    now_wall = datetime.now(UTC)
    now = time.monotonic()
    with db.engine.connect() as conn:
        rows = conn.execute(
            select(PacsStudy.pk, PacsStudy.change_seq, PacsStudy.updated_at)
            .where(PacsStudy.fhir_dirty.is_(True))
            .order_by(PacsStudy.updated_at)
            .limit(limit * 4)
        ).all()
    due = []
    for pk, seq, updated_at in rows:
        seen = first_seen.setdefault(pk, now)
        if updated_at.tzinfo is None:  # SQLite returns naive datetimes (stored in UTC)
            updated_at = updated_at.replace(tzinfo=UTC)
        if (now_wall - updated_at).total_seconds() >= quiet_seconds or now - seen >= max_delay:
            due.append((pk, seq))
    return due[:limit]


def sync_dirty_studies(
    db: Database,
    records: Callable[[UnitOfWork], Any],
    *,
    patient_id_system: str | None,
    limit: int = 50,
    quiet_seconds: float = 0.0,
    max_delay: float = 15.0,
    first_seen: dict[int, float] | None = None,
) -> int:
    """Bring up to ``limit`` due studies' ImagingStudy resources up to date; returns how many."""
    first_seen = first_seen if first_seen is not None else {}
    dirty = due_studies(
        db, limit=limit, quiet_seconds=quiet_seconds, max_delay=max_delay, first_seen=first_seen
    )
    done = 0
    for study_pk, seen_seq in dirty:
        first_seen.pop(study_pk, None)
        try:
            with write_uow(db) as uow:
                study = uow.session.get(PacsStudy, study_pk)
                if study is None:
                    continue
                patient = uow.session.get(PacsPatient, study.patient_pk)
                assert patient is not None
                repo = records(uow)
                subject = ensure_patient(
                    repo,
                    patient_id=patient.patient_id,
                    system=patient_id_system,
                    name=patient.patient_name,
                    birth_date=patient.patient_birth_date,
                    sex=patient.patient_sex,
                )
                order = find_service_request(repo, study.accession_number)
                resource = build_imaging_study(
                    uow,
                    study,
                    patient,
                    subject.reference if subject else None,
                    order.reference if order else None,
                )
                if study.imaging_study_id:
                    resource["id"] = study.imaging_study_id
                    stored, _ = repo.update("ImagingStudy", study.imaging_study_id, resource)
                else:
                    stored, _ = repo.conditional_update(
                        "ImagingStudy", [("identifier", STUDY_IDENTIFIER(study.study_instance_uid))], resource
                    )
                uow.session.execute(
                    update(PacsStudy)
                    .where(PacsStudy.pk == study_pk, PacsStudy.change_seq == seen_seq)
                    .values(fhir_dirty=False, imaging_study_id=stored.id)
                )
                uow.session.execute(
                    update(PacsStudy).where(PacsStudy.pk == study_pk).values(imaging_study_id=stored.id)
                )
            done += 1
        except Exception:
            log_failure(log, "ImagingStudy sync failed for one study; it stays marked for the next pass")
    return done
