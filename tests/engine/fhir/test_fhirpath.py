"""The FHIRPath subset used for index extraction (engine.fhir.fhirpath)."""

from __future__ import annotations

import pytest

from engine.fhir.fhirpath import FHIRPathError, compile_expression
from engine.fhir.search.registry import default_registry

OBS = {
    "resourceType": "Observation",
    "subject": {"reference": "Patient/1"},
    "performer": [
        {"reference": "Practitioner/2"},
        {"reference": "http://x.org/fhir/Organization/3/_history/4"},
    ],
    "effectivePeriod": {"start": "2024-01-01"},
    "valueQuantity": {"value": 5, "unit": "mg"},
    "component": [{"valueString": "a"}, {"valueQuantity": {"value": 1}}],
    "extension": [{"url": "http://e/1", "valueCode": "x"}, {"url": "http://e/2", "valueCode": "y"}],
}


@pytest.mark.parametrize(
    ("expression", "expected"),
    [
        ("Observation.subject", [{"reference": "Patient/1"}]),
        ("Patient.name", []),
        ("Resource.subject.reference", ["Patient/1"]),
        (
            "Observation.performer.reference",
            ["Practitioner/2", "http://x.org/fhir/Organization/3/_history/4"],
        ),
        ("Observation.subject.where(resolve() is Patient)", [{"reference": "Patient/1"}]),
        ("Observation.subject.where(resolve() is Group)", []),
        (
            "Observation.performer.where(resolve() is Organization).reference",
            ["http://x.org/fhir/Organization/3/_history/4"],
        ),
        ("Observation.value.ofType(Quantity).value", [5]),
        ("(Observation.value as Quantity).unit", ["mg"]),
        ("Observation.value.ofType(string)", []),
        ("Observation.effective", [{"start": "2024-01-01"}]),
        ("Observation.component.value.ofType(string)", ["a"]),
        (
            "Observation.subject | Observation.performer.first()",
            [{"reference": "Patient/1"}, {"reference": "Practitioner/2"}],
        ),
        ("Observation.extension('http://e/2').value", ["y"]),
        ("Observation.extension.where(url = 'http://e/1').value", ["x"]),
        ("Observation.performer.exists()", [True]),
        ("Observation.focus.exists()", [False]),
        ("Observation.focus.empty()", [True]),
        ("Observation.subject.exists() and Observation.focus.exists()", [False]),
        ("Observation.subject.exists() or Observation.focus.exists()", [True]),
        ("Observation.value.unit != 'g'", [True]),
        ("Observation.value.unit = 'g'", [False]),
        ("Observation.status = 'final'", []),
        ("Observation.value is Quantity", [True]),
        ("Observation.value.exists().not()", [False]),
    ],
)
def test_evaluate(expression: str, expected: list[object]) -> None:
    assert compile_expression(expression).values(OBS) == expected


def test_choice_types_carry_their_type() -> None:
    [node] = compile_expression("Observation.value").evaluate(OBS)
    assert node.type == "Quantity"
    [node] = compile_expression("Observation.component.value").evaluate(OBS)[:1]
    assert node.type == "string"


def test_deceased_expression_of_the_standard() -> None:
    expr = compile_expression("Patient.deceased.exists() and Patient.deceased != false")
    assert expr.values({"resourceType": "Patient", "deceasedBoolean": True}) == [True]
    assert expr.values({"resourceType": "Patient", "deceasedDateTime": "2020"}) == [True]
    assert expr.values({"resourceType": "Patient", "deceasedBoolean": False}) == [False]
    assert expr.values({"resourceType": "Patient"}) == [False]


@pytest.mark.parametrize(
    "expression",
    [
        "Observation.value.memberOf('x')",
        "Observation.(",
        "Observation.where()",
        "Observation.value + 1",
        "1 ~ 2",
    ],
)
def test_outside_the_subset_is_refused_at_compile_time(expression: str) -> None:
    with pytest.raises(FHIRPathError):
        compile_expression(expression)


def test_every_shipped_expression_compiles() -> None:
    """The supported resource types' R4 expressions all fall inside the subset: none is skipped. If a future
    definitions file brings one that does not, it is listed here instead of being indexed wrongly."""
    unsupported = [(p.resource_type, p.code, p.expression) for p in default_registry().unsupported()]
    assert unsupported == []
