"""``conduit map test|run`` over DICOM Part 10 files, as a user runs them: a study folder (or one file,
whatever its name) through the DICOM mapping, presented as the PACS sync presents it."""

from __future__ import annotations

import json
import textwrap
import warnings
from pathlib import Path
from typing import Any

import pydicom
from pydicom.uid import generate_uid
from typer.testing import CliRunner

from engine.cli import app
from engine.mapping.dicom import provenance_id
from engine.mapping.validate import validate_bundle
from tests.services.pacs.pacs_support import part10

STUDY = "1.2.826.0.1.3680043.10.1"
PYDICOM_CT = Path(pydicom.__file__).parent / "data" / "test_files" / "CT_small.dcm"


def write_part10(path: Path, *, source_ae: str = "", **attributes: Any) -> Path:
    """A small CT Part 10 file (the PACS tests' object, of study STUDY, with BodyPartExamined, a header
    attribute the PACS index does not keep); ``attributes`` override the defaults (keyword=value)."""
    attributes = {
        "StudyInstanceUID": STUDY,
        "SOPInstanceUID": generate_uid(),
        "BodyPartExamined": "CHEST",
        **attributes,
    }
    path.parent.mkdir(parents=True, exist_ok=True)
    with warnings.catch_warnings():  # a value outside its VR (StudyDate "2024") is what a test may want
        warnings.simplefilter("ignore", UserWarning)
        path.write_bytes(part10(source_ae, **attributes))
    return path


def a_study(folder: Path) -> Path:
    """Two series (the second numbered 1, so it comes first), three instances; names without .dcm."""
    s1, s2 = "1.2.826.0.1.3680043.10.1.1", "1.2.826.0.1.3680043.10.1.2"
    for name, number, uid in (("IM0001", 2, "1.9.1"), ("IM0002", 1, "1.9.2")):
        ct = {"SeriesInstanceUID": s1, "SeriesNumber": 2, "InstanceNumber": number, "SOPInstanceUID": uid}
        write_part10(folder / "a" / name, source_ae="CT01", **ct)
    write_part10(
        folder / "b" / "IM0001", SeriesInstanceUID=s2, SeriesNumber=1, Modality="SR", SOPInstanceUID="1.9.3"
    )
    (folder / "README").write_text("not DICOM: left alone\n")
    return folder


def invoke(*args: str) -> Any:
    return CliRunner().invoke(app, ["map", "test", *args], env={"COLUMNS": "250"})


def test_a_study_folder_maps_to_an_imaging_study_and_its_provenance(tmp_path: Path) -> None:
    result = invoke(str(a_study(tmp_path)), "--json", "--input", "patient=Patient/7")
    assert result.exit_code == 0, result.output
    bundle = json.loads(result.stdout)
    assert validate_bundle(bundle) == []
    study, provenance = (e["resource"] for e in bundle["entry"])
    assert study["subject"] == {"reference": "Patient/7"}
    assert [s["uid"] for s in study["series"]] == ["1.2.826.0.1.3680043.10.1.2", "1.2.826.0.1.3680043.10.1.1"]
    assert [i["uid"] for i in study["series"][1]["instance"]] == ["1.9.2", "1.9.1"]  # InstanceNumber order
    assert study["numberOfInstances"] == 3 and [m["code"] for m in study["modality"]] == ["CT", "SR"]
    assert provenance["id"] == provenance_id("dicom-imaging-study", "1.2.826.0.1.3680043.10.1")
    assert provenance["target"] == [{"reference": bundle["entry"][0]["fullUrl"]}]
    assert provenance["agent"][1]["who"] == {
        "display": "DICOM AE CT01"
    }  # the files' SourceApplicationEntityTitle
    assert (
        "3 file(s), 2 series -> mapping dicom-imaging-study 1.0: 2 entries, 0 validation error(s)"
        in result.stderr
    )
    unused = result.stderr.split("not used by the mapping:", 1)[1].splitlines()[0]
    assert "PatientID" in unused and "StudyDate" not in unused  # StudyDate is read (started)
    hidden = result.stderr.split("not presented to DICOM mappings", 1)[1].splitlines()[0]
    assert "BodyPartExamined" in hidden and "PatientID" not in hidden


def test_a_file_is_recognised_by_its_dicm_prefix_not_its_name(tmp_path: Path) -> None:
    path = write_part10(tmp_path / "looks-like-hl7.txt")
    result = invoke(str(path), "--json")
    assert result.exit_code == 0, result.output
    assert json.loads(result.stdout)["entry"][0]["resource"]["subject"] == {"display": "Doe^John"}


def test_a_folder_without_dicom_files_is_refused(tmp_path: Path) -> None:
    (tmp_path / "a.hl7").write_bytes(b"MSH|^~\\&|A|B\r")
    result = invoke(str(tmp_path))
    assert result.exit_code == 2 and "no DICOM Part 10 file" in result.stderr and "map run" in result.stderr


def test_files_of_several_studies_are_refused_naming_them(tmp_path: Path) -> None:
    write_part10(tmp_path / "one", StudyInstanceUID="1.2.3.1")
    write_part10(tmp_path / "two", StudyInstanceUID="1.2.3.2")
    result = invoke(str(tmp_path))
    assert result.exit_code == 2
    text = " ".join(result.stderr.split())
    assert "2 studies, not one" in text and "1.2.3.1 (1 file(s)" in text and "1.2.3.2 (1 file(s)" in text


