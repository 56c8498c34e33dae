"""The whole public HL7 v2 corpus through a real channel: inbox (store, ACK decision) -> queue workers ->
mapping -> ``records`` destination, on SQLite and PostgreSQL; replayed a second time it leaves the same
resources (conditional updates, never duplicates)."""

from __future__ import annotations

import asyncio
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import pytest

from engine.hl7v2.batch import is_batch, split_batch
from engine.hl7v2.header import parse_header
from engine.messaging.ports import InboundMessage
from engine.runtime import build_runtime
from engine.settings import ConduitSettings

CORPUS = Path(__file__).resolve().parents[1] / "fixtures" / "hl7v2"

# Several public samples reuse one MSH-3/MSH-4/MSH-10 for different messages: this channel keeps no
# duplicate window so that every sample is processed (replay safety is the record store's job here).
CHANNEL = """\
name: corpus
source:
  url: mllp://127.0.0.1:{port}
  duplicate_window: 0s
transform: auto
destinations:
  - name: records
    url: "records:"
"""


def _messages() -> list[bytes]:
    out: list[bytes] = []
    for path in sorted(CORPUS.rglob("*.hl7")):
        raw = path.read_bytes()
        out.extend(split_batch(raw) if is_batch(raw) else [raw])
    return out


def _resource_counts(runtime: Any) -> dict[str, int]:
    counts = {}
    with runtime.db.unit_of_work() as uow:
        repo = runtime.records(uow)
        for rtype in (
            "Patient",
            "Encounter",
            "Observation",
            "DiagnosticReport",
            "ServiceRequest",
            "Provenance",
        ):
            counts[rtype] = repo.search(rtype, [("_summary", "count")]).total or 0
    return counts


async def _run_through(runtime: Any, messages: list[bytes]) -> dict[str, int]:
    inbox = runtime.port("inbox")
    service = runtime.port("messages")
    tasks = [asyncio.create_task(factory()) for factory in runtime.background]
    try:
        for raw in messages:
            outcome = await inbox.receive(
                InboundMessage("corpus", raw, parse_header(raw), "127.0.0.1:1", datetime.now(UTC))
            )
            assert outcome.stored and outcome.ack_code in ("AA", "CA"), outcome
        deadline = asyncio.get_running_loop().time() + 240
        while True:
            statuses = service.store.counts().get("corpus", {})
            if not any(statuses.get(s, 0) for s in ("received", "processing")):
                return statuses
            assert asyncio.get_running_loop().time() < deadline, statuses
            await asyncio.sleep(0.2)
    finally:
        for task in tasks:
            task.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)


@pytest.mark.slow
def test_whole_corpus_loads_through_a_channel_and_replays_idempotently(
    tmp_path: Path, database_url: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    channels = tmp_path / "channels"
    channels.mkdir()
    (channels / "corpus.yaml").write_text(CHANNEL.format(port=2599))
    monkeypatch.setenv("CONDUIT_CHANNELS_DIR", str(channels))
    monkeypatch.setenv("CONDUIT_MESSAGING_POLL_SECONDS", "0.2")
    runtime = build_runtime(ConduitSettings(data_dir=tmp_path / "data", database_url=database_url))
    messages = _messages()
    assert len(messages) >= 54  # 52 files, one of them a batch of 3

    try:
        first = asyncio.run(_run_through(runtime, messages))
        assert first == {"done": len(messages)}, first  # nothing in error, dead or left behind
        loaded = _resource_counts(runtime)
        assert loaded["Patient"] > 0 and loaded["Observation"] > 0 and loaded["ServiceRequest"] > 0

        second = asyncio.run(_run_through(runtime, messages))
        assert second == {"done": 2 * len(messages)}, second
        replayed = _resource_counts(runtime)
        assert replayed == loaded  # every resource updated in place, none duplicated
    finally:
        runtime.db.dispose()
