"""The PACS index tables (owned by services/pacs; others use the ``pacs`` port, never these models).

One row per patient, study, series and instance, carrying the C-FIND keys of PS3.4 C.6 so every query is
answered by SQL over indexed columns. Dates stay in their DICOM form (``YYYYMMDD``, ``HHMMSS.FFFFFF``):
string order is date order, so range matching is a plain ``BETWEEN``. Person names are kept as received
and upper-cased in ``*_norm`` columns for case-insensitive matching. The "Number of ... Related ..."
keys are counted when asked for (indexed foreign keys), so storing an instance into a known series
writes one INSERT and one UPDATE, not a cascade of counter updates.
"""

from __future__ import annotations

from datetime import datetime

from sqlalchemy import BigInteger, Boolean, DateTime, ForeignKey, Integer, String, Text
from sqlalchemy.orm import Mapped, mapped_column

from engine.db import Base

__all__ = ["PacsPatient", "PacsStudy", "PacsSeries", "PacsInstance", "PacsMpps", "PacsForwardJob"]


class PacsPatient(Base):
    __tablename__ = "pacs_patient"

    pk: Mapped[int] = mapped_column(Integer, primary_key=True)
    patient_id: Mapped[str] = mapped_column(String(64), unique=True)  # (0010,0020) LO
    patient_name: Mapped[str] = mapped_column(String(324), default="")  # (0010,0010) PN
    patient_name_norm: Mapped[str] = mapped_column(String(324), default="", index=True)
    patient_birth_date: Mapped[str] = mapped_column(String(8), default="")  # (0010,0030) DA
    patient_sex: Mapped[str] = mapped_column(String(16), default="")  # (0010,0040) CS


class PacsStudy(Base):
    __tablename__ = "pacs_study"

    pk: Mapped[int] = mapped_column(Integer, primary_key=True)
    patient_pk: Mapped[int] = mapped_column(ForeignKey("pacs_patient.pk"), index=True)
    study_instance_uid: Mapped[str] = mapped_column(String(64), unique=True)
    study_date: Mapped[str] = mapped_column(String(8), default="", index=True)
    study_time: Mapped[str] = mapped_column(String(16), default="")
    accession_number: Mapped[str] = mapped_column(String(16), default="", index=True)
    study_id: Mapped[str] = mapped_column(String(16), default="")
    study_description: Mapped[str] = mapped_column(String(64), default="")
    referring_physician_name: Mapped[str] = mapped_column(String(324), default="")
    referring_physician_name_norm: Mapped[str] = mapped_column(String(324), default="")
    modalities_in_study: Mapped[str] = mapped_column(String(256), default="")
    """Backslash-joined, with a leading and trailing backslash (``\\CT\\SR\\``) so LIKE finds one code."""
    fhir_dirty: Mapped[bool] = mapped_column(Boolean, default=True, index=True)
    """Set with every index change; cleared by the ImagingStudy sync once the FHIR resource is current."""
    change_seq: Mapped[int] = mapped_column(Integer, default=0)
    imaging_study_id: Mapped[str | None] = mapped_column(String(64), default=None)
    updated_at: Mapped[datetime] = mapped_column(DateTime(timezone=True))


class PacsSeries(Base):
    __tablename__ = "pacs_series"

    pk: Mapped[int] = mapped_column(Integer, primary_key=True)
    study_pk: Mapped[int] = mapped_column(ForeignKey("pacs_study.pk"), index=True)
    series_instance_uid: Mapped[str] = mapped_column(String(64), unique=True)
    modality: Mapped[str] = mapped_column(String(16), default="", index=True)
    series_number: Mapped[int | None] = mapped_column(Integer, default=None)
    series_description: Mapped[str] = mapped_column(String(64), default="")
    series_date: Mapped[str] = mapped_column(String(8), default="")


class PacsInstance(Base):
    __tablename__ = "pacs_instance"

    pk: Mapped[int] = mapped_column(Integer, primary_key=True)
    series_pk: Mapped[int] = mapped_column(ForeignKey("pacs_series.pk"), index=True)
    sop_instance_uid: Mapped[str] = mapped_column(String(64), unique=True)
    sop_class_uid: Mapped[str] = mapped_column(String(64), index=True)
    instance_number: Mapped[int | None] = mapped_column(Integer, default=None)
    transfer_syntax_uid: Mapped[str] = mapped_column(String(64))
    storage_key: Mapped[str] = mapped_column(String(128))
    size: Mapped[int] = mapped_column(BigInteger)
    calling_ae: Mapped[str] = mapped_column(String(16), default="")
    stored_at: Mapped[datetime] = mapped_column(DateTime(timezone=True))


class PacsMpps(Base):
    """One Modality Performed Procedure Step (PS3.4 F.7) and the FHIR Procedure that mirrors it."""

    __tablename__ = "pacs_mpps"

    pk: Mapped[int] = mapped_column(Integer, primary_key=True)
    sop_instance_uid: Mapped[str] = mapped_column(String(64), unique=True)
    status: Mapped[str] = mapped_column(String(16))  # IN PROGRESS | COMPLETED | DISCONTINUED
    accession_number: Mapped[str] = mapped_column(String(16), default="")
    patient_id: Mapped[str] = mapped_column(String(64), default="")
    procedure_id: Mapped[str | None] = mapped_column(String(64), default=None)
    attributes: Mapped[str] = mapped_column(Text, default="{}")
    """The step's attributes as DICOM JSON (PS3.18 F.2), merged on every N-SET."""
    updated_at: Mapped[datetime] = mapped_column(DateTime(timezone=True))


class PacsForwardJob(Base):
    """A durable queue of instances to C-STORE to a remote AE (auto-forward rules)."""

    __tablename__ = "pacs_forward_job"

    pk: Mapped[int] = mapped_column(Integer, primary_key=True)
    sop_instance_uid: Mapped[str] = mapped_column(String(64), index=True)
    destination: Mapped[str] = mapped_column(String(16))
    status: Mapped[str] = mapped_column(String(16), default="pending", index=True)  # pending|sent|failed
    attempts: Mapped[int] = mapped_column(Integer, default=0)
    next_attempt_at: Mapped[datetime] = mapped_column(DateTime(timezone=True), index=True)
    claimed_until: Mapped[datetime | None] = mapped_column(DateTime(timezone=True), default=None)
    last_error: Mapped[str] = mapped_column(String(256), default="")
