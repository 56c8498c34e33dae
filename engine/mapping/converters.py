"""Datatype converters, after the HL7 v2-to-FHIR IG datatype maps.

Each converter turns one v2 value (:class:`engine.hl7v2.paths.Value`) into a FHIR JSON fragment, or None
when the value carries nothing. Mapping files name them with ``as:``:

=============  ==========================================================================================
``string``     ST/TX/FT/ID/IS → string (components re-joined)       ``code``   → the first component
``CX``         → Identifier (CX.4 authority → system URI, CX.5 → type from Table 0203)
``EI``         → Identifier (EI.2/EI.3 → system)                    ``HD`` → Identifier of the HD
``XPN``        → HumanName                                          ``XAD`` → Address
``XTN``        → ContactPoint                                       ``CWE`` ``CE`` ``CNE`` → CodeableConcept
``coding``     → Coding                                             ``XON`` → Organization name
``DTM`` ``TS`` → dateTime with the sender's precision               ``date`` / ``instant``
``NM``         → decimal                                            ``quantity`` → Quantity (with ``unit:``)
``SN``         → Quantity with comparator (``<^0.5``, ``>=^60``) or Range (``^10^-^20``)
``ED``         → Attachment                                         ``obx-value`` → value[x] by OBX-2
``reference-range``  OBX-7 (+ OBX-6 units) → Observation.referenceRange
``XCN-identifier`` ``XCN-name``  XCN → Practitioner.identifier/name ``PL-name`` → Location.name
``boolean``    Y/N → boolean                                        ``integer`` / ``decimal``
``urn-part``   text escaped as one part of a URN (spaces → ``-``, the rest percent-encoded)
=============  ==========================================================================================

Converters raise :class:`ConversionError` for data that cannot be converted; the interpreter turns it into
an issue located at the field and the mapping line. Messages never quote the value: issues are logged and
returned to senders, and values are patient data.
"""

from __future__ import annotations

import base64
import binascii
import re
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import tzinfo
from decimal import Decimal, InvalidOperation
from functools import lru_cache
from typing import Any
from urllib.parse import quote

from engine.hl7v2.paths import Value
from engine.mapping.concepts import Terminology, system_uri, uri_text
from engine.mapping.datetime import DateFormatError, to_date, to_datetime, to_instant

__all__ = [
    "Choice",
    "ConversionError",
    "UnmappedCode",
    "ConvertContext",
    "CONVERTERS",
    "TEXT_CONVERTERS",
    "text_as_is",
    "converter",
    "identifier_system",
]


class ConversionError(ValueError):
    pass


class UnmappedCode(Exception):
    """A code with no entry in a table or ConceptMap whose ``unmapped`` is ``error``: the message fails."""


class Choice(dict):  # type: ignore[type-arg]
    """A value[x] result: ``Choice(Quantity={...})`` is written as ``valueQuantity``."""


@dataclass
class ConvertContext:
    tz: tzinfo
    terminology: Terminology
    systems: dict[str, str] = field(default_factory=dict)  # assigning authority -> system URI
    codesystems: dict[str, str] = field(default_factory=dict)  # CWE-3 name -> system URI
    sender: str = ""  # MSH-4.1 or MSH-3.1: the implicit assigning authority
    options: dict[str, Any] = field(default_factory=dict)
    used: set[tuple[int, int]] | None = None
    """(segment index, field) pairs read; shared with the interpreter when it tracks usage (map test)."""
    units: dict[int, dict[str, Any]] = field(default_factory=dict)
    """OBX-6 units by segment index: OBX-5 and OBX-7 of one OBX both carry them (see _obx_units)."""
    units_by_text: dict[str, dict[str, Any]] = field(default_factory=dict)
    """The same by the raw text of OBX-6: the OBX of a panel mostly share their units."""

    def note_used(self, segment: Any, *fields: int) -> None:
        """Record fields a converter reads beside its own value (OBX-2, OBX-6) as used by the mapping."""
        if self.used is not None and segment is not None:
            self.used.update((segment.index, n) for n in fields)

    def code(self, table: str, code: str) -> str | None:
        return self.terminology.table(table).lookup(code)


