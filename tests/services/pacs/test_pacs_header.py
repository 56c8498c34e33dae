"""parse_header reads what pydicom's full read sees, on every transfer syntax and character set."""

from __future__ import annotations

from io import BytesIO

import pydicom
import pytest
from pydicom.data import get_charset_files, get_testdata_file
from pydicom.dataset import Dataset, FileMetaDataset
from pydicom.uid import ExplicitVRLittleEndian, ImplicitVRLittleEndian

from engine.errors import InvalidInput
from services.pacs.header import InstanceHeader, _read_dataset, _scan, parse_header, read_header

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


# --- header_scan: the pydicom-free read of plain datasets must give exactly pydicom's values ----------


def _slow(data: bytes) -> InstanceHeader:
    read = _read_dataset(data)
    if read is None:
        ds = pydicom.dcmread(BytesIO(data), stop_before_pixels=True)
        read = ds, str(ds.file_meta.TransferSyntaxUID)
    return read_header(*read)


def _part10(ds: Dataset, transfer_syntax: str = ExplicitVRLittleEndian) -> bytes:
    ds.file_meta = FileMetaDataset()
    ds.file_meta.TransferSyntaxUID = transfer_syntax
    ds.file_meta.MediaStorageSOPClassUID = ds.SOPClassUID
    ds.file_meta.MediaStorageSOPInstanceUID = ds.SOPInstanceUID
    out = BytesIO()
    ds.save_as(out, enforce_file_format=True, implicit_vr=transfer_syntax == ImplicitVRLittleEndian)
    return out.getvalue()


def _plain(**extra: object) -> Dataset:
    ds = Dataset()
    ds.SOPClassUID = "1.2.840.10008.5.1.4.1.1.2"
    ds.SOPInstanceUID = "1.2.3.4.5.6"
    ds.StudyInstanceUID = "1.2.3.4"
    ds.SeriesInstanceUID = "1.2.3.4.5"
    ds.PatientName = "DOE^JANE^^^"
    ds.PatientID = "P 1 "
    ds.StudyDescription = "CHEST "
    ds.Modality = "CT"
    ds.SeriesNumber = "  12 "
    ds.InstanceNumber = "3"
    for keyword, value in extra.items():
        setattr(ds, keyword, value)
    ds.Rows = ds.Columns = 4
    ds.add_new(0x7FE00010, "OW", b"\0\0" * 16)  # PixelData: everything after it is not read
    return ds


@pytest.mark.parametrize(
    "path", _FILES + [get_testdata_file("rtplan.dcm")], ids=lambda p: str(p).rsplit("/", 1)[-1]
)
def test_the_scan_gives_pydicoms_header_or_declines(path: str) -> None:
    data = open(path, "rb").read()
    scanned = _scan(data)
    assert scanned is None or scanned == _slow(data)


@pytest.mark.parametrize("transfer_syntax", [ExplicitVRLittleEndian, ImplicitVRLittleEndian])
@pytest.mark.parametrize(
    "extra",
    [
        {},
        {"SpecificCharacterSet": "ISO_IR 100", "ReferringPhysicianName": "", "AccessionNumber": ""},
        {"SpecificCharacterSet": ["", "ISO 2022 IR 87"], "ImageType": ["ORIGINAL", "PRIMARY"]},
        {"StudyDate": "20240101", "StudyTime": "101010.123 ", "PatientSex": "F"},
        {"SeriesNumber": "", "InstanceNumber": "7.0"},
        {"StudyDescription": "CHEST\x00", "PatientName": "DOE^J\x00"},  # NUL padding is stripped
        {"Modality": ["CT", "PT"]},  # a multi-valued CS stays backslash-joined, as on the pydicom path
    ],
    ids=lambda v: ",".join(v) if isinstance(v, dict) else v,
)
def test_plain_datasets_are_scanned_with_pydicoms_values(
    transfer_syntax: str, extra: dict[str, object]
) -> None:
    data = _part10(_plain(**extra), transfer_syntax)
    scanned = _scan(data)
    assert scanned is not None
    assert scanned == _slow(data)


@pytest.mark.parametrize("undefined", [False, True], ids=["defined length", "undefined length"])
def test_a_sequence_before_the_keys_is_stepped_over_or_left_to_pydicom(undefined: bool) -> None:
    ds = _plain()
    item = Dataset()
    item.PatientID = "NOT-THE-PATIENT"  # nested: must not be taken for the top-level PatientID
    ds.ReferencedImageSequence = [item]
    ds["ReferencedImageSequence"].is_undefined_length = undefined
    ds.ReferencedImageSequence[0].is_undefined_length_sequence_item = undefined
    data = _part10(ds)
    assert (b"@\x11SQ\x00\x00\xff\xff\xff\xff" in data) is undefined
    scanned = _scan(data)
    if undefined:
        assert scanned is None  # items and delimiters: left to pydicom
    else:
        assert scanned is not None and scanned.patient_id == "P 1" and scanned == _slow(data)


_JAPANESE = b"Yamada^Tarou=\x1b$B;3ED\x1b(B^\x1b$BB@O:\x1b(B=\x1b$B$d$^$@\x1b(B^\x1b$B$?$m$&\x1b(B"


@pytest.mark.parametrize(
    ("charset", "name"),
    [
        ("ISO_IR 100", "Müller^Hans".encode("latin-1")),
        ("ISO_IR 100", b"DOE\\ROE"),
        (["", "ISO 2022 IR 87"], _JAPANESE),
        ("ISO_IR 100", b"DOE^JANE="),
        ("ISO_IR 100", b"="),
    ],
    ids=["latin-1", "two values", "escapes", "an empty group", "groups only"],
)
def test_text_that_depends_on_the_character_set_is_left_to_pydicom(charset: object, name: bytes) -> None:
    ds = _plain(SpecificCharacterSet=charset)
    ds.PatientName = name
    data = _part10(ds)
    assert _scan(data) is None
    assert parse_header(data) == _slow(data)


def test_a_kept_attribute_with_another_vr_is_left_to_pydicom() -> None:
    data = _part10(_plain())
    tag = b"\x20\x00\x11\x00IS"  # SeriesNumber (0020,0011), explicit VR IS
    assert data.count(tag) == 1
    patched = data.replace(tag, b"\x20\x00\x11\x00LO")
    assert _scan(patched) is None
    assert parse_header(patched) == _slow(patched)


def test_an_attribute_given_twice_is_left_to_pydicom() -> None:
    data = _part10(_plain())
    element = b"\x10\x00\x20\x00LO\x04\x00P 1 "  # PatientID
    twice = data.replace(element, element + element.replace(b"P 1 ", b"P 2 "))
    assert _scan(data) is not None and _scan(twice) is None


def test_a_value_running_past_the_end_is_left_to_pydicom() -> None:
    data = _part10(_plain())
    cut = data[: data.index(b"DOE^JANE") + 3]
    assert _scan(cut) is None
