"""FHIR R4 → HL7 v2 with the same kind of mapping file (``direction: fhir-to-v2``).

    mapping: oml-o21-out
    direction: fhir-to-v2
    version: "1.0"
    message: {type: OML, event: O21, structure: OML_O21, version: "2.5.1"}
    msh: {sending_application: CONDUIT, sending_facility: HOSPITAL}
    segments:
      - {segment: PID, from: Patient, fields: {3: {path: Patient.identifier, as: CX, repeat: true}}}
      - for_each: ServiceRequest           # one ORDER group per ServiceRequest
        segments:
          - {segment: ORC, fields: {1: {value: NW}, 2: {path: "ServiceRequest.identifier.where(type.coding.code = 'PLAC')", as: EI}}}
          - {segment: NTE, when: "ServiceRequest.note.exists()", fields: {3: ServiceRequest.note.text}}
    # ORC-12: {path: ServiceRequest.requester, resolve: true, as: XCN} follows a reference to its resource

Paths are FHIRPath (engine.fhir.fhirpath); converters turn FHIR values into v2 field text with escaping
(CX, EI, XPN, XCN, XAD, XTN, CWE, DTM, DT, string, code); ``table:`` maps codes (``gender-to-v2``).
The rendered message is parsed and validated against its message structure with hl7apy (strict) before
it is returned: a message that would fail at the receiver fails here, with hl7apy's reason.
"""

from __future__ import annotations

import re
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any

from engine.errors import ConfigurationError, Issue, MappingError
from engine.fhir.fhirpath import FHIRPathError, compile_expression
from engine.hl7v2.escape import DEFAULT_DELIMITERS, escape
from engine.mapping.concepts import CODE_SYSTEMS, Terminology
from engine.mapping.loader import LocatedDict, where

__all__ = ["Outbound", "compile_outbound", "render", "V2_CONVERTERS"]

_D = DEFAULT_DELIMITERS
_SYSTEM_NAMES = {uri: name for name, uri in reversed(list(CODE_SYSTEMS.items()))}


def _e(text: Any) -> str:
    return escape(str(text), _D) if text not in (None, "") else ""


def _join(parts: list[str], sep: str) -> str:
    while parts and not parts[-1]:
        parts.pop()
    return sep.join(parts)


def _authority(system: str) -> str:
    """An identifier system as a v2 HD (sub-components): the inverse of the inbound system table."""
    if system.startswith("urn:oid:"):
        return f"&{system[8:]}&ISO"
    if system.startswith("urn:conduit:authority:"):
        return _e(system.rsplit(":", 1)[-1])
    return f"&{_e(system)}&URI" if system else ""


def _cx(v: dict[str, Any]) -> str:
    type_code = next((c.get("code", "") for c in v.get("type", {}).get("coding", [])), "")
    return _join([_e(v.get("value")), "", "", _authority(v.get("system", "")), _e(type_code)], "^")


def _ei(v: dict[str, Any]) -> str:
    system = v.get("system", "")
    if system.startswith("urn:oid:"):
        return _join([_e(v.get("value")), "", system[8:], "ISO"], "^")
    if system.startswith("urn:conduit:authority:"):
        return _join([_e(v.get("value")), _e(system.rsplit(":", 1)[-1])], "^")
    return _join([_e(v.get("value")), "", _e(system), "URI" if system else ""], "^")


def _xpn(v: dict[str, Any]) -> str:
    given = v.get("given", [])
    use = {"official": "L", "usual": "D", "nickname": "N", "maiden": "M", "old": "B", "anonymous": "S"}.get(
        v.get("use", ""), ""
    )
    return _join(
        [_e(v.get("family")), _e(given[0] if given else ""), _e(" ".join(given[1:])), _e(" ".join(v.get("suffix", []))),
         _e(" ".join(v.get("prefix", []))), "", use],
        "^",
    )  # fmt: skip


def _xcn(resource: dict[str, Any]) -> str:
    ident = (resource.get("identifier") or [{}])[0]
    name = (resource.get("name") or [{}])[0]
    given = name.get("given", [])
    return _join(
        [_e(ident.get("value")), _e(name.get("family")), _e(given[0] if given else ""), _e(" ".join(given[1:])),
         "", _e(" ".join(name.get("prefix", []))), "", "", _authority(ident.get("system", ""))],
        "^",
    )  # fmt: skip


