"""FHIR search semantics (R4 3.1.1) end to end over the index tables, on SQLite and PostgreSQL."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from typing import Any

import pytest

from engine.errors import InvalidInput, NotSupported
from services.records.repository import SqlResourceRepository

LOINC = "http://loinc.org"
UCUM = "http://unitsofmeasure.org"
MRN = "urn:oid:1.2.3.4"


def _patient(pid: str, family: str, given: str, birth: str, mrn: str, **extra: Any) -> dict[str, Any]:
    return {
        "resourceType": "Patient",
        "id": pid,
        "identifier": [{"system": MRN, "value": mrn}],
        "name": [{"family": family, "given": [given]}],
        "birthDate": birth,
        **extra,
    }


def _obs(oid: str, pid: str, code: str, value: float, unit: str, when: str, **extra: Any) -> dict[str, Any]:
    return {
        "resourceType": "Observation",
        "id": oid,
        "status": "final",
        "code": {
            "coding": [{"system": LOINC, "code": code, "display": f"Test {code}"}],
            "text": f"Lab {code}",
        },
        "subject": {"reference": f"Patient/{pid}"},
        "effectiveDateTime": when,
        "valueQuantity": {"value": value, "unit": unit, "system": UCUM, "code": unit},
        **extra,
    }


@pytest.fixture
def repo(records):  # type: ignore[no-untyped-def]
    with records() as r:
        for res in [
            _patient(
                "p1",
                "Müller",
                "Anna",
                "1980-02-03",
                "100",
                gender="female",
                telecom=[{"system": "phone", "value": "555-1234"}],
                meta={"tag": [{"system": "urn:tags", "code": "vip"}], "profile": ["http://example.org/sd/p"]},
            ),
            _patient("p2", "Muller", "Bert", "1975-06", "200", gender="male", active=True),
            _patient("p3", "Smith", "Carla", "2001", "300,a|b", gender="female", active=False),
            {"resourceType": "Patient", "id": "p4", "name": [{"family": "Ng"}]},
            _obs("o1", "p1", "718-7", 13.5, "g/dL", "2024-05-01T10:00:00Z", category=[{"text": "lab"}]),
            _obs("o2", "p1", "718-7", 12.0, "g/dL", "2024-05-20T08:30:00+02:00"),
            _obs("o3", "p2", "2345-7", 5.4, "mmol/L", "2024-06-01"),
            _obs("o4", "p3", "2345-7", 7000, "umol/L", "2023-12-31T23:59:59Z"),
            {
                "resourceType": "Observation",
                "id": "o5",
                "status": "preliminary",
                "code": {"coding": [{"system": "urn:local", "code": "718-7"}]},
                "effectivePeriod": {"start": "2024-01-01", "end": "2024-03-31"},
            },
            {"resourceType": "Organization", "id": "org1", "name": "Städtisches Labor"},
            {
                "resourceType": "Encounter",
                "id": "e1",
                "status": "finished",
                "class": {"system": "http://terminology.hl7.org/CodeSystem/v3-ActCode", "code": "AMB"},
                "subject": {"reference": "Patient/p1"},
                "serviceProvider": {"reference": "Organization/org1"},
                "period": {"start": "2024-05-01T09:00:00Z", "end": "2024-05-01T11:00:00Z"},
            },
        ]:
            r.update(res["resourceType"], res["id"], res)
    with records() as r:
        yield r


def ids(repo: SqlResourceRepository, rtype: str, *params: tuple[str, str]) -> list[str]:
    return sorted(m.id for m in repo.search(rtype, list(params)).matches)


def test_string_starts_with_case_and_accent_insensitive(repo: SqlResourceRepository) -> None:
    assert ids(repo, "Patient", ("family", "mul")) == ["p1", "p2"]
    assert ids(repo, "Patient", ("family", "MÜLLER")) == ["p1", "p2"]
    assert ids(repo, "Patient", ("name", "anna")) == ["p1"]
    assert ids(repo, "Patient", ("family:exact", "Müller")) == ["p1"]
    assert ids(repo, "Patient", ("family:exact", "müller")) == []
    assert ids(repo, "Patient", ("family:contains", "ll")) == ["p1", "p2"]
    assert ids(repo, "Patient", ("family:contains", "%")) == []
    assert ids(repo, "Organization", ("name", "stadt")) == ["org1"]


def test_token_forms(repo: SqlResourceRepository) -> None:
    assert ids(repo, "Observation", ("code", "718-7")) == ["o1", "o2", "o5"]
    assert ids(repo, "Observation", ("code", f"{LOINC}|718-7")) == ["o1", "o2"]
    assert ids(repo, "Observation", ("code", "urn:local|")) == ["o5"]
    assert ids(repo, "Patient", ("gender", "|female")) == ["p1", "p3"]
    assert ids(repo, "Observation", ("code:not", f"{LOINC}|718-7")) == ["o3", "o4", "o5"]
    assert ids(repo, "Observation", ("code:text", "lab 718")) == ["o1", "o2"]
    assert ids(repo, "Observation", ("code:text", "test 2345")) == ["o3", "o4"]
    assert ids(repo, "Patient", ("active", "true")) == ["p2"]
    assert ids(repo, "Patient", ("active", "false")) == ["p3"]
    assert ids(repo, "Patient", ("phone", "555-1234")) == ["p1"]
    assert ids(repo, "Patient", ("identifier", f"{MRN}|200")) == ["p2"]
    assert ids(repo, "Patient", ("_tag", "urn:tags|vip")) == ["p1"]
    assert ids(repo, "Patient", ("_profile", "http://example.org/sd/p")) == ["p1"]
    assert ids(repo, "Encounter", ("class", "AMB")) == ["e1"]


def test_escaping_in_token_values(repo: SqlResourceRepository) -> None:
    assert ids(repo, "Patient", ("identifier", "300\\,a\\|b")) == ["p3"]
    assert ids(repo, "Patient", ("identifier", f"{MRN}|300\\,a\\|b")) == ["p3"]
    assert ids(repo, "Patient", ("identifier", "300")) == []


def test_or_and_and(repo: SqlResourceRepository) -> None:
    assert ids(repo, "Patient", ("identifier", "100,200")) == ["p1", "p2"]
    assert ids(repo, "Patient", ("identifier", "100,200"), ("gender", "male")) == ["p2"]
    assert ids(repo, "Observation", ("date", "ge2024-01-01"), ("date", "lt2024-06")) == ["o1", "o2", "o5"]


def test_missing(repo: SqlResourceRepository) -> None:
    assert ids(repo, "Patient", ("birthdate:missing", "true")) == ["p4"]
    assert ids(repo, "Patient", ("gender:missing", "false")) == ["p1", "p2", "p3"]
    assert ids(repo, "Observation", ("subject:missing", "true")) == ["o5"]
    assert ids(repo, "Patient", ("family:missing", "true")) == []


DATE_CASES = [
    ("2024-05", ["o1", "o2"]),
    ("eq2024-05-01", ["o1"]),
    ("2024-05-20", ["o2"]),  # 08:30+02:00 is 06:30Z the same day
    ("ne2024-05", ["o3", "o4", "o5"]),
    ("gt2024-05-01", ["o2", "o3"]),
    ("ge2024-05-01", ["o1", "o2", "o3"]),
    ("lt2024", ["o4"]),
    ("le2024-01-01", ["o4", "o5"]),
    ("sa2024-03-31", ["o1", "o2", "o3"]),
    ("eb2024-05-01", ["o4", "o5"]),
    ("2024-02", []),  # the period Jan–Mar is not contained in February
    ("2024-05-01T10:00:00Z", ["o1"]),
    ("2024-05-01T12:00:00+02:00", ["o1"]),
    ("2023", ["o4"]),
]


def test_date_prefixes_and_precision(repo: SqlResourceRepository) -> None:
    for value, expected in DATE_CASES:
        assert ids(repo, "Observation", ("date", value)) == expected, value


def test_date_approximately_and_extremes(repo: SqlResourceRepository) -> None:
    # ap: ranges overlap once the searched one is widened by 10% of its distance from now (R4 3.1.1.4.5)
    now = datetime.now(UTC).replace(tzinfo=None)
    span = max((now - datetime(2024, 5, 10)) * 0.1, timedelta(days=1))
    stored = {"o1": (2024, 5, 1), "o2": (2024, 5, 20), "o3": (2024, 6, 1), "o4": (2023, 12, 31)}
    expected = [
        o
        for o, day in stored.items()
        if abs(datetime(*day) - datetime(2024, 5, 10)) <= span + timedelta(days=1)
    ]
    if datetime(2024, 3, 31) >= datetime(2024, 5, 10) - span:  # o5: the period January–March 2024
        expected.append("o5")
    assert ids(repo, "Observation", ("date", "ap2024-05-10")) == sorted(expected)
    assert ids(repo, "Observation", ("date", "ap9999-12-31")) == []
    assert ids(repo, "Observation", ("date", "ap0001")) == []
    assert len(ids(repo, "Observation", ("date", "le9999-12-31T23:59:59Z"))) == 5
    assert ids(repo, "Observation", ("date", "sa9999")) == []


def test_date_of_period_resource(repo: SqlResourceRepository) -> None:
    assert ids(repo, "Encounter", ("date", "2024-05-01")) == ["e1"]
    assert ids(repo, "Encounter", ("date", "lt2024-05-01T10:00:00Z")) == ["e1"]
    assert ids(repo, "Encounter", ("date", "gt2024-05-02")) == []
    assert ids(repo, "Patient", ("birthdate", "1975")) == ["p2"]
    assert ids(repo, "Patient", ("birthdate", "ge1976")) == ["p1", "p3"]


QUANTITY_CASES = [
    ("13.5", ["o1"]),
    ("13", []),
    ("gt12", ["o1", "o4"]),
    ("gt12|http://unitsofmeasure.org|g/dL", ["o1"]),
    ("le12||g/dL", ["o2"]),
    ("135|http://unitsofmeasure.org|g/L", ["o1"]),  # canonical UCUM comparison
    ("7|http://unitsofmeasure.org|mmol/L", ["o4"]),
    ("lt6|http://unitsofmeasure.org|mmol/L", ["o3"]),
    ("ap5.5", ["o3"]),
    ("ne13.5||g/dL", ["o2"]),
]


def test_quantity(repo: SqlResourceRepository) -> None:
    for value, expected in QUANTITY_CASES:
        assert ids(repo, "Observation", ("value-quantity", value)) == expected, value


def test_reference_forms(repo: SqlResourceRepository) -> None:
    assert ids(repo, "Observation", ("subject", "Patient/p1")) == ["o1", "o2"]
    assert ids(repo, "Observation", ("subject", "p1")) == ["o1", "o2"]
    assert ids(repo, "Observation", ("subject:Patient", "p2")) == ["o3"]
    assert ids(repo, "Observation", ("patient", "p3")) == ["o4"]
    assert ids(repo, "Observation", ("subject", "Group/p1")) == []
    assert ids(repo, "Observation", ("subject", "http://elsewhere.example/fhir/Patient/p1")) == []


def test_reference_by_id_with_other_criteria(repo: SqlResourceRepository) -> None:
    # the reference drives and the other criteria are probed per key (search_sql._probed): same answers
    # as the intersection, including OR values, chains and a second reference among the probes
    assert ids(repo, "Observation", ("subject", "Patient/p1"), ("code", "718-7")) == ["o1", "o2"]
    assert ids(repo, "Observation", ("subject", "Patient/p1"), ("date", "ge2024-05-10")) == ["o2"]
    assert ids(
        repo,
        "Observation",
        ("subject", "Patient/p1"),
        ("code", "http://loinc.org|718-7"),
        ("date", "ge2024-05-10"),
    ) == ["o2"]
    assert ids(repo, "Observation", ("subject", "Patient/p1,Patient/p2"), ("code", "2345-7")) == ["o3"]
    assert ids(repo, "Observation", ("subject", "Patient/p2"), ("code", "718-7")) == []
    assert ids(repo, "Observation", ("code", "2345-7"), ("patient", "p3"), ("subject", "Patient/p3")) == [
        "o4"
    ]
    assert ids(repo, "Observation", ("subject", "Patient/p1"), ("subject.name", "muller")) == ["o1", "o2"]
    assert ids(repo, "Observation", ("subject", "Patient/p1"), ("subject:Patient.name", "smith")) == []
    assert ids(repo, "Observation", ("subject", "Patient/p1"), ("code:not", "718-7")) == []
    assert ids(repo, "Encounter", ("subject", "Patient/p1"), ("service-provider", "Organization/org1")) == [
        "e1"
    ]


def test_chained_and_has(repo: SqlResourceRepository) -> None:
    assert ids(repo, "Observation", ("subject:Patient.identifier", f"{MRN}|200")) == ["o3"]
    assert ids(repo, "Observation", ("subject.name", "muller")) == ["o1", "o2", "o3"]
    assert ids(repo, "Observation", ("patient.gender", "female")) == ["o1", "o2", "o4"]
    assert ids(repo, "Encounter", ("service-provider.name", "stadt")) == ["e1"]
    assert ids(repo, "Patient", ("_has:Observation:subject:code", "2345-7")) == ["p2", "p3"]
    assert ids(repo, "Patient", ("_has:Observation:patient:date", "2024-05")) == ["p1"]
    assert ids(repo, "Patient", ("_has:Encounter:subject:status", "finished")) == ["p1"]
    with pytest.raises(InvalidInput, match="subject"):
        repo.search("Observation", [("subject.nosuch", "x")])
    with pytest.raises(InvalidInput, match="_has"):
        repo.search("Patient", [("_has:Observation:code:code", "x")])


def test_id_and_last_updated(repo: SqlResourceRepository) -> None:
    assert ids(repo, "Patient", ("_id", "p1,p3")) == ["p1", "p3"]
    assert ids(repo, "Patient", ("_id:not", "p1")) == ["p2", "p3", "p4"]
    assert len(ids(repo, "Patient", ("_lastUpdated", "gt2000-01-01"))) == 4
    assert ids(repo, "Patient", ("_lastUpdated", "lt2000-01-01")) == []


def test_sort_paging_and_totals(repo: SqlResourceRepository) -> None:
    assert [m.id for m in repo.search("Patient", [("_sort", "family,given")]).matches] == [
        "p1",
        "p2",
        "p4",
        "p3",
    ]
    assert [m.id for m in repo.search("Patient", [("_sort", "-birthdate")]).matches] == [
        "p3",
        "p1",
        "p2",
        "p4",
    ]
    assert [m.id for m in repo.search("Observation", [("_sort", "-date,_id")]).matches][:3] == [
        "o3",
        "o2",
        "o1",
    ]
    assert [m.id for m in repo.search("Observation", [("_sort", "value-quantity")]).matches][:2] == [
        "o3",
        "o2",
    ]
    assert [m.id for m in repo.search("Patient", [("_sort", "-_id")]).matches] == ["p4", "p3", "p2", "p1"]
    page1 = repo.search("Patient", [("_sort", "_id"), ("_count", "3")])
    assert [m.id for m in page1.matches] == ["p1", "p2", "p3"] and page1.has_more and page1.total is None
    page2 = repo.search("Patient", [("_sort", "_id"), ("_count", "3"), ("_offset", "3")])
    assert [m.id for m in page2.matches] == ["p4"] and not page2.has_more and page2.total == 4
    accurate = repo.search("Patient", [("_count", "1"), ("_total", "accurate")])
    assert accurate.total == 4 and accurate.count == 1
    counted = repo.search("Observation", [("code", "718-7"), ("_summary", "count")])
    assert counted.total == 3 and counted.matches == []


def test_include_and_revinclude(repo: SqlResourceRepository) -> None:
    result = repo.search("Observation", [("code", f"{LOINC}|718-7"), ("_include", "Observation:subject")])
    assert sorted(m.id for m in result.matches) == ["o1", "o2"]
    assert [i.reference for i in result.included] == ["Patient/p1"]
    typed = repo.search("Observation", [("_id", "o3"), ("_include", "Observation:subject:Group")])
    assert typed.included == []
    rev = repo.search("Patient", [("_id", "p1"), ("_revinclude", "Observation:subject")])
    assert sorted(i.id for i in rev.included) == ["o1", "o2"]
    both = repo.search("Patient", [("_id", "p1"), ("_revinclude", "Observation:subject,Encounter:subject")])
    assert sorted(i.id for i in both.included) == ["e1", "o1", "o2"]
    star = repo.search("Encounter", [("_include", "*")])
    assert sorted(i.reference for i in star.included) == ["Organization/org1", "Patient/p1"]


def test_elements_and_summary(repo: SqlResourceRepository) -> None:
    result = repo.search("Observation", [("_id", "o1"), ("_elements", "status,value")])
    resource = result.matches[0].resource
    assert set(resource) == {"resourceType", "id", "meta", "status", "valueQuantity"}
    assert {
        "system": "http://terminology.hl7.org/CodeSystem/v3-ObservationValue",
        "code": "SUBSETTED",
    } in resource["meta"]["tag"]
    text = repo.search("Patient", [("_id", "p1"), ("_summary", "data")]).matches[0].resource
    assert "text" not in text and "name" in text


def test_unknown_parameters_are_ignored_and_reported(repo: SqlResourceRepository) -> None:
    result = repo.search("Patient", [("family", "smith"), ("shoe-size", "42"), ("_format", "json")])
    assert [m.id for m in result.matches] == ["p3"]
    assert result.ignored == [("shoe-size", "42")]


MALFORMED = [
    ("_offset", str(10**30)),
    ("birthdate", "yesterday"),
    ("value-quantity", "abc"),
    ("_count", "-1"),
    ("_sort", "shoe-size"),
    ("family:fuzzy", "x"),
    ("gender:missing", "maybe"),
    ("subject", "Patient/with space"),
    ("_include", "Observation:code"),
    ("_total", "sometimes"),
]


def test_malformed_values_name_the_parameter(repo: SqlResourceRepository) -> None:
    for param, value in MALFORMED:
        rtype = "Observation" if param in ("value-quantity", "subject", "_include") else "Patient"
        with pytest.raises(InvalidInput) as err:
            repo.search(rtype, [(param, value)])
        assert param.split(":")[0] in str(err.value), param


def test_system_search_across_types(repo: SqlResourceRepository) -> None:
    assert len(repo.search(None, [("_id", "p1,o1,e1")]).matches) == 3
    assert [m.reference for m in repo.search(None, [("_tag", "vip")]).matches] == ["Patient/p1"]


def test_uri_exact_below_above(records) -> None:  # type: ignore[no-untyped-def]
    with records() as r:
        for i, url in enumerate(
            ["http://example.org/fhir/cm/a", "http://example.org/fhir/cm/b", "http://other.org/cm"]
        ):
            r.update("ConceptMap", f"cm{i}", {"resourceType": "ConceptMap", "status": "active", "url": url})
    with records() as r:
        assert ids(r, "ConceptMap", ("url", "http://example.org/fhir/cm/a")) == ["cm0"]
        assert ids(r, "ConceptMap", ("url", "http://example.org/fhir")) == []
        assert ids(r, "ConceptMap", ("url:below", "http://example.org/fhir/")) == ["cm0", "cm1"]
        assert ids(r, "ConceptMap", ("url:above", "http://other.org/cm/v2/x")) == ["cm2"]
        assert ids(r, "ConceptMap", ("url:below", "http://example.org/fhir/cm/a%")) == []


def test_number_parameters_with_a_site_registry(database) -> None:  # type: ignore[no-untyped-def]
    """None of the shipped types has a number parameter; a registry built from another R4 definition
    (RiskAssessment-probability) exercises the number index and its precision semantics."""
    from engine.fhir.search.registry import SearchRegistry
    from services.records.repository import RecordStoreConfig

    registry = SearchRegistry(
        [
            {
                "url": "http://hl7.org/fhir/SearchParameter/RiskAssessment-probability",
                "code": "probability",
                "type": "number",
                "description": "Likelihood of specified outcome",
                "expressions": {"RiskAssessment": "RiskAssessment.prediction.probability"},
            }
        ]
    )
    config = RecordStoreConfig(registry)
    with database.unit_of_work() as uow:
        r = SqlResourceRepository(uow, config)
        for rid, p in [("r1", 0.25), ("r2", 0.3), ("r3", 100)]:
            r.update(
                "RiskAssessment",
                rid,
                {
                    "resourceType": "RiskAssessment",
                    "status": "final",
                    "prediction": [{"probabilityDecimal": p}],
                },
            )
    with database.unit_of_work() as uow:
        r = SqlResourceRepository(uow, config)
        assert ids(r, "RiskAssessment", ("probability", "0.3")) == ["r1", "r2"]  # 0.3 means [0.25, 0.35)
        assert ids(r, "RiskAssessment", ("probability", "0.30")) == ["r2"]
        assert ids(r, "RiskAssessment", ("probability", "0.2")) == []
        assert ids(r, "RiskAssessment", ("probability", "0.25")) == ["r1"]
        assert ids(r, "RiskAssessment", ("probability", "100")) == ["r3"]
        assert ids(r, "RiskAssessment", ("probability", "1e2")) == ["r3"]
        assert ids(r, "RiskAssessment", ("probability", "gt0.25")) == ["r2", "r3"]
        assert ids(r, "RiskAssessment", ("probability", "le0.3")) == ["r1", "r2"]
        assert ids(r, "RiskAssessment", ("probability", "ne0.30")) == ["r1", "r3"]
        assert ids(r, "RiskAssessment", ("probability", "ap95")) == ["r3"]
        assert [m.id for m in r.search("RiskAssessment", [("_sort", "-probability")]).matches] == [
            "r3",
            "r2",
            "r1",
        ]


def test_include_iterate_and_summary_true(records) -> None:  # type: ignore[no-untyped-def]
    with records() as r:
        r.update("Organization", "org", {"resourceType": "Organization", "id": "org", "name": "Lab"})
        r.update(
            "Patient",
            "pat",
            {
                "resourceType": "Patient",
                "id": "pat",
                "managingOrganization": {"reference": "Organization/org"},
                "text": {"status": "generated", "div": "<div xmlns='http://www.w3.org/1999/xhtml'>x</div>"},
                "contact": [{"name": {"family": "Kin"}}],
                "gender": "other",
            },
        )
        r.update("Observation", "obs", _obs("obs", "pat", "718-7", 1, "g/dL", "2024-01-01"))
        r.update(
            "Provenance",
            "prov",
            {
                "resourceType": "Provenance",
                "id": "prov",
                "target": [{"reference": "Patient/pat"}],
                "recorded": "2024-01-01T00:00:00Z",
                "agent": [{"who": {"display": "x"}}],
            },
        )
    with records() as r:
        plain = r.search(
            "Observation", [("_include", "Observation:subject"), ("_include", "Patient:organization")]
        )
        assert [i.reference for i in plain.included] == [
            "Patient/pat"
        ]  # Patient:organization is not iterated
        deep = r.search(
            "Observation",
            [
                ("_include", "Observation:subject"),
                ("_include:iterate", "Patient:organization"),
                ("_revinclude:iterate", "Provenance:target"),
            ],
        )
        assert sorted(i.reference for i in deep.included) == [
            "Organization/org",
            "Patient/pat",
            "Provenance/prov",
        ]
        summary = r.search("Patient", [("_id", "pat"), ("_summary", "true")]).matches[0].resource
        assert "gender" in summary and "managingOrganization" in summary
        assert "contact" not in summary and "text" not in summary
        assert summary["meta"]["tag"][-1]["code"] == "SUBSETTED"


def test_patient_compartment(repo: SqlResourceRepository) -> None:
    def in_compartment(rtype: str, pid: str, *params: tuple[str, str]) -> list[str]:
        return sorted(m.id for m in repo.search(rtype, list(params), compartment=("Patient", pid)).matches)

    assert in_compartment("Observation", "p1") == ["o1", "o2"]
    assert in_compartment("Observation", "p1", ("date", "2024-05-20")) == ["o2"]
    assert in_compartment("Encounter", "p1") == ["e1"]
    assert in_compartment("Encounter", "p2") == []
    assert in_compartment("Patient", "p2") == ["p2"]
    assert in_compartment("Organization", "p1") == []  # not a member type of the Patient compartment
    with pytest.raises(NotSupported):
        repo.search("Observation", [], compartment=("Encounter", "e1"))


def test_reference_identifier_modifier_and_last_updated_sort(records) -> None:  # type: ignore[no-untyped-def]
    with records() as r:
        first = r.create(
            {
                "resourceType": "DiagnosticReport",
                "status": "final",
                "code": {"text": "CBC"},
                "subject": {"identifier": {"system": MRN, "value": "ext-1"}, "display": "unknown to us"},
            }
        )
    with records() as r:
        second = r.create({"resourceType": "DiagnosticReport", "status": "final", "code": {"text": "CBC"}})
    with records() as r:
        assert ids(r, "DiagnosticReport", ("subject:identifier", f"{MRN}|ext-1")) == [first.id]
        assert ids(r, "DiagnosticReport", ("subject:identifier", "ext-2")) == []
        newest = [m.id for m in r.search("DiagnosticReport", [("_sort", "-_lastUpdated")]).matches]
        assert newest == [second.id, first.id]
