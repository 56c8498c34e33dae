"""DICOM → FHIR mappings: attribute paths (keywords, tags, values, components, inputs) read from the study
hierarchy, the DICOM value specs (count, nested for_each, converted joins), file:line errors, the DICOM
converters, and the registry keeping DICOM mappings out of HL7 v2 selection."""

from __future__ import annotations

import textwrap
from pathlib import Path
from typing import Any

import pytest
from typer.testing import CliRunner

from engine.errors import ConfigurationError, MappingError
from engine.hl7v2.paths import PathSyntaxError
from engine.mapping import map_message
from engine.mapping.dicom import compile_dicom_path, run_study
from engine.mapping.dicom_study import DicomStudy, study_tree
from engine.mapping.registry import Registry

CT = "1.2.840.10008.5.1.4.1.1.2"
ADT = "MSH|^~\\&|HIS|HOSP|EHR|HOSP|20240101||ADT^A01|M1|P|2.5\rPID|1||123^^^HOSP^MR||Doe^Jane\r"


def write(root: Path, rel: str, text: str) -> Path:
    path = root / rel
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(textwrap.dedent(text))
    return path


def small_study(**study: str) -> DicomStudy:
    attrs = {"StudyInstanceUID": "1.2.3", "PatientName": "Doe^John^Q^Dr^Jr", "ModalitiesInStudy": "CT\\SR"}
    attrs.update(study)
    return study_tree(
        attrs,
        [
            (
                {"SeriesInstanceUID": "1.2.3.1", "Modality": "CT", "SeriesNumber": "1"},
                [
                    {"SOPInstanceUID": "1.2.3.1.1", "SOPClassUID": CT, "InstanceNumber": "1"},
                    {"SOPInstanceUID": "1.2.3.1.2", "SOPClassUID": CT},
                ],
            ),
            ({"SeriesInstanceUID": "1.2.3.2", "Modality": "SR"}, [{"SOPInstanceUID": "1.2.3.2.1"}]),
        ],
        inputs={"patient": "Patient/7", "order": None},
    )


def texts(path: str, scope: Any) -> list[str]:
    return [v.text() for v in compile_dicom_path(path).values(scope)]


def test_paths_read_keywords_tags_values_components_and_inputs() -> None:
    root = small_study().tree
    first_instance = root.children[0].children[0]
    assert texts("StudyInstanceUID", root) == texts("(0020,000D)", root) == ["1.2.3"]
    assert texts("(0020,000d)", root) == ["1.2.3"]  # tags in either case
    assert texts("ModalitiesInStudy", root) == ["CT", "SR"]  # every value of a multi-valued attribute
    assert texts("ModalitiesInStudy[2]", root) == ["SR"]
    assert texts("PatientName.2", root) == ["John"]  # a PN component
    assert texts("input.patient", root) == ["Patient/7"]
    assert texts("input.order", root) == []  # not resolved: absent
    # an instance reads its own attributes, else its series', else its study's
    assert texts("SOPInstanceUID", first_instance) == ["1.2.3.1.1"]
    assert texts("Modality", first_instance) == ["CT"]
    assert texts("StudyInstanceUID", first_instance) == ["1.2.3"]
    assert texts("SOPInstanceUID", root) == []  # never from below
    [value] = compile_dicom_path("SOPClassUID").values(first_instance)
    assert value.location == "SERIES[1]/INSTANCE[1] SOPClassUID"


@pytest.mark.parametrize(
    ("text", "message"),
    [
        ("StudyInstanceUid", "not a DICOM attribute keyword"),
        ("(0009,0010)", "has no keyword"),
        ("PID-3", "invalid DICOM attribute path"),
        ("Input.patient", "invalid DICOM attribute path"),
        ("PatientName[x]", "invalid DICOM attribute path"),
    ],
)
def test_bad_paths_are_refused(text: str, message: str) -> None:
    with pytest.raises(PathSyntaxError, match=message):
        compile_dicom_path(text)


def mapping_over(tmp_path: Path, fields: str, **extra: str) -> Registry:
    """A registry with one site DICOM mapping ``t`` whose ImagingStudy block has these fields."""
    body = textwrap.indent(textwrap.dedent(fields), " " * 6)
    write(
        tmp_path,
        "dicom/t.yaml",
        "mapping: t\nresources:\n  study:\n    type: ImagingStudy\n    identity: {system: {value: "
        f"urn:dicom:uid}}, value: StudyInstanceUID}}\n    fields:\n{body}",
    )
    return Registry([tmp_path], **extra)  # type: ignore[arg-type]


