"""Parsing FHIR search parameters into the typed query model (pure: no database)."""

from __future__ import annotations

from datetime import datetime
from decimal import Decimal

import pytest

from engine.errors import InvalidInput
from engine.fhir.search import parse_search, supported_search_parameters
from engine.fhir.search.dates import date_range
from engine.fhir.search.model import (
    Criterion,
    DateValue,
    HasCriterion,
    NumberValue,
    QuantityValue,
    ReferenceValue,
    StringValue,
    TokenValue,
    UriValue,
)
from engine.fhir.search.parse import split_unescaped, unescape
from engine.fhir.search.registry import default_registry

REQUIRED_TYPES = (
    "Patient Encounter Observation DiagnosticReport ServiceRequest Specimen ImagingStudy Organization Location "
    "Practitioner PractitionerRole Device Endpoint DocumentReference Appointment Immunization Provenance "
    "AuditEvent ConceptMap Subscription"
).split()


def only(rtype: str, name: str, value: str) -> Criterion:
    [crit] = parse_search(rtype, [(name, value)]).criteria
    assert isinstance(crit, Criterion)
    return crit


@pytest.mark.parametrize(
    ("value", "expected"),
    [
        ("code", TokenValue(None, "code")),
        ("sys|code", TokenValue("sys", "code")),
        ("|code", TokenValue("", "code")),
        ("sys|", TokenValue("sys", None)),
        ("a\\|b|c\\,d", TokenValue("a|b", "c,d")),
    ],
)
def test_token_values(value: str, expected: TokenValue) -> None:
    assert only("Patient", "identifier", value).values == (expected,)


def test_or_values_and_escapes() -> None:
    assert split_unescaped("a,b\\,c,d", ",") == ["a", "b\\,c", "d"]
    assert unescape("a\\,b\\$c\\|d\\\\e") == "a,b$c|d\\e"
    crit = only("Patient", "family", "a,b\\,c")
    assert crit.values == (StringValue("a"), StringValue("b,c"))


def test_dates_with_prefixes_and_precision() -> None:
    crit = only("Observation", "date", "ge2024-05")
    assert crit.values == (DateValue("ge", datetime(2024, 5, 1), datetime(2024, 5, 31, 23, 59, 59, 999999)),)
    assert date_range("2024-02-10T10:00:00+01:00")[0] == datetime(2024, 2, 10, 9, 0)
    assert date_range("2024-02-10T10:00:00.5Z") == (
        datetime(2024, 2, 10, 10, 0, 0, 500000),
        datetime(2024, 2, 10, 10, 0, 0, 599999),
    )
    for prefix in ("eq", "ne", "gt", "lt", "ge", "le", "sa", "eb", "ap"):
        assert only("Patient", "birthdate", f"{prefix}2000").values[0].prefix == prefix  # type: ignore[union-attr]


def test_numbers_and_quantities_carry_precision_ranges() -> None:
    quantity = only("Observation", "value-quantity", "gt5.4|http://unitsofmeasure.org|mg").values[0]
    assert quantity == QuantityValue(
        "gt", Decimal("5.4"), Decimal("5.35"), Decimal("5.45"), "http://unitsofmeasure.org", "mg"
    )
    assert only("Observation", "value-quantity", "100").values[0] == QuantityValue(
        "eq", Decimal(100), Decimal("99.5"), Decimal("100.5"), None, None
    )
    assert only("Observation", "value-quantity", "5||mg").values[0].code == "mg"  # type: ignore[union-attr]
    number = only("ImagingStudy", "_id", "x")
    assert number.values == (TokenValue(None, "x"),)
    assert isinstance(NumberValue("eq", Decimal(1), Decimal("0.5"), Decimal("1.5")).value, Decimal)


def test_reference_forms() -> None:
    assert only("Observation", "subject", "Patient/1").values == (ReferenceValue("Patient", "1"),)
    assert only("Observation", "subject", "1").values == (ReferenceValue(None, "1"),)
    assert only("Observation", "subject:Patient", "1").values == (ReferenceValue("Patient", "1"),)
    assert only("Observation", "subject", "http://other/fhir/Patient/1").values == (
        ReferenceValue(None, None, "http://other/fhir/Patient/1"),
    )
    [crit] = parse_search(
        "Observation", [("subject", "https://me/fhir/Patient/1")], base_url="https://me/fhir"
    ).criteria
    assert crit.values == (ReferenceValue("Patient", "1"),)  # type: ignore[union-attr]
    ident = only("Observation", "subject:identifier", "sys|v")
    assert ident.values == (TokenValue("sys", "v"),)
    with pytest.raises(InvalidInput, match="subject"):
        only("Observation", "subject:Patient", "Group/1")