def _xad(v: dict[str, Any]) -> str:
    lines = v.get("line", [])
    return _join(
        [_e(lines[0] if lines else ""), _e(" ".join(lines[1:])), _e(v.get("city")), _e(v.get("state")),
         _e(v.get("postalCode")), _e(v.get("country"))],
        "^",
    )  # fmt: skip


def _xtn(v: dict[str, Any]) -> str:
    use = {"home": "PRN", "work": "WPN", "mobile": "PRS", "temp": "VHN"}.get(v.get("use", ""), "")
    if v.get("system") == "email":
        return _join(["", use or "NET", "Internet", _e(v.get("value"))], "^")
    equipment = {"phone": "PH", "fax": "FX", "pager": "BP"}.get(v.get("system", ""), "PH")
    return _join([_e(v.get("value")), use, equipment], "^")


def _cwe(v: dict[str, Any]) -> str:
    codings = v.get("coding", [])
    if not codings:
        return _join(["", "", "", "", "", "", "", "", _e(v.get("text"))], "^")
    parts: list[str] = []
    for coding in codings[:2]:
        system = coding.get("system", "")
        name = _SYSTEM_NAMES.get(system) or (
            f"HL7{system.rsplit('-', 1)[-1]}"
            if system.startswith("http://terminology.hl7.org/CodeSystem/v2-")
            else ""
        )
        if not name and system.startswith("urn:conduit:codesystem:"):
            name = system.rsplit(":", 1)[-1]
        parts += [
            _e(coding.get("code")),
            _e(coding.get("display")),
            _e(name or ("L" if not system else "99LOCAL")),
        ]
    return _join(parts, "^")


_FHIR_DT = re.compile(
    r"^(\d{4})(?:-(\d{2}))?(?:-(\d{2}))?(?:T(\d{2}):(\d{2})(?::(\d{2})(?:\.\d+)?)?)?(Z|[+-]\d{2}:\d{2})?$"
)


def _dtm(v: Any) -> str:
    m = _FHIR_DT.match(str(v))
    if not m:
        raise ValueError("not a FHIR date/dateTime")
    out = "".join(p or "" for p in m.groups()[:6])
    zone = m[7]
    if zone:
        out += "+0000" if zone == "Z" else zone.replace(":", "")
    return out


def _dt(v: Any) -> str:
    return _dtm(v)[:8]


def _obx_type(obs: dict[str, Any]) -> str:
    for key, kind in (
        ("valueQuantity", "NM"), ("valueCodeableConcept", "CWE"), ("valueString", "ST"), ("valueDateTime", "DTM"),
        ("valueRange", "SN"), ("valueRatio", "SN"), ("valueTime", "TM"), ("valueInteger", "NM"), ("valueBoolean", "ST"),
    ):  # fmt: skip
        if key in obs:
            return kind
    return ""


def _obx_value(obs: dict[str, Any]) -> str:
    if "valueQuantity" in obs:
        q = obs["valueQuantity"]
        return _e(q.get("value"))
    if "valueCodeableConcept" in obs:
        return _cwe(obs["valueCodeableConcept"])
    if "valueString" in obs:
        return _e(obs["valueString"])
    if "valueDateTime" in obs:
        return _dtm(obs["valueDateTime"])
    if "valueRange" in obs:
        r = obs["valueRange"]
        return _join(["", _e(r.get("low", {}).get("value")), "-", _e(r.get("high", {}).get("value"))], "^")
    if "valueInteger" in obs:
        return str(obs["valueInteger"])
    if "valueBoolean" in obs:
        return "Y" if obs["valueBoolean"] else "N"
    if "valueTime" in obs:
        return obs["valueTime"].replace(":", "")
    return ""


def _units(q: dict[str, Any]) -> str:
    code = q.get("code") or q.get("unit")
    system = "UCUM" if q.get("system") == "http://unitsofmeasure.org" else ""
    return _join([_e(code), _e(q.get("unit")), system], "^")


