"""``conduit serve --mllp-processes 2``: MLLP ingest in the main process and one child sharing the port.

Through a real server: connections land in both processes; every message is stored once, the same
MSH-3/4/10 raced on 16 connections (both processes) stored once and every sender answered AA; a message
received by the child reaches its destination at once (the child's wake-up relayed to the main process's
workers, not their 30 s poll); a reload (SIGHUP) reaches the child; a killed child is started again;
SIGTERM stops everything; the child stops when the main process is SIGKILLed (no orphan on the port).
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

from adapters.mllp.framing import FrameDecoder, frame
from tests.support import ConduitProcess, free_port

MSG = (
    "MSH|^~\\&|XN-1000|LAB|CONDUIT|HOSP|20261120101500||ORU^R01^ORU_R01|{cid}|P|2.5.1\r"
    "PID|1||123456^^^HOSP^MR||DOE^JOHN\rOBR|1|ORD1|FIL1|CBC^Complete blood count^L\r"
    "OBX|1|NM|718-7^Hemoglobin^LN||13.5|g/dL|||N|||F\r"
)


def _listening(port: int) -> int:
    """Sockets listening on ``port`` (one per process with SO_REUSEPORT)."""
    want = f":{port:04X}"
    return sum(
        1
        for line in Path("/proc/net/tcp").read_text().splitlines()[1:]
        if line.split()[1].endswith(want) and line.split()[3] == "0A"
    )


def _children(pid: int) -> list[int]:
    found = []
    for entry in Path("/proc").iterdir():
        if entry.name.isdigit():
            try:
                if int((entry / "stat").read_text().rsplit(")", 1)[1].split()[1]) == pid:
                    found.append(int(entry.name))
            except (OSError, IndexError, ValueError):
                continue
    return found


def _alive(pid: int) -> bool:
    try:
        state = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0]
    except OSError:
        return False
    return state != "Z"


def _holder(local_port: int, pids: list[int]) -> int | None:
    """The pid among ``pids`` holding the accepted socket of our connection from ``local_port``."""
    want = f":{local_port:04X}"
    inodes = {
        line.split()[9]
        for line in Path("/proc/net/tcp").read_text().splitlines()[1:]
        if line.split()[2].endswith(want)  # the server side: its remote end is our local port
    }
    for pid in pids:
        try:
            fds = list(Path(f"/proc/{pid}/fd").iterdir())
        except OSError:
            continue
        for fd in fds:
            try:
                target = os.readlink(fd)
            except OSError:
                continue
            if target.startswith("socket:[") and target[8:-1] in inodes:
                return pid
    return None


def _wait(condition, timeout: float, what: str) -> None:  # type: ignore[no-untyped-def]
    deadline = time.monotonic() + timeout
    while not condition():
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out waiting for {what}")
        time.sleep(0.1)


def _channel(folder: Path, name: str, port: int, out: Path, ack_after: str = "stored") -> None:
    (folder / f"{name}.yaml").write_text(
        f"name: {name}\nsource:\n  url: mllp://127.0.0.1:{port}\n  ack_after: {ack_after}\n"
        f"destinations:\n  - name: archive\n    url: file://{out}\n    payload: raw\n",
        encoding="utf-8",
    )


def _start(
    tmp_path: Path, database_url: str, *, wait_child: bool = True
) -> tuple[ConduitProcess, Path, Path]:
    folder, out = tmp_path / "channels", tmp_path / "out"
    folder.mkdir()
    out.mkdir()
    conduit = ConduitProcess(
        tmp_path / "data",
        database_url,
        "--only",
        "mllp",
        "--mllp-processes",
        "2",
        # workers poll only every 30 s here: a message a child stores must be announced to them
        env={"CONDUIT_CHANNELS_DIR": str(folder), "CONDUIT_MESSAGING_POLL_SECONDS": "30"},
    )
    _channel(folder, "default", int(conduit.env["CONDUIT_MLLP_PORT"]), out)
    conduit.start(wait_for=("mllp",))
    if wait_child:
        _wait(lambda: _listening(conduit.ports["mllp"]) == 2, 60, "the child to listen")
    return conduit, folder, out


async def _ask(reader: asyncio.StreamReader, writer: asyncio.StreamWriter, cid: str) -> str:
    writer.write(frame(MSG.format(cid=cid).encode()))
    await writer.drain()
    decoder, got = FrameDecoder(), []
    while not got:
        data = await asyncio.wait_for(reader.read(65536), 20)
        assert data, "connection closed before the ACK"
        got = decoder.feed(data)
    msa = got[0].split(b"\rMSA|", 1)[1].split(b"|")
    assert msa[1].split(b"\r")[0].decode() == cid
    return msa[0].decode()


def _stored(database_url: str) -> dict[str, int]:
    engine = create_engine(database_url)
    try:
        with engine.connect() as conn:
            rows = conn.execute(text("SELECT control_id, count(*) FROM message GROUP BY control_id"))
            return {cid: int(n) for cid, n in rows}
    finally:
        engine.dispose()


@pytest.mark.slow
def test_two_ingest_processes(tmp_path: Path, database_url: str) -> None:
    conduit, folder, out = _start(tmp_path, database_url)
    port = conduit.ports["mllp"]
    assert conduit.proc is not None
    main = conduit.proc.pid
    try:
        (child,) = _children(main)

        async def burst() -> tuple[dict[str, str], set[int | None]]:
            conns = [await asyncio.open_connection("127.0.0.1", port) for _ in range(16)]
            answers: dict[str, str] = {}

            async def one(k: int) -> list[str]:
                reader, writer = conns[k]
                codes = [await _ask(reader, writer, "RACE")]  # all 16 at once: a race across processes
                for i in range(10):
                    answers[f"M{k}-{i}"] = await _ask(reader, writer, f"M{k}-{i}")
                return codes

            races = await asyncio.gather(*(one(k) for k in range(16)))
            # answered, so accepted: which process holds each connection
            holders = {_holder(w.get_extra_info("sockname")[1], [main, child]) for _, w in conns}
            for _, writer in conns:
                writer.close()
            answers["RACE"] = ",".join(sorted({c for codes in races for c in codes}))
            return answers, holders

        answers, holders = asyncio.run(burst())
        assert holders == {main, child}, f"connections should land in both processes: {holders}"
        assert set(answers.values()) == {"AA"}, answers
        stored = _stored(conduit.env["CONDUIT_DATABASE_URL"])
        assert stored == {cid: 1 for cid in answers}, "each message stored exactly once"
        _wait(lambda: len(list(out.glob("*.hl7"))) == len(answers), 20, "every message delivered")

        # a message the child receives reaches its destination well before the workers' 30 s poll
        async def via_child(port: int, cid: str) -> None:
            for _ in range(64):
                reader, writer = await asyncio.open_connection("127.0.0.1", port)
                local, holder = writer.get_extra_info("sockname")[1], None
                for _ in range(100):  # connected is not yet accepted
                    holder = _holder(local, [main, child])
                    if holder is not None:
                        break
                    await asyncio.sleep(0.02)
                if holder == child:
                    assert await _ask(reader, writer, cid) == "AA"
                    writer.close()
                    return
                writer.close()
            raise AssertionError("no connection landed in the child")

        before = len(list(out.glob("*.hl7")))
        asyncio.run(via_child(port, "CHILD"))
        _wait(lambda: len(list(out.glob("*.hl7"))) == before + 1, 10, "the child's message delivered")

        # a reload reaches the child: a new channel is opened by both processes; it runs the pipeline
        # before answering (in the child), and the delivery it queued is announced to the workers too
        second, out2 = free_port(), tmp_path / "out2"
        _channel(folder, "second", second, out2, ack_after="transformed")
        os.kill(main, signal.SIGHUP)
        _wait(lambda: _listening(second) == 2, 30, "both processes to open the new channel")
        asyncio.run(via_child(second, "CHILD2"))
        _wait(lambda: len(list(out2.glob("*.hl7"))) == 1, 10, "the inline-processed message delivered")

        # a child that dies is started again
        os.kill(child, signal.SIGKILL)
        _wait(lambda: [c for c in _children(main) if c != child and _alive(c)] != [], 30, "a new child")
        _wait(lambda: _listening(port) == 2, 60, "the new child to listen")
    finally:
        children = _children(main)
        conduit.stop()
    assert conduit.proc.returncode == 0
    _wait(lambda: not any(_alive(c) for c in children), 10, "the children to stop with the main process")


@pytest.mark.slow
def test_child_stops_when_the_main_process_is_killed(tmp_path: Path, database_url: str) -> None:
    conduit, _, _ = _start(tmp_path, database_url)
    assert conduit.proc is not None
    children = _children(conduit.proc.pid)
    assert len(children) == 1
    conduit.kill()
    _wait(lambda: not any(_alive(c) for c in children), 20, "the orphaned child to stop")
    port = conduit.ports["mllp"]
    _wait(lambda: _listening(port) == 0, 10, "the port to be free")
    with pytest.raises(OSError):
        socket.create_connection(("127.0.0.1", port), 0.5).close()


@pytest.mark.slow
def test_reload_while_the_child_starts_keeps_it(tmp_path: Path, database_url: str) -> None:
    """SIGHUP to the main process while its child is still importing: the child is not ended by the
    signal (nor restarted); it takes the reload once it runs."""
    conduit, folder, _ = _start(tmp_path, database_url, wait_child=False)
    assert conduit.proc is not None
    main = conduit.proc.pid
    try:
        _wait(lambda: _children(main) != [], 60, "the child to be started")
        (child,) = _children(main)
        second = free_port()
        _channel(folder, "second", second, tmp_path / "out2")
        os.kill(main, signal.SIGHUP)  # the child is still starting Python (about a second of imports)
        _wait(lambda: _listening(second) == 2, 60, "both processes to open the reloaded channel")
        assert _children(main) == [child] and _alive(child), "the child was ended by SIGHUP"
        assert "exited" not in conduit.log()
    finally:
        conduit.stop()
