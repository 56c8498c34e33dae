"""Synthetic CT/MR series for the DICOM tests and the benchmark.

The plan (patients x studies x series, names, dates, accession numbers, UIDs from the 2.25 UUID arc) is
adapted from ``make_dicom_corpus.py`` of the project's peer benchmark harness (/work/shared/bench, same
authors' brief), copied here so the tests and bench/dicom_store.py do not depend on that folder at run
time. Pixel data is a cheap deterministic ramp plus noise bytes, sized by ``rows``: the tests use tiny
images, the benchmark 512x512x16 bit (~0.5 MB).
"""

from __future__ import annotations

import hashlib
import random
from dataclasses import dataclass, field
from pathlib import Path

from pydicom.dataset import Dataset, FileMetaDataset
from pydicom.uid import (
    PYDICOM_IMPLEMENTATION_UID,
    CTImageStorage,
    ExplicitVRLittleEndian,
    MRImageStorage,
)

__all__ = ["CorpusPlan", "make_corpus", "uid"]

FIRST = ["JOHN", "JANE", "ALEX", "MARIA", "PETER", "ANNA", "LUCAS", "EMMA", "NOAH", "MIA"]
LAST = ["DOE", "SMITH", "MULLER", "GARCIA", "ROSSI", "DUBOIS", "NOVAK", "SILVA", "KOWALSKI", "JANSEN"]


def uid(*parts: object) -> str:
    digest = hashlib.sha256("|".join(str(p) for p in parts).encode()).digest()
    return "2.25." + str(int.from_bytes(digest[:16], "big"))


@dataclass
class CorpusPlan:
    files: list[Path] = field(default_factory=list)
    patients: list[dict[str, str]] = field(default_factory=list)
    studies: list[dict[str, str]] = field(default_factory=list)
    series: list[dict[str, str]] = field(default_factory=list)
    sop_instance_uids: list[str] = field(default_factory=list)
    bytes: int = 0


def make_corpus(
    out: Path,
    *,
    count: int,
    patients: int = 3,
    studies_per_patient: int = 2,
    series_per_study: int = 2,
    rows: int = 16,
    salt: int = 0,
    modalities: tuple[str, ...] = ("CT", "MR"),
) -> CorpusPlan:
    """Write ``count`` instances round-robin over the series of the plan; returns what was written."""
    out.mkdir(parents=True, exist_ok=True)
    plan = CorpusPlan()
    all_series: list[tuple[dict[str, str], dict[str, str], dict[str, str]]] = []
    for pi in range(patients):
        patient = {
            "PatientID": f"PAT{pi:04d}",
            "PatientName": f"{LAST[pi % len(LAST)]}^{FIRST[(pi * 3) % len(FIRST)]}",
            "PatientBirthDate": f"{1950 + pi * 7 % 50}{1 + pi % 12:02d}{1 + pi % 28:02d}",
            "PatientSex": "F" if pi % 2 else "M",
        }
        plan.patients.append(patient)
        for sj in range(studies_per_patient):
            sn = pi * studies_per_patient + sj
            study = {
                "StudyInstanceUID": uid("study", salt, sn),
                "PatientID": patient["PatientID"],
                "AccessionNumber": f"ACC{salt:02d}{sn:05d}",
                "StudyDate": f"2024{1 + sn % 12:02d}{1 + sn % 28:02d}",
                "StudyTime": f"{8 + sn % 10:02d}{(7 * sn) % 60:02d}00",
                "StudyDescription": "CHEST" if sj % 2 == 0 else "ABDOMEN",
                "StudyID": str(sn),
            }
            plan.studies.append(study)
            for rk in range(series_per_study):
                series = {
                    "SeriesInstanceUID": uid("series", salt, sn, rk),
                    "Modality": modalities[(sn + rk) % len(modalities)],
                    "SeriesNumber": str(rk + 1),
                    "SeriesDescription": ["AXIAL", "CORONAL"][rk % 2],
                    "StudyInstanceUID": study["StudyInstanceUID"],
                }
                plan.series.append(series)
                all_series.append((patient, study, series))
    rng = random.Random(1234 + salt)
    counters = [0] * len(all_series)
    pixel_bytes = rows * rows * 2
    ramp = bytes(i % 251 for i in range(pixel_bytes))
    for i in range(count):
        k = i % len(all_series)
        counters[k] += 1
        patient, study, series = all_series[k]
        sop_class = CTImageStorage if series["Modality"] == "CT" else MRImageStorage
        sop_uid = uid("sop", salt, i)
        meta = FileMetaDataset()
        meta.MediaStorageSOPClassUID = sop_class
        meta.MediaStorageSOPInstanceUID = sop_uid
        meta.TransferSyntaxUID = ExplicitVRLittleEndian
        meta.ImplementationClassUID = PYDICOM_IMPLEMENTATION_UID
        ds = Dataset()
        ds.file_meta = meta
        ds.SpecificCharacterSet = "ISO_IR 100"
        ds.SOPClassUID = sop_class
        ds.SOPInstanceUID = sop_uid
        ds.ImageType = ["ORIGINAL", "PRIMARY", "AXIAL"]
        for key, value in {**patient, **study, **series}.items():
            setattr(ds, key, value)
        ds.SeriesDate = study["StudyDate"]
        ds.ReferringPhysicianName = "REF^DOCTOR"
        ds.InstanceNumber = counters[k]
        ds.SamplesPerPixel = 1
        ds.PhotometricInterpretation = "MONOCHROME2"
        ds.Rows = ds.Columns = rows
        ds.BitsAllocated = 16
        ds.BitsStored = 12
        ds.HighBit = 11
        ds.PixelRepresentation = 0
        noise = rng.randbytes(min(pixel_bytes, 4096))
        ds.PixelData = (noise + ramp[len(noise) :])[:pixel_bytes]
        ds["PixelData"].VR = "OW"
        path = out / f"IMG_{i:06d}.dcm"
        ds.save_as(path, enforce_file_format=True)
        plan.files.append(path)
        plan.sop_instance_uids.append(sop_uid)
        plan.bytes += path.stat().st_size
    return plan