def _range_text(rr: dict[str, Any]) -> str:
    if rr.get("text"):
        return _e(rr["text"])
    low, high = rr.get("low", {}).get("value"), rr.get("high", {}).get("value")
    if low is not None and high is not None:
        return f"{low}-{high}"
    if high is not None:
        return f"<{high}"
    return f">{low}" if low is not None else ""


V2_CONVERTERS: dict[str, Callable[[Any], str]] = {
    "obx-type": _obx_type,
    "obx-value": _obx_value,
    "units": _units,
    "reference-range": _range_text,
    "string": _e,
    "code": _e,
    "CX": _cx,
    "EI": _ei,
    "XPN": _xpn,
    "XCN": _xcn,
    "XAD": _xad,
    "XTN": _xtn,
    "CWE": _cwe,
    "CE": _cwe,
    "DTM": _dtm,
    "TS": _dtm,
    "DT": _dt,
}


@dataclass
class FieldRule:
    number: int
    fn: Callable[[dict[str, Any], Any], str]
    where: str


@dataclass
class SegmentRule:
    name: str
    source: str | None  # a resource type, or a FHIRPath to a reference to follow, or None (the current one)
    fields: list[FieldRule]
    optional: bool
    where: str
    when: Any = None  # a compiled FHIRPath: the segment is written only when it is true


@dataclass
class Loop:
    resource_type: str
    body: list[Any]
    where: str


@dataclass
class Outbound:
    name: str
    version: str
    file: str
    message_type: str
    event: str
    structure: str
    v2_version: str
    msh: dict[str, str]
    body: list[Any] = field(default_factory=list)


class _Compiler:
    def __init__(self, doc: LocatedDict, file: str, terminology: Terminology):
        self.doc, self.file, self.terminology = doc, file, terminology

    def field(self, number: Any, spec: Any, at: str) -> FieldRule:
        if not str(number).isdigit():
            raise ConfigurationError(f"{at}: field numbers are integers, not {number!r}")
        if isinstance(spec, str):
            spec = {"path": spec}
        if not isinstance(spec, dict):
            raise ConfigurationError(f"{at}: a field is a path string or {{path, as, table, value, repeat}}")
        if "value" in spec:
            fixed = str(spec["value"])
            return FieldRule(int(number), lambda ctx, current: fixed, at)
        try:
            expr = compile_expression(str(spec["path"]))
        except (KeyError, FHIRPathError) as exc:
            raise ConfigurationError(f"{at}: invalid FHIRPath {spec.get('path')!r}: {exc}") from None
        conv_name = spec.get("as", "string")
        if conv_name not in V2_CONVERTERS:
            raise ConfigurationError(
                f"{at}: unknown v2 converter {conv_name!r} (known: {', '.join(V2_CONVERTERS)})"
            )
        conv = V2_CONVERTERS[conv_name]
        table = self.terminology.table(spec["table"]) if spec.get("table") else None
        repeat = bool(spec.get("repeat"))
        follow = bool(spec.get("resolve"))

        def render_field(ctx: dict[str, Any], current: Any) -> str:
            values = [n.value for n in expr.evaluate(current)] if current is not None else []
            if follow:  # references to the resources they name (ORC-12 from ServiceRequest.requester)
                values = [
                    ctx["res"].resolve(v["reference"])
                    for v in values
                    if isinstance(v, dict) and "reference" in v
                ]
                values = [v for v in values if v]
            out = []
            for value in values if repeat else values[:1]:
                if table is not None:
                    value = table.lookup(str(value))
                    if value is None:
                        continue
                try:
                    out.append(conv(value))
                except ValueError as exc:
                    raise MappingError(
                        str(exc), issues=[Issue(str(exc), location=f"field {number} ({at})")]
                    ) from None
            return _D.repetition.join(o for o in out if o)

        return FieldRule(int(number), render_field, at)

    def body(self, items: Any, at: str) -> list[Any]:
        out: list[Any] = []
        for item in items or []:
            iat = where(item, None, at)
            if "for_each" in item:
                out.append(Loop(str(item["for_each"]), self.body(item.get("segments"), iat), iat))
                continue
            name = str(item.get("segment", ""))
            if not re.fullmatch(r"[A-Z][A-Z0-9]{2}", name) or name == "MSH":
                raise ConfigurationError(f"{iat}: segment: must name a segment other than MSH, not {name!r}")
            fields = [
                self.field(n, s, where(item.get("fields"), n, iat))
                for n, s in (item.get("fields") or {}).items()
            ]
            rule = SegmentRule(name, item.get("from"), fields, bool(item.get("optional")), iat)
            if item.get("when"):
                try:
                    rule.when = compile_expression(str(item["when"]))
                except FHIRPathError as exc:
                    raise ConfigurationError(f"{iat}: invalid FHIRPath in when: {exc}") from None
            out.append(rule)
        return out

    def compile(self, name: str) -> Outbound:
        msg = self.doc.get("message") or {}
        at = f"{self.file}:{self.doc.line}"
        for key in ("type", "event", "version"):
            if key not in msg:
                raise ConfigurationError(
                    f"{where(self.doc, 'message', at)}: message: needs type, event and version"
                )
        return Outbound(
            name=name,
            version=str(self.doc.get("version", "1")),
            file=self.file,
            message_type=str(msg["type"]),
            event=str(msg["event"]),
            structure=str(msg.get("structure", f"{msg['type']}_{msg['event']}")),
            v2_version=str(msg["version"]),
            msh={str(k): str(v) for k, v in (self.doc.get("msh") or {}).items()},
            body=self.body(self.doc.get("segments"), at),
        )


