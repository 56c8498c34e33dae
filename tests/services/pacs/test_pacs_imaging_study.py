"""The ImagingStudy the sync writes is what the DICOM mapping declares: the shipped one by default, a site
mapping when the ``imaging_study_mapping`` setting names one."""

from __future__ import annotations

import textwrap
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from engine.errors import ConfigurationError
from engine.mapping.registry import Registry, reset_default_registry
from tests.services.pacs.pacs_support import part10

SITE = """\
mapping: acme-imaging-study
extends: dicom-imaging-study
resources:
  imaging_study:
    fields:
      referrer: {fields: {display: {path: ReferringPhysicianName, as: string}}}
      description: {value: "ACME imaging"}
"""


@pytest.fixture
def site_registry(tmp_path: Path) -> Iterator[None]:
    (tmp_path / "dicom").mkdir()
    (tmp_path / "dicom" / "acme.yaml").write_text(textwrap.dedent(SITE))
    reset_default_registry(Registry([tmp_path]))
    yield
    reset_default_registry(None)


def stored_study(runtime: Any, study_uid: str) -> dict[str, Any]:
    with runtime.db.unit_of_work() as uow:
        [match] = (
            runtime.records(uow)
            .search("ImagingStudy", [("identifier", f"urn:dicom:uid|urn:oid:{study_uid}")])
            .matches
        )
    return dict(match.resource)


def test_the_shipped_mapping_declares_the_imaging_study(runtime: Any, make_pacs: Any) -> None:
    pacs = make_pacs()
    for n in (2, 1):
        obj = part10(StudyInstanceUID="1.2.7", SeriesInstanceUID="1.2.7.1", SOPInstanceUID=f"1.2.7.1.{n}")
        assert pacs.store(obj).status == 0x0000
    assert pacs.sync_imaging_studies() == 1
    study = stored_study(runtime, "1.2.7")
    assert study["started"] == "2024-01-15T08:30:00Z" and study["description"] == "CHEST"
    assert study["subject"]["reference"].startswith("Patient/")
    assert study["identifier"][1] == {
        "type": {"coding": [{"system": "http://terminology.hl7.org/CodeSystem/v2-0203", "code": "ACSN"}]},
        "value": "A1",
    }
    [series] = study["series"]
    assert [i["uid"] for i in series["instance"]] == ["1.2.7.1.2", "1.2.7.1.1"]  # InstanceNumber order
    assert series["numberOfInstances"] == study["numberOfInstances"] == 2


def test_a_site_mapping_named_in_the_settings_is_used(
    runtime: Any, make_pacs: Any, site_registry: None
) -> None:
    pacs = make_pacs(imaging_study_mapping="acme-imaging-study")
    assert pacs.store(part10(StudyInstanceUID="1.2.8", SeriesInstanceUID="1.2.8.1")).status == 0x0000
    assert pacs.sync_imaging_studies() == 1
    study = stored_study(runtime, "1.2.8")
    assert study["referrer"] == {"display": "Ref^Erin"} and study["description"] == "ACME imaging"
    assert study["numberOfInstances"] == 1


def test_an_unknown_mapping_name_stops_the_pacs_from_starting(make_pacs: Any, site_registry: None) -> None:
    with pytest.raises(ConfigurationError) as caught:
        make_pacs(imaging_study_mapping="acme-imaging-stdy")
    text = str(caught.value)
    assert "CONDUIT_DICOM_IMAGING_STUDY_MAPPING" in text and "'acme-imaging-stdy'" in text
    assert "known are: acme-imaging-study, dicom-imaging-study" in text
    make_pacs(imaging_study_mapping="acme-imaging-stdy", imaging_study_sync=False)  # unused: no check


def test_a_mapping_gone_after_the_start_leaves_the_study_marked(
    runtime: Any, make_pacs: Any, tmp_path: Path
) -> None:
    (tmp_path / "dicom").mkdir()
    (tmp_path / "dicom" / "acme.yaml").write_text(textwrap.dedent(SITE))
    reset_default_registry(Registry([tmp_path]))
    try:
        pacs = make_pacs(imaging_study_mapping="acme-imaging-study")
        assert pacs.store(part10(StudyInstanceUID="1.2.9", SeriesInstanceUID="1.2.9.1")).status == 0x0000
        reset_default_registry(Registry([]))  # the mapping files were reloaded without the site's
        with pytest.raises(ConfigurationError, match="no DICOM mapping named 'acme-imaging-study'"):
            pacs.sync_imaging_studies()
    finally:
        reset_default_registry(None)
    assert make_pacs().sync_imaging_studies() == 1  # still dirty: written once the mapping is right


