"""Settings of the PACS service (environment prefix ``CONDUIT_DICOM_``, YAML section ``dicom:``).

The DICOM adapter reads the network half of the same section (adapters/dicom/settings.py); the two classes
share the prefix so a site configures DICOM in one place. Example conduit.yaml::

    dicom:
      duplicate_policy: keep
      case_insensitive_names: true
      forward_rules:
        - {destination: ARCHIVE, modality: CT}
        - {destination: AI_NODE, calling_ae: CT01}
"""

from __future__ import annotations

import json
from typing import Any, Literal

from pydantic import BaseModel, Field, field_validator
from pydantic_settings import SettingsConfigDict

from engine.settings import SectionSettings

__all__ = ["ForwardRule", "PacsSettings"]


class ForwardRule(BaseModel):
    """Send every stored instance that matches all the given criteria to ``destination`` (a remote AE
    title from CONDUIT_DICOM_REMOTES). Criteria left empty match anything."""

    destination: str
    modality: str | None = None
    calling_ae: str | None = None
    sop_class_uid: str | None = None

    def matches(self, *, modality: str, calling_ae: str, sop_class_uid: str) -> bool:
        return (
            (self.modality is None or self.modality.upper() == modality.upper())
            and (self.calling_ae is None or self.calling_ae.strip() == calling_ae.strip())
            and (self.sop_class_uid is None or self.sop_class_uid == sop_class_uid)
        )


class PacsSettings(SectionSettings):
    yaml_section = "dicom"
    model_config = SettingsConfigDict(env_prefix="CONDUIT_DICOM_", extra="ignore")

    duplicate_policy: Literal["keep", "overwrite", "reject"] = Field(
        default="keep",
        description="What a C-STORE of an already stored SOP Instance UID does: keep the first copy and "
        "answer Success (idempotent resend), overwrite it with the new object, or reject it with 0xA900. "
        "Example: CONDUIT_DICOM_DUPLICATE_POLICY=overwrite",
    )
    direct_io: bool = Field(
        default=True,
        description="Write stored instance files with direct I/O (O_DIRECT, Linux): straight to the disk "
        "from a reused buffer, not copied into the page cache first; about 3x less CPU per stored object "
        "on VMs (auto-forwarding then reads the new file back from disk). A filesystem that refuses it "
        "is written through the page cache instead, with a warning. "
        "Example: CONDUIT_DICOM_DIRECT_IO=false",
    )
    case_insensitive_names: bool = Field(
        default=True,
        description="Match person names (PatientName, ReferringPhysicianName) in C-FIND case-insensitively "
        "(PS3.4 C.2.2.2.1 leaves this to the SCP; most modalities expect it).",
    )
    max_find_results: int = Field(
        default=10_000,
        description="Upper bound on C-FIND matches returned for one query (Pending responses).",
    )
    forward_rules: list[ForwardRule] = Field(
        default_factory=list,
        description="Auto-forward rules as JSON or YAML list of {destination, modality, calling_ae, "
        'sop_class_uid}. Example: CONDUIT_DICOM_FORWARD_RULES=\'[{"destination": "ARCHIVE", '
        '"modality": "CT"}]\'',
    )
    forward_max_attempts: int = Field(
        default=10, description="Attempts before a forward job is marked failed."
    )
    forward_retry_seconds: float = Field(
        default=5.0, description="First retry delay of a failed forward (doubles per attempt, max 10 min)."
    )
    worklist_default_modality: str = Field(
        default="OT",
        description="Modality (0008,0060) put in worklist items whose ServiceRequest.code names none.",
    )
    worklist_station_ae: str | None = Field(
        default=None,
        description="ScheduledStationAETitle for worklist items whose ServiceRequest names no performer "
        "station; empty means any modality may pick the item up.",
    )
    patient_id_system: str | None = Field(
        default=None,
        description="FHIR identifier system that DICOM PatientID (0010,0020) values belong to. Patients "
        "are matched on it (any system when unset) and created with it (urn:conduit:dicom:patient-id "
        "when unset). Example: CONDUIT_DICOM_PATIENT_ID_SYSTEM=urn:oid:1.2.3.4.5",
    )
    imaging_study_sync: bool = Field(
        default=True, description="Keep a FHIR ImagingStudy current for every stored study."
    )

    imaging_study_mapping: str = Field(
        default="dicom-imaging-study",
        description="The DICOM mapping (mappings/dicom/) that declares each study's ImagingStudy; a site "
        "mapping directory may replace the shipped one by name or add its own. Checked when the PACS starts "
        "(an unknown name stops it, listing the DICOM mappings known). Example: "
        "CONDUIT_DICOM_IMAGING_STUDY_MAPPING=acme-imaging-study",
    )
    imaging_study_quiet_seconds: float = Field(
        default=1.0,
        description="The ImagingStudy of a study is written once no instance arrived for this long (for "
        "that study, and for the whole PACS: a busy store stream defers the sync), so a burst becomes one "
        "resource version instead of hundreds.",
    )
    imaging_study_max_delay: float = Field(
        default=15.0, description="...but never later than this after the study changed (seconds)."
    )

    @field_validator("forward_rules", mode="before")
    @classmethod
    def _parse_rules(cls, value: Any) -> Any:
        if isinstance(value, str):
            return json.loads(value) if value.strip() else []
        return value
