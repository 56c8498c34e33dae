"""Read the index attributes of a received Part 10 object without decoding its pixel data."""

from __future__ import annotations

from dataclasses import dataclass
from io import BytesIO

import pydicom
import pydicom.config
from pydicom.dataset import Dataset
from pydicom.tag import Tag

from engine.errors import InvalidInput
from services.pacs.uids import require_uid

__all__ = ["InstanceHeader", "parse_header", "read_header", "person_name_norm"]

# Values a modality sends are checked where they matter (UIDs below, PS3.5 9.1); pydicom's own VR
# validation on read would only add warnings that can quote patient data into the logs.
pydicom.config.settings.reading_validation_mode = pydicom.config.IGNORE

# every attribute the index keeps (PS3.4 C.6.1 / C.6.2 keys), read with specific_tags so the rest of
# the dataset, above all the pixel data, is skipped rather than decoded
_TAGS = [
    Tag(kw)
    for kw in (
        "SpecificCharacterSet",
        "SOPClassUID",
        "SOPInstanceUID",
        "StudyDate",
        "SeriesDate",
        "StudyTime",
        "AccessionNumber",
        "Modality",
        "ReferringPhysicianName",
        "StudyDescription",
        "SeriesDescription",
        "PatientName",
        "PatientID",
        "PatientBirthDate",
        "PatientSex",
        "StudyInstanceUID",
        "SeriesInstanceUID",
        "StudyID",
        "SeriesNumber",
        "InstanceNumber",
    )
]


@dataclass(frozen=True)
class InstanceHeader:
    sop_class_uid: str
    sop_instance_uid: str
    study_instance_uid: str
    series_instance_uid: str
    transfer_syntax_uid: str
    patient_id: str = ""
    patient_name: str = ""
    patient_birth_date: str = ""
    patient_sex: str = ""
    study_date: str = ""
    study_time: str = ""
    accession_number: str = ""
    study_id: str = ""
    study_description: str = ""
    referring_physician_name: str = ""
    modality: str = ""
    series_number: int | None = None
    series_description: str = ""
    series_date: str = ""
    instance_number: int | None = None


def person_name_norm(name: str) -> str:
    """The case-insensitive matching form of a PN value (upper case; trailing empty components gone)."""
    return name.upper().rstrip("^ =")


def _text(ds: Dataset, keyword: str, limit: int) -> str:
    elem = ds.get(keyword)
    if elem is None or elem == "":
        return ""
    value = elem if not isinstance(elem, pydicom.multival.MultiValue) else "\\".join(str(v) for v in elem)
    return str(value).strip()[:limit]


def _int(ds: Dataset, keyword: str) -> int | None:
    try:
        value = ds.get(keyword)
        return int(value) if value not in (None, "") else None
    except (TypeError, ValueError, OverflowError):
        return None


def read_header(ds: Dataset, transfer_syntax_uid: str) -> InstanceHeader:
    """Build the header from an already parsed dataset; InvalidInput when a key UID is missing/invalid."""
    return InstanceHeader(
        sop_class_uid=require_uid(ds.get("SOPClassUID"), "SOPClassUID"),
        sop_instance_uid=require_uid(ds.get("SOPInstanceUID"), "SOPInstanceUID"),
        study_instance_uid=require_uid(ds.get("StudyInstanceUID"), "StudyInstanceUID"),
        series_instance_uid=require_uid(ds.get("SeriesInstanceUID"), "SeriesInstanceUID"),
        transfer_syntax_uid=require_uid(transfer_syntax_uid, "TransferSyntaxUID"),
        patient_id=_text(ds, "PatientID", 64),
        patient_name=_text(ds, "PatientName", 324),
        patient_birth_date=_text(ds, "PatientBirthDate", 8),
        patient_sex=_text(ds, "PatientSex", 16),
        study_date=_text(ds, "StudyDate", 8),
        study_time=_text(ds, "StudyTime", 16),
        accession_number=_text(ds, "AccessionNumber", 16),
        study_id=_text(ds, "StudyID", 16),
        study_description=_text(ds, "StudyDescription", 64),
        referring_physician_name=_text(ds, "ReferringPhysicianName", 324),
        modality=_text(ds, "Modality", 16),
        series_number=_int(ds, "SeriesNumber"),
        series_description=_text(ds, "SeriesDescription", 64),
        series_date=_text(ds, "SeriesDate", 8),
        instance_number=_int(ds, "InstanceNumber"),
    )


def parse_header(data: bytes | memoryview) -> InstanceHeader:
    """Parse a Part 10 byte stream (preamble, file meta, dataset) as received; InvalidInput if unreadable."""
    try:
        ds = pydicom.dcmread(BytesIO(data), stop_before_pixels=True, specific_tags=_TAGS)
        transfer_syntax = str(ds.file_meta.get("TransferSyntaxUID", ""))
        return read_header(ds, transfer_syntax)
    except InvalidInput:
        raise
    except Exception as exc:  # pydicom raises many types for malformed input; all mean "cannot understand"
        raise InvalidInput(f"cannot parse the dataset: {exc.__class__.__name__}") from exc
