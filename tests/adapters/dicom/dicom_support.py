"""Helpers shared by the DICOM tests: DCMTK tools (the real peer) and process control."""

from __future__ import annotations

import os
import subprocess
from pathlib import Path

import pytest


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