def test_value_specs_over_the_hierarchy(tmp_path: Path) -> None:
    registry = mapping_over(
        tmp_path,
        """\
        status: {value: available}
        subject: {fields: {reference: input.patient}}
        numberOfSeries: {count: SERIES}
        numberOfInstances: {count: INSTANCE}
        started: {join: [StudyDate, StudyTime], as: DA+TM}
        series:
          for_each: SERIES
          when: {equals: [Modality, CT]}
          fields:
            uid: SeriesInstanceUID
            numberOfInstances: {count: INSTANCE}
            instance:
              for_each: INSTANCE
              fields:
                uid: SOPInstanceUID
                number: InstanceNumber
                sopClass: {fields: {code: {path: SOPClassUID, as: oid}}}
        """,
        timezone="Europe/Paris",
    )
    [entry, provenance] = run_study(
        registry.get_dicom("t"), small_study(StudyDate="20240115", StudyTime="0830")
    ).bundle["entry"]
    assert provenance["resource"]["target"] == [{"reference": entry["fullUrl"]}]
    study = entry["resource"]
    assert (study["numberOfSeries"], study["numberOfInstances"]) == (2, 3)
    assert study["subject"] == {"reference": "Patient/7"}
    assert study["started"] == "2024-01-15T08:30:00+01:00"  # the mapping's time zone, to the second
    [series] = study["series"]  # when: keeps the CT series only
    assert series["numberOfInstances"] == 2
    assert series["instance"] == [
        {"uid": "1.2.3.1.1", "number": 1, "sopClass": {"code": f"urn:oid:{CT}"}},
        {"uid": "1.2.3.1.2", "sopClass": {"code": f"urn:oid:{CT}"}},
    ]


def test_bad_values_are_left_out_with_a_warning_that_names_the_place(tmp_path: Path) -> None:
    registry = mapping_over(
        tmp_path,
        """\
        status: {value: available}
        subject: {fields: {reference: input.patient}}
        started: {join: [StudyDate, StudyTime], as: DA+TM}
        series: {for_each: SERIES, fields: {uid: SeriesInstanceUID, number: SeriesNumber}}
        """,
    )
    study = small_study(StudyDate="2024", StudyTime="0830")
    study.tree.children[1].attributes = {"SeriesInstanceUID": "1.2.3.2", "SeriesNumber": "two"}
    output = run_study(registry.get_dicom("t"), study)
    resource = output.bundle["entry"][0]["resource"]
    assert "started" not in resource and resource["series"][1] == {"uid": "1.2.3.2"}
    locations = sorted(str(i.location) for i in output.issues)
    assert locations[0].startswith("SERIES[2] SeriesNumber (") and "dicom/t.yaml:10" in locations[0]
    assert locations[1].startswith("StudyDate+StudyTime (") and "dicom/t.yaml:9" in locations[1]


def test_required_elements_are_checked(tmp_path: Path) -> None:
    registry = mapping_over(
        tmp_path, "status: {value: available}\nsubject: {fields: {reference: input.order}}\n"
    )
    with pytest.raises(MappingError, match="ImagingStudy.subject is required"):
        run_study(registry.get_dicom("t"), small_study())


@pytest.mark.parametrize(
    ("fields", "error"),
    [
        ("description: StudyDescripton\n", r"t.yaml:7: 'StudyDescripton' is not a DICOM attribute keyword"),
        ("description: PID-3\n", r"t.yaml:7: invalid DICOM attribute path"),
        ("numberOfSeries: {count: SERIE}\n", r"t.yaml:7: 'SERIE' is not a level below the study"),
        (
            "series: {for_each: SERIES}\n",
            r"t.yaml:7: for_each: in a value spec makes objects: it needs fields:",
        ),
        ("started: {join: [StudyDate], as: XYZ}\n", r"t.yaml:7: unknown converter 'XYZ'"),
        ("modalitys: Modality\n", r"t.yaml:7: ImagingStudy has no element 'modalitys'"),
    ],
)
def test_errors_name_the_file_and_line(tmp_path: Path, fields: str, error: str) -> None:
    with pytest.raises(ConfigurationError, match=error):
        mapping_over(tmp_path, fields)


