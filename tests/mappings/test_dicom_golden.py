"""The shipped DICOM mapping's golden file: a small study (DICOM attributes by keyword, as the PACS presents
it from its index) and the ImagingStudy expected — the one the PACS wrote before the mapping was declared
(its hand-written builder's output for the same study) — and the Provenance that comes with it. Refresh
with ``CONDUIT_UPDATE_GOLDEN=1``."""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Any

from engine.mapping.dicom import provenance_id, run_study
from engine.mapping.dicom_study import DicomStudy, study_tree
from engine.mapping.registry import Registry

GOLDEN = Path(__file__).resolve().parent / "golden"


def golden_study(path: Path = GOLDEN / "dicom_study.json") -> DicomStudy:
    data: dict[str, Any] = json.loads(path.read_text())
    series = [(s["attributes"], s["instances"]) for s in data["series"]]
    return study_tree(data["study"], series, inputs=data.get("inputs"), calling_ae=data.get("calling_ae", ""))


def _snapshot(name: str, resource: dict[str, Any]) -> Any:
    snapshot = GOLDEN / name
    if os.environ.get("CONDUIT_UPDATE_GOLDEN"):
        snapshot.write_text(json.dumps(resource, indent=1, ensure_ascii=False, sort_keys=True) + "\n")
    return json.loads(snapshot.read_text())


def test_golden_imaging_study() -> None:
    mapping = Registry().get_dicom("dicom-imaging-study")
    output = run_study(mapping, golden_study(), recorded="2024-01-15T09:00:00Z")
    assert output.issues == []
    [entry, provenance] = output.bundle["entry"]
    assert entry["request"] == {"method": "PUT", "url": "ImagingStudy?identifier=urn:dicom:uid|urn:oid:1.2.0"}
    assert entry["resource"] == _snapshot("dicom-imaging-study.json", entry["resource"])
    rid = provenance_id("dicom-imaging-study", "1.2.0")
    assert provenance["request"] == {"method": "PUT", "url": f"Provenance/{rid}"}
    assert provenance["resource"]["target"] == [{"reference": entry["fullUrl"]}]
    assert provenance["resource"] == _snapshot("dicom-imaging-study-provenance.json", provenance["resource"])