Converter = Callable[[Value, ConvertContext, dict[str, Any]], Any]
CONVERTERS: dict[str, Converter] = {}


def converter(*names: str) -> Callable[[Converter], Converter]:
    def register(fn: Converter) -> Converter:
        for name in names:
            CONVERTERS[name] = fn
        return fn

    return register


def _clean(d: dict[str, Any]) -> dict[str, Any] | None:
    """Without empty members: None, empty strings, lists, objects — and the HL7 explicit null (falsy)."""
    out = {k: v for k, v in d.items() if v is not None and (v or not isinstance(v, str | list | dict))}
    return out or None


def _urn_part(text: str) -> str:
    return quote(text.strip().replace(" ", "-"), safe="-._~:@")


def code_text(text: str) -> str:
    """Text as a FHIR ``code``: no leading, trailing or repeated whitespace (``GLU  FAST`` → ``GLU FAST``)."""
    return " ".join(text.split())


def identifier_system(hd: Value | None, cx: ConvertContext) -> str:
    """The system URI of an assigning authority (an HD): the mapping's ``systems:`` table by namespace or
    universal id, else ``urn:oid:`` for an ISO OID, else a Conduit URN naming the authority or, when none
    is given, the sending facility (the implicit authority)."""
    namespace = hd.c(1) if hd else ""
    universal = hd.c(2) if hd else ""
    kind = hd.c(3) if hd else ""
    for key in (namespace, universal, f"{namespace}&{universal}"):
        if key and key in cx.systems:
            return cx.systems[key]
    if universal:
        if kind.upper() in ("ISO", "") and re.fullmatch(r"\d+(\.\d+)+", universal, re.ASCII):
            return f"urn:oid:{universal}"
        if kind.upper() in ("URI", "URL") or "://" in universal:
            return uri_text(universal)
    if namespace:
        return f"urn:conduit:authority:{_urn_part(namespace)}"
    if "*" in cx.systems:
        return cx.systems["*"]
    return f"urn:conduit:authority:{_urn_part(cx.sender or 'unknown')}"


def _v2_coding(cx: ConvertContext, table: str, code: str) -> dict[str, str] | None:
    code = code_text(code)
    if not code:
        return None
    coding = {"system": f"http://terminology.hl7.org/CodeSystem/v2-{table}", "code": code}
    display = cx.terminology.display(table, code)
    if display:
        coding["display"] = display
    return coding


@converter("string", "ST", "TX", "FT", "ID", "IS", "SI", "text")
def to_string(v: Value, cx: ConvertContext, opts: dict[str, Any]) -> str | None:
    return v.text() or None


@converter("code")
def to_code(v: Value, cx: ConvertContext, opts: dict[str, Any]) -> str | None:
    return code_text(v.c(1)) or None


@converter("urn-part")
def to_urn_part(v: Value, cx: ConvertContext, opts: dict[str, Any]) -> str | None:
    """Text made safe as one part of a URN (``{join: [{value: "urn:x"}, {path: PID-20.2, as: urn-part}]}``),
    escaped like an assigning authority's name in :func:`identifier_system`."""
    text = v.text()
    return _urn_part(text) if text and text.strip() else None


@converter("integer")
def to_integer(v: Value, cx: ConvertContext, opts: dict[str, Any]) -> int | None:
    text = v.c(1)
    if not text:
        return None
    try:
        return int(text)
    except ValueError:
        raise ConversionError("not an integer") from None


@lru_cache(maxsize=4096)  # a pure function of the text; results sit in ranges and values of every OBX
def _decimal(text: str) -> int | float | None:
    text = text.strip()
    if not text:
        return None
    try:
        d = Decimal(text)
    except InvalidOperation:
        raise ConversionError("not a number") from None
    if not d.is_finite():
        raise ConversionError("not a finite number")
    # keep the sender's precision in JSON (R4 decimals are exact: "5.0" stays 5.0)
    return (
        int(d) if d == d.to_integral_value() and "." not in text and "e" not in text.lower() else float(text)
    )


