"""Regenerate ``search-parameters.json`` from the official R4 Bundle (run from the repo root)::

    python conformance/fhir-r4/trim.py /work/shared/fhir-r4/search-parameters.json

Keeps the SearchParameters whose base includes a supported resource type (or Resource), drops the types the
store does not index (composite, special), and splits each shared FHIRPath expression into one expression per
supported base, so the runtime never parses expressions of resource types it does not store.
"""

from __future__ import annotations

import json
import sys
from pathlib import Path

SUPPORTED_TYPES = (
    "Patient Encounter Observation DiagnosticReport ServiceRequest Specimen ImagingStudy Organization Location "
    "Practitioner PractitionerRole Device Endpoint DocumentReference Appointment Immunization Provenance "
    "AuditEvent ConceptMap Subscription"
).split()
INDEXED_PARAM_TYPES = {"number", "date", "string", "token", "reference", "quantity", "uri"}


def split_union(expression: str) -> list[str]:
    """Split on top-level ``|`` (outside parentheses and quotes)."""
    parts, depth, quote, start = [], 0, False, 0
    for i, ch in enumerate(expression):
        if ch == "'":
            quote = not quote
        elif quote:
            continue
        elif ch == "(":
            depth += 1
        elif ch == ")":
            depth -= 1
        elif ch == "|" and depth == 0:
            parts.append(expression[start:i].strip())
            start = i + 1
    parts.append(expression[start:].strip())
    return [p for p in parts if p]


def leading_type(part: str) -> str:
    return part.lstrip("(").split(".", 1)[0].strip()


def main(source: str) -> None:
    bundle = json.loads(Path(source).read_text())
    out = []
    for entry in bundle["entry"]:
        sp = entry["resource"]
        if sp["type"] not in INDEXED_PARAM_TYPES:
            continue
        if "Resource" in sp["base"]:
            bases = ["Resource"]
        else:
            bases = [b for b in sp["base"] if b in SUPPORTED_TYPES]
        if not bases or "expression" not in sp:
            continue
        parts = split_union(sp["expression"])
        expressions = {}
        for base in bases:
            mine = [p for p in parts if leading_type(p) == base]
            if mine:
                expressions[base] = " | ".join(mine)
        if not expressions:
            continue
        item = {
            "url": sp["url"],
            "code": sp["code"],
            "type": sp["type"],
            "description": sp.get("description", ""),
            "expressions": expressions,
        }
        if sp.get("target"):
            item["target"] = sp["target"]
        out.append(item)
    out.sort(key=lambda p: (p["code"], p["url"]))
    dest = Path(__file__).parent / "search-parameters.json"
    dest.write_text(
        json.dumps({"fhirVersion": "4.0.1", "parameters": out}, indent=1, ensure_ascii=False) + "\n"
    )
    print(f"wrote {len(out)} search parameters to {dest}")
    write_compartment(Path(source).parent / "compartmentdefinition-patient.json")


def write_compartment(source: Path) -> None:
    """The Patient compartment (which parameters of which supported types name the patient)."""
    definition = json.loads(source.read_text())
    members = {
        r["code"]: r["param"]
        for r in definition["resource"]
        if r["code"] in SUPPORTED_TYPES and r.get("param")
    }
    dest = Path(__file__).parent / "compartment-patient.json"
    body = {"url": definition["url"], "code": definition["code"], "resource": dict(sorted(members.items()))}
    dest.write_text(json.dumps(body, indent=1) + "\n")
    print(f"wrote the Patient compartment ({len(members)} types) to {dest}")


if __name__ == "__main__":
    main(sys.argv[1] if len(sys.argv) > 1 else "/work/shared/fhir-r4/search-parameters.json")
