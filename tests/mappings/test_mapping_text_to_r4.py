"""Valid HL7 v2 text in identifier and code fields maps to valid R4 (full validation is on by default):
text that becomes part of a uri is escaped, text that becomes a code has its whitespace normalised."""

from __future__ import annotations

from pathlib import Path

import pytest

from engine.mapping import map_message
from engine.mapping.validate import validate_bundle
from tests.mappings.test_mapping_corpus import MESSAGES

CORPUS = Path(__file__).resolve().parents[1] / "fixtures" / "hl7v2"


def _with_field(raw: bytes, segment: str, index: int, value: str) -> bytes:
    """``raw`` with field ``segment-index`` of the first such segment set to ``value``."""
    lines = raw.decode("utf-8").replace("\n", "\r").split("\r")
    for i, line in enumerate(lines):
        if line.startswith(segment + "|"):
            fields = line.split("|")
            at = index if segment != "MSH" else index - 1
            fields += [""] * (at + 1 - len(fields))
            fields[at] = value
            lines[i] = "|".join(fields)
            break
    else:
        raise AssertionError(f"no {segment} segment")
    return "\r".join(lines).encode("utf-8")


def _patient(bundle: dict) -> dict:
    return next(e["resource"] for e in bundle["entry"] if e["resource"]["resourceType"] == "Patient")


def test_a_drivers_license_state_with_a_space_gives_a_valid_system_uri() -> None:
    raw = (CORPUS / "ADT_A01" / "v2tofhir-ig-ADT_A01.hl7").read_bytes()
    result = map_message(_with_field(raw, "PID", 20, "D1234567^NEW YORK^20300101"))
    systems = {i.get("system") for i in _patient(result.bundle)["identifier"]}
    assert "urn:conduit:drivers-license:NEW-YORK" in systems
    result = map_message(_with_field(raw, "PID", 20, "D1234567^Île/x y%^20300101"))
    systems = {i.get("system") for i in _patient(result.bundle)["identifier"]}
    assert "urn:conduit:drivers-license:%C3%8Ele%2Fx-y%25" in systems


#: identifier and code components (segment, field, component) whose text ends up in a uri, code or id
TARGETS = [
    ("PID", 3, 1), ("PID", 3, 4), ("PID", 3, 5), ("PID", 20, 2), ("PV1", 10, 1), ("PV1", 19, 1),
    ("OBR", 4, 1), ("OBR", 4, 3), ("OBX", 3, 1), ("OBX", 3, 3), ("OBX", 3, 4), ("OBX", 6, 1),
    ("SPM", 4, 1), ("ORC", 2, 1), ("ORC", 3, 2), ("RXA", 5, 1), ("RXA", 5, 3), ("AL1", 3, 1), ("DG1", 3, 1),
]  # fmt: skip
#: valid HL7 v2 text (no separators but `&`, which makes subcomponents) that R4 elements must still take
MUTANTS = [
    "GLU  FAST",
    " LEAD",
    "TRAIL ",
    "A&B",
    "#%/<>\"'{}\\E\\",
    "Île ñ ü",
    "x  y  &  z",
    "http://a b/c d",
]


def _mutated(raw: bytes, text: str) -> bytes:
    lines = raw.decode("utf-8").replace("\n", "\r").split("\r")
    for i, line in enumerate(lines):
        fields = line.split("|")
        for segment, index, component in TARGETS:
            if fields[0] != segment or len(fields) <= index or not fields[index]:
                continue
            reps = fields[index].split("~")
            parts = reps[0].split("^")
            parts += [""] * (component - len(parts))
            parts[component - 1] = text
            reps[0] = "^".join(parts)
            fields[index] = "~".join(reps)
        lines[i] = "|".join(fields)
    return "\r".join(lines).encode("utf-8")


@pytest.mark.parametrize("text", MUTANTS)
@pytest.mark.parametrize("name,raw", MESSAGES, ids=[m[0] for m in MESSAGES])
def test_odd_but_valid_v2_text_in_identifiers_and_codes_maps_to_valid_r4(name: str, raw: bytes, text: str):
    mutated = _mutated(raw, text)
    assert mutated != raw or not any(f"\r{t[0]}|" in "\r" + raw.decode() for t in TARGETS)
    result = map_message(mutated)  # full validation is on: an invalid resource raises MappingError
    assert validate_bundle(result.bundle) == []