@converter("decimal", "NM")
def to_decimal(v: Value, cx: ConvertContext, opts: dict[str, Any]) -> int | float | None:
    return _decimal(v.c(1))


@converter("boolean")
def to_boolean(v: Value, cx: ConvertContext, opts: dict[str, Any]) -> bool | None:
    text = v.c(1).upper()
    if text in ("Y", "YES", "T", "TRUE", "1"):
        return True
    if text in ("N", "NO", "F", "FALSE", "0"):
        return False
    return None


@converter("DTM", "TS", "DT", "dateTime")
def to_fhir_datetime(v: Value, cx: ConvertContext, opts: dict[str, Any]) -> str | None:
    text = v.c(1)
    if not text:
        return None
    try:
        return to_datetime(text, cx.tz)
    except DateFormatError as exc:
        raise ConversionError(str(exc)) from None


@converter("date")
def to_fhir_date(v: Value, cx: ConvertContext, opts: dict[str, Any]) -> str | None:
    text = v.c(1)
    if not text:
        return None
    try:
        return to_date(text[:8])
    except DateFormatError as exc:
        raise ConversionError(str(exc)) from None


@converter("instant")
def to_fhir_instant(v: Value, cx: ConvertContext, opts: dict[str, Any]) -> str | None:
    text = v.c(1)
    if not text:
        return None
    try:
        return to_instant(text, cx.tz)
    except DateFormatError as exc:
        raise ConversionError(str(exc)) from None


@converter("period", "DR")
def to_period(v: Value, cx: ConvertContext, opts: dict[str, Any]) -> dict[str, Any] | None:
    try:
        start = to_datetime(v.c(1), cx.tz) if v.c(1) else None
        end = to_datetime(v.c(2), cx.tz) if v.c(2) else None
    except DateFormatError as exc:
        raise ConversionError(str(exc)) from None
    return _clean({"start": start, "end": end})


@converter("HD")
def hd_identifier(v: Value, cx: ConvertContext, opts: dict[str, Any]) -> dict[str, Any] | None:
    if v.c(2):
        return _clean(
            {"system": "urn:ietf:rfc:3986", "value": f"urn:oid:{v.c(2)}" if v.c(3) == "ISO" else v.c(2)}
        )
    return _clean({"value": v.c(1)})


@converter("CX")
def cx_identifier(v: Value, cx: ConvertContext, opts: dict[str, Any]) -> dict[str, Any] | None:
    value = v.c(1)
    if not value:
        return None
    authority = v.component(4) if v.c(4) or v.c(4, 2) else None
    ident: dict[str, Any] = {"system": identifier_system(authority, cx), "value": value}
    type_code = v.c(5)
    if type_code:
        coding = _v2_coding(cx, "0203", type_code)
        ident["type"] = {"coding": [coding]}
    if opts.get("use"):
        ident["use"] = opts["use"]
    period = _clean({"start": _safe_date(v.c(7), cx), "end": _safe_date(v.c(8), cx)})
    if period:
        ident["period"] = period
    return ident


def _safe_date(text: str, cx: ConvertContext) -> str | None:
    if not text:
        return None
    try:
        return to_datetime(text, cx.tz)
    except DateFormatError:
        return None


@converter("CX-system")
def cx_system(v: Value, cx: ConvertContext, opts: dict[str, Any]) -> str | None:
    authority = v.component(4) if v.c(4) or v.c(4, 2) else None
    return identifier_system(authority, cx)


@converter("EI")
def ei_identifier(v: Value, cx: ConvertContext, opts: dict[str, Any]) -> dict[str, Any] | None:
    value = v.c(1)
    if not value:
        return None
    hd = Value([[v.comps[i][0]] if i < len(v.comps) else [""] for i in (1, 2, 3)], v.d, v.location)
    ident: dict[str, Any] = {
        "system": identifier_system(hd if (hd.c(1) or hd.c(2)) else None, cx),
        "value": value,
    }
    if opts.get("type"):
        ident["type"] = {"coding": [_v2_coding(cx, "0203", opts["type"])]}
    return ident


