"""``conduit messages`` and ``conduit channels`` through typer's CliRunner, on both databases."""

from __future__ import annotations

import asyncio
import json
import os
import signal
import textwrap
from datetime import UTC, datetime
from pathlib import Path

import pytest
from typer.testing import CliRunner

from engine.cli import app
from engine.hl7v2.header import MessageHeader
from engine.messaging.ports import InboundMessage

CHANNEL = """
name: lab
source: {url: "mllp://127.0.0.1:2697"}
destinations:
  - {name: out, url: "file://%s", retry: {attempts: 1}}
"""


@pytest.fixture
def cli_env(tmp_path: Path, database_url: str, monkeypatch) -> dict[str, Path]:
    folder = tmp_path / "channels"
    folder.mkdir()
    (folder / "lab.yaml").write_text(textwrap.dedent(CHANNEL % (tmp_path / "out")))
    monkeypatch.setenv("CONDUIT_DATABASE_URL", database_url)
    monkeypatch.setenv("CONDUIT_DATA_DIR", str(tmp_path / "data"))
    monkeypatch.setenv("CONDUIT_CHANNELS_DIR", str(folder))
    monkeypatch.setenv("CONDUIT_MESSAGING_SHIPPED_CHANNELS", "false")
    return {"channels": folder, "data": tmp_path / "data"}


def _store(database, count: int = 3) -> list[int]:
    from engine.runtime import build_runtime
    from engine.settings import ConduitSettings

    runtime = build_runtime(ConduitSettings(), db=database)
    inbox = runtime.port("inbox")

    async def go():
        ids = []
        for i in range(count):
            raw = f"MSH|^~\\&|LAB|HOSP|C|H|20250101||ORU^R01|C{i}|P|2.5.1\rPID|1||1\r".encode()
            header = MessageHeader(sending_application="LAB", sending_facility="HOSP", message_type="ORU",
                                   trigger_event="R01", control_id=f"C{i}", version="2.5.1")  # fmt: skip
            outcome = await inbox.receive(
                InboundMessage("lab", raw, header, "127.0.0.1:1", datetime.now(UTC))
            )
            ids.append(outcome.message_id)
        return ids

    try:
        return asyncio.run(go())
    finally:
        inbox.close()


def test_list_json_prints_only_a_json_array(cli_env, database):
    ids = _store(database)
    result = CliRunner().invoke(app, ["messages", "list", "--json"])
    assert result.exit_code == 0, result.output
    rows = json.loads(result.stdout)
    assert [r["id"] for r in rows] == sorted(ids, reverse=True)
    assert {"id", "channel", "control_id", "message_type", "status", "received_at"} <= set(rows[0])
    one = json.loads(CliRunner().invoke(app, ["messages", "list", "--json", "--control-id", "C1"]).stdout)
    assert [r["control_id"] for r in one] == ["C1"]
    assert (
        json.loads(CliRunner().invoke(app, ["messages", "list", "--json", "--status", "done"]).stdout) == []
    )
    since = CliRunner().invoke(
        app, ["messages", "list", "--json", "--since", "1h", "--limit", "2", "--channel", "lab"]
    )
    assert len(json.loads(since.stdout)) == 2
    assert CliRunner().invoke(app, ["messages", "list", "--status", "bogus"]).exit_code == 2
    table = CliRunner().invoke(app, ["messages", "list"])
    assert table.exit_code == 0 and "C2" in table.stdout


def test_show_reprocess_and_prune(cli_env, database):
    [mid] = _store(database, 1)
    shown = CliRunner().invoke(app, ["messages", "show", str(mid)])
    assert shown.exit_code == 0 and "MSH|" in shown.stdout and "received" in shown.stdout
    assert CliRunner().invoke(app, ["messages", "show", "999999"]).exit_code == 1
    detail = json.loads(CliRunner().invoke(app, ["messages", "show", str(mid), "--json"]).stdout)
    assert detail["control_id"] == "C0" and detail["stages"][0]["status"] == "queued"
    again = CliRunner().invoke(app, ["messages", "reprocess", str(mid)])
    assert again.exit_code == 0 and "1 message(s) queued" in again.stdout
    by_status = CliRunner().invoke(app, ["messages", "reprocess", "--status", "received"])
    assert by_status.exit_code == 0 and "1 message(s) queued" in by_status.stdout
    assert (
        json.loads(CliRunner().invoke(app, ["messages", "show", str(mid), "--json"]).stdout)["reprocessed"]
        == 2
    )
    pruned = CliRunner().invoke(app, ["messages", "prune", "--older-than", "0"])
    # the message is unfinished (received): never pruned
    assert pruned.exit_code == 0 and "pruned 0" in pruned.stdout


def test_channels_check_list_and_reload(cli_env, tmp_path):
    ok = CliRunner().invoke(app, ["channels", "check"])
    assert ok.exit_code == 0 and "1 channel(s) OK: lab" in ok.stdout
    listed = CliRunner().invoke(app, ["channels", "list"])
    assert listed.exit_code == 0 and "lab" in listed.stdout
    bad = tmp_path / "bad"
    bad.mkdir()
    (bad / "x.yaml").write_text("name: x\nsource:\n  url: mllp://127.0.0.1:1\n  ack_after: never\n")
    result = CliRunner().invoke(app, ["channels", "check", str(bad)])
    assert result.exit_code == 1 and f"{bad / 'x.yaml'}:4: source.ack_after:" in result.stdout
    (bad / "x.yaml").write_text("name: x\nsource:\n  url: mllp://127.0.0.1:1\ntransform: no-such-mapping\n")
    result = CliRunner().invoke(app, ["channels", "check", str(bad)])
    assert (
        result.exit_code == 1
        and f"{bad / 'x.yaml'}:4: transform: no mapping named 'no-such-mapping'" in result.stdout
    )
    # reload: no server running -> a clear error; with a pid file -> SIGHUP to that process
    assert CliRunner().invoke(app, ["channels", "reload"]).exit_code == 1
    received = []
    previous = signal.signal(signal.SIGHUP, lambda *_: received.append(True))
    try:
        cli_env["data"].mkdir(parents=True, exist_ok=True)
        (cli_env["data"] / "conduit.pid").write_text(str(os.getpid()))
        result = CliRunner().invoke(app, ["channels", "reload"])
    finally:
        signal.signal(signal.SIGHUP, previous)
    assert result.exit_code == 0 and received == [True]