def test_expect_matches_itself_and_shows_differences(tmp_path: Path) -> None:
    folder = a_study(tmp_path / "study")
    bundle = json.loads(invoke(str(folder), "--json").stdout)
    same = tmp_path / "same.json"
    same.write_text(json.dumps(bundle))
    assert invoke(str(folder), "--json", "--expect", str(same)).exit_code == 0  # recorded and ids ignored
    bundle["entry"][0]["resource"]["description"] = "HEAD"
    changed = tmp_path / "changed.json"
    changed.write_text(json.dumps(bundle))
    result = invoke(str(folder), "--expect", str(changed))
    assert result.exit_code == 1 and "1 difference(s)" in result.stderr and "/description" in result.stderr


def test_warnings_name_the_file_and_tag_and_what_the_pacs_never_presents(tmp_path: Path) -> None:
    (tmp_path / "maps" / "dicom").mkdir(parents=True)
    (tmp_path / "maps" / "dicom" / "acme.yaml").write_text(
        textwrap.dedent(
            """\
            mapping: acme-imaging-study
            extends: dicom-imaging-study
            resources:
              imaging_study:
                fields:
                  note: {fields: {text: BodyPartExamined}}
            """
        )
    )
    path = write_part10(tmp_path / "study" / "IM1", StudyDate="2024")
    result = invoke(str(path), "--dir", str(tmp_path / "maps"), "--mapping", "acme-imaging-study")
    assert result.exit_code == 0, result.output  # warnings only
    text = " ".join(result.stderr.split())
    assert f"StudyDate (0008,0020) in {path}" in text  # the value that could not be read, located
    assert "reads BodyPartExamined, which the PACS index does not keep: it is always empty" in text
    bad = invoke(str(path), "--mapping", "oru-r01")
    assert bad.exit_code == 2 and "no DICOM mapping named 'oru-r01'" in bad.stderr


def test_an_invalid_resource_fails(tmp_path: Path) -> None:
    (tmp_path / "maps" / "dicom").mkdir(parents=True)
    (tmp_path / "maps" / "dicom" / "bad.yaml").write_text(
        "mapping: bad\nextends: dicom-imaging-study\nresources:\n  imaging_study:\n"
        "    fields:\n      status: {value: finished}\n"
    )
    path = write_part10(tmp_path / "IM1")
    result = invoke(str(path), "--dir", str(tmp_path / "maps"), "--mapping", "bad")
    assert result.exit_code == 1 and "invalid" in result.stderr and "status" in result.stderr


def test_a_real_modality_file(tmp_path: Path) -> None:
    result = invoke(str(PYDICOM_CT), "--json")  # pydicom's CT_small.dcm (a GE CT image)
    assert result.exit_code == 0, result.output
    study = json.loads(result.stdout)["entry"][0]["resource"]
    assert study["numberOfInstances"] == 1 and study["series"][0]["modality"]["code"] == "CT"


def test_map_run_maps_each_study_of_a_folder_beside_hl7_messages(tmp_path: Path) -> None:
    a_study(tmp_path / "ct")
    write_part10(tmp_path / "mr" / "IM1", StudyInstanceUID="1.2.3.9", Modality="MR")
    oru = Path(__file__).resolve().parents[1] / "fixtures" / "hl7v2" / "ORU_R01" / "msfc-LAB-ORU-1.hl7"
    (tmp_path / "lab.hl7").write_bytes(oru.read_bytes())
    (tmp_path / "damaged").write_bytes(b"\0" * 128 + b"DICM" + b"\xff" * 7)  # the prefix, then nothing sound
    result = CliRunner().invoke(app, ["map", "run", str(tmp_path)], env={"COLUMNS": "250"})
    assert result.exit_code == 1, result.output
    assert "3 mapped, 1 failed" in result.stdout and "no StudyInstanceUID (0020,000D)" in result.stdout
    assert (
        "ct (study 1.2.826.0.1.3680043.10.1, 3 file(s))" in result.stdout
        and "study 1.2.3.9, 1 file(s)" in result.stdout
    )


def test_a_value_pydicom_cannot_read_is_an_error_naming_file_and_tag_not_a_crash(tmp_path: Path) -> None:
    path = write_part10(tmp_path / "IM1", SeriesNumber=7)
    data = path.read_bytes()
    element = b"\x20\x00\x11\x00IS\x02\x007 "  # SeriesNumber, explicit VR little endian as part10() writes
    assert element in data
    path.write_bytes(data.replace(element, b"\x20\x00\x11\x00IS\x06\x001e400 "))  # a float, no integer
    result = invoke(str(path))
    assert result.exit_code == 2, result.output
    assert "SeriesNumber (0020,0011)" in result.output and str(path) in result.output
    write_part10(tmp_path / "other" / "IM2", StudyInstanceUID="1.2.3.9")
    run = CliRunner().invoke(app, ["map", "run", str(tmp_path)], env={"COLUMNS": "250"})
    assert run.exit_code == 1, run.output
    assert "1 mapped, 1 failed" in run.stdout and "SeriesNumber (0020,0011)" in run.stdout