def _provenances(runtime: Any) -> list[Any]:
    with runtime.db.unit_of_work() as uow:
        return list(runtime.records(uow).search("Provenance", []).matches)


def test_the_imaging_study_carries_one_provenance_that_re_syncs_update(runtime: Any, make_pacs: Any) -> None:
    from sqlalchemy import update

    from services.pacs.models import PacsStudy

    pacs = make_pacs()
    obj = part10(StudyInstanceUID="1.2.10", SeriesInstanceUID="1.2.10.1", SOPInstanceUID="1.2.10.1.1")
    assert pacs.store(obj, calling_ae="CT01").status == 0x0000
    assert pacs.sync_imaging_studies() == 1
    study = stored_study(runtime, "1.2.10")
    [provenance] = _provenances(runtime)
    resource = provenance.resource
    assert resource["target"] == [{"reference": f"ImagingStudy/{study['id']}/_history/1"}]
    assert resource["recorded"].startswith(study["meta"]["lastUpdated"][:19])
    assert [a["who"]["display"] for a in resource["agent"]] == [
        "Conduit mapping dicom-imaging-study 1.0",
        "DICOM AE CT01",
    ]
    assert resource["entity"][0]["what"]["identifier"]["value"] == "urn:oid:1.2.10"

    # a re-sync that changes nothing: neither resource gets a new version
    with runtime.db.unit_of_work() as uow:
        uow.session.execute(
            update(PacsStudy).where(PacsStudy.study_instance_uid == "1.2.10").values(fhir_dirty=True)
        )
    assert pacs.sync_imaging_studies() == 1
    [again] = _provenances(runtime)
    assert again.id == provenance.id and again.version_id == 1

    # another instance from another modality: the ImagingStudy and the same Provenance move on together
    obj = part10(StudyInstanceUID="1.2.10", SeriesInstanceUID="1.2.10.1", SOPInstanceUID="1.2.10.1.2")
    assert pacs.store(obj, calling_ae="MR02").status == 0x0000
    assert pacs.sync_imaging_studies() == 1
    study = stored_study(runtime, "1.2.10")
    [moved] = _provenances(runtime)
    assert moved.id == provenance.id and moved.version_id == 2
    assert moved.resource["target"] == [{"reference": f"ImagingStudy/{study['id']}/_history/2"}]
    assert moved.resource["agent"][1]["who"]["display"] == "DICOM AE CT01, MR02"
    with runtime.db.unit_of_work() as uow:  # found by its (unversioned) target, as a client asks
        found = runtime.records(uow).search("Provenance", [("target", f"ImagingStudy/{study['id']}")]).matches
    assert [p.id for p in found] == [provenance.id]


def test_the_sync_presents_what_map_test_presents_from_files() -> None:
    # `conduit map test` on files presents engine.mapping.dicom_study.PRESENTED, promising the PACS sync
    # presents the same: a column added to the index (or dropped) must update that table too
    from engine.mapping.dicom_study import PRESENTED
    from services.pacs import imaging_study

    study_level = {kw for _, kw in imaging_study._PATIENT + imaging_study._STUDY} | {"ModalitiesInStudy"}
    assert study_level == set(PRESENTED["STUDY"])
    assert {kw for _, kw in imaging_study._SERIES} | {"SeriesNumber"} == set(PRESENTED["SERIES"])
    assert set(PRESENTED["INSTANCE"]) == {"SOPInstanceUID", "SOPClassUID", "InstanceNumber"}


def test_map_test_on_the_files_gives_what_the_sync_writes(
    runtime: Any, make_pacs: Any, tmp_path: Path
) -> None:
    from engine.cli.map import normalize
    from engine.mapping.dicom import run_study
    from engine.mapping.dicom_files import read_study

    pacs = make_pacs()
    files = []
    for n, series in ((1, "1.2.11.2"), (2, "1.2.11.1"), (3, "1.2.11.1")):
        obj = part10(
            StudyInstanceUID="1.2.11",
            SeriesInstanceUID=series,
            SOPInstanceUID=f"1.2.11.9.{n}",
            InstanceNumber=4 - n,
        )
        (tmp_path / f"IM{n}").write_bytes(obj)
        files.append(tmp_path / f"IM{n}")
        assert pacs.store(obj).status == 0x0000
    assert pacs.sync_imaging_studies() == 1
    stored = stored_study(runtime, "1.2.11")
    from_files = run_study(
        Registry().get_dicom("dicom-imaging-study"),
        read_study(files, inputs={"patient": stored["subject"]["reference"]}).study,
    ).bundle["entry"][0]["resource"]
    assert normalize({"entry": [{"resource": from_files}]}) == normalize({"entry": [{"resource": stored}]})