@converter("XPN")
def xpn_name(v: Value, cx: ConvertContext, opts: dict[str, Any]) -> dict[str, Any] | None:
    family = v.c(1, 1)
    given = [g for g in (v.c(2),) if g] + [g for g in v.c(3).split(" ") if g]
    prefix = [p for p in (v.c(5),) if p]
    suffix = [s for s in (v.c(4), v.c(6)) if s]
    use = cx.code("name-use", v.c(7)) if v.c(7) else None
    return _clean({"use": use, "family": family, "given": given, "prefix": prefix, "suffix": suffix})


@converter("XCN-name", "XCN.name", "CNN-name")
def xcn_name(v: Value, cx: ConvertContext, opts: dict[str, Any]) -> dict[str, Any] | None:
    family = v.c(2, 1)
    given = [g for g in (v.c(3),) if g] + [g for g in v.c(4).split(" ") if g]
    prefix = [p for p in (v.c(6),) if p]
    suffix = [s for s in (v.c(5), v.c(7)) if s]
    return _clean({"family": family, "given": given, "prefix": prefix, "suffix": suffix})


@converter("XCN-identifier", "XCN.identifier", "CNN-identifier")
def xcn_identifier(v: Value, cx: ConvertContext, opts: dict[str, Any]) -> dict[str, Any] | None:
    value = v.c(1)
    if not value:
        return None
    authority = v.component(9) if v.c(9) or v.c(9, 2) else None
    ident: dict[str, Any] = {"system": identifier_system(authority, cx), "value": value}
    if v.c(13):
        ident["type"] = {"coding": [_v2_coding(cx, "0203", v.c(13))]}
    return ident


@converter("XCN-display")
def xcn_display(v: Value, cx: ConvertContext, opts: dict[str, Any]) -> str | None:
    name = xcn_name(v, cx, opts) or {}
    parts = list(name.get("prefix", [])) + list(name.get("given", [])) + [name.get("family", "")]
    text = " ".join(p for p in parts if p)
    return text or v.c(1) or None


@converter("XAD")
def xad_address(v: Value, cx: ConvertContext, opts: dict[str, Any]) -> dict[str, Any] | None:
    line = [x for x in (v.c(1, 1), v.c(2)) if x]
    code = v.c(7)
    return _clean(
        {
            "use": cx.code("address-use", code) if code else None,
            "type": cx.code("address-type", code) if code else None,
            "line": line,
            "city": v.c(3),
            "district": v.c(9),
            "state": v.c(4),
            "postalCode": v.c(5),
            "country": v.c(6),
        }
    )


_DIGITS = re.compile(r"\D")


@converter("XTN")
def xtn_contact(v: Value, cx: ConvertContext, opts: dict[str, Any]) -> dict[str, Any] | None:
    equipment = v.c(3)
    system = cx.code("contact-point-system", equipment) if equipment else None
    value = ""
    if equipment in ("Internet", "X.400") or (v.c(4) and not v.c(1)):
        value = v.c(4)
        system = system or "email"
    if not value:
        parts = [v.c(5) and f"+{v.c(5)}", v.c(6) and f"({v.c(6)})", v.c(7)]
        assembled = " ".join(p for p in parts if p)
        if v.c(8):
            assembled = f"{assembled} ext. {v.c(8)}" if assembled else ""
        value = v.c(12) or assembled or v.c(1)
    if not value:
        return None
    use = cx.code("contact-point-use", v.c(2)) if v.c(2) else None
    return _clean({"system": system or ("email" if "@" in value else "phone"), "value": value, "use": use})


