"""Keep one FHIR ImagingStudy per stored study current (R4 ImagingStudy), built from the index.

C-STORE only marks the study (``fhir_dirty``, ``change_seq``, ``updated_at``) inside its own index
transaction; this sync runs beside it (``runtime.background``) and writes a study once it has been quiet
for a moment (or has waited ``max_delay``), coalescing a whole burst of instances into one resource
version — rewriting a 500-instance ImagingStudy twice a second would cost the C-STORE path its CPU and
the database's write lock. Each study is written in its own unit of work together with
clearing its marker — only if ``change_seq`` did not move meanwhile, so nothing that arrives during the
write is missed. A crash between the two simply leaves the study dirty for the next pass.

What the ImagingStudy says is declared by a DICOM mapping (``mappings/dicom/imaging_study.yaml``, or the
site's mapping named by ``imaging_study_mapping``); this module presents the study from the index rows
(no file is read again) and resolves the two references the mapping cannot: the Patient of PatientID and
the ServiceRequest of AccessionNumber. Beside it goes the mapping's Provenance (as HL7 mappings make):
one per study and mapping, updated with it, targeting the ImagingStudy version written.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable
from datetime import UTC, datetime
from typing import Any

from sqlalchemy import select, update

from engine.db import Database, UnitOfWork
from engine.errors import ConfigurationError, MappingError
from engine.fhir.repository import StoredResource
from engine.mapping.dicom import run_study
from engine.mapping.dicom_study import DicomStudy, study_tree
from engine.mapping.registry import default_registry
from engine.mapping.spec import Mapping
from services.pacs.fhir import DICOM_UID_SYSTEM, ensure_patient, find_service_request
from services.pacs.logs import log_failure
from services.pacs.models import PacsInstance, PacsPatient, PacsSeries, PacsStudy
from services.pacs.tx import write_uow

__all__ = [
    "sync_dirty_studies",
    "build_imaging_study",
    "build_study_resources",
    "check_imaging_study_mapping",
    "study_input",
    "STUDY_IDENTIFIER",
    "IMAGING_STUDY_MAPPING",
]

log = logging.getLogger(__name__)

#: the shipped DICOM mapping that declares the ImagingStudy (mappings/dicom/imaging_study.yaml)
IMAGING_STUDY_MAPPING = "dicom-imaging-study"

# index column -> DICOM keyword, per level: what the mapping reads (the index holds no more of the header)
_PATIENT = (
    ("patient_id", "PatientID"),
    ("patient_name", "PatientName"),
    ("patient_birth_date", "PatientBirthDate"),
    ("patient_sex", "PatientSex"),
)
_STUDY = (
    ("study_instance_uid", "StudyInstanceUID"),
    ("study_date", "StudyDate"),
    ("study_time", "StudyTime"),
    ("accession_number", "AccessionNumber"),
    ("study_id", "StudyID"),
    ("study_description", "StudyDescription"),
    ("referring_physician_name", "ReferringPhysicianName"),
)
_SERIES = (
    ("series_instance_uid", "SeriesInstanceUID"),
    ("modality", "Modality"),
    ("series_description", "SeriesDescription"),
    ("series_date", "SeriesDate"),
)


def STUDY_IDENTIFIER(study_instance_uid: str) -> str:  # noqa: N802 - reads like the identifier it builds
    return f"{DICOM_UID_SYSTEM}|urn:oid:{study_instance_uid}"


def study_input(
    uow: UnitOfWork, study: PacsStudy, patient: PacsPatient, subject: str | None, based_on: str | None
) -> DicomStudy:
    """The study as the DICOM mapping reads it, from the index rows (series in SeriesNumber order, their
    instances in InstanceNumber order); ``subject`` and ``based_on`` are the references resolved here."""
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
            PacsInstance.calling_ae,
        )
        .join(PacsSeries, PacsSeries.pk == PacsInstance.series_pk)
        .where(PacsSeries.study_pk == study.pk)
        .order_by(PacsInstance.instance_number, PacsInstance.pk)
    ).all()
    by_series: dict[int, list[dict[str, str]]] = {}
    senders: set[str] = set()
    for series_pk, sop_instance_uid, sop_class_uid, number, calling_ae in instances:
        senders.add(calling_ae)
        attrs = {"SOPInstanceUID": sop_instance_uid, "SOPClassUID": sop_class_uid}
        if number is not None:
            attrs["InstanceNumber"] = str(number)
        by_series.setdefault(series_pk, []).append(attrs)
    study_attrs = {kw: getattr(patient, col) for col, kw in _PATIENT}
    study_attrs.update((kw, getattr(study, col)) for col, kw in _STUDY)
    study_attrs["ModalitiesInStudy"] = study.modalities_in_study.strip("\\")
    series = []
    for s in series_rows:
        attrs = {kw: getattr(s, col) for col, kw in _SERIES}
        if s.series_number is not None:
            attrs["SeriesNumber"] = str(s.series_number)
        series.append((attrs, by_series.get(s.pk, [])))
    calling_ae = ", ".join(sorted(ae.strip() for ae in senders if ae and ae.strip()))
    return study_tree(
        study_attrs, series, inputs={"patient": subject, "order": based_on}, calling_ae=calling_ae
    )


def build_imaging_study(
    uow: UnitOfWork,
    study: PacsStudy,
    patient: PacsPatient,
    subject: str | None,
    based_on: str | None,
    mapping: Mapping | None = None,
) -> dict[str, Any]:
    """The ImagingStudy the DICOM mapping declares for this study (the shipped one unless given)."""
    return build_study_resources(uow, study, patient, subject, based_on, mapping)[0]


def build_study_resources(
    uow: UnitOfWork,
    study: PacsStudy,
    patient: PacsPatient,
    subject: str | None,
    based_on: str | None,
    mapping: Mapping | None = None,
) -> tuple[dict[str, Any], dict[str, Any] | None]:
    """The ImagingStudy the DICOM mapping declares for this study, and its Provenance (None when the
    mapping says ``provenance: false``) — whose target and ``recorded`` the caller sets once the
    ImagingStudy is stored."""
    mapping = mapping or default_registry().get_dicom(IMAGING_STUDY_MAPPING)
    output = run_study(mapping, study_input(uow, study, patient, subject, based_on))
    for issue in output.issues:  # locations and reasons only: the values stay out of the log
        log.warning("ImagingStudy mapping %s: %s at %s", mapping.name, issue.message, issue.location)
    resources = [dict(entry["resource"]) for entry in output.bundle["entry"]]
    imaging = next((r for r in resources if r["resourceType"] == "ImagingStudy"), None)
    if imaging is None:
        raise MappingError(f"{mapping.name}: the mapping made no ImagingStudy")
    provenance = next((r for r in resources if r["resourceType"] == "Provenance"), None)
    return imaging, provenance


def write_provenance(repo: Any, provenance: dict[str, Any], stored: StoredResource) -> None:
    """Store the study's Provenance under its derived id (one per study and mapping: a re-sync updates
    it). It targets the ImagingStudy version just written and is ``recorded`` when that version was: a
    re-sync that leaves the ImagingStudy as it was leaves its Provenance as it was too (no new version)."""
    provenance["target"] = [{"reference": f"ImagingStudy/{stored.id}/_history/{stored.version_id}"}]
    provenance["recorded"] = stored.last_updated.astimezone(UTC).isoformat(timespec="milliseconds")
    repo.update("Provenance", provenance["id"], provenance)


def check_imaging_study_mapping(name: str) -> Mapping:
    """The DICOM mapping the ``imaging_study_mapping`` setting names, checked when the PACS is installed: a
    misspelt name fails the start with the setting and the known names, not every sync pass later."""
    registry = default_registry()
    mapping = registry.dicom.get(name)
    if mapping is None or mapping.abstract:
        known = ", ".join(sorted(n for n, m in registry.dicom.items() if not m.abstract)) or "none"
        what = "is abstract (extends only)" if mapping is not None else "is not a DICOM mapping"
        raise ConfigurationError(
            f"CONDUIT_DICOM_IMAGING_STUDY_MAPPING (dicom: imaging_study_mapping) = {name!r} {what}; "
            f"the DICOM mappings known are: {known} (from {', '.join(map(str, registry.dirs))})"
        )
    return mapping


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
    mapping: str = IMAGING_STUDY_MAPPING,
) -> int:
    """Bring up to ``limit`` due studies' ImagingStudy resources up to date with the DICOM mapping named
    ``mapping``; returns how many."""
    first_seen = first_seen if first_seen is not None else {}
    dirty = due_studies(
        db, limit=limit, quiet_seconds=quiet_seconds, max_delay=max_delay, first_seen=first_seen
    )
    if not dirty:
        return 0
    declared = default_registry().get_dicom(mapping)
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
                resource, provenance = build_study_resources(
                    uow,
                    study,
                    patient,
                    subject.reference if subject else None,
                    order.reference if order else None,
                    declared,
                )
                if study.imaging_study_id:
                    resource["id"] = study.imaging_study_id
                    stored, _ = repo.update("ImagingStudy", study.imaging_study_id, resource)
                else:
                    stored, _ = repo.conditional_update(
                        "ImagingStudy", [("identifier", STUDY_IDENTIFIER(study.study_instance_uid))], resource
                    )
                if provenance is not None:
                    write_provenance(repo, provenance, stored)
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
