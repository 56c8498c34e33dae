"""Modality Worklist (PS3.4 K.6, Basic Worklist Management) answered from the record store.

A worklist item is an *active* ServiceRequest of category imaging (SNOMED CT 363679005) whose subject is
a Patient; its identifier of type ACSN (v2 Table 0203) is the Accession Number. The record store finds
the candidate orders (status and category are indexed search parameters); the matching keys of the
C-FIND identifier (PS3.4 K.6.1.2, C.2.2.2 semantics) are then applied to the items built from them — a
worklist holds the orders of a few days, never the archive.

Mapping (ServiceRequest -> worklist attributes):

================================================  ===================================================
AccessionNumber (0008,0050)                       identifier with type ACSN
RequestedProcedureID (0040,1001)                  ServiceRequest.id (first 16 characters, no dashes)
RequestedProcedureDescription (0032,1060)         code.text or its first coding's display
StudyInstanceUID (0020,000D)                      identifier with system urn:dicom:uid, else derived
Patient's Name/ID/Birth Date/Sex                  the subject Patient
ReferringPhysicianName (0008,0090)                requester.display
SPS Start Date/Time (0040,0002/0003)              occurrenceDateTime or occurrencePeriod.start
Modality (0008,0060)                              code coding from the DICOM (DCM) system, else the
                                                  configured default
ScheduledStationAETitle (0040,0001)               performer display of a Device, else configured
ScheduledProcedureStepID (0040,0009)              the same short form of ServiceRequest.id
================================================  ===================================================
"""

from __future__ import annotations

import re
import uuid
from collections.abc import Callable, Iterator
from typing import Any

from pydicom.dataset import Dataset
from pydicom.multival import MultiValue
from pydicom.sequence import Sequence

from engine.fhir.repository import ResourceRepository
from services.pacs import status
from services.pacs.fhir import (
    DICOM_UID_SYSTEM,
    IMAGING_CATEGORY,
    SNOMED,
    accession_of,
    dicom_date_time,
    dicom_sex,
    pn_from_human_name,
)
from services.pacs.header import person_name_norm
from services.pacs.settings import PacsSettings
from services.pacs.uids import is_valid_uid

__all__ = ["worklist_items", "match_worklist", "run_worklist_find"]

DCM = "http://dicom.nema.org/resources/ontology/DCM"
_PN_KEYS = {"PatientName", "ReferringPhysicianName", "ScheduledPerformingPhysicianName"}
_DATE_KEYS = {"PatientBirthDate", "ScheduledProcedureStepStartDate"}
_TIME_KEYS = {"ScheduledProcedureStepStartTime"}


def _study_uid(resource: dict[str, Any]) -> str:
    for ident in resource.get("identifier") or []:
        value = str(ident.get("value") or "")
        if (
            ident.get("system") == DICOM_UID_SYSTEM
            and value.startswith("urn:oid:")
            and is_valid_uid(value[8:])
        ):
            return value[8:]
    # stable per order, so the modality and the archive agree on the study without storing anything
    return f"2.25.{uuid.uuid5(uuid.NAMESPACE_URL, 'ServiceRequest/' + str(resource.get('id'))).int}"


def _code_text(code: dict[str, Any] | None) -> str:
    if not code:
        return ""
    return str(
        code.get("text") or next((c.get("display") for c in code.get("coding", []) if c.get("display")), "")
    )


def _modality(resource: dict[str, Any], default: str) -> str:
    for coding in (resource.get("code") or {}).get("coding", []):
        if coding.get("system") == DCM and coding.get("code"):
            return str(coding["code"])
    return default


def _station(resource: dict[str, Any], default: str | None) -> str:
    for performer in resource.get("performer") or []:
        if str(performer.get("reference", "")).startswith("Device/") and performer.get("display"):
            return str(performer["display"])[:16]
    return default or ""


