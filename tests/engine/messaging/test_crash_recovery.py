"""Kill -9 ``conduit serve`` while a delivery is in flight: every ACKed message is in the store, and after
a restart the crashed worker's claim expires (lease) and the delivery completes."""

from __future__ import annotations

import threading
import time
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import httpx
import pytest
from hl7.client import MLLPClient

from tests.support import ConduitProcess, free_port


class _SlowPeer(BaseHTTPRequestHandler):
    delay = 5.0
    bodies: list[bytes] = []

    def do_POST(self) -> None:  # noqa: N802 - http.server's naming
        body = self.rfile.read(int(self.headers.get("Content-Length", 0)))
        time.sleep(_SlowPeer.delay)
        _SlowPeer.bodies.append(body)
        self.send_response(200)
        self.send_header("Content-Length", "0")
        self.end_headers()

    def log_message(self, *args: object) -> None:
        return


@pytest.fixture
def slow_peer() -> Iterator[str]:
    _SlowPeer.delay, _SlowPeer.bodies = 5.0, []
    server = ThreadingHTTPServer(("127.0.0.1", free_port()), _SlowPeer)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    yield f"http://127.0.0.1:{server.server_address[1]}/in"
    server.shutdown()
    server.server_close()


def test_claim_of_a_killed_worker_expires_and_the_message_completes(
    tmp_path: Path, database_url: str, slow_peer: str
):
    channels = tmp_path / "channels"
    channels.mkdir()
    mllp = free_port()
    (channels / "relay.yaml").write_text(
        f"name: relay\nsource: {{url: 'mllp://127.0.0.1:{mllp}'}}\n"
        f"destinations: [{{name: peer, url: '{slow_peer}', retry: {{attempts: 5, initial_delay: 100ms}}}}]\n"
    )
    env = {
        "CONDUIT_CHANNELS_DIR": str(channels),
        "CONDUIT_MESSAGING_SHIPPED_CHANNELS": "false",
        "CONDUIT_MESSAGING_LEASE_SECONDS": "2",
        "CONDUIT_MESSAGING_POLL_SECONDS": "0.2",
    }
    data = tmp_path / "data"
    raw = b"MSH|^~\\&|LAB|HOSP|C|H|20250101||ORU^R01|CRASH-1|P|2.5.1\rPID|1||1\r"
    first = ConduitProcess(data, database_url, "--only", "mllp", "--only", "fhir", env=env).start()
    try:
        with MLLPClient("127.0.0.1", mllp) as client:
            assert b"MSA|AA|CRASH-1" in client.send_message(raw)
        time.sleep(1.0)  # the worker has claimed the item and waits on the slow peer
        first.kill()
    finally:
        first.stop()
    _SlowPeer.delay = 0.0
    second = ConduitProcess(data, database_url, "--only", "mllp", "--only", "fhir", env=env).start()
    try:
        admin = f"http://127.0.0.1:{second.ports['fhir']}/admin/messages"
        deadline = time.monotonic() + 60
        while True:
            [message] = httpx.get(admin, timeout=10).json()
            if message["status"] == "done" or time.monotonic() > deadline:
                break
            time.sleep(0.3)
        detail = httpx.get(f"{admin}/{message['id']}", timeout=10).json()
    finally:
        second.stop()
    assert message["control_id"] == "CRASH-1" and message["status"] == "done"
    [stage] = [s for s in detail["stages"] if s["name"] == "destination"]
    assert stage["status"] == "sent" and stage["attempts"] == 2  # the killed claim counted as an attempt
    assert raw in _SlowPeer.bodies
