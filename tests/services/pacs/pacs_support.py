"""Builders shared by the PACS service tests."""

from __future__ import annotations

from io import BytesIO
from typing import Any

from pydicom.dataset import Dataset, FileMetaDataset
from pydicom.uid import PYDICOM_IMPLEMENTATION_UID, CTImageStorage, ExplicitVRLittleEndian


def part10(source_ae: str = "", **attributes: Any) -> bytes:
    """A small CT object; ``attributes`` override the defaults (keyword=value); ``source_ae`` goes in the
    file meta (SourceApplicationEntityTitle)."""
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
    if source_ae:
        meta.SourceApplicationEntityTitle = source_ae
    ds.file_meta = meta
    out = BytesIO()
    ds.save_as(out, enforce_file_format=True)
    return out.getvalue()
