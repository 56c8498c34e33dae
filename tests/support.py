"""Helpers for end-to-end tests: free loopback ports and a real ``conduit serve`` subprocess."""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path

__all__ = ["free_port", "wait_for_port", "ConduitProcess"]


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def wait_for_port(port: int, timeout: float = 30.0, proc: subprocess.Popen[bytes] | None = None) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if proc is not None and proc.poll() is not None:
            raise RuntimeError(f"server exited with {proc.returncode}")
        try:
            with socket.create_connection(("127.0.0.1", port), timeout=0.5):
                return
        except OSError:
            time.sleep(0.05)
    raise TimeoutError(f"nothing listening on 127.0.0.1:{port} after {timeout}s")


class ConduitProcess:
    """``conduit serve`` in a subprocess on free ports; use as a context manager.

    ``env`` adds CONDUIT_* variables; ``ports`` holds the ports chosen for fhir/mllp/dicom.
    """

    def __init__(self, data_dir: Path, database_url: str, *args: str, env: dict[str, str] | None = None):
        self.ports = {"fhir": free_port(), "mllp": free_port(), "dicom": free_port()}
        self.data_dir = data_dir
        self.env = {
            **os.environ,
            "CONDUIT_DATA_DIR": str(data_dir),
            "CONDUIT_DATABASE_URL": database_url,
            "CONDUIT_FHIR_PORT": str(self.ports["fhir"]),
            "CONDUIT_MLLP_PORT": str(self.ports["mllp"]),
            "CONDUIT_DICOM_PORT": str(self.ports["dicom"]),
            **(env or {}),
        }
        self.args = args
        self.proc: subprocess.Popen[bytes] | None = None
        self.log_path = data_dir.parent / f"conduit-{self.ports['fhir']}.log"

    def start(self, wait_for: tuple[str, ...] = ("fhir",)) -> ConduitProcess:
        self.data_dir.mkdir(parents=True, exist_ok=True)
        log = open(self.log_path, "ab")
        self.proc = subprocess.Popen(
            [sys.executable, "-m", "engine", "serve", *self.args], env=self.env, stdout=log, stderr=log
        )
        for name in wait_for:
            wait_for_port(self.ports[name], proc=self.proc)
        return self

    @property
    def fhir_base(self) -> str:
        return f"http://127.0.0.1:{self.ports['fhir']}/fhir"

    def log(self) -> str:
        return self.log_path.read_text(errors="replace") if self.log_path.exists() else ""

    def kill(self) -> None:
        if self.proc and self.proc.poll() is None:
            self.proc.send_signal(signal.SIGKILL)
            self.proc.wait(10)

    def stop(self) -> None:
        if self.proc and self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
            try:
                self.proc.wait(15)
            except subprocess.TimeoutExpired:
                self.kill()

    def __enter__(self) -> ConduitProcess:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()
