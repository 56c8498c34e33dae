"""Fixtures for the DICOM tests: a Conduit SCP on a free loopback port (real pynetdicom server, real
database through the ``runtime`` fixture), DCMTK tools as the peer, a DCMTK storescp as C-MOVE target."""

from __future__ import annotations

import asyncio
import subprocess
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest
from dicom_support import dcmtk_env, dcmtk_tool, terminate
from support import free_port, wait_for_port

from adapters.dicom.listener import DicomListener
from adapters.dicom.settings import DicomSettings


@pytest.fixture
def start_scp(runtime: Any) -> Iterator[Callable[..., DicomListener]]:
    """Start a DicomListener with the given DicomSettings fields (port chosen free)."""
    started: list[DicomListener] = []

    def start(**fields: Any) -> DicomListener:
        fields.setdefault("port", free_port())
        listener = DicomListener(runtime, DicomSettings(**fields))
        asyncio.run(listener.start())
        started.append(listener)
        return listener

    yield start
    for listener in started:
        asyncio.run(listener.stop())


@pytest.fixture
def scp(start_scp: Callable[..., DicomListener]) -> DicomListener:
    return start_scp()


@pytest.fixture
def storescp(tmp_path: Path) -> Iterator[tuple[int, Path]]:
    """DCMTK's storescp (AE STORESCP) on a free port, writing into a temporary folder."""
    port = free_port()
    out = tmp_path / "storescp"
    out.mkdir()
    proc = subprocess.Popen(
        [
            dcmtk_tool("storescp") or "storescp",
            "--aetitle",
            "STORESCP",
            "--output-directory",
            str(out),
            "+xa",
            str(port),
        ],
        env=dcmtk_env(),
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    try:
        wait_for_port(port, proc=proc)
        yield port, out
    finally:
        terminate(proc)
