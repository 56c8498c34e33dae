"""engine.fhir.r4_validator: focused rules, and the shipped schema table against its generator."""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

import pytest

from engine.fhir import r4_validator
from engine.fhir.r4_validator import compiled_source, type_table, validate_resource
from engine.fhir.tools import derive_r4_schema
from engine.fhir.validation import validate_resource_models

ROOT = Path(__file__).resolve().parents[3]
SHARED_SCHEMA = (
    Path(os.environ.get("CONDUIT_SHARED_DIR", ROOT.parent / "shared")) / "fhir-r4" / "fhir.schema.json"
)


def _found(resource: Any) -> dict[str, tuple[str, str]]:
    return {i.location or "": (i.message, i.code) for i in validate_resource(resource)}


@pytest.mark.skipif(not SHARED_SCHEMA.exists(), reason="../shared/fhir-r4 is not beside the repository")
def test_shipped_table_is_what_the_generator_derives() -> None:
    derived = derive_r4_schema.render(derive_r4_schema.derive(SHARED_SCHEMA))
    assert derive_r4_schema.OUTPUT.read_text() == derived


def test_attribution_is_shipped() -> None:
    about = r4_validator._schema()["about"]
    assert (
        about["fhirVersion"] == "4.0.1"
        and "CC0" in about["licence"]
        and "fhir.schema.json" in about["source"]
    )


def test_r4_resource_types_only() -> None:
    types = r4_validator.resource_types()
    assert len(types) == 146 and {"Patient", "Parameters", "EffectEvidenceSynthesis"} <= types
    assert not {"Project", "User", "Bot", "Citation"} & types  # Medplum's additions and R4B's are not R4
    assert type_table("Meta") is not None and "project" not in type_table("Meta")["e"]  # type: ignore[index]


def test_valid_resources() -> None:
    for resource in (
        {"resourceType": "Patient", "name": [{"family": "Doe", "given": ["J"]}], "birthDate": "1970"},
        {"resourceType": "Patient", "_birthDate": {"extension": [{"url": "http://x", "valueString": "a"}]}},
        {"resourceType": "Patient", "name": [{"given": ["a", None], "_given": [None, {"id": "x"}]}]},
        {
            "resourceType": "Observation",
            "_status": {"id": "s"},
            "code": {"text": "x"},
        },  # a twin stands for it
        {"resourceType": "Observation", "status": "final", "code": {"text": "x"}, "valueInteger": -3},
        {
            "resourceType": "Observation",
            "status": "final",
            "code": {"text": "x"},
            "issued": "2016-12-31T23:59:60Z",
        },
        {"resourceType": "Patient", "birthDate": "2024-02-29", "name": [{"text": "Zoë\u00a0Ørsted"}]},
    ):
        assert validate_resource(resource) == [], resource


def test_rules_and_locations() -> None:
    found = _found(
        {
            "resourceType": "Patient",
            "name": [{"given": ["a", 5]}, {}],
            "birthDate": "2023-02-29",
            "foo": 1,
            "gender": "bad",
            "active": "true",
            "multipleBirthInteger": True,
            "telecom": [],
            "identifier": [{"system": " "}],
            "contained": [{"resourceType": "Nope"}, {"resourceType": "Observation", "code": {"text": "x"}}],
            "deceasedBoolean": True,
            "deceasedDateTime": "2020",
        }
    )
    assert found == {
        "Patient.name[0].given[1]": ("Must be a JSON string", "value"),
        "Patient.name[1]": (r4_validator.EMPTY_OBJECT, "value"),
        "Patient.birthDate": (r4_validator._FORMATS["date"], "value"),
        "Patient.foo": ("Unknown element", "structure"),
        "Patient.gender": (
            "Code is not in the required value set (female, male, other, unknown)",
            "code-invalid",
        ),
        "Patient.active": ("Must be a JSON boolean (true or false)", "value"),
        "Patient.multipleBirthInteger": ("Must be a JSON integer", "value"),
        "Patient.telecom": (r4_validator.EMPTY_ARRAY, "value"),
        "Patient.identifier[0].system": (r4_validator.EMPTY_STRING, "value"),
        "Patient.contained[0]": ("Unknown or missing resourceType", "structure"),
        "Patient.contained[1].status": ("Required element is missing", "required"),
        "Patient.deceased[x]": ("Only one of deceasedBoolean, deceasedDateTime may be present", "value"),
    }


def test_required_choice_and_integer_ranges() -> None:
    found = _found(
        {"resourceType": "MedicationRequest", "status": "active", "intent": "order", "subject": {}}
    )
    assert found["MedicationRequest.medication[x]"] == ("Required element is missing", "required")
    assert "MedicationRequest.subject" in found
    assert "Patient.multipleBirthInteger" in _found(
        {"resourceType": "Patient", "multipleBirthInteger": 2**31}
    )
    assert "Observation.valueQuantity.value" in _found(
        {
            "resourceType": "Observation",
            "status": "final",
            "code": {"text": "x"},
            "valueQuantity": {"value": float("inf")},
        }
    )


