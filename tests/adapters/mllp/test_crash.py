"""Crash safety of store-then-acknowledge, through a real ``conduit serve``:

* SIGKILL in the middle of a 2,000-message burst on 4 connections: after a restart every message that got
  AA is stored exactly once and goes through the pipeline;
* PostgreSQL backends terminated mid-burst: no AA for a message that was not stored, and the server
  recovers without a restart (the sender's resends of the refused messages are then accepted).
"""

from __future__ import annotations

import asyncio
import os
import signal
import socket
import time
from pathlib import Path

import pytest
from sqlalchemy import create_engine, text
from sqlalchemy.engine import make_url

from adapters.mllp.framing import FrameDecoder, frame
from tests.support import ConduitProcess

MSG = (
    "MSH|^~\\&|XN-1000|LAB|CONDUIT|HOSP|20261120101500||ORU^R01^ORU_R01|{cid}|P|2.5.1\r"
    "PID|1||123456^^^HOSP^MR||DOE^JOHN\rOBR|1|ORD1|FIL1|CBC^Complete blood count^L\r"
    + "".join(f"OBX|{i}|NM|{718 + i}-7^Analyte {i}^LN||{13 + i}|g/dL|||N|||F\r" for i in range(1, 11))
)


def _channel_dir(tmp_path: Path) -> Path:
    folder, out = tmp_path / "channels", tmp_path / "out"
    folder.mkdir()
    out.mkdir()
    (folder / "default.yaml").write_text(
        "name: default\nsource:\n  url: mllp://127.0.0.1:2575\n"
        f"destinations:\n  - name: archive\n    url: file://{out}\n    payload: raw\n",
        encoding="utf-8",
    )
    return folder


def _env(tmp_path: Path) -> dict[str, str]:
    # a killed worker's claim on a stage expires after the lease: short here so the test is short
    return {
        "CONDUIT_CHANNELS_DIR": str(_channel_dir(tmp_path)),
        "CONDUIT_MESSAGING_POLL_SECONDS": "0.3",
        "CONDUIT_MESSAGING_LEASE_SECONDS": "3",
    }


def _counts(database_url: str) -> dict[str, tuple[int, set[str]]]:
    engine = create_engine(database_url)
    try:
        with engine.connect() as conn:
            result = conn.execute(text("SELECT control_id, status FROM message WHERE channel = 'default'"))
            out: dict[str, tuple[int, set[str]]] = {}
            for cid, status in result:
                n, statuses = out.get(cid, (0, set()))
                out[cid] = (n + 1, statuses | {status})
            return out
    finally:
        engine.dispose()


async def _burst(port: int, per_connection: int, on_ack, prefix: str) -> dict[str, str]:  # type: ignore[no-untyped-def]
    """4 connections, send-wait-ACK; returns control id -> MSA-1 for every ACK received."""
    answers: dict[str, str] = {}

    async def connection(k: int) -> None:
        try:
            reader, writer = await asyncio.open_connection("127.0.0.1", port)
        except OSError:
            return
        writer.get_extra_info("socket").setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        decoder = FrameDecoder()
        try:
            for i in range(per_connection):
                cid = f"{prefix}{k}-{i}"
                writer.write(frame(MSG.format(cid=cid).encode()))
                await writer.drain()
                got: list = []
                while not got:
                    data = await asyncio.wait_for(reader.read(65536), 15)
                    if not data:
                        return
                    got = decoder.feed(data)
                ack = got[0].split(b"\rMSA|", 1)[1].split(b"|")
                code, control = ack[0].decode(), ack[1].split(b"\r")[0].decode()
                assert control == cid
                answers[cid] = code
                on_ack(answers)
        except (ConnectionError, OSError):
            return
        finally:
            writer.close()

    await asyncio.gather(*(connection(k) for k in range(4)))
    return answers


def _wait_processed(database_url: str, cids: set[str], timeout: float) -> dict[str, tuple[int, set[str]]]:
    deadline = time.monotonic() + timeout
    while True:
        counts = _counts(database_url)
        pending = [c for c in cids if c not in counts or counts[c][1] & {"received", "processing"}]
        if not pending or time.monotonic() > deadline:
            return counts
        time.sleep(0.5)


