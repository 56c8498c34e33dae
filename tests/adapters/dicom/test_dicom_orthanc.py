"""Interoperability with Orthanc (Debian's ``orthanc``), started here on free loopback ports with a
temporary configuration: Orthanc C-STOREs into Conduit, and Conduit C-MOVEs a study to Orthanc."""

from __future__ import annotations

import json
import shutil
import subprocess
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest
from dicom_corpus import make_corpus
from dicom_support import dcmtk, movescu, needs_dcmtk, terminate
from support import free_port, wait_for_port

ORTHANC = shutil.which("Orthanc")
pytestmark = [
    needs_dcmtk,
    pytest.mark.orthanc,
    pytest.mark.skipif(ORTHANC is None, reason="Orthanc is not installed"),
]


@pytest.fixture
def orthanc(tmp_path: Path) -> Iterator[dict[str, Any]]:
    dicom_port, http_port = free_port(), free_port()
    storage = tmp_path / "orthanc"
    storage.mkdir()
    modalities: dict[str, Any] = {}
    config = {
        "Name": "conduit-test-orthanc",
        "StorageDirectory": str(storage),
        "IndexDirectory": str(storage),
        "Plugins": [],
        "HttpServerEnabled": True,
        "HttpPort": http_port,
        "RemoteAccessAllowed": False,
        "AuthenticationEnabled": False,
        "DicomServerEnabled": True,
        "DicomAet": "ORTHANC",
        "DicomPort": dicom_port,
        "DicomCheckCalledAet": False,
        "DicomAlwaysAllowEcho": True,
        "DicomAlwaysAllowStore": True,
        "DicomCheckModalityHost": False,
        "DicomModalities": modalities,
        "SaveJobs": False,
    }
    path = tmp_path / "orthanc.json"
    path.write_text(json.dumps(config))
    log = open(tmp_path / "orthanc.log", "wb")
    proc = subprocess.Popen(
        [ORTHANC, str(path)], stdout=log, stderr=log, env={"TCP_NODELAY": "1", "PATH": "/usr/bin:/bin"}
    )
    try:
        wait_for_port(http_port, proc=proc)
        wait_for_port(dicom_port, proc=proc)
        yield {"dicom_port": dicom_port, "http": f"http://127.0.0.1:{http_port}", "proc": proc}
    finally:
        terminate(proc)
        log.close()


def test_orthanc_stores_into_conduit_and_conduit_moves_to_orthanc(
    orthanc: dict[str, Any], start_scp: Any, runtime: Any, tmp_path: Path
) -> None:
    scp = start_scp(remotes=f"ORTHANC@127.0.0.1:{orthanc['dicom_port']}")
    plan = make_corpus(tmp_path / "c", count=6, patients=1, studies_per_patient=2, series_per_study=1)
    with httpx.Client(base_url=orthanc["http"], timeout=30) as http:
        # Orthanc learns about Conduit as a modality, receives the files over REST, then C-STOREs them
        http.put(
            "/modalities/CONDUIT", json={"AET": "CONDUIT", "Host": "127.0.0.1", "Port": scp.port}
        ).raise_for_status()
        ids = [http.post("/instances", content=p.read_bytes()).json()["ID"] for p in plan.files[:3]]
        answer = http.post("/modalities/CONDUIT/store", json={"Resources": ids, "Synchronous": True})
        answer.raise_for_status()
        assert answer.json().get("FailedInstancesCount", 0) == 0, answer.text
        pacs = runtime.port("pacs")
        from pydicom.dataset import Dataset

        query = Dataset()
        query.QueryRetrieveLevel = "IMAGE"
        query.StudyInstanceUID = "\\".join(s["StudyInstanceUID"] for s in plan.studies)
        query.SOPInstanceUID = ""
        found = {ds.SOPInstanceUID for status, ds in pacs.find("study", query) if ds is not None}
        assert found == set(plan.sop_instance_uids[:3])
        for inst in http.get("/instances").json():
            http.delete(f"/instances/{inst}").raise_for_status()

        # the rest arrives over DCMTK, then Conduit C-MOVEs one study to Orthanc
        dcmtk("storescu", "-aec", "CONDUIT", "127.0.0.1", str(scp.port), *map(str, plan.files[3:]))
        study = plan.studies[0]["StudyInstanceUID"]
        text = movescu(scp.port, "ORTHANC", study)
        assert "Received Final Move Response (Success)" in text, text
        deadline = time.monotonic() + 10
        while time.monotonic() < deadline and len(http.get("/instances").json()) < 3:
            time.sleep(0.1)
        uids = {
            http.get(f"/instances/{i}/tags?simplify").json()["SOPInstanceUID"]
            for i in http.get("/instances").json()
        }
    expected = {u for i, u in enumerate(plan.sop_instance_uids) if i % 2 == 0}  # round-robin: study 0
    assert uids == expected
