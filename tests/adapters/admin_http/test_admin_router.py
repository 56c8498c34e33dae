"""The admin API through FastAPI's TestClient, on a wired runtime."""

from __future__ import annotations

import asyncio
import textwrap
import warnings
from datetime import UTC, datetime
from pathlib import Path

import pytest
from fastapi import FastAPI

from adapters.admin_http.router import build_router
from engine.hl7v2.header import MessageHeader
from engine.messaging.ports import InboundMessage
from engine.settings import ConduitSettings

with warnings.catch_warnings():
    # starlette 1.x nudges towards "httpx2"; the httpx-based TestClient is what the project installs
    warnings.filterwarnings("ignore", message="Using `httpx` with `starlette.testclient` is deprecated")
    from fastapi.testclient import TestClient

CHANNEL = """
name: lab
source: {url: "mllp://127.0.0.1:2698"}
filters: [{message_type: ORU}]
destinations:
  - {name: out, url: "file://%s"}
"""


def _message(control_id: str, msg_type: str = "ORU") -> InboundMessage:
    raw = f"MSH|^~\\&|LAB|HOSP|C|H|20250101||{msg_type}^R01|{control_id}|P|2.5.1\rPID|1||1\r".encode()
    header = MessageHeader(sending_application="LAB", sending_facility="HOSP", message_type=msg_type,
                           trigger_event="R01", control_id=control_id, version="2.5.1")  # fmt: skip
    return InboundMessage("lab", raw, header, "127.0.0.1:5000", datetime.now(UTC))


@pytest.fixture
def wired(tmp_path: Path, database, database_url, monkeypatch):
    from engine.runtime import build_runtime

    folder = tmp_path / "channels"
    folder.mkdir()
    (folder / "lab.yaml").write_text(textwrap.dedent(CHANNEL % (tmp_path / "out")))
    monkeypatch.setenv("CONDUIT_CHANNELS_DIR", str(folder))
    monkeypatch.setenv("CONDUIT_MESSAGING_SHIPPED_CHANNELS", "false")
    runtime = build_runtime(
        ConduitSettings(data_dir=tmp_path / "data", database_url=database_url), db=database
    )
    app = FastAPI()
    app.include_router(build_router(runtime), prefix="/admin")
    yield runtime, TestClient(app), folder
    runtime.port("inbox").close()


def _receive(runtime, *messages):
    async def go():
        return [await runtime.port("inbox").receive(m) for m in messages]

    return asyncio.run(go())


def test_list_show_and_filters(wired):
    runtime, client, _ = wired
    first, second = _receive(runtime, _message("A1"), _message("A2", "ADT"))
    listed = client.get("/admin/messages").json()
    assert [m["control_id"] for m in listed] == ["A2", "A1"]
    assert {"id", "channel", "control_id", "message_type", "status", "received_at"} <= set(listed[0])
    assert [m["id"] for m in client.get("/admin/messages", params={"control_id": "A1"}).json()] == [
        first.message_id
    ]
    assert client.get("/admin/messages", params={"status": "done"}).json() == []
    assert len(client.get("/admin/messages", params={"since": "1h", "channel": "lab"}).json()) == 2
    shown = client.get(f"/admin/messages/{second.message_id}").json()
    assert shown["raw"].startswith("MSH|") and shown["stages"][0]["name"] == "received"
    assert client.get("/admin/messages/999999").status_code == 404
    assert client.get("/admin/messages", params={"status": "bogus"}).status_code == 400
    assert client.get("/admin/messages", params={"since": "yesterdayish"}).status_code == 400


def test_reprocess_and_channel_status(wired):
    runtime, client, _ = wired
    [outcome] = _receive(runtime, _message("R1"))
    pool = runtime.port("messages").pool

    async def run_pool_until(predicate):
        task = asyncio.create_task(pool.run())
        try:
            for _ in range(200):
                if predicate():
                    return
                await asyncio.sleep(0.05)
            raise AssertionError("pipeline did not finish")
        finally:
            task.cancel()
            await asyncio.gather(task, return_exceptions=True)

    def status():
        return client.get(f"/admin/messages/{outcome.message_id}").json()["status"]

    asyncio.run(run_pool_until(lambda: status() == "done"))
    answer = client.post(f"/admin/messages/{outcome.message_id}/reprocess")
    assert answer.status_code == 202 and status() == "received"
    asyncio.run(run_pool_until(lambda: status() == "done"))
    assert client.get(f"/admin/messages/{outcome.message_id}").json()["reprocessed"] == 1
    bulk = client.post("/admin/messages/reprocess", params={"status": "done"})
    assert bulk.status_code == 202 and bulk.json()["reprocessed"] == [outcome.message_id]
    [channel] = client.get("/admin/channels").json()
    assert channel["name"] == "lab" and channel["pipeline_queue_depth"] == 1
    assert channel["messages"] == {"received": 1}
    assert client.post("/admin/messages/424242/reprocess").status_code == 404


def test_reload_reports_problems_and_keeps_channels(wired):
    runtime, client, folder = wired
    (folder / "lab.yaml").write_text("name: lab\nsource: {url: 'ftp://nope'}\n")
    answer = client.post("/admin/channels/reload")
    assert answer.status_code == 422 and "lab.yaml:2: source.url" in answer.json()["issues"][0]
    assert [c["name"] for c in client.get("/admin/channels").json()] == ["lab"]
    (folder / "lab.yaml").write_text("name: lab2\nsource: {url: 'mllp://127.0.0.1:2699'}\n")
    answer = client.post("/admin/channels/reload")
    assert answer.status_code == 200 and answer.json()["channels"] == ["lab2"]
