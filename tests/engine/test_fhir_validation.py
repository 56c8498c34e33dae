"""engine.fhir.validation: every problem is named with its element path; valid R4 content passes."""

from __future__ import annotations

import pytest

from engine.errors import InvalidInput
from engine.fhir.validation import ensure_valid, is_resource_type, validate_resource


def _locations(resource: object, **kw: str) -> dict[str, str]:
    return {i.location or "": i.message for i in validate_resource(resource, **kw)}


GOOD_OBSERVATION = {
    "resourceType": "Observation",
    "status": "final",
    "code": {"coding": [{"system": "http://loinc.org", "code": "718-7"}]},
    "subject": {"reference": "Patient/1"},
    "effectiveDateTime": "2026-11-21T10:00:00+01:00",
    "valueQuantity": {"value": 13.2, "unit": "g/dL", "system": "http://unitsofmeasure.org", "code": "g/dL"},
}


@pytest.mark.parametrize(
    "resource",
    [
        GOOD_OBSERVATION,
        {"resourceType": "Patient", "name": [{"family": "Doe", "given": ["J"]}], "birthDate": "1970"},
        {"resourceType": "Patient", "_birthDate": {"extension": [{"url": "http://x", "valueString": "a"}]}},
        {"resourceType": "Encounter", "status": "planned", "class": {"code": "AMB"}},
    ],
)
def test_valid_resources_have_no_issues(resource: dict[str, object]) -> None:
    assert validate_resource(resource) == []
    ensure_valid(resource)


def test_every_problem_is_named_with_its_path() -> None:
    found = _locations(
        {
            "resourceType": "Patient",
            "name": [{"given": ["a", 5]}],
            "birthDate": "not-a-date",
            "foo": 1,
            "gender": "bad",
            "active": "true",
            "identifier": [{"system": 3}],
        }
    )
    assert set(found) == {
        "Patient.name[0].given[1]",
        "Patient.birthDate",
        "Patient.foo",
        "Patient.gender",
        "Patient.active",
        "Patient.identifier[0].system",
    }
    assert found["Patient.foo"] == "Unknown element"


def test_required_elements_and_choice_types() -> None:
    assert "Observation.status" in _locations({"resourceType": "Observation", "code": {"text": "x"}})
    both = {**GOOD_OBSERVATION, "valueString": "x"}
    assert "Observation.value[x]" in _locations(both)


def test_empty_values_are_errors() -> None:
    found = _locations({"resourceType": "Patient", "name": [], "telecom": [{}], "gender": ""})
    assert {"Patient.name", "Patient.telecom[0]", "Patient.gender"} <= set(found)


def test_primitive_json_types_are_strict() -> None:
    assert "Patient.multipleBirthInteger" in _locations(
        {"resourceType": "Patient", "multipleBirthInteger": True}
    )
    assert "Patient.multipleBirthInteger" in _locations(
        {"resourceType": "Patient", "multipleBirthInteger": "3"}
    )


def test_contained_and_bundle_entries_are_validated_with_paths() -> None:
    bundle = {
        "resourceType": "Bundle",
        "type": "transaction",
        "entry": [{"resource": {"resourceType": "Patient", "foo": 1}}],
    }
    assert "Bundle.entry[0].resource.foo" in _locations(bundle)
    assert "Patient.contained[0]" in _locations(
        {"resourceType": "Patient", "contained": [{"resourceType": "Nope"}]}
    )


@pytest.mark.parametrize(
    "value", [None, [], "x", 3, {"resourceType": "Nope"}, {"resourceType": "HumanName"}, {}]
)
def test_not_a_resource(value: object) -> None:
    issues = validate_resource(value)
    assert issues and issues[0].severity == "error"


def test_type_mismatch_with_url() -> None:
    issues = validate_resource({"resourceType": "Patient"}, resource_type="Observation")
    assert issues[0].location == "resourceType"


def test_ensure_valid_raises_with_all_issues() -> None:
    with pytest.raises(InvalidInput) as caught:
        ensure_valid({"resourceType": "Patient", "foo": 1, "bar": 2})
    assert {i.location for i in caught.value.issues} == {"Patient.foo", "Patient.bar"}


def test_messages_do_not_echo_values() -> None:
    secret = "Jane-Secret-Doe"
    issues = validate_resource({"resourceType": "Patient", "birthDate": secret, "gender": secret, secret: 1})
    assert issues
    assert all(secret not in i.message for i in issues)


def test_resource_types() -> None:
    assert is_resource_type("Patient") and is_resource_type("Observation")
    assert (
        not is_resource_type("HumanName") and not is_resource_type("Resource") and not is_resource_type("x")
    )
