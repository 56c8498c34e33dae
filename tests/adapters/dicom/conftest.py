"""Fixtures for the DICOM tests: a Conduit SCP on a free loopback port (real pynetdicom server, real
database through the ``runtime`` fixture), DCMTK tools as the peer, a DCMTK storescp as C-MOVE target."""

from __future__ import annotations

import asyncio
import os
import subprocess
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest
from support import free_port, wait_for_port

from adapters.dicom.listener import DicomListener
from adapters.dicom.settings import DicomSettings


def dcmtk_tool(name: str) -> str | None:
    """The DCMTK binary ``name`` (an ELF executable on PATH). pynetdicom installs Python apps with the
    same names (storescu, findscu ...) that pyenv shims put first on PATH; those are not the peer."""
    for folder in os.environ.get("PATH", "").split(os.pathsep) + ["/usr/bin"]:
        candidate = Path(folder) / name
        if candidate.is_file() and os.access(candidate, os.X_OK):
            with open(candidate, "rb") as fh:
                if fh.read(4) == b"\x7fELF":
                    return str(candidate)
    return None


DCMTK = dcmtk_tool("storescu") is not None
needs_dcmtk = pytest.mark.skipif(not DCMTK, reason="DCMTK command-line tools are not installed")


def dcmtk_env() -> dict[str, str]:
    # Debian's DCMTK leaves Nagle on unless told: every exchange would stall ~40 ms on loopback
    return {**os.environ, "TCP_NODELAY": "1"}


def dcmtk(*args: str, timeout: float = 60) -> subprocess.CompletedProcess[str]:
    """Run one DCMTK tool; output (stdout+stderr, verbose) is returned for the assertions."""
    tool = dcmtk_tool(args[0]) or args[0]
    return subprocess.run(
        [tool, *args[1:]], env=dcmtk_env(), capture_output=True, text=True, timeout=timeout, check=False
    )


def pending_count(output: str) -> int:
    return sum(1 for line in output.splitlines() if "(Pending)" in line and "Response" in line)


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


def terminate(proc: subprocess.Popen[bytes]) -> None:
    """Stop a peer we started (by its own handle), escalating to SIGKILL if it lingers."""
    proc.terminate()
    try:
        proc.wait(15)
    except subprocess.TimeoutExpired:
        proc.kill()
        proc.wait(5)


def movescu(port: int, destination: str, study_instance_uid: str, *, debug: bool = False) -> str:
    """DCMTK movescu of one study (Study Root) to ``destination``; returns its output."""
    r = dcmtk(
        "movescu",
        "-d" if debug else "-v",
        "-S",
        "-aet",
        "TESTSCU",
        "-aec",
        "CONDUIT",
        "-aem",
        destination,
        "-k",
        "QueryRetrieveLevel=STUDY",
        "-k",
        f"StudyInstanceUID={study_instance_uid}",
        "127.0.0.1",
        str(port),
    )
    return r.stdout + r.stderr
