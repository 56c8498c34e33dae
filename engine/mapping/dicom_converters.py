"""Converters for DICOM values (PS3.5 6.2 value representations), registered beside the HL7 v2 ones.

``PN``     person name ``family^given^middle^prefix^suffix`` (the alphabetic group) → HumanName
``DA+TM``  a date and a time given together (``{join: [StudyDate, StudyTime], as: DA+TM}``), or a DT
           value → dateTime, to the second, in the mapping's time zone when the value has no offset
``oid``    a UID → its URI ``urn:oid:<uid>`` (FHIR's way of writing an OID)
"""

from __future__ import annotations

import re
from typing import Any

from engine.hl7v2.paths import Value
from engine.mapping.converters import ConversionError, ConvertContext, converter
from engine.mapping.datetime import DateFormatError, to_datetime

__all__ = ["human_name_from_pn", "pn_name", "dicom_datetime", "oid_uri"]

_DT = re.compile(r"^(\d{8})(\d*)(?:\.\d*)?([+-]\d{4})?$", re.ASCII)


def human_name_from_pn(pn: str) -> dict[str, Any] | None:
    """A DICOM PN (its alphabetic group) as a FHIR HumanName; None when it names no one."""
    alphabetic = pn.split("=")[0]
    parts = (alphabetic.split("^") + [""] * 5)[:5]
    if not any(p.strip() for p in parts):
        return None
    name: dict[str, Any] = {}
    if parts[0].strip():
        name["family"] = parts[0].strip()
    given = [g for g in (parts[1].strip(), *parts[2].split()) if g]
    if given:
        name["given"] = given
    if parts[3].strip():
        name["prefix"] = parts[3].split()
    if parts[4].strip():
        name["suffix"] = parts[4].split()
    return name


@converter("PN")
def pn_name(v: Value, cx: ConvertContext, opts: dict[str, Any]) -> dict[str, Any] | None:
    return human_name_from_pn(v.text())


@converter("DA+TM", "DICOM-DT")
def dicom_datetime(v: Value, cx: ConvertContext, opts: dict[str, Any]) -> str | None:
    """A DA and a TM given together (two components), or one DT value. Seconds at most (DICOM sends up
    to microseconds, more than a modality clock means); an hour alone is too vague for a dateTime, so
    the date stands alone then. No date, no value."""
    if len(v.comps) >= 2:
        date, time, offset = v.c(1).strip(), v.c(2).strip().split(".")[0], ""
        if not date:
            return None
        if not (len(date) == 8 and date.isdigit()):
            raise ConversionError("not a DICOM date (DA: YYYYMMDD)")
    else:
        m = _DT.match(v.c(1).replace(" ", ""))
        if not m:
            raise ConversionError("not a DICOM date and time (DT: YYYYMMDD[HHMM[SS]][.F][+/-ZZZZ])")
        date, time, offset = m[1], m[2], m[3] or ""
    time = (time + "00")[:6] if len(time) >= 4 and time[:4].isdigit() else ""
    try:
        return to_datetime(date + time + offset if time else date, cx.tz)
    except DateFormatError as exc:
        raise ConversionError(str(exc)) from None


@converter("oid")
def oid_uri(v: Value, cx: ConvertContext, opts: dict[str, Any]) -> str | None:
    uid = v.c(1)
    return f"urn:oid:{uid}" if uid else None