def _coding(
    cx: ConvertContext, code: str, display: str, system_name: str, version: str = ""
) -> dict[str, Any] | None:
    code = code_text(code)
    if not code and not display:
        return None
    if not code:
        return None
    system = system_uri(system_name, cx.codesystems)
    if system is None and system_name:
        system = f"urn:conduit:codesystem:{_urn_part(system_name)}"
    return _clean({"system": system, "version": version, "code": code, "display": display})


@converter("CWE", "CE", "CNE", "CF", "CodeableConcept")
def cwe_concept(v: Value, cx: ConvertContext, opts: dict[str, Any]) -> dict[str, Any] | None:
    codings = []
    c1, c2, c3, c4, c5, c6, c7, c8, c9 = v.texts(9)
    first = _coding(cx, c1, c2, c3, c7)
    if first:
        codings.append(first)
    alternate = _coding(cx, c4, c5, c6, c8)
    if alternate and alternate != first:
        codings.append(alternate)
    text = c9 or c2 or c5
    translate = opts.get("translate")
    if translate:
        cm = cx.terminology.concept_map(translate)
        extra: list[dict[str, Any]] = []
        for coding in list(codings):
            try:
                found = cm.translate(coding.get("system"), coding["code"], opts.get("unmapped"))
            except KeyError:
                raise UnmappedCode(
                    f"code {coding['code']!r} has no entry in ConceptMap {translate!r} (unmapped: error)"
                ) from None
            extra.extend(c for c in found or () if c not in codings)
        codings = extra + codings
    if not codings and not text:
        return None
    return _clean({"coding": codings, "text": text})


@converter("coding", "Coding")
def cwe_coding(v: Value, cx: ConvertContext, opts: dict[str, Any]) -> dict[str, Any] | None:
    return _coding(cx, v.c(1), v.c(2), v.c(3), v.c(7))


@converter("v2-coding")
def v2_table_coding(v: Value, cx: ConvertContext, opts: dict[str, Any]) -> dict[str, Any] | None:
    """A coded value from an HL7 table (``table_id: "0078"``) as a Coding with the official display."""
    return _v2_coding(cx, str(opts.get("table_id", "")).zfill(4), v.c(1))


@converter("v2-concept")
def v2_table_concept(v: Value, cx: ConvertContext, opts: dict[str, Any]) -> dict[str, Any] | None:
    coding = _v2_coding(cx, str(opts.get("table_id", "")).zfill(4), v.c(1))
    return {"coding": [coding]} if coding else None


@converter("XON")
def xon_name(v: Value, cx: ConvertContext, opts: dict[str, Any]) -> str | None:
    return v.c(1) or None


@converter("PL-name")
def pl_name(v: Value, cx: ConvertContext, opts: dict[str, Any]) -> str | None:
    """PL: point of care ^ room ^ bed ^ facility ... → a readable location name (``4E 136 B``)."""
    parts = [v.c(1), v.c(2), v.c(3)]
    text = " ".join(p for p in parts if p)
    return text or v.c(4) or v.c(9) or None


@converter("PL-identifier")
def pl_identifier(v: Value, cx: ConvertContext, opts: dict[str, Any]) -> dict[str, Any] | None:
    parts = [v.c(4), v.c(1), v.c(2), v.c(3)]
    if not any(parts[1:]):
        return None
    return {
        "system": f"urn:conduit:location:{_urn_part(cx.sender or 'unknown')}",
        "value": "^".join(parts).rstrip("^"),
    }


def _units(seg_units: Value | None, cx: ConvertContext) -> dict[str, Any]:
    if seg_units is None or not seg_units:
        return {}
    code, text, system_name = seg_units.c(1), seg_units.c(2), seg_units.c(3)
    unit = text or code
    # units of neither text nor code (`^^UCUM`) give no unit: FHIR has no empty strings
    out: dict[str, Any] = {"unit": unit} if unit else {}
    system = system_uri(system_name, cx.codesystems) if system_name else None
    if system is None and system_name in ("", None) and code:
        # UCUM is the default unit system of OBX-6 in the lab IGs; only claim it for codes that look like UCUM
        system = None
    if system and code:
        out["system"] = system
        out["code"] = code_text(code)
    return out