def compile_outbound(doc: LocatedDict, name: str, file: str, terminology: Terminology) -> Outbound:
    return _Compiler(doc, file, terminology).compile(name)


class _Resources:
    def __init__(self, resources: Any):
        if isinstance(resources, dict) and resources.get("resourceType") == "Bundle":
            entries = resources.get("entry", [])
            items = [(e.get("fullUrl"), e.get("resource") or {}) for e in entries]
        elif isinstance(resources, dict):
            items = [(None, resources)]
        else:
            items = [(None, r) for r in resources]
        self.all = [r for _, r in items]
        self.by_ref: dict[str, dict[str, Any]] = {}
        for full_url, r in items:
            if full_url:
                self.by_ref[full_url] = r
            if r.get("id"):
                self.by_ref[f"{r.get('resourceType')}/{r['id']}"] = r

    def of_type(self, type_name: str) -> list[dict[str, Any]]:
        return [r for r in self.all if r.get("resourceType") == type_name]

    def resolve(self, reference: str) -> dict[str, Any] | None:
        found = self.by_ref.get(reference)
        if found is None and "/" in reference:
            found = self.by_ref.get("/".join(reference.split("/")[-2:]))
        return found


def _segment(rule: SegmentRule, current: Any, res: _Resources, ctx: dict[str, Any]) -> str | None:
    target = current
    if rule.source:
        if re.fullmatch(r"[A-Z][A-Za-z]+", rule.source):
            found = res.of_type(rule.source)
            if current is not None and current.get("resourceType") == rule.source:
                found = [current]
            target = found[0] if found else None
        else:
            refs = (
                [n.value for n in compile_expression(rule.source).evaluate(current)]
                if current is not None
                else []
            )
            target = next(
                (res.resolve(r["reference"]) for r in refs if isinstance(r, dict) and r.get("reference")),
                None,
            )
        if target is None:
            if rule.optional:
                return None
            raise MappingError(
                f"{rule.name}: no {rule.source} among the resources",
                issues=[
                    Issue(f"no {rule.source} to render {rule.name}", location=f"{rule.name} ({rule.where})")
                ],
            )
    if rule.when is not None:
        verdict = [n.value for n in rule.when.evaluate(target)] if target is not None else []
        if verdict != [True]:
            return None
    values: dict[int, str] = {}
    for f in rule.fields:
        values[f.number] = f.fn(ctx, target)
    if rule.name == "OBR":  # OBX and NTE set ids count within their order
        for child in ("OBX", "NTE", "SPM"):
            ctx["set_ids"].pop(child, None)
    if rule.name in ctx["set_ids"]:
        ctx["set_ids"][rule.name] += 1
    else:
        ctx["set_ids"][rule.name] = 1
    if 1 not in values and rule.name in ("PID", "OBR", "OBX", "NTE", "SPM", "TQ1", "PV1", "DG1", "NK1"):
        values[1] = str(ctx["set_ids"][rule.name])  # Set ID - <segment>
    top = max(values) if values else 0
    return _D.field.join([rule.name] + [values.get(i, "") for i in range(1, top + 1)])