def test_hl7_only_keys_and_bad_block_levels_are_refused(tmp_path: Path) -> None:
    write(tmp_path, "dicom/t.yaml", "mapping: t\nmatch: {message: ORU}\nresources: {}\n")
    with pytest.raises(
        ConfigurationError, match=r"dicom/t.yaml:2: match: is not available in a DICOM mapping"
    ):
        Registry([tmp_path])
    write(
        tmp_path,
        "dicom/t.yaml",
        "mapping: t\nresources:\n  s:\n    type: ImagingStudy\n    for_each: PATIENT\n",
    )
    with pytest.raises(ConfigurationError, match=r"dicom/t.yaml:5: 'PATIENT' is not a level below the study"):
        Registry([tmp_path])


def test_dicom_mappings_are_kept_apart_from_hl7_selection(tmp_path: Path) -> None:
    registry = Registry()
    assert "dicom-imaging-study" in registry.dicom and "dicom-imaging-study" not in registry.mappings
    with pytest.raises(ConfigurationError, match="no DICOM mapping named 'oru-r01'"):
        registry.get_dicom("oru-r01")
    # a DICOM mapping matches no message: an HL7 message without a mapping still fails as before
    with pytest.raises(MappingError, match="no mapping for ADT\\^Z99"):
        Registry(dirs=[]).select(_adt_without_mapping())
    assert map_message(ADT.encode()).mapping == "adt"


def _adt_without_mapping() -> Any:
    from engine.hl7v2.message import parse

    return parse(ADT.replace("ADT^A01", "ADT^Z99"))


def test_a_site_mapping_extends_the_shipped_one(tmp_path: Path) -> None:
    write(
        tmp_path,
        "dicom/acme.yaml",
        """\
        mapping: acme-imaging-study
        extends: dicom-imaging-study
        resources:
          imaging_study:
            fields:
              note: {fields: {text: {join: [{value: "Study ID"}, StudyID]}}}
              description: null
        """,
    )
    registry = Registry([tmp_path])
    resource = run_study(
        registry.get_dicom("acme-imaging-study"), small_study(StudyID="42", StudyDescription="CHEST")
    ).bundle["entry"][0]["resource"]
    assert resource["note"] == [{"text": "Study ID 42"}] and "description" not in resource
    assert resource["modality"] == [
        {"system": "http://dicom.nema.org/resources/ontology/DCM", "code": "CT"},
        {"system": "http://dicom.nema.org/resources/ontology/DCM", "code": "SR"},
    ]


def test_converters_pn_datetime_and_oid(tmp_path: Path) -> None:
    registry = mapping_over(
        tmp_path,
        """\
        status: {value: available}
        subject: {fields: {reference: input.patient}}
        started: {join: [StudyDate, StudyTime], as: DA+TM}
        note: {fields: {text: {path: StudyInstanceUID, as: oid}}}
        referrer: {fields: {display: {path: PatientName, as: string}}}
        """,
    )
    cases = {
        ("20240115", "083015.123456"): "2024-01-15T08:30:15Z",  # no more than seconds
        ("20240115", "0830"): "2024-01-15T08:30:00Z",
        ("20240115", "08"): "2024-01-15",  # an hour alone: the date alone
        ("20240115", ""): "2024-01-15",
    }
    for (date, time), started in cases.items():
        resource = run_study(registry.get_dicom("t"), small_study(StudyDate=date, StudyTime=time)).bundle[
            "entry"
        ][0]["resource"]
        assert resource["started"] == started
    assert resource["note"] == [{"text": "urn:oid:1.2.3"}]
    assert resource["referrer"] == {"display": "Doe^John^Q^Dr^Jr"}  # the PN as received
    from engine.mapping.dicom_converters import human_name_from_pn

    assert human_name_from_pn("Doe^John^Q^Dr^Jr") == {
        "family": "Doe",
        "given": ["John", "Q"],
        "prefix": ["Dr"],
        "suffix": ["Jr"],
    }
    assert human_name_from_pn("Yamada^Tarou=山田^太郎") == {"family": "Yamada", "given": ["Tarou"]}
    assert human_name_from_pn("^^^^") is None


