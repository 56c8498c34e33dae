"""Through a real ``conduit serve``: python-hl7's MLLPClient sends, the default channel stores, acknowledges
and maps into the record store; a message type without a mapping ends in a visible error stage; channel
files are reloaded (``conduit channels reload`` -> SIGHUP) while traffic flows, and nothing is lost."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import threading
import time
from pathlib import Path

import httpx
from hl7.client import MLLPClient

from tests.support import ConduitProcess, free_port, wait_for_port


def adt(control_id: str, mrn: int) -> bytes:
    return (
        f"MSH|^~\\&|LAB|HOSP|CONDUIT|HOSP|20250101120000||ADT^A01^ADT_A01|{control_id}|P|2.5.1\r"
        f"EVN|A01|20250101120000\r"
        f"PID|1||{mrn}^^^HOSP^MR||DOE^JANE||19800101|F\r"
        f"PV1|1|I\r"
    ).encode()


def _msa(ack: bytes) -> str:
    segment = next(s for s in ack.strip(b"\x0b\x1c\r").split(b"\r") if s.startswith(b"MSA"))
    return segment.split(b"|")[1].decode()


def _cli(env: dict[str, str], *args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "engine", *args], env=env, capture_output=True, text=True, timeout=60
    )


def _wait(predicate, timeout: float = 60.0) -> None:
    deadline = time.monotonic() + timeout
    while not predicate():
        if time.monotonic() > deadline:
            raise AssertionError("condition not reached in time")
        time.sleep(0.2)


def test_default_channel_end_to_end_with_reload(tmp_path: Path, database_url: str):
    channels = tmp_path / "channels"
    channels.mkdir()
    env = {"CONDUIT_CHANNELS_DIR": str(channels), "CONDUIT_MESSAGING_POLL_SECONDS": "0.2"}
    with ConduitProcess(
        tmp_path / "data", database_url, "--only", "mllp", "--only", "fhir", env=env
    ) as server:
        wait_for_port(server.ports["mllp"], proc=server.proc)
        port = server.ports["mllp"]
        with MLLPClient("127.0.0.1", port) as client:
            assert _msa(client.send_message(adt("E2E-1", 501))) == "AA"
            assert _msa(client.send_message(adt("E2E-1", 501))) == "AA"  # duplicate: same answer, stored once
            unmapped = b"MSH|^~\\&|LAB|HOSP|CONDUIT|HOSP|20250101120000||ZZZ^Z01|E2E-2|P|2.5.1\rPID|1||9\r"
            assert _msa(client.send_message(unmapped)) == "AA"

        admin = f"http://127.0.0.1:{server.ports['fhir']}/admin/messages"

        def listed(**params: str) -> list[dict]:
            return httpx.get(admin, params={"limit": "10000", **params}, timeout=10).json()

        _wait(lambda: {m["control_id"]: m["status"] for m in listed()} == {"E2E-1": "done", "E2E-2": "error"})
        cli = _cli(server.env, "messages", "list", "--json", "--status", "error")
        assert cli.returncode == 0 and [m["control_id"] for m in json.loads(cli.stdout)] == ["E2E-2"]
        patients = httpx.get(f"{server.fhir_base}/Patient", params={"identifier": "501"}, timeout=10).json()
        assert patients.get("total", len(patients.get("entry", []))) >= 1 or patients.get("entry")
        [error] = listed(status="error")
        shown = _cli(server.env, "messages", "show", str(error["id"]))
        assert shown.returncode == 0 and "transform" in shown.stdout and "ZZZ" in shown.stdout

        # reload while a sender keeps sending on the default channel: every message ACKed AA and stored
        sent: list[str] = []
        answers: list[str] = []
        stop = threading.Event()

        def sender() -> None:
            with MLLPClient("127.0.0.1", port) as c:
                i = 0
                while not stop.is_set():
                    control = f"R-{i}"
                    answers.append(_msa(c.send_message(adt(control, 1000 + i))))
                    sent.append(control)
                    i += 1

        thread = threading.Thread(target=sender)
        thread.start()
        try:
            time.sleep(0.5)
            second = free_port()
            (channels / "archive.yaml").write_text(
                f"name: archive\nsource: {{url: 'mllp://127.0.0.1:{second}'}}\n"
                f"destinations: [{{name: folder, url: 'file://{tmp_path / 'archive'}'}}]\n"
            )
            reload = _cli(server.env, "channels", "reload")
            assert reload.returncode == 0, reload.stdout + reload.stderr
            wait_for_port(second, timeout=15, proc=server.proc)
            time.sleep(0.5)
        finally:
            stop.set()
            thread.join(30)
        with MLLPClient("127.0.0.1", second) as client:
            assert _msa(client.send_message(adt("ARCH-1", 77))) == "AA"
        assert sent and set(answers) == {"AA"}
        stored = {m["control_id"] for m in listed(channel="default")}
        assert set(sent) <= stored
        _wait(lambda: len(list((tmp_path / "archive").glob("*.hl7"))) == 1)
        assert os.path.exists(tmp_path / "data" / "conduit.pid")