def _obx_units(seg: Any, v: Value, cx: ConvertContext) -> dict[str, Any]:
    """The units of an OBX (OBX-6), worked out once per segment and message: the returned dict is only
    ever spread into new ones (``{"value": n, **units}``), so sharing it is safe."""
    found = cx.units.get(seg.index)
    if found is None:
        # the same text gives the same units: one message has one set of delimiters, one mapping's systems
        raw = seg.raw(6)
        found = cx.units_by_text.get(raw)
        if found is None:
            units_field = seg.field(6)
            found = _units(Value(units_field[0], v.d, "OBX-6"), cx) if units_field else {}
            cx.units_by_text[raw] = found
        cx.units[seg.index] = found
    return found


_COMPARATOR_TEXT = re.compile(r"^\s*(<=|>=|<|>)\s*([-+]?\d+(?:\.\d+)?)\s*$", re.ASCII)
_RANGE_TEXT = re.compile(r"^\s*([-+]?\d+(?:\.\d+)?)\s*(?:-|–|to)\s*([-+]?\d+(?:\.\d+)?)\s*$", re.ASCII)


def sn_value(v: Value, cx: ConvertContext, units: dict[str, Any]) -> Choice | None:
    comparator, n1, sep, n2 = v.c(1), v.c(2), v.c(3), v.c(4)
    if not n1 and not n2:
        return None
    if sep in ("-", "--") and n1 and n2:
        return Choice(
            Range={"low": {"value": _decimal(n1), **units}, "high": {"value": _decimal(n2), **units}}
        )
    if sep in (":", "/") and n2:
        return Choice(
            Ratio={"numerator": {"value": _decimal(n1), **units}, "denominator": {"value": _decimal(n2)}}
        )
    q: dict[str, Any] = {"value": _decimal(n1), **units}
    if comparator and comparator != "=":
        if comparator not in ("<", "<=", ">", ">="):
            raise ConversionError(f"SN-1 comparator must be <, <=, > or >=, not {comparator!r}")
        q = {"value": q["value"], "comparator": comparator, **units}
    return Choice(Quantity=q)


@converter("SN")
def sn_converter(v: Value, cx: ConvertContext, opts: dict[str, Any]) -> Choice | None:
    return sn_value(v, cx, {})


@converter("quantity", "Quantity")
def to_quantity(v: Value, cx: ConvertContext, opts: dict[str, Any]) -> dict[str, Any] | None:
    number = _decimal(v.c(1))
    if number is None:
        return None
    unit = opts.get("unit")
    out: dict[str, Any] = {"value": number}
    if isinstance(unit, str) and unit:
        out["unit"] = unit
    return out


@converter("ED")
def ed_attachment(v: Value, cx: ConvertContext, opts: dict[str, Any]) -> dict[str, Any] | None:
    # ED: source application ^ type of data ^ data subtype ^ encoding ^ data
    data = v.c(5)
    if not data:
        return None
    kind = v.c(3) or v.c(2)
    content_type = cx.code("media-type", kind) if kind else "application/octet-stream"
    if "/" in kind and content_type == "application/octet-stream":
        content_type = kind.lower()
    encoding = v.c(4).upper()
    if encoding in ("BASE64", "B64"):
        payload = "".join(data.split())
        if len(payload) % 4:
            payload += "=" * (-len(payload) % 4)
        try:
            binascii.a2b_base64(payload.encode("ascii"), strict_mode=True)
        except (binascii.Error, UnicodeEncodeError, ValueError):
            raise ConversionError("ED-5 is not valid Base64 (truncated or corrupt document)") from None
    elif encoding == "HEX":
        try:
            payload = base64.b64encode(bytes.fromhex(data)).decode("ascii")
        except ValueError:
            raise ConversionError("ED-5 is not valid hexadecimal") from None
    else:
        payload = base64.b64encode(data.encode("utf-8")).decode("ascii")
    return {"contentType": content_type, "data": payload}