def test_nested_bundle_paths_and_surrogates() -> None:
    bundle = {
        "resourceType": "Bundle",
        "type": "transaction",
        "entry": [{"resource": {"resourceType": "Patient", "name": [{"family": "\ud800"}]}}],
    }
    assert set(_found(bundle)) == {"Bundle.entry[0].resource.name[0].family"}


def test_messages_never_echo_values_and_issues_are_capped() -> None:
    secret = "Jane-Secret-Doe"
    issues = validate_resource({"resourceType": "Patient", "birthDate": secret, "gender": secret, secret: 1})
    assert issues and all(secret not in i.message for i in issues)
    many = {"resourceType": "Patient", **{f"x{i}": 1 for i in range(500)}}
    assert len(validate_resource(many)) == 100


def test_top_level_checks() -> None:
    assert validate_resource([])[0].code == "structure"
    assert validate_resource({})[0].location == "resourceType"
    assert validate_resource({"resourceType": "HumanName"})[0].code == "not-supported"
    assert validate_resource({"resourceType": "Patient"}, resource_type="Observation")[0].code == "invalid"
    deep: dict[str, Any] = {"resourceType": "Patient"}
    node = deep
    for _ in range(5000):
        node["extension"] = [{"url": "urn:x"}]
        node = node["extension"][0]
    assert validate_resource(deep)[0].code == "too-costly"


def test_generated_source_is_readable() -> None:
    source = compiled_source("HumanName")
    assert "def check(d, at, out):" in source and "'given'" in source


def test_ascii_shortcuts_agree_with_the_schema_patterns() -> None:
    """string, uri and code values in printable ASCII skip the regex: the verdict is the pattern's."""
    import random
    import re

    rng = random.Random(4)
    alphabet = "ab :/ \t-"
    samples = ["".join(rng.choice(alphabet) for _ in range(rng.randrange(1, 7))) for _ in range(600)]
    samples += ["a", " a", "a ", "a  b", "a b", "http://x y", "urn:x", "x\x7f", "~"]
    primitives = r4_validator._schema()["primitives"]
    for element, primitive in (("display", "string"), ("system", "uri"), ("code", "code")):
        pattern = re.compile(primitives[primitive]["pattern"], re.ASCII)
        for text in samples:
            expected = bool(pattern.fullmatch(text)) and not text.isspace()
            coding = {"resourceType": "Observation", "status": "final", "code": {"coding": [{element: text}]}}
            assert (validate_resource(coding) == []) == expected, (primitive, text)


