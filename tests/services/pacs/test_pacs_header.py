"""parse_header reads what pydicom's full read sees, on every transfer syntax and character set."""

from __future__ import annotations

from io import BytesIO

import pydicom
import pytest
from pydicom.data import get_charset_files, get_testdata_file

from engine.errors import InvalidInput
from services.pacs.header import _read_dataset, parse_header

# explicit/implicit VR, big endian, deflated (dcmread path), encapsulated pixel data, and character sets
# from ISO 8859 to ISO 2022 with code extensions (multi-valued, per component group of a PN)
_FILES = [
    get_testdata_file(name)
    for name in (
        "CT_small.dcm",
        "MR_small_implicit.dcm",
        "MR_small_bigendian.dcm",
        "image_dfl.dcm",
        "JPEG2000.dcm",
        "SC_rgb_rle.dcm",
    )
] + [
    get_charset_files(name)[0]
    for name in (
        "chrArab.dcm",
        "chrFrenMulti.dcm",
        "chrH31.dcm",
        "chrI2.dcm",
        "chrKoreanMulti.dcm",
        "chrRuss.dcm",
    )
]


def _text(value: object) -> str:
    if isinstance(value, pydicom.multival.MultiValue):
        return "\\".join(str(v) for v in value)
    return str(value if value is not None else "").strip()


@pytest.mark.parametrize("path", _FILES, ids=lambda p: str(p).rsplit("/", 1)[-1])
def test_header_matches_a_full_pydicom_read(path: str) -> None:
    data = open(path, "rb").read()
    full = pydicom.dcmread(BytesIO(data))

    header = parse_header(data)

    assert header.sop_instance_uid == full.SOPInstanceUID
    assert header.sop_class_uid == full.SOPClassUID
    assert header.study_instance_uid == full.StudyInstanceUID
    assert header.series_instance_uid == full.SeriesInstanceUID
    assert header.transfer_syntax_uid == full.file_meta.TransferSyntaxUID
    for field, keyword in [
        ("patient_name", "PatientName"),
        ("patient_id", "PatientID"),
        ("study_date", "StudyDate"),
        ("modality", "Modality"),
        ("study_description", "StudyDescription"),
        ("referring_physician_name", "ReferringPhysicianName"),
    ]:
        assert getattr(header, field) == _text(full.get(keyword)), keyword
    assert header.series_number == (int(full.SeriesNumber) if full.get("SeriesNumber") else None)
    assert header.instance_number == (int(full.InstanceNumber) if full.get("InstanceNumber") else None)


def test_plain_transfer_syntaxes_skip_dcmread_and_deflated_does_not() -> None:
    def fast(name: str) -> bool:
        return _read_dataset(open(get_testdata_file(name), "rb").read()) is not None

    assert fast("CT_small.dcm") and fast("MR_small_implicit.dcm") and fast("MR_small_bigendian.dcm")
    assert not fast("image_dfl.dcm")
    assert not fast("no_meta.dcm")


@pytest.mark.parametrize("cut", [0, 100, 132, 140, 200])
def test_truncated_objects_cannot_be_understood(cut: int) -> None:
    data = open(get_testdata_file("CT_small.dcm"), "rb").read()[:cut]
    with pytest.raises(InvalidInput):
        parse_header(data)


def test_an_unreadable_number_is_left_empty_not_refused() -> None:
    ds = pydicom.dcmread(get_testdata_file("CT_small.dcm"))
    ds.InstanceNumber, ds.SeriesNumber = 98765, 86420
    out = BytesIO()
    ds.save_as(out, enforce_file_format=True)
    # values pydicom would not write: patched into the encoded bytes (same lengths)
    data = out.getvalue().replace(b"98765 ", b"abcde ").replace(b"86420 ", b"7.0   ")

    header = parse_header(data)

    assert header.instance_number is None
    assert header.series_number == 7
    assert header.sop_instance_uid == ds.SOPInstanceUID
