"""``conduit map test|run|list`` as a user runs them."""

from __future__ import annotations

import json
from pathlib import Path

from typer.testing import CliRunner

from engine.cli import app

CORPUS = Path(__file__).resolve().parents[1] / "fixtures" / "hl7v2"
ORU = CORPUS / "ORU_R01" / "msfc-LAB-ORU-1.hl7"


def test_map_test_json_prints_only_the_bundle():
    result = CliRunner().invoke(app, ["map", "test", str(ORU), "--json"])
    assert result.exit_code == 0, result.output
    bundle = json.loads(result.stdout)
    assert bundle["resourceType"] == "Bundle" and bundle["type"] == "transaction"
    assert "not used by the mapping" in result.stderr
    unused = result.stderr.split("not used by the mapping:", 1)[1].splitlines()[0]
    # units (OBX-6) and the value type (OBX-2) are read by the OBX-5 converter: they are used
    assert not any(
        f.strip().startswith("OBX") and f.strip().endswith(("-2", "-6")) for f in unused.split(",")
    )


def test_map_test_expect_matches_itself_and_shows_differences(tmp_path: Path):
    runner = CliRunner()
    bundle = json.loads(runner.invoke(app, ["map", "test", str(ORU), "--json"]).stdout)
    same = tmp_path / "same.json"
    same.write_text(json.dumps(bundle))
    assert runner.invoke(app, ["map", "test", str(ORU), "--json", "--expect", str(same)]).exit_code == 0
    bundle["entry"][0]["resource"]["gender"] = "other"
    changed = tmp_path / "changed.json"
    changed.write_text(json.dumps(bundle))
    result = runner.invoke(app, ["map", "test", str(ORU), "--json", "--expect", str(changed)])
    assert result.exit_code == 1
    assert "difference" in result.stderr and "gender" in result.stderr


def test_map_test_fails_on_an_unmappable_message(tmp_path: Path):
    bad = tmp_path / "bad.hl7"
    bad.write_bytes(b"MSH|^~\\&|A|B|||20230101||ZZZ^Z99|1|P|2.5\r")
    result = CliRunner().invoke(app, ["map", "test", str(bad)])
    assert result.exit_code == 1
    assert "no mapping for ZZZ^Z99" in result.stderr


def test_map_run_over_a_folder_and_list(tmp_path: Path):
    for f in (ORU, CORPUS / "ADT_A01" / "msfc-ADT01-23.hl7"):
        (tmp_path / f.name).write_bytes(f.read_bytes())
    (tmp_path / "broken.hl7").write_bytes(b"PID|1\r")
    result = CliRunner().invoke(app, ["map", "run", str(tmp_path)])
    assert result.exit_code == 1
    assert "2 mapped, 1 failed" in result.stdout
    listing = CliRunner().invoke(app, ["map", "list"])
    assert listing.exit_code == 0 and "oru-r01" in listing.stdout
