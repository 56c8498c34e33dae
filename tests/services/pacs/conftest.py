"""Fixtures for the PACS service tests: the service on the test database (SQLite and PostgreSQL) and a
builder of small Part 10 objects in memory."""

from __future__ import annotations

from collections.abc import Callable
from io import BytesIO
from typing import Any

import pytest
from pydicom.dataset import Dataset, FileMetaDataset
from pydicom.uid import PYDICOM_IMPLEMENTATION_UID, CTImageStorage, ExplicitVRLittleEndian

from services.pacs.port import Pacs
from services.pacs.settings import PacsSettings
from services.pacs.wiring import install


def part10(**attributes: Any) -> bytes:
    """A small CT object; ``attributes`` override the defaults (keyword=value)."""
    ds = Dataset()
    ds.SOPClassUID = CTImageStorage
    ds.SOPInstanceUID = "1.2.3.4.1"
    ds.StudyInstanceUID = "1.2.3.1"
    ds.SeriesInstanceUID = "1.2.3.2"
    ds.PatientID = "P1"
    ds.PatientName = "Doe^John"
    ds.PatientBirthDate = "19700102"
    ds.PatientSex = "M"
    ds.StudyDate = "20240115"
    ds.StudyTime = "083000"
    ds.AccessionNumber = "A1"
    ds.StudyID = "1"
    ds.StudyDescription = "CHEST"
    ds.ReferringPhysicianName = "Ref^Erin"
    ds.Modality = "CT"
    ds.SeriesNumber = 1
    ds.InstanceNumber = 1
    ds.PixelData = b"\0\1" * 8
    ds["PixelData"].VR = "OW"
    for key, value in attributes.items():
        setattr(ds, key, value)
    meta = FileMetaDataset()
    meta.MediaStorageSOPClassUID = ds.SOPClassUID
    meta.MediaStorageSOPInstanceUID = ds.SOPInstanceUID
    meta.TransferSyntaxUID = ExplicitVRLittleEndian
    meta.ImplementationClassUID = PYDICOM_IMPLEMENTATION_UID
    ds.file_meta = meta
    out = BytesIO()
    ds.save_as(out, enforce_file_format=True)
    return out.getvalue()


@pytest.fixture
def make_pacs(runtime: Any) -> Callable[..., Pacs]:
    """Install the PACS with the given PacsSettings fields (replacing the default one)."""

    def make(**fields: Any) -> Pacs:
        return install(runtime, PacsSettings(**fields))

    return make


@pytest.fixture
def pacs(make_pacs: Callable[..., Pacs]) -> Pacs:
    return make_pacs()
