"""The http:// destination against a real local HTTP server (http.server on a loopback port)."""

from __future__ import annotations

import asyncio
import textwrap
import threading
from collections.abc import Iterator
from datetime import UTC, datetime
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import pytest

from adapters.http.destination import create_http_destination
from engine.hl7v2.header import MessageHeader
from engine.messaging.ports import InboundMessage
from engine.settings import ConduitSettings
from tests.support import free_port


class _Peer(BaseHTTPRequestHandler):
    received: list[tuple[str, str, bytes, str]] = []
    script: list[int] = []

    def _answer(self) -> None:
        body = self.rfile.read(int(self.headers.get("Content-Length", 0)))
        _Peer.received.append((self.command, self.path, body, self.headers.get("Content-Type", "")))
        status = _Peer.script.pop(0) if _Peer.script else 201
        payload = b'{"ok": true}' if status < 300 else b"nope"
        self.send_response(status)
        self.send_header("Content-Length", str(len(payload)))
        self.end_headers()
        self.wfile.write(payload)

    do_POST = _answer
    do_PUT = _answer

    def log_message(self, *args: object) -> None:  # keep test output clean
        return


@pytest.fixture
def peer() -> Iterator[str]:
    _Peer.received = []
    _Peer.script = []
    server = ThreadingHTTPServer(("127.0.0.1", free_port()), _Peer)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    yield f"http://127.0.0.1:{server.server_address[1]}"
    server.shutdown()
    server.server_close()


def test_statuses_map_to_outcomes(peer: str):
    _Peer.script = [200, 503, 429, 400]

    async def go():
        dest = create_http_destination(f"{peer}/in", {"headers": {"X-Site": "A"}, "timeout": 5})
        try:
            return [await dest.send(b"MSH|x", content_type="x-application/hl7-v2+er7") for _ in range(4)]
        finally:
            await dest.close()

    ok, unavailable, too_many, bad = asyncio.run(go())
    assert ok.ok and ok.response.startswith("HTTP 200")
    assert not unavailable.ok and unavailable.retryable and "503" in unavailable.response
    assert not too_many.ok and too_many.retryable
    assert not bad.ok and not bad.retryable and "nope" in bad.response
    method, path, body, ctype = _Peer.received[0]
    assert (method, path, body, ctype) == ("POST", "/in", b"MSH|x", "x-application/hl7-v2+er7")


def test_connection_refused_is_retryable():
    async def go():
        dest = create_http_destination(f"http://127.0.0.1:{free_port()}/", {"timeout": 2, "method": "PUT"})
        try:
            return await dest.send(b"{}", content_type="application/fhir+json")
        finally:
            await dest.close()

    result = asyncio.run(go())
    assert not result.ok and result.retryable and "ConnectError" in result.response


def test_bad_options_are_configuration_errors():
    from engine.errors import ConfigurationError

    with pytest.raises(ConfigurationError):
        create_http_destination("http://x/", {"method": "DELETE"})
    with pytest.raises(ConfigurationError):
        create_http_destination("http://x/", {"timeout": "soon"})


def test_pipeline_delivers_to_http_through_the_runtime(
    peer: str, tmp_path: Path, database, database_url, monkeypatch
):
    """The wired runtime: the inbox stores, the worker sends to the real HTTP server, retrying a 503."""
    from engine.runtime import build_runtime

    folder = tmp_path / "channels"
    folder.mkdir()
    (folder / "web.yaml").write_text(
        textwrap.dedent(
            f"""
            name: web
            source: {{url: "mllp://127.0.0.1:{free_port()}"}}
            destinations:
              - name: api
                url: {peer}/hl7
                retry: {{attempts: 3, initial_delay: 10ms, max_delay: 20ms}}
            """
        )
    )
    monkeypatch.setenv("CONDUIT_CHANNELS_DIR", str(folder))
    monkeypatch.setenv("CONDUIT_MESSAGING_SHIPPED_CHANNELS", "false")
    monkeypatch.setenv("CONDUIT_MESSAGING_POLL_SECONDS", "0.05")
    runtime = build_runtime(
        ConduitSettings(data_dir=tmp_path / "data", database_url=database_url), db=database
    )
    _Peer.script = [503]
    raw = b"MSH|^~\\&|LAB|HOSP|C|H|20250101||ORU^R01|H1|P|2.5.1\rPID|1||1\r"
    header = MessageHeader(sending_application="LAB", sending_facility="HOSP", message_type="ORU",
                           trigger_event="R01", control_id="H1", version="2.5.1")  # fmt: skip

    async def go():
        tasks = [asyncio.create_task(f()) for f in runtime.background]
        try:
            outcome = await runtime.port("inbox").receive(
                InboundMessage("web", raw, header, "127.0.0.1:1", datetime.now(UTC))
            )
            store = runtime.port("messages").store
            for _ in range(200):
                if store.get(outcome.message_id).summary.status == "done":
                    break
                await asyncio.sleep(0.05)
            return store.get(outcome.message_id)
        finally:
            for t in tasks:
                t.cancel()
            await asyncio.gather(*tasks, return_exceptions=True)
            runtime.port("inbox").close()

    detail = asyncio.run(go())
    assert detail.summary.status == "done"
    [stage] = [s for s in detail.stages if s.name == "destination"]
    assert stage.status == "sent" and stage.attempts == 2 and stage.response.startswith("HTTP 201")
    assert [r[2] for r in _Peer.received] == [raw, raw]
