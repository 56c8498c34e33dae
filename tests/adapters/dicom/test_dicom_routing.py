"""Auto-forward rules (durable queue in the PACS, sent by the adapter's SCU to DCMTK's storescp), the
``dicom://`` channel destination, and the settings that decide who may talk to us."""

from __future__ import annotations

import asyncio
from pathlib import Path
from typing import Any

import pydicom
import pytest
from dicom_corpus import make_corpus
from dicom_support import dcmtk, needs_dcmtk
from support import free_port

from adapters.dicom.destination import DicomDestination
from adapters.dicom.remotes import AllowedPeer, parse_allowed, parse_remotes
from adapters.dicom.settings import DicomSettings
from adapters.dicom.wiring import forward_once
from services.pacs.forward import job_counts
from services.pacs.settings import ForwardRule, PacsSettings
from services.pacs.wiring import install as install_pacs


def test_remote_and_allow_list_parsing() -> None:
    remotes = parse_remotes("ORTHANC@127.0.0.1:4242, VIEWER@[::1]:104")
    assert (remotes["ORTHANC"].host, remotes["ORTHANC"].port) == ("127.0.0.1", 4242)
    assert remotes["VIEWER"].host == "::1"
    for bad in ("NOPORT@host", "@h:1", "X@h:99999", "BACK\\SLASH@h:1", "WAYTOOLONGAETITLE17@h:1"):
        with pytest.raises(ValueError):
            parse_remotes(bad)
    assert parse_allowed("CT01, MR01@10.0.0.5") == [AllowedPeer("CT01"), AllowedPeer("MR01", "10.0.0.5")]
    with pytest.raises(ValueError):
        DicomSettings(remotes="garbage")


def test_calling_ae_policy(start_scp: Any) -> None:
    scp = start_scp(allowed_calling_aes="CT01,MR01@10.0.0.5")
    assert scp.admits("ANYONE", "127.0.0.1") and scp.admits("ANYONE", "::1")
    assert scp.admits("CT01", "192.168.1.20")
    assert scp.admits("MR01", "10.0.0.5") and not scp.admits("MR01", "10.0.0.6")
    assert not scp.admits("STRANGER", "192.168.1.20")


def test_non_loopback_bind_needs_tls_or_allow_list(runtime: Any) -> None:
    from adapters.dicom.listener import DicomListener
    from engine.errors import ConfigurationError

    with pytest.raises(ConfigurationError):
        DicomListener(runtime, DicomSettings(host="0.0.0.0"))
    DicomListener(runtime, DicomSettings(host="0.0.0.0", allowed_calling_aes="CT01"))  # accepted


@needs_dcmtk
def test_auto_forward_rule_sends_ct_only(
    runtime: Any, start_scp: Any, storescp: tuple[int, Path], tmp_path: Path
) -> None:
    port, out = storescp
    pacs = install_pacs(
        runtime, PacsSettings(forward_rules=[ForwardRule(destination="STORESCP", modality="CT")])
    )
    scp = start_scp(remotes=f"STORESCP@127.0.0.1:{port}")
    plan = make_corpus(tmp_path / "c", count=8, patients=1, studies_per_patient=1)  # series: CT and MR
    dcmtk("storescu", "-aec", "CONDUIT", "127.0.0.1", str(scp.port), *map(str, plan.files))
    assert job_counts(runtime.db) == {"pending": 4}
    settings = DicomSettings(remotes=f"STORESCP@127.0.0.1:{port}")
    assert forward_once(pacs, settings) == 4
    assert job_counts(runtime.db) == {"sent": 4}
    received = [pydicom.dcmread(p) for p in out.rglob("*") if p.is_file()]
    assert len(received) == 4 and {ds.Modality for ds in received} == {"CT"}


def test_forward_to_unreachable_remote_is_retried_later(runtime: Any, tmp_path: Path) -> None:

    pacs = install_pacs(
        runtime, PacsSettings(forward_rules=[ForwardRule(destination="DOWN")], forward_retry_seconds=60)
    )
    plan = make_corpus(tmp_path / "c", count=1, patients=1, studies_per_patient=1)
    assert pacs.store(plan.files[0].read_bytes()).status == 0
    settings = DicomSettings(remotes=f"DOWN@127.0.0.1:{free_port()}", retrieve_timeout=2)
    assert forward_once(pacs, settings) == 1
    assert job_counts(runtime.db) == {"pending": 1}  # backing off, not lost
    assert forward_once(pacs, settings) == 0  # not due yet
    unknown = install_pacs(runtime, PacsSettings(forward_rules=[ForwardRule(destination="NOWHERE")]))
    plan2 = make_corpus(tmp_path / "d", count=1, patients=1, studies_per_patient=1, salt=9)
    unknown.store(plan2.files[0].read_bytes())
    forward_once(unknown, DicomSettings())
    assert job_counts(runtime.db).get("failed") == 1


@needs_dcmtk
def test_dicom_destination_for_channels(storescp: tuple[int, Path], tmp_path: Path) -> None:
    port, out = storescp
    plan = make_corpus(tmp_path / "c", count=1, patients=1, studies_per_patient=1)
    destination = DicomDestination(f"dicom://STORESCP@127.0.0.1:{port}", DicomSettings())
    result = asyncio.run(destination.send(plan.files[0].read_bytes(), content_type="application/dicom"))
    assert result.ok and result.response == "C-STORE 0x0000"
    assert len([p for p in out.rglob("*") if p.is_file()]) == 1
    named = DicomDestination("dicom://STORESCP", DicomSettings(remotes=f"STORESCP@127.0.0.1:{port}"))
    assert named.remote.port == port
    bad = asyncio.run(destination.send(b"not dicom", content_type="application/dicom"))
    assert not bad.ok and not bad.retryable


def test_settings_from_conduit_yaml(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    config = tmp_path / "conduit.yaml"
    config.write_text(
        "dicom:\n"
        "  ae_title: PACS1\n"
        "  remotes: ORTHANC@127.0.0.1:4242\n"
        "  duplicate_policy: reject\n"
        "  forward_rules:\n"
        "    - {destination: ORTHANC, modality: CT}\n"
    )
    monkeypatch.setenv("CONDUIT_CONFIG", str(config))
    monkeypatch.setenv("CONDUIT_DICOM_PORT", "10104")  # the environment wins over the file
    network, pacs = DicomSettings(), PacsSettings()
    assert (network.ae_title, network.port) == ("PACS1", 10104)
    assert network.remote_table["ORTHANC"].port == 4242
    assert pacs.duplicate_policy == "reject"
    assert pacs.forward_rules == [ForwardRule(destination="ORTHANC", modality="CT")]
