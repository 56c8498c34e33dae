"""The CapabilityStatement: generated from the registry, valid R4, and identical to the committed artifact."""

from __future__ import annotations

from engine.cli.conformance import CAPABILITY_PATH, render_capability
from engine.fhir.capability import TYPE_INTERACTIONS, capability_statement, supported_resource_types
from engine.fhir.search import supported_search_parameters
from engine.fhir.validation import validate_resource


def test_artifact_matches_code() -> None:
    committed = CAPABILITY_PATH.read_text(encoding="utf-8")
    assert committed == render_capability(), (
        "conformance/capability-statement.json drifted from the code: run `conduit conformance generate`"
    )


def test_statement_is_valid_r4() -> None:
    statement = capability_statement()
    assert statement["fhirVersion"] == "4.0.1"
    assert validate_resource(statement) == []


def test_statement_lists_registered_types_and_search_parameters() -> None:
    rest = capability_statement()["rest"][0]
    by_type = {r["type"]: r for r in rest["resource"]}
    assert set(by_type) == set(supported_resource_types())
    assert {"Patient", "Observation"} <= set(by_type)
    patient = by_type["Patient"]
    assert [i["code"] for i in patient["interaction"]] == list(TYPE_INTERACTIONS)
    declared = {p["name"]: p["type"] for p in patient["searchParam"]}
    for spd in supported_search_parameters("Patient"):
        assert declared.get(spd.code) == spd.type
    assert declared["identifier"] == "token"
    assert {i["code"] for i in rest["interaction"]} == {
        "transaction",
        "batch",
        "search-system",
        "history-system",
    }


def test_cli_generate_check_and_validate(tmp_path) -> None:  # noqa: ANN001
    from typer.testing import CliRunner

    from engine.cli import app

    runner = CliRunner()
    target = tmp_path / "cs.json"
    assert runner.invoke(app, ["conformance", "generate", "--path", str(target)]).exit_code == 0
    assert target.read_text(encoding="utf-8") == render_capability()
    assert runner.invoke(app, ["conformance", "generate", "--check", "--path", str(target)]).exit_code == 0
    target.write_text("{}", encoding="utf-8")
    assert runner.invoke(app, ["conformance", "generate", "--check", "--path", str(target)]).exit_code == 1

    good, bad = tmp_path / "good.json", tmp_path / "bad.json"
    good.write_text('{"resourceType": "Patient", "active": true}', encoding="utf-8")
    bad.write_text('{"resourceType": "Patient", "active": "yes", "nickname": "x"}', encoding="utf-8")
    assert runner.invoke(app, ["fhir", "validate", str(good)]).exit_code == 0
    result = runner.invoke(app, ["fhir", "validate", str(good), str(bad)])
    assert result.exit_code == 1
    assert "Patient.active" in result.output and "Patient.nickname" in result.output