def _render_body(body: list[Any], current: Any, res: _Resources, ctx: dict[str, Any], out: list[str]) -> None:
    for item in body:
        if isinstance(item, Loop):
            if re.fullmatch(r"[A-Z][A-Za-z]+", item.resource_type):
                loop = res.of_type(item.resource_type)
            else:  # a FHIRPath to references from the current resource: DiagnosticReport.result
                refs = (
                    [n.value for n in compile_expression(item.resource_type).evaluate(current)]
                    if current
                    else []
                )
                loop = [
                    r
                    for r in (
                        res.resolve(x["reference"]) for x in refs if isinstance(x, dict) and "reference" in x
                    )
                    if r
                ]
            for resource in loop:
                _render_body(item.body, resource, res, ctx, out)
        else:
            line = _segment(item, current, res, ctx)
            if line is not None:
                out.append(line)


def render(
    resources: Any, *, mapping: str, registry: Any, control_id: str | None = None, now: datetime | None = None
) -> bytes:
    """Render ``resources`` with the outbound mapping ``mapping``; validated with hl7apy before returning."""
    try:
        spec: Outbound = registry.outbound[mapping]
    except KeyError:
        raise MappingError(
            f"no outbound mapping named {mapping!r}", issues=[Issue(f"no outbound mapping {mapping!r}")]
        ) from None
    res = _Resources(resources)
    when = (now or datetime.now(UTC)).strftime("%Y%m%d%H%M%S+0000")
    import uuid

    cid = control_id or uuid.uuid4().hex[:20]
    msh = _D.field.join(
        [
            "MSH", _D.encoding_characters, _e(spec.msh.get("sending_application", "CONDUIT")),
            _e(spec.msh.get("sending_facility", "")), _e(spec.msh.get("receiving_application", "")),
            _e(spec.msh.get("receiving_facility", "")), when, "",
            f"{spec.message_type}^{spec.event}^{spec.structure}", cid, spec.msh.get("processing_id", "P"), spec.v2_version,
        ]
    )  # fmt: skip
    lines = [msh]
    _render_body(spec.body, None, res, {"set_ids": {}, "res": res}, lines)
    text = "\r".join(lines) + "\r"
    _validate(text, spec)
    return text.encode("utf-8")


def _validate(text: str, spec: Outbound) -> None:
    """Structure check with hl7apy (strict): required segments, groups, cardinalities, field formats.

    hl7apy's validator does not understand CHOICE groups (ORM_O01 ORDER_DETAIL in v2.3-2.4: "missing
    required child ORM_O01_CHOICE.RQD" although an OBR is there); for those, Conduit's own structure check
    (the same tables, derived from hl7apy's) decides."""
    from hl7apy.consts import VALIDATION_LEVEL
    from hl7apy.exceptions import HL7apyException
    from hl7apy.parser import parse_message

    from engine.hl7v2.message import parse
    from engine.hl7v2.structure import structure_problems

    own = structure_problems(parse(text).tree)
    if own:
        raise MappingError(
            f"{spec.name}: the rendered {spec.structure} is not valid HL7 v2 {spec.v2_version}: {own[0]}",
            issues=[Issue(p, location=f"({spec.file})") for p in own],
        )
    try:
        message = parse_message(text, validation_level=VALIDATION_LEVEL.STRICT, find_groups=True)
        message.validate()
    except (HL7apyException, ValueError) as exc:
        reason = str(exc) or exc.__class__.__name__
        if "_CHOICE." in reason:
            return
        raise MappingError(
            f"{spec.name}: the rendered {spec.structure} is not valid HL7 v2 {spec.v2_version}: {reason}",
            issues=[Issue(reason, location=f"({spec.file})")],
        ) from None
