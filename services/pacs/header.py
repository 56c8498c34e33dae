"""Read the index attributes of a received Part 10 object without decoding its pixel data.

The hot path (one call per C-STORE) walks the File Meta Information itself (explicit VR little endian,
PS3.10 7.1), lets pydicom read the dataset from there up to the pixel data, and converts each attribute
the index keeps once, with the dataset's character set. ``dcmread`` plus ``Dataset.get`` per keyword cost
twice the CPU (0.6 against 0.3 ms per CT image): pydicom's file meta reader, and a character-set lookup
and conversion on every access. A plain little-endian dataset (ASCII text, no undefined lengths) is
read without pydicom at all (``header_scan``, ~0.03 ms). Anything unusual (no ``DICM`` prefix, a
deflated or unknown transfer syntax, a file meta that does not add up) goes through ``dcmread`` as before.
"""

from __future__ import annotations

import struct
from dataclasses import dataclass
from functools import lru_cache
from io import BytesIO
from typing import Any

import pydicom
import pydicom.config
from pydicom.charset import convert_encodings, default_encoding
from pydicom.datadict import dictionary_VR
from pydicom.dataelem import RawDataElement, convert_raw_data_element
from pydicom.dataset import Dataset
from pydicom.filereader import read_dataset
from pydicom.tag import BaseTag, Tag
from pydicom.uid import UID
from pydicom.valuerep import IS

from engine.errors import InvalidInput
from services.pacs.header_scan import scan_values
from services.pacs.uids import require_uid

__all__ = ["InstanceHeader", "parse_header", "read_header", "person_name_norm"]

# Values a modality sends are checked where they matter (UIDs below, PS3.5 9.1); pydicom's own VR
# validation on read would only add warnings that can quote patient data into the logs.
pydicom.config.settings.reading_validation_mode = pydicom.config.IGNORE

# every attribute the index keeps (PS3.4 C.6.1 / C.6.2 keys), read with specific_tags so the rest of
# the dataset, above all the pixel data, is skipped rather than decoded
_KEYWORDS = {
    Tag(kw): kw
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
}
_TAGS = list(_KEYWORDS)
_PIXEL_DATA_TAGS = {Tag("PixelData"), Tag("FloatPixelData"), Tag("DoubleFloatPixelData")}
_CHARACTER_SET = Tag("SpecificCharacterSet")
#: index attributes whose VR keeps to the default repertoire whatever the character set (PS3.5 6.2):
#: their bytes are decoded directly; text VRs (PN, LO, SH) go through pydicom's charset-aware conversion
_PLAIN_VRS = {
    tag: dictionary_VR(tag)
    for tag in _TAGS
    if dictionary_VR(tag) in ("UI", "DA", "TM", "CS", "IS") and tag != _CHARACTER_SET
}
#: what header_scan reads: tag -> (keyword, dictionary VR)
_WANTED = {int(tag): (keyword, dictionary_VR(tag)) for tag, keyword in _KEYWORDS.items()}
#: file meta elements (explicit VR) whose length field is 4 bytes after 2 reserved ones (PS3.5 7.1.2)
_LONG_VRS = {b"OB", b"OD", b"OF", b"OL", b"OV", b"OW", b"SQ", b"SV", b"UC", b"UN", b"UR", b"UT", b"UV"}
_META_ELEMENT = struct.Struct("<HH2sH")
_TRANSFER_SYNTAX = 0x0010


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


def _text(values: dict[str, Any], keyword: str, limit: int) -> str:
    value = values.get(keyword)
    if value is None or value == "":
        return ""
    if isinstance(value, pydicom.multival.MultiValue):
        value = "\\".join(str(v) for v in value)
    return str(value).strip()[:limit]


def _int(values: dict[str, Any], keyword: str) -> int | None:
    try:
        value = values.get(keyword)
        if isinstance(value, str):
            value = IS(value)  # what pydicom makes of an IS string ("12", " 12 ", "12.0")
        return int(value) if value not in (None, "") else None
    except (TypeError, ValueError, OverflowError):
        return None


def _values(ds: Dataset) -> dict[str, Any]:
    """The index attributes present in ``ds``, each converted once (keyword -> value)."""
    encodings: str | list[str] = default_encoding
    values: dict[str, Any] = {}
    for tag, keyword in _KEYWORDS.items():  # SpecificCharacterSet first: the text values need it
        elem = ds.get_item(tag)
        if elem is None:
            continue
        if isinstance(elem, RawDataElement):
            vr = _PLAIN_VRS.get(tag)
            if vr is not None and elem.VR in (None, vr) and isinstance(elem.value, bytes):
                # what pydicom's converters for these VRs do, less their per-element dispatch; a
                # multi-valued one stays backslash-joined, as _text would join it
                values[keyword] = elem.value.decode(default_encoding).rstrip(" \x00")
                continue
            elem = convert_raw_data_element(elem, encoding=encodings)
        values[keyword] = elem.value
        if tag == _CHARACTER_SET and elem.value:
            encodings = convert_encodings(elem.value)
    return values


def read_header(ds: Dataset, transfer_syntax_uid: str) -> InstanceHeader:
    """Build the header from an already parsed dataset; InvalidInput when a key UID is missing/invalid."""
    return _header(_values(ds), transfer_syntax_uid)