def test_uri_and_modifiers() -> None:
    assert only("ConceptMap", "url:below", "http://x.org/").values == (UriValue("http://x.org/"),)
    assert only("Patient", "gender:missing", "true").missing is True
    assert only("Observation", "code:not", "a").modifier == "not"
    assert only("Observation", "code:text", "hb").values == (StringValue("hb"),)


def test_chains_and_has() -> None:
    crit = only("Observation", "subject:Patient.identifier", "sys|v")
    assert (
        crit.target_types == ("Patient",) and crit.chain is not None and crit.chain.param.code == "identifier"
    )
    crit = only("Observation", "subject.name", "smith")
    assert "Patient" in crit.target_types and "Device" not in crit.target_types
    [has] = parse_search("Patient", [("_has:Observation:subject:code", "1234-5")]).criteria
    assert (
        isinstance(has, HasCriterion)
        and has.source_type == "Observation"
        and has.reference_param.code == "subject"
    )
    with pytest.raises(InvalidInput):
        parse_search("Observation", [("subject.organization.name", "x")])
    with pytest.raises(InvalidInput):
        parse_search("Patient", [("_has:Observation:subject", "x")])


def test_result_parameters() -> None:
    q = parse_search(
        "Observation",
        [
            ("_count", "5000"),
            ("_offset", "20"),
            ("_sort", "-date,code"),
            ("_include", "Observation:subject:Patient"),
            ("_revinclude:iterate", "Provenance:target"),
            ("_summary", "count"),
            ("_elements", "status, code"),
            ("_total", "accurate"),
            ("_pretty", "true"),
            ("unknown", "1"),
        ],
    )
    assert q.count == 1000 and q.offset == 20
    assert [(k.param.code, k.descending) for k in q.sort] == [("date", True), ("code", False)]
    assert q.includes[0].target_type == "Patient" and q.revincludes[0].iterate
    assert q.summary == "count" and q.elements == ("status", "code") and q.total == "accurate"
    assert q.ignored == [("unknown", "1")]
    assert parse_search("Patient", []).count == 50


def test_system_level_search_uses_resource_parameters() -> None:
    q = parse_search(None, [("_id", "1"), ("family", "x")])
    assert [c.param.code for c in q.criteria] == ["_id"]  # type: ignore[union-attr]
    assert q.ignored == [("family", "x")]


def test_registry_covers_the_required_types_for_the_capability_statement() -> None:
    registry = default_registry()
    for rtype in REQUIRED_TYPES:
        params = {p.code: p for p in supported_search_parameters(rtype)}
        assert {"_id", "_lastUpdated", "_tag", "_profile", "_security", "_source"} <= set(params), rtype
        assert all(
            p.type in ("number", "date", "string", "token", "reference", "quantity", "uri")
            for p in params.values()
        )
        assert all(p.description and "Multiple Resources" not in p.description for p in params.values())
        assert registry.supports(rtype)
    assert supported_search_parameters("Observation")[0].code == "_id"
    assert {p.code for p in supported_search_parameters("Patient")} >= {
        "identifier",
        "name",
        "birthdate",
        "gender",
    }
    assert supported_search_parameters("Unknown") == []


def test_patient_compartment_parameters_are_reference_parameters() -> None:
    from engine.fhir.search.compartment import compartment_params

    registry = default_registry()
    members = [t for t in REQUIRED_TYPES if compartment_params("Patient", t)]
    assert {"Observation", "Encounter", "DiagnosticReport", "Specimen", "ServiceRequest"} <= set(members)
    for rtype in members:
        for code in compartment_params("Patient", rtype) or ():
            spd = registry.get(rtype, code)
            assert spd is not None and spd.type == "reference", (rtype, code)
    assert compartment_params("Patient", "Organization") is None
    assert compartment_params("Encounter", "Observation") is None