def worklist_items(repo: ResourceRepository, settings: PacsSettings) -> list[Dataset]:
    """One worklist item per active imaging ServiceRequest with a Patient subject."""
    result = repo.search(
        "ServiceRequest",
        [("status", "active"), ("category", f"{SNOMED}|{IMAGING_CATEGORY}"), ("_count", "1000")],
    )
    items = []
    patients: dict[str, dict[str, Any] | None] = {}
    for match in result.matches:
        sr = match.resource
        ref = str((sr.get("subject") or {}).get("reference") or "")
        if not ref.startswith("Patient/"):
            continue
        if ref not in patients:
            try:
                patients[ref] = repo.read("Patient", ref.split("/", 1)[1]).resource
            except Exception:
                patients[ref] = None
        patient = patients[ref]
        if patient is None:
            continue
        when = sr.get("occurrenceDateTime") or (sr.get("occurrencePeriod") or {}).get("start")
        start_date, start_time = dicom_date_time(when)
        description = _code_text(sr.get("code"))
        ds = Dataset()
        ds.AccessionNumber = accession_of(sr)[:16]
        ds.ReferringPhysicianName = str((sr.get("requester") or {}).get("display") or "")[:64]
        ds.PatientName = pn_from_human_name((patient.get("name") or [None])[0])
        identifiers = patient.get("identifier") or []
        ds.PatientID = str(identifiers[0].get("value") if identifiers else patient.get("id"))[:64]
        ds.PatientBirthDate = (patient.get("birthDate") or "").replace("-", "")[:8]
        ds.PatientSex = dicom_sex(patient.get("gender"))
        ds.StudyInstanceUID = _study_uid(sr)
        short_id = str(sr.get("id")).replace("-", "")[:16]  # SH: 16 characters at most
        ds.RequestedProcedureID = short_id
        ds.RequestedProcedureDescription = description[:64]
        step = Dataset()
        step.ScheduledStationAETitle = _station(sr, settings.worklist_station_ae)
        step.ScheduledProcedureStepStartDate = start_date
        step.ScheduledProcedureStepStartTime = start_time
        step.Modality = _modality(sr, settings.worklist_default_modality)
        step.ScheduledPerformingPhysicianName = ""
        step.ScheduledProcedureStepDescription = description[:64]
        step.ScheduledProcedureStepID = short_id
        ds.ScheduledProcedureStepSequence = Sequence([step])
        items.append(ds)
    return items


def _text(value: Any) -> str:
    if value is None:
        return ""
    if isinstance(value, MultiValue | list):
        return "\\".join(str(v) for v in value)
    return str(value).strip()


def _matches_value(keyword: str, pattern: str, value: str, case_insensitive: bool) -> bool:
    """PS3.4 C.2.2.2 on one attribute: universal, wildcard, range (DA/TM), single value."""
    if not pattern or pattern == "*":
        return True
    if keyword in _DATE_KEYS | _TIME_KEYS and "-" in pattern:
        low, _, high = pattern.partition("-")
        if not value:
            return False
        return (not low or value >= low) and (not high or value[: len(high)] <= high)
    if keyword in _PN_KEYS and case_insensitive:
        pattern, value = pattern.upper(), person_name_norm(value)
        pattern = pattern if "*" in pattern or "?" in pattern else person_name_norm(pattern)
    if "*" in pattern or "?" in pattern:
        regex = "".join(".*" if c == "*" else "." if c == "?" else re.escape(c) for c in pattern)
        return re.fullmatch(regex, value, flags=re.DOTALL) is not None
    return value == pattern


def match_worklist(identifier: Dataset, item: Dataset, case_insensitive: bool) -> bool:
    for elem in identifier:
        if elem.tag.group == 0x0000 or elem.keyword in ("SpecificCharacterSet", "QueryRetrieveLevel"):
            continue
        if elem.VR == "SQ":
            if elem.keyword == "ScheduledProcedureStepSequence" and elem.value:
                step = item.ScheduledProcedureStepSequence[0]
                for sub in elem.value[0]:
                    if sub.VR != "SQ" and not _matches_value(
                        sub.keyword, _text(sub.value), _text(step.get(sub.keyword, "")), case_insensitive
                    ):
                        return False
            continue
        if not _matches_value(
            elem.keyword, _text(elem.value), _text(item.get(elem.keyword, "")), case_insensitive
        ):
            return False
    return True


def _answer(identifier: Dataset, item: Dataset) -> Dataset:
    """Only the keys asked for (C.4.1.1.3.2), values from the item, unknown keys zero length."""
    out = Dataset()
    out.SpecificCharacterSet = "ISO_IR 192"
    for elem in identifier:
        if elem.tag.group == 0x0000 or elem.keyword == "SpecificCharacterSet":
            continue
        if elem.VR == "SQ":
            if elem.keyword == "ScheduledProcedureStepSequence":
                step = item.ScheduledProcedureStepSequence[0]
                wanted = elem.value[0] if elem.value else step
                sub_out = Dataset()
                for sub in wanted:
                    if sub.VR != "SQ":
                        setattr(sub_out, sub.keyword, step.get(sub.keyword) or None)
                out.ScheduledProcedureStepSequence = Sequence([sub_out])
            else:
                setattr(out, elem.keyword, Sequence([]))
            continue
        if elem.keyword:
            value = item.get(elem.keyword)
            setattr(out, elem.keyword, value if value not in ("", None) else None)
    return out


def run_worklist_find(
    repo_factory: Callable[[], Any],
    identifier: Dataset,
    settings: PacsSettings,
    is_cancelled: Callable[[], bool],
) -> Iterator[tuple[int, Dataset | None]]:
    items = repo_factory()
    for item in items:
        if is_cancelled():
            yield status.CANCEL, None
            return
        if match_worklist(identifier, item, settings.case_insensitive_names):
            yield status.PENDING, _answer(identifier, item)
    yield status.SUCCESS, None
