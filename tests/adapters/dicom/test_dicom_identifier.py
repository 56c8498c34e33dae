"""C-FIND identifiers written directly are byte for byte what pydicom writes, or left to pydicom."""

from __future__ import annotations

import pytest
from pydicom.dataset import Dataset
from pydicom.sequence import Sequence
from pynetdicom.dsutils import encode

from adapters.dicom.identifier import encode_identifier, fast_encode


def _study_match(charset: str | None = "ISO_IR 192") -> Dataset:
    ds = Dataset()
    if charset is not None:
        ds.SpecificCharacterSet = charset
    ds.QueryRetrieveLevel = "STUDY"
    ds.PatientID = "PAT0007"
    ds.PatientName = "DOE^JOHN"
    ds.StudyInstanceUID = "1.2.826.0.1.3680043.8.498.123"  # odd length: NUL-padded
    ds.StudyDate = "20240101"
    ds.StudyTime = "101010.5"  # odd length: space-padded
    ds.AccessionNumber = None
    ds.StudyDescription = "CT CHEST"
    ds.ModalitiesInStudy = ["CT", "MR"]
    ds.NumberOfStudyRelatedInstances = "12"
    ds.RetrieveAETitle = "CONDUIT"
    return ds


@pytest.mark.parametrize("implicit", [True, False])
def test_a_match_is_written_as_pydicom_writes_it(implicit: bool) -> None:
    ds = _study_match()
    assert encode_identifier(ds, implicit, True) == encode(ds, implicit, True, False)


@pytest.mark.parametrize("implicit", [True, False])
def test_utf8_names_and_descriptions_are_written_as_pydicom_writes_them(implicit: bool) -> None:
    ds = _study_match()
    ds.PatientName = "Müller^Jörg=ミュラー^ヨルグ"
    ds.StudyDescription = "Thorax ä"  # odd number of UTF-8 bytes
    assert encode_identifier(ds, implicit, True) == encode(ds, implicit, True, False)


def test_no_character_set_means_ascii_only() -> None:
    ds = _study_match(charset=None)
    assert encode_identifier(ds, True, True) == encode(ds, True, True, False)
    ds.PatientName = "Müller^Jörg"
    assert encode_identifier(ds, True, True) is None


@pytest.mark.parametrize(
    "change",
    [
        lambda ds: setattr(ds, "SpecificCharacterSet", "ISO_IR 100"),  # Latin-1: left to pydicom
        lambda ds: setattr(ds, "ReferencedSOPSequence", Sequence([Dataset()])),
        lambda ds: setattr(ds, "Rows", 512),  # a binary VR
        lambda ds: setattr(ds, "SliceThickness", "1.5"),  # DS: pydicom may reformat it
    ],
)
def test_anything_else_is_left_to_pydicom(change: object) -> None:
    ds = _study_match()
    change(ds)  # type: ignore[operator]
    assert encode_identifier(ds, True, True) is None
    assert encode(ds, True, True, False)  # which pydicom can write


def test_big_endian_and_deflated_are_left_to_pydicom() -> None:
    ds = _study_match()
    assert encode_identifier(ds, False, False) is None
    assert encode_identifier(ds, False, True, deflated=True) is None


def test_fast_encode_falls_back() -> None:
    calls: list[Dataset] = []

    def fallback(ds: Dataset, *args: object) -> bytes:
        calls.append(ds)
        return b"pydicom"

    encoder = fast_encode(fallback)
    assert encoder(_study_match(), True, True, False) == encode(_study_match(), True, True, False)
    assert calls == []
    assert encoder(_study_match(), False, False, False) == b"pydicom"
    assert len(calls) == 1
