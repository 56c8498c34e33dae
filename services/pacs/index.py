"""Write index rows for stored instances (one call per group-committed batch, inside its transaction).

Two paths: an instance of a series this process has already indexed takes the fast path (one SELECT, one
INSERT, one UPDATE of the study's change marker, Core statements); the first instance of a series goes
through the ORM to create or complete patient, study and series rows.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta

from sqlalchemy import bindparam, insert, select, update
from sqlalchemy.orm import Session

from services.pacs.header import InstanceHeader, person_name_norm
from services.pacs.models import PacsForwardJob, PacsInstance, PacsPatient, PacsSeries, PacsStudy

__all__ = ["IndexEntry", "IndexResult", "SeriesKeys", "write_entries", "add_modality"]


@dataclass(frozen=True)
class IndexEntry:
    header: InstanceHeader
    storage_key: str
    size: int
    calling_ae: str
    overwrite: bool
    forward_to: tuple[str, ...] = ()


@dataclass(frozen=True)
class SeriesKeys:
    series_pk: int
    study_pk: int


@dataclass
class IndexResult:
    created: bool
    """False when the SOP Instance UID was already indexed (kept or overwritten)."""
    replaced_key: str | None = None
    """Storage key of an overwritten copy stored under another key (delete it after the commit)."""
    series: SeriesKeys | None = None


def add_modality(modalities: str, modality: str) -> str:
    """``\\CT\\`` + ``SR`` -> ``\\CT\\SR\\`` (ModalitiesInStudy, kept LIKE-searchable)."""
    if not modality:
        return modalities
    codes = [c for c in modalities.split("\\") if c]
    if modality in codes:
        return modalities
    return "\\" + "\\".join([*codes, modality]) + "\\"


def _fill(row: object, values: dict[str, object]) -> None:
    # later instances complete what earlier ones left empty, never blank out a known value
    for name, value in values.items():
        if value not in ("", None) and getattr(row, name) != value:
            setattr(row, name, value)


def _series_rows(session: Session, h: InstanceHeader, now: datetime) -> SeriesKeys:
    """Find or create the patient, study and series of ``h`` (ORM path)."""
    patient = session.scalar(select(PacsPatient).where(PacsPatient.patient_id == h.patient_id))
    name_norm = person_name_norm(h.patient_name)
    if patient is None:
        patient = PacsPatient(
            patient_id=h.patient_id,
            patient_name=h.patient_name,
            patient_name_norm=name_norm,
            patient_birth_date=h.patient_birth_date,
            patient_sex=h.patient_sex,
        )
        session.add(patient)
        session.flush()
    else:
        _fill(
            patient,
            {
                "patient_name": h.patient_name,
                "patient_name_norm": name_norm,
                "patient_birth_date": h.patient_birth_date,
                "patient_sex": h.patient_sex,
            },
        )
    study = session.scalar(select(PacsStudy).where(PacsStudy.study_instance_uid == h.study_instance_uid))
    study_values = {
        "study_date": h.study_date,
        "study_time": h.study_time,
        "accession_number": h.accession_number,
        "study_id": h.study_id,
        "study_description": h.study_description,
        "referring_physician_name": h.referring_physician_name,
        "referring_physician_name_norm": person_name_norm(h.referring_physician_name),
    }
    if study is None:
        study = PacsStudy(
            patient_pk=patient.pk,
            study_instance_uid=h.study_instance_uid,
            modalities_in_study="",
            fhir_dirty=True,
            change_seq=0,
            updated_at=now,
            **study_values,
        )
        session.add(study)
        session.flush()
    else:
        _fill(study, study_values)
    series = session.scalar(select(PacsSeries).where(PacsSeries.series_instance_uid == h.series_instance_uid))
    if series is None:
        series = PacsSeries(
            study_pk=study.pk,
            series_instance_uid=h.series_instance_uid,
            modality=h.modality,
            series_number=h.series_number,
            series_description=h.series_description,
            series_date=h.series_date,
        )
        session.add(series)
    else:
        _fill(
            series,
            {
                "modality": h.modality,
                "series_number": h.series_number,
                "series_description": h.series_description,
            },
        )
    modalities = add_modality(study.modalities_in_study, h.modality)
    if modalities != study.modalities_in_study:
        study.modalities_in_study = modalities
    session.flush()
    return SeriesKeys(series.pk, study.pk)


#: the fast path's statements, built once (constructing SQLAlchemy statements per call costs more CPU than
#: running them) and executed on the Core connection, bypassing the ORM's bulk machinery
_FIND_INSTANCE = select(PacsInstance.pk, PacsInstance.storage_key).where(
    PacsInstance.sop_instance_uid == bindparam("uid")
)
_INSERT_INSTANCE = insert(PacsInstance)
_UPDATE_INSTANCE = update(PacsInstance).where(PacsInstance.pk == bindparam("instance_pk"))
_INSERT_FORWARD = insert(PacsForwardJob)
_TOUCH_STUDY = (
    update(PacsStudy)
    .where(PacsStudy.pk == bindparam("study_pk"))
    .values(fhir_dirty=True, change_seq=PacsStudy.change_seq + 1, updated_at=bindparam("now"))
)


def write_entries(
    session: Session, entries: Sequence[IndexEntry], known_series: dict[str, SeriesKeys]
) -> list[IndexResult]:
    """Index ``entries``; ``known_series`` (series UID -> keys) is read, never changed here: the caller
    merges the returned ``IndexResult.series`` after the commit succeeded."""
    now = datetime.now(UTC)
    batch_series: dict[str, SeriesKeys] = {}
    dirty_studies: set[int] = set()
    results = []
    for entry in entries:
        h = entry.header
        keys = batch_series.get(h.series_instance_uid) or known_series.get(h.series_instance_uid)
        if keys is None:
            keys = _series_rows(session, h, now)
            batch_series[h.series_instance_uid] = keys
        conn = session.connection()
        existing = conn.execute(_FIND_INSTANCE, {"uid": h.sop_instance_uid}).first()
        result = IndexResult(created=existing is None, series=keys)
        values = {
            "series_pk": keys.series_pk,
            "sop_class_uid": h.sop_class_uid,
            "instance_number": h.instance_number,
            "transfer_syntax_uid": h.transfer_syntax_uid,
            "storage_key": entry.storage_key,
            "size": entry.size,
            "calling_ae": entry.calling_ae,
            "stored_at": now,
        }
        if existing is None:
            conn.execute(_INSERT_INSTANCE, {"sop_instance_uid": h.sop_instance_uid, **values})
        elif entry.overwrite:
            if existing.storage_key != entry.storage_key:
                result.replaced_key = existing.storage_key
            conn.execute(_UPDATE_INSTANCE, {"instance_pk": existing.pk, **values})
        if result.created or entry.overwrite:
            dirty_studies.add(keys.study_pk)
            for destination in entry.forward_to:
                conn.execute(
                    _INSERT_FORWARD,
                    {
                        "sop_instance_uid": h.sop_instance_uid,
                        "destination": destination,
                        "status": "pending",
                        "attempts": 0,
                        "next_attempt_at": now - timedelta(seconds=1),
                        "last_error": "",
                    },
                )
        results.append(result)
    for study_pk in sorted(dirty_studies):
        # the ImagingStudy sync picks up studies whose change_seq moved past what it last wrote
        session.connection().execute(_TOUCH_STUDY, {"study_pk": study_pk, "now": now})
    return results