def test_map_list_shows_the_dicom_mapping() -> None:
    from engine.cli import app

    listing = CliRunner().invoke(app, ["map", "list"], env={"COLUMNS": "250"})
    assert listing.exit_code == 0
    [row] = [line for line in listing.stdout.splitlines() if "dicom-imaging-study" in line]
    assert "DICOM study" in row and "mappings/dicom/imaging_study.yaml" in row


def test_a_block_per_series_refers_to_the_study_block(tmp_path: Path) -> None:
    write(
        tmp_path,
        "dicom/t.yaml",
        """\
        mapping: t
        resources:
          study:
            type: ImagingStudy
            fields:
              identifier: {fields: {system: {value: "urn:dicom:uid"}, value: {path: StudyInstanceUID, as: oid}}}
              status: {value: available}
              subject: {fields: {reference: input.patient}}
          series:
            type: Basic
            for_each: SERIES
            when: {equals: [Modality, SR]}
            identity: {system: {value: "urn:dicom:uid"}, value: {path: SeriesInstanceUID, as: oid}}
            fields:
              code: {fields: {text: Modality}}
              subject: {ref: study}
        """,
    )
    entries = run_study(Registry([tmp_path]).get_dicom("t"), small_study()).bundle["entry"]
    study, series, provenance = entries  # the CT series is left out by when:
    assert provenance["resource"]["target"] == [{"reference": e["fullUrl"]} for e in (study, series)]
    assert series["request"]["url"] == "Basic?identifier=urn:dicom:uid|urn:oid:1.2.3.2"
    assert series["resource"]["code"] == {"text": "SR"}
    assert series["resource"]["subject"] == {"reference": study["fullUrl"]}


def test_the_provenance_names_the_study_and_is_one_per_study_and_mapping(tmp_path: Path) -> None:
    text = """\
        mapping: t
        version: "1.0"
        resources:
          study:
            type: ImagingStudy
            identity: {system: {value: "urn:dicom:uid"}, value: {path: StudyInstanceUID, as: oid}}
            fields:
              status: {value: available}
              subject: {fields: {reference: input.patient}}
        """
    write(tmp_path, "dicom/t.yaml", text)
    registry = Registry([tmp_path])
    study = small_study()
    study.calling_ae = "CT01"
    first = run_study(registry.get_dicom("t"), study, recorded="2024-01-15T09:00:00Z").bundle["entry"][-1]
    resource = first["resource"]
    assert first["request"] == {"method": "PUT", "url": f"Provenance/{resource['id']}"}
    assert resource["recorded"] == "2024-01-15T09:00:00Z"
    assert [a["who"]["display"] for a in resource["agent"]] == ["Conduit mapping t 1.0", "DICOM AE CT01"]
    assert resource["entity"][0]["what"]["identifier"] == {
        "system": "urn:dicom:uid",
        "value": "urn:oid:1.2.3",
    }
    # re-mapped later, or by the next version of the mapping: the same Provenance (updated), not another
    write(tmp_path, "dicom/t.yaml", text.replace('"1.0"', '"1.1"'))
    again = run_study(Registry([tmp_path]).get_dicom("t"), small_study()).bundle["entry"][-1]
    assert again["request"] == first["request"] and again["fullUrl"] == first["fullUrl"]
    assert "t 1.1" in again["resource"]["activity"]["text"]
    assert again["resource"]["agent"][1]["who"]["display"] == "unknown sender"
    other = small_study(StudyInstanceUID="1.2.4")
    assert run_study(registry.get_dicom("t"), other).bundle["entry"][-1]["fullUrl"] != first["fullUrl"]


def test_provenance_false_makes_none(tmp_path: Path) -> None:
    write(
        tmp_path,
        "dicom/t.yaml",
        """\
        mapping: t
        provenance: false
        resources:
          study:
            type: ImagingStudy
            identity: {system: {value: "urn:dicom:uid"}, value: {path: StudyInstanceUID, as: oid}}
            fields:
              status: {value: available}
              subject: {fields: {reference: input.patient}}
        """,
    )
    [entry] = run_study(Registry([tmp_path]).get_dicom("t"), small_study()).bundle["entry"]
    assert entry["resource"]["resourceType"] == "ImagingStudy"
