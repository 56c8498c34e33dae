"""Helpers for end-to-end tests: free loopback ports and a real ``conduit serve`` subprocess."""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path
from typing import IO

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

    def __init__(
        self,
        data_dir: Path,
        database_url: str,
        *args: str,
        env: dict[str, str] | None = None,
        wait_for: tuple[str, ...] = ("fhir",),
    ):
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
        self.wait_for = wait_for
        self._log_file: IO[bytes] | None = None
        self.proc: subprocess.Popen[bytes] | None = None
        self.log_path = data_dir.parent / f"conduit-{self.ports['fhir']}.log"

    def start(self, wait_for: tuple[str, ...] | None = None) -> ConduitProcess:
        """Start the server and wait until the listeners in ``wait_for`` accept connections."""
        self.data_dir.mkdir(parents=True, exist_ok=True)
        self._close_log()
        self._log_file = open(self.log_path, "ab")  # noqa: SIM115 - kept open for the child's lifetime
        self.proc = subprocess.Popen(
            [sys.executable, "-m", "engine", "serve", *self.args],
            env=self.env,
            stdout=self._log_file,
            stderr=self._log_file,
        )
        for name in self.wait_for if wait_for is None else wait_for:
            wait_for_port(self.ports[name], proc=self.proc)
        return self

    @property
    def fhir_base(self) -> str:
        return f"http://127.0.0.1:{self.ports['fhir']}/fhir"

    def log(self) -> str:
        return self.log_path.read_text(errors="replace") if self.log_path.exists() else ""

    def _close_log(self) -> None:
        if self._log_file is not None:
            self._log_file.close()
            self._log_file = None

    def kill(self) -> None:
        if self.proc and self.proc.poll() is None:
            self.proc.send_signal(signal.SIGKILL)
            self.proc.wait(10)
        self._close_log()

    def stop(self) -> None:
        if self.proc and self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
            try:
                self.proc.wait(15)
            except subprocess.TimeoutExpired:
                self.kill()
        self._close_log()

    def __enter__(self) -> ConduitProcess:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()


def self_signed_certificate(folder: Path, host: str = "127.0.0.1") -> tuple[Path, Path]:
    """A throw-away self-signed certificate and key for ``host`` (PEM files in ``folder``), via openssl."""
    cert, key = folder / "cert.pem", folder / "key.pem"
    subprocess.run(
        ["openssl", "req", "-x509", "-newkey", "rsa:2048", "-nodes", "-days", "1", "-subj", f"/CN={host}",
         "-addext", f"subjectAltName=IP:{host}", "-keyout", str(key), "-out", str(cert)],
        check=True,
        capture_output=True,
    )  # fmt: skip
    return cert, key