def _adversarial(size: int = 10_000) -> list[str]:
    """Near misses of about ``size`` characters: repeated units of the schema patterns, then a bad end."""
    units = ["QUFB ", "QUFB", " QU", "a ", "a", " ", "\t", "\r\n", "0", "1", ".1", ".0", "1.", "-", "=", ":",
             "9-", "é", "a-b.", "\x0b"]  # fmt: skip
    prefixes = ["", "urn:oid:1", "urn:uuid:", "2020-01-01T10:00:00", "2020-01-01T10:00:00.", "10:00:00.", "a"]
    ends = ["!", " ", "  ", "\x0b", "é", "\ud800", "=", "-", ""]
    out = []
    for prefix in prefixes:
        for unit in units:
            body = prefix + unit * (size // len(unit))
            out += [body + end for end in ends]
    return out


def test_patterns_run_in_linear_time() -> None:
    """Every string primitive's check on ~10 kB near misses stays far under 0.1 s of CPU (the schema's
    base64Binary regex took seconds at 120 bytes: catastrophic backtracking)."""
    import time

    primitives = r4_validator._schema()["primitives"]
    slow = []
    for primitive, spec in primitives.items():
        if spec["json"] != "string":
            continue
        element = "value" + primitive[0].upper() + primitive[1:]
        for text in _adversarial():
            ext = {
                "resourceType": "Basic",
                "code": {"text": "x"},
                "extension": [{"url": "urn:x", element: text}],
            }
            spent = 1.0
            for _ in range(2):  # the lesser of two runs: other processes share the CPU
                start = time.process_time()
                validate_resource(ext)
                spent = min(spent, time.process_time() - start)
            if spent > 0.02:
                slow.append((primitive, text[:24], len(text), spent))
    assert slow == []


def test_base64_checked_without_the_schema_regex() -> None:
    """Same verdicts as the schema's pattern wherever it means base64 (groups of 4, '=' only as the end's
    padding); the pattern's own slips ('=' inside, whitespace inside a group) are decided by base64 itself."""
    import random
    import re

    pattern = re.compile(r4_validator._schema()["primitives"]["base64Binary"]["pattern"], re.ASCII)
    check = r4_validator._pattern("base64Binary")
    assert check is not pattern.fullmatch
    rng = random.Random(7)
    alphabet = "QUFBaz09+/= \n!"
    samples = ["".join(rng.choice(alphabet) for _ in range(rng.randrange(1, 14))) for _ in range(3000)]
    samples += ["QUFB", "QUF=", "QU==", "QUFB\nQUFB\n", " QUFB ", "Q===", "QUF", "QUFB!", "QUFBé"]
    agreed = 0
    for text in samples:
        packed = "".join(text.split())
        padding_only_at_end = "=" not in packed.rstrip("=") and len(packed) - len(packed.rstrip("=")) <= 2
        groups_whole = re.fullmatch(r"(\s*(\S{4})\s*)+", text, re.ASCII) is not None
        if padding_only_at_end and groups_whole:
            assert bool(check(text)) == bool(pattern.fullmatch(text)), text
            agreed += 1
    assert agreed > 200
    assert check("QU FB") and not check("=QUF") and not check("Q===") and not check("QU=B")
    assert not check("QUFB\x1c") and not check("QUFBé")
    binary = {"resourceType": "Binary", "contentType": "text/plain", "data": "QUFB " * 2000 + "!"}
    assert [i.location for i in validate_resource(binary)] == ["Binary.data"]


def test_integer_bounds_are_constants_not_source(monkeypatch: pytest.MonkeyPatch) -> None:
    """r4_schema.json's min/max never become code: a bound that is not an integer fails generation."""
    import copy

    schema = copy.deepcopy(r4_validator._schema())
    schema["primitives"]["positiveInt"]["max"] = "__import__('os').getpid() or 9"
    monkeypatch.setattr(r4_validator, "_schema", lambda: schema)
    with pytest.raises(ValueError):
        r4_validator._compile_type("Timing_Repeat")
    monkeypatch.undo()
    ok = {"resourceType": "Basic", "code": {"text": "x"}, "extension": [{"url": "u", "valuePositiveInt": 0}]}
    assert [i.location for i in validate_resource(ok)] == ["Basic.extension[0].valuePositiveInt"]


@pytest.mark.parametrize("validate", [validate_resource, validate_resource_models])
def test_unknown_keys_and_types_are_not_echoed(validate: Any) -> None:
    """A key or resourceType that is not a FHIR name may be patient data: no location or message holds it."""
    secret = "John Smith 1970-01-01"
    issues = validate({"resourceType": "Patient", secret: 1, "name": [{"given": ["A"], "fooBar": 1}]})
    for issue in issues:
        assert "John" not in (issue.location or "") + issue.message
    found = {(i.location, i.message) for i in issues}
    assert ("Patient", r4_validator.UNKNOWN_KEY) in found
    assert ("Patient.name[0].fooBar", "Unknown element") in found  # a plausible name is still named
    too_long = "a" * 65
    assert {i.location for i in validate({"resourceType": "Patient", too_long: 1})} == {"Patient"}
    issue = validate({"resourceType": secret})[0]
    assert "John" not in issue.message and issue.code == "not-supported"
    assert validate({"resourceType": "Patientt"})[0].message == "Unknown resource type 'Patientt'"


_ABSENT = {
    "extension": [
        {"url": "http://hl7.org/fhir/StructureDefinition/data-absent-reason", "valueCode": "unknown"}
    ]
}


def test_required_choice_given_by_its_twin_alone() -> None:
    shot = {"resourceType": "Immunization", "status": "completed", "vaccineCode": {"text": "x"}}
    shot["patient"] = {"reference": "Patient/1"}
    assert validate_resource({**shot, "_occurrenceDateTime": _ABSENT}) == []
    assert validate_resource({**shot, "occurrenceDateTime": "2020", "_occurrenceDateTime": _ABSENT}) == []
    assert _found(shot) == {"Immunization.occurrence[x]": (r4_validator.REQUIRED, "required")}
    # a twin of a member that is not the one present is a second value
    both = {**shot, "occurrenceString": "x", "_occurrenceDateTime": _ABSENT}
    assert [i.location for i in validate_resource(both)] == ["Immunization.occurrence[x]"]
    seen = {"resourceType": "Observation", "status": "final", "code": {"text": "x"}, "valueBoolean": True}
    assert [i.location for i in validate_resource({**seen, "_valueString": _ABSENT})] == [
        "Observation.value[x]"
    ]


@pytest.mark.parametrize(
    ("name", "location", "message"),
    [
        ({"given": ["A", None], "_given": [None, None]}, "Patient.name[0].given[1]", r4_validator.NULL),
        ({"given": ["A"], "_given": [None, _ABSENT]}, "Patient.name[0].given", r4_validator.MISALIGNED),
        ({"given": ["A", "B"], "_given": [_ABSENT]}, "Patient.name[0].given", r4_validator.MISALIGNED),
        ({"_given": [_ABSENT, None]}, "Patient.name[0].given[1]", r4_validator.NULL),
        ({"given": ["A", None], "_given": [None, _ABSENT]}, None, None),
        ({"given": ["A", "B"], "_given": [None, _ABSENT]}, None, None),
    ],
)
def test_primitive_arrays_and_twins_line_up(
    name: dict[str, Any], location: str | None, message: str | None
) -> None:
    """R4 JSON §2.6.2: same length, null only where the other array has something."""
    found = [(i.location, i.message) for i in validate_resource({"resourceType": "Patient", "name": [name]})]
    assert found == ([] if location is None else [(location, message)])
