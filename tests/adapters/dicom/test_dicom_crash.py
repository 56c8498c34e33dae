"""Crash safety: SIGKILL ``conduit serve --only dicom`` in the middle of a 300-instance storescu burst;
every instance storescu saw Success for must be indexed and readable after the restart."""

from __future__ import annotations

import subprocess
from pathlib import Path

import pydicom
import pytest
from dicom_corpus import make_corpus
from dicom_support import dcmtk_env, dcmtk_tool, needs_dcmtk
from pydicom.dataset import Dataset
from support import ConduitProcess

from engine.runtime import build_runtime
from engine.settings import ConduitSettings

pytestmark = [needs_dcmtk, pytest.mark.dcmtk, pytest.mark.slow]


def test_sigkill_during_store_burst_loses_nothing_acknowledged(tmp_path: Path, database_url: str) -> None:
    plan = make_corpus(tmp_path / "corpus", count=300, patients=4)
    data_dir = tmp_path / "data"
    server = ConduitProcess(data_dir, database_url, "--only", "dicom").start(wait_for=("dicom",))
    acknowledged: list[str] = []
    try:
        storescu = subprocess.Popen(
            [
                dcmtk_tool("storescu") or "storescu",
                "-v",
                "-aec",
                "CONDUIT",
                "127.0.0.1",
                str(server.ports["dicom"]),
                *map(str, plan.files),
            ],
            env=dcmtk_env(),
            stdout=subprocess.PIPE,
            stderr=subprocess.STDOUT,
            text=True,
        )
        assert storescu.stdout is not None
        current: str | None = None
        killed = False
        for line in storescu.stdout:
            if "Sending file:" in line:
                current = line.split("Sending file:", 1)[1].strip()
            elif "Received Store Response" in line and "Success" in line and current:
                acknowledged.append(current)
                if len(acknowledged) == 60 and not killed:
                    server.kill()  # SIGKILL mid-burst: no shutdown code runs
                    killed = True
        storescu.wait(30)
        storescu.stdout.close()
    finally:
        server.kill()
    assert killed and 60 <= len(acknowledged) < 300

    # restart on the same database and data folder, then check every acknowledged instance
    restarted = ConduitProcess(data_dir, database_url, "--only", "dicom").start(wait_for=("dicom",))
    restarted.stop()
    logs = server.log() + restarted.log()
    for patient in plan.patients:  # no patient data in the logs, whatever happened
        assert patient["PatientName"] not in logs and patient["PatientID"] not in logs
    runtime = build_runtime(ConduitSettings(data_dir=data_dir, database_url=database_url))
    try:
        pacs = runtime.port("pacs")
        for path in acknowledged:
            sent = pydicom.dcmread(path)
            query = Dataset()
            query.QueryRetrieveLevel = "IMAGE"
            query.StudyInstanceUID = sent.StudyInstanceUID
            query.SOPInstanceUID = sent.SOPInstanceUID
            outcome = pacs.retrieve("study", query)
            assert len(outcome.instances) == 1, f"acknowledged instance missing: {Path(path).name}"
            stored = pydicom.dcmread(pacs.storage.path(outcome.instances[0].storage_key))
            assert stored.SOPInstanceUID == sent.SOPInstanceUID
            assert stored.PixelData == sent.PixelData
    finally:
        runtime.db.dispose()