@pytest.mark.slow
def test_sigkill_mid_burst_keeps_every_acknowledged_message(tmp_path: Path, database_url: str) -> None:
    env = _env(tmp_path)
    conduit = ConduitProcess(tmp_path / "data", database_url, "--only", "mllp", env=env).start(
        wait_for=("mllp",)
    )
    killed: list[float] = []

    def on_ack(answers: dict[str, str]) -> None:
        if len(answers) >= 600 and not killed:
            assert conduit.proc is not None
            os.kill(conduit.proc.pid, signal.SIGKILL)
            killed.append(time.monotonic())

    try:
        answers = asyncio.run(_burst(conduit.ports["mllp"], 500, on_ack, "K"))

    finally:
        conduit.kill()
    acked = {cid for cid, code in answers.items() if code == "AA"}
    assert killed and 600 <= len(acked) < 2000, len(acked)

    again = ConduitProcess(tmp_path / "data", database_url, "--only", "mllp", env=env).start(
        wait_for=("mllp",)
    )
    try:
        counts = _wait_processed(database_url, acked, 60)
    finally:
        again.stop()
    missing = [c for c in acked if c not in counts]
    assert not missing, f"{len(missing)} acknowledged messages lost, e.g. {missing[:5]}"
    assert all(counts[c][0] == 1 for c in counts), "a message was stored twice"
    unprocessed = [c for c in acked if counts[c][1] & {"received", "processing"}]
    assert not unprocessed, f"{len(unprocessed)} acknowledged messages never processed"
    assert all(counts[c][1] == {"done"} for c in acked), {s for c in acked for s in counts[c][1]}


@pytest.mark.slow
def test_postgresql_backends_terminated_mid_burst(tmp_path: Path, database_url: str) -> None:
    if not database_url.startswith("postgresql"):
        pytest.skip("terminating backends is a PostgreSQL scenario")
    env = _env(tmp_path)
    conduit = ConduitProcess(tmp_path / "data", database_url, "--only", "mllp", env=env).start(
        wait_for=("mllp",)
    )
    name = make_url(database_url).database
    admin = create_engine(make_url(database_url).set(database="postgres"), isolation_level="AUTOCOMMIT")
    terminated: list[int] = []

    def on_ack(answers: dict[str, str]) -> None:
        # several rounds, so that some land while the inbox's writer is inside a commit
        if len(answers) >= 300 + 150 * len(terminated) and len(terminated) < 4:
            with admin.connect() as conn:
                n = conn.execute(
                    text(
                        "SELECT count(pg_terminate_backend(pid)) FROM pg_stat_activity "
                        "WHERE datname = :n AND pid <> pg_backend_pid()"
                    ),
                    {"n": name},
                ).scalar_one()
            terminated.append(int(n))

    try:
        answers = asyncio.run(_burst(conduit.ports["mllp"], 250, on_ack, "T"))
        assert len(terminated) == 4 and sum(terminated) >= 1
        assert len(answers) == 1000, "the server stopped answering"
        refused = sorted(c for c, code in answers.items() if code != "AA")
        print(f"terminated {sum(terminated)} backend(s) in 4 rounds; {len(refused)} message(s) answered AE")
        assert all(answers[c] == "AE" for c in refused)
        # the sender resends what was refused: accepted now, without a restart
        resent = asyncio.run(_resend(conduit.ports["mllp"], refused))
        assert all(code == "AA" for code in resent.values()), resent
        counts = _wait_processed(database_url, set(answers), 60)
    finally:
        conduit.stop()
        admin.dispose()
    assert set(counts) == set(answers)
    assert all(n == 1 for n, _ in counts.values()), "a message was stored twice"


async def _resend(port: int, cids: list[str]) -> dict[str, str]:
    reader, writer = await asyncio.open_connection("127.0.0.1", port)
    decoder, out = FrameDecoder(), {}
    for cid in cids:
        writer.write(frame(MSG.format(cid=cid).encode()))
        got: list = []
        while not got:
            got = decoder.feed(await asyncio.wait_for(reader.read(65536), 15))
        out[cid] = got[0].split(b"\rMSA|", 1)[1].split(b"|")[0].decode()
    writer.close()
    return out