@converter("obx-value")
def obx_value(v: Value, cx: ConvertContext, opts: dict[str, Any]) -> Choice | None:
    """OBX-5 by its OBX-2 value type, with OBX-6 units: Observation.value[x]."""
    seg = v.segment
    value_type = seg.get(2) if seg is not None else "ST"
    cx.note_used(seg, 2, 6)
    units = _obx_units(seg, v, cx) if seg is not None else {}
    if value_type == "NM":
        number = _decimal(v.c(1))
        if number is None:
            return None
        return Choice(Quantity={"value": number, **units})
    if value_type == "SN":
        return sn_value(v, cx, units)
    if value_type in ("CWE", "CE", "CNE", "CF"):
        concept = cwe_concept(v, cx, {})
        return Choice(CodeableConcept=concept) if concept else None
    if value_type in ("DT", "DTM", "TS"):
        dt = to_fhir_datetime(v, cx, {})
        return Choice(DateTime=dt) if dt else None
    if value_type == "TM":
        t = v.c(1)
        if not t:
            return None
        m = re.fullmatch(r"(\d{2})(\d{2})?(\d{2})?(\.\d+)?", t.split("+")[0].split("-")[0], re.ASCII)
        if not m:
            raise ConversionError("not an HL7 v2 time (HHMM[SS[.S]])")
        return Choice(Time=f"{m[1]}:{m[2] or '00'}:{m[3] or '00'}")
    if value_type == "ED":
        return None  # not an Observation value in R4: mapped to DiagnosticReport.presentedForm
    text = v.text()
    if not text:
        return None
    if value_type == "ST" and opts.get("comparators", True):
        m = _COMPARATOR_TEXT.match(text)
        if m:  # "<1", ">=6.1": a quantity with a comparator, not a string (clinical meaning kept)
            return Choice(Quantity={"value": _decimal(m[2]), "comparator": m[1], **units})
    return Choice(String=text)


@converter("reference-range")
def reference_range(v: Value, cx: ConvertContext, opts: dict[str, Any]) -> dict[str, Any] | None:
    """OBX-7 ("3.5-5.0", "<5", ">60", "negative") with OBX-6 units → referenceRange."""
    text = v.text()
    if not text:
        return None
    seg = v.segment
    if seg is not None and seg.name == "OBX":
        cx.note_used(seg, 6)
    units = _obx_units(seg, v, cx) if seg is not None and seg.name == "OBX" else {}
    m = _RANGE_TEXT.match(text)
    if m:
        return {
            "low": {"value": _decimal(m[1]), **units},
            "high": {"value": _decimal(m[2]), **units},
            "text": text,
        }
    m = _COMPARATOR_TEXT.match(text)
    if m:
        bound = {"value": _decimal(m[2]), **units}
        return {("high" if m[1].startswith("<") else "low"): bound, "text": text}
    return {"text": text}


def text_as_is(text: str, cx: ConvertContext) -> str | None:
    """The text converter of string and code: the text itself (engine.mapping.codegen writes it in line)."""
    return text or None


#: converters that read nothing of their value but its text (``v.c(1)``), as functions of that text (already
#: stripped, not empty, not the explicit null, no escapes): the interpreter converts a plain field with
#: them without making a Value. They give what the converter gives, or raise ValueError where it would
#: raise ConversionError (the interpreter then takes the general way, which reports it).
TEXT_CONVERTERS: dict[Converter, Callable[[str, ConvertContext], Any]] = {
    to_string: text_as_is,
    to_code: lambda text, cx: code_text(text) or None,
    xon_name: text_as_is,
    to_integer: lambda text, cx: int(text),
    to_decimal: lambda text, cx: _decimal(text),
    to_fhir_datetime: lambda text, cx: to_datetime(text, cx.tz),
    to_fhir_instant: lambda text, cx: to_instant(text, cx.tz),
    to_fhir_date: lambda text, cx: to_date(text[:8]),
}


def converter_names() -> list[str]:
    return sorted(CONVERTERS)