def _header(v: dict[str, Any], transfer_syntax_uid: str) -> InstanceHeader:
    return InstanceHeader(
        sop_class_uid=require_uid(v.get("SOPClassUID"), "SOPClassUID"),
        sop_instance_uid=require_uid(v.get("SOPInstanceUID"), "SOPInstanceUID"),
        study_instance_uid=require_uid(v.get("StudyInstanceUID"), "StudyInstanceUID"),
        series_instance_uid=require_uid(v.get("SeriesInstanceUID"), "SeriesInstanceUID"),
        transfer_syntax_uid=require_uid(transfer_syntax_uid, "TransferSyntaxUID"),
        patient_id=_text(v, "PatientID", 64),
        patient_name=_text(v, "PatientName", 324),
        patient_birth_date=_text(v, "PatientBirthDate", 8),
        patient_sex=_text(v, "PatientSex", 16),
        study_date=_text(v, "StudyDate", 8),
        study_time=_text(v, "StudyTime", 16),
        accession_number=_text(v, "AccessionNumber", 16),
        study_id=_text(v, "StudyID", 16),
        study_description=_text(v, "StudyDescription", 64),
        referring_physician_name=_text(v, "ReferringPhysicianName", 324),
        modality=_text(v, "Modality", 16),
        series_number=_int(v, "SeriesNumber"),
        series_description=_text(v, "SeriesDescription", 64),
        series_date=_text(v, "SeriesDate", 8),
        instance_number=_int(v, "InstanceNumber"),
    )


def _dataset_start(data: memoryview) -> tuple[int, str] | None:
    """(offset of the dataset, transfer syntax UID) after the preamble and File Meta Information, or
    None when they are not the plain explicit VR little endian group PS3.10 7.1 describes."""
    if data[128:132] != b"DICM":
        return None
    offset, end, transfer_syntax = 132, len(data), None
    while end - offset >= 8:
        group, element, vr, length = _META_ELEMENT.unpack_from(data, offset)
        if group != 0x0002:
            break
        header = 8
        if vr in _LONG_VRS:
            if end - offset < 12:
                return None
            (length,) = struct.unpack_from("<I", data, offset + 8)
            header = 12
        if offset + header + length > end:
            return None
        if element == _TRANSFER_SYNTAX:
            try:
                transfer_syntax = bytes(data[offset + header : offset + header + length]).decode("ascii")
            except UnicodeError:
                return None
        offset += header + length
    if transfer_syntax is None:
        return None
    return offset, transfer_syntax.rstrip("\x00 ")


def _at_pixel_data(tag: BaseTag, vr: str | None, length: int) -> bool:
    # what dcmread's stop_before_pixels does; not "past the last kept tag": that would trust the sender
    # to sort its elements, and one that does not would be indexed with attributes missing
    return tag in _PIXEL_DATA_TAGS


def _scan(data: bytes | memoryview) -> InstanceHeader | None:
    """The header read by ``header_scan`` when the dataset is plain enough for it, else None."""
    located = _dataset_start(memoryview(data))
    if located is None:
        return None
    offset, transfer_syntax = located
    explicit_vr = _scannable(transfer_syntax)
    if explicit_vr is None:
        return None
    values = scan_values(data, offset, explicit_vr, _WANTED)
    return None if values is None else _header(values, transfer_syntax)


@lru_cache(maxsize=64)
def _scannable(transfer_syntax: str) -> bool | None:
    """Whether a data set in ``transfer_syntax`` has explicit VRs, for one ``header_scan`` reads (little
    endian, not deflated); None for any other. Cached: pydicom's UID properties cost ~0.1 ms an image."""
    uid = UID(transfer_syntax)
    if not uid.is_transfer_syntax or uid.is_deflated or not uid.is_little_endian:
        return None
    return not uid.is_implicit_VR


def _read_dataset(data: bytes | memoryview) -> tuple[Dataset, str] | None:
    located = _dataset_start(memoryview(data))
    if located is None:
        return None
    offset, transfer_syntax = located
    uid = UID(transfer_syntax)
    if not uid.is_transfer_syntax or uid.is_deflated:
        return None
    # shares a bytes object's buffer (no copy of the pixel data); a memoryview (the DICOM adapter's
    # direct C-STORE path) is copied, which only the data sets the scanner above declines cost
    stream = BytesIO(data)
    stream.seek(offset)
    ds = read_dataset(
        stream,
        uid.is_implicit_VR,
        uid.is_little_endian,
        stop_when=_at_pixel_data,
        specific_tags=_TAGS,
    )
    return ds, transfer_syntax


def parse_header(data: bytes | memoryview) -> InstanceHeader:
    """Parse a Part 10 byte stream (preamble, file meta, dataset) as received; InvalidInput if unreadable."""
    try:
        scanned = _scan(data)
        if scanned is not None:
            return scanned
        read = _read_dataset(data)
        if read is None:
            ds = pydicom.dcmread(BytesIO(data), stop_before_pixels=True, specific_tags=_TAGS)
            read = ds, str(ds.file_meta.get("TransferSyntaxUID", ""))
        return read_header(*read)
    except InvalidInput:
        raise
    except Exception as exc:  # pydicom raises many types for malformed input; all mean "cannot understand"
        raise InvalidInput(f"cannot parse the dataset: {exc.__class__.__name__}") from exc
