"""engine.fhir.patch (JSON Patch, errors as InvalidInput without patient data) and engine.fhir.outcome."""

from __future__ import annotations

import pytest

from engine.errors import InvalidInput, Issue, NotFound
from engine.fhir.outcome import operation_outcome, outcome_for_error
from engine.fhir.patch import apply_json_patch, apply_merge_patch

PATIENT = {"resourceType": "Patient", "id": "1", "active": True, "name": [{"family": "Secretname"}]}


def test_patch_applies_on_a_copy() -> None:
    patched = apply_json_patch(PATIENT, [{"op": "replace", "path": "/active", "value": False}])
    assert patched["active"] is False and PATIENT["active"] is True


@pytest.mark.parametrize(
    "patch",
    [
        "not a list",
        [],
        [1],
        [{"op": "explode", "path": "/a"}],
        [{"op": "add", "path": "/a"}],
        [{"op": "move", "path": "/a"}],
        [{"op": "remove", "path": "/missing"}],
        [{"op": "test", "path": "/name/0/family", "value": "Other"}],
        [{"op": "replace", "path": "/id", "value": "2"}],
        [{"op": "replace", "path": "", "value": []}],
        [{"op": "add", "path": "/name/9", "value": {}}],
        [{"op": "add", "path": "no-slash", "value": 1}],
    ],
)
def test_bad_patches_are_invalid_input(patch: object) -> None:
    with pytest.raises(InvalidInput) as caught:
        apply_json_patch(PATIENT, patch)
    assert all("Secretname" not in i.message for i in caught.value.issues)


def test_merge_patch() -> None:
    patched = apply_merge_patch(PATIENT, {"active": None, "gender": "female", "name": [{"family": "New"}]})
    assert patched == {"resourceType": "Patient", "id": "1", "gender": "female", "name": [{"family": "New"}]}
    with pytest.raises(InvalidInput):
        apply_merge_patch(PATIENT, {"id": "2"})
    with pytest.raises(InvalidInput):
        apply_merge_patch(PATIENT, [1])


def test_outcome_from_issues_and_errors() -> None:
    oo = operation_outcome([Issue("Unknown element", location="Patient.foo")])
    assert oo["issue"][0] == {
        "severity": "error",
        "code": "invalid",
        "diagnostics": "Unknown element",
        "expression": ["Patient.foo"],
        "location": ["Patient.foo"],
    }
    assert outcome_for_error(NotFound("Patient/9 not found"))["issue"][0]["code"] == "not-found"
    assert operation_outcome([])["issue"][0]["severity"] == "information"
    assert operation_outcome([Issue("x", code="weird")])["issue"][0]["code"] == "processing"
