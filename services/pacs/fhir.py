"""Small conversions between DICOM attributes and FHIR R4 resources, and the record-store look-ups the
PACS shares (the patient of a PatientID, the ServiceRequest of an accession number)."""

from __future__ import annotations

from typing import Any

from engine.fhir.repository import ResourceRepository, StoredResource
from engine.mapping.dicom_converters import human_name_from_pn

__all__ = [
    "DICOM_UID_SYSTEM",
    "ACSN",
    "IMAGING_CATEGORY",
    "pn_from_human_name",
    "human_name_from_pn",
    "da_from_fhir",
    "fhir_date",
    "fhir_datetime",
    "dicom_date_time",
    "has_accession",
    "accession_of",
    "find_patient",
    "ensure_patient",
    "find_service_request",
]

DICOM_UID_SYSTEM = "urn:dicom:uid"
V2_0203 = "http://terminology.hl7.org/CodeSystem/v2-0203"
ACSN = "ACSN"
SNOMED = "http://snomed.info/sct"
IMAGING_CATEGORY = "363679005"
_SEX = {"male": "M", "female": "F", "other": "O"}
_GENDER = {"M": "male", "F": "female", "O": "other"}


def pn_from_human_name(name: dict[str, Any] | None) -> str:
    """FHIR HumanName -> DICOM PN ``family^given^middle^prefix^suffix`` (PS3.5 6.2.1)."""
    if not name:
        return ""
    given = list(name.get("given") or [])
    parts = [
        name.get("family") or "",
        given[0] if given else "",
        " ".join(given[1:]),
        " ".join(name.get("prefix") or []),
        " ".join(name.get("suffix") or []),
    ]
    return "^".join(parts).rstrip("^")


def da_from_fhir(value: str | None) -> str:
    """``2024-06-01`` or ``2024-06-01T08:30:00+02:00`` -> ``20240601``."""
    return (value or "")[:10].replace("-", "") if value and len(value) >= 10 else ""


def tm_from_fhir(value: str | None) -> str:
    """``2024-06-01T08:30:15+02:00`` -> ``083015`` (local time as written)."""
    if not value or "T" not in value:
        return ""
    return value.split("T", 1)[1][:8].replace(":", "")


def fhir_date(da: str) -> str | None:
    da = da.strip()
    if len(da) == 8 and da.isdigit():
        return f"{da[:4]}-{da[4:6]}-{da[6:]}"
    return None


def fhir_datetime(da: str, tm: str = "") -> str | None:
    """DICOM DA + TM -> FHIR dateTime (no zone given by DICOM: the date alone when time is unknown)."""
    date = fhir_date(da)
    if date is None:
        return None
    tm = tm.strip().split(".")[0]
    if len(tm) >= 4 and tm[:4].isdigit():
        tm = (tm + "00")[:6] if len(tm) < 6 else tm[:6]
        return f"{date}T{tm[:2]}:{tm[2:4]}:{tm[4:6]}Z"
    return date


def dicom_date_time(value: str | None) -> tuple[str, str]:
    return da_from_fhir(value), tm_from_fhir(value)


def has_accession(resource: dict[str, Any], accession: str) -> bool:
    return any(
        ident.get("value") == accession
        and any(c.get("code") == ACSN for c in (ident.get("type") or {}).get("coding", []))
        for ident in resource.get("identifier") or []
    )


def accession_of(resource: dict[str, Any]) -> str:
    for ident in resource.get("identifier") or []:
        if any(c.get("code") == ACSN for c in (ident.get("type") or {}).get("coding", [])):
            return str(ident.get("value") or "")
    return ""


def find_patient(repo: ResourceRepository, patient_id: str, system: str | None) -> StoredResource | None:
    if not patient_id:
        return None
    token = f"{system}|{patient_id}" if system else patient_id
    result = repo.search("Patient", [("identifier", token), ("_count", "2")])
    return result.matches[0] if result.matches else None


def ensure_patient(
    repo: ResourceRepository,
    *,
    patient_id: str,
    system: str | None,
    name: str = "",
    birth_date: str = "",
    sex: str = "",
) -> StoredResource | None:
    """The Patient with this identifier, created from the DICOM demographics when unknown."""
    if not patient_id:
        return None
    found = find_patient(repo, patient_id, system)
    if found is not None:
        return found
    resource: dict[str, Any] = {
        "resourceType": "Patient",
        "identifier": [{"system": system or "urn:conduit:dicom:patient-id", "value": patient_id}],
    }
    human = human_name_from_pn(name)
    if human:
        resource["name"] = [human]
    if fhir_date(birth_date):
        resource["birthDate"] = fhir_date(birth_date)
    if sex.upper() in _GENDER:
        resource["gender"] = _GENDER[sex.upper()]
    return repo.create(resource)


def dicom_sex(gender: str | None) -> str:
    return _SEX.get(gender or "", "")


def find_service_request(repo: ResourceRepository, accession: str) -> StoredResource | None:
    """The ServiceRequest carrying ``accession`` as its ACSN-typed identifier."""
    if not accession:
        return None
    result = repo.search("ServiceRequest", [("identifier", accession), ("_count", "20")])
    for match in result.matches:
        if has_accession(match.resource, accession):
            return match
    return None
