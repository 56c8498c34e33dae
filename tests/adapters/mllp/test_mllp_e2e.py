"""End to end through a real ``conduit serve --only mllp`` (the real inbox, on SQLite and PostgreSQL):
corpus ACKs and duplicates, allowed senders, and the outbound sender relaying to python-hl7's server."""

from __future__ import annotations

import asyncio
import threading
import time
from pathlib import Path

import hl7
from hl7.client import MLLPClient
from hl7.mllp import start_hl7_server
from mllp_fixtures import CORPUS_DIR
from sqlalchemy import create_engine, text

from engine.hl7v2.ack import accept_ack_wanted
from engine.hl7v2.batch import is_batch, split_batch
from engine.hl7v2.header import parse_header
from tests.support import ConduitProcess, free_port, wait_for_port

CORPUS = [p for p in sorted(CORPUS_DIR.glob("*/*.hl7")) if not is_batch(p.read_bytes())]


def rows(database_url: str, sql: str, **params: object) -> list[tuple]:
    engine = create_engine(database_url)
    try:
        with engine.connect() as conn:
            return [tuple(r) for r in conn.execute(text(sql), params)]
    finally:
        engine.dispose()


def msa(answer: bytes) -> tuple[str, str]:
    seg = hl7.parse(answer[1:-2].decode("utf-8", errors="replace")).segment("MSA")
    return str(seg[1]), str(seg[2])


def test_corpus_and_duplicates_through_conduit(tmp_path: Path, database_url: str) -> None:
    conduit = ConduitProcess(tmp_path / "data", database_url, "--only", "mllp").start(wait_for=("mllp",))
    try:
        first: dict[str, str] = {}
        with MLLPClient("127.0.0.1", conduit.ports["mllp"]) as client:
            client.socket.settimeout(10)
            for path in CORPUS:
                raw = path.read_bytes()
                header = parse_header(raw)
                if not accept_ack_wanted(header, True):
                    continue
                code, control = msa(client.send_message(raw))
                assert control == header.control_id, path.name
                assert code == ("CA" if header.enhanced_mode else "AA"), path.name
                first.setdefault(header.control_id, code)
                replay = raw
            again = msa(client.send_message(replay))  # the same MSH-3/4/10 again: the original answer
            assert again == (first[parse_header(replay).control_id], parse_header(replay).control_id)
            bad = msa(client.send_message(b"MSH|^~\\&|A|B|C|D|2026||ADT^A01||P|2.5\r"))
            assert bad == ("AR", "")
            batch = b"BHS|^~\\&|LAB|H|||2026||||B-1\r"
            batch += b"".join(
                f"MSH|^~\\&|BATCHER|H|C|D|2026||ORU^R01|BM{i:03d}|P|2.5.1\rPID|1\r".encode()
                for i in range(50)
            )
            batch += b"BTS|50\r"
            client.socket.sendall(b"\x0b" + batch + b"\x1c\r")
            answer = b""
            while not answer.endswith(b"\x1c\r"):  # MLLPClient reads only 4 KiB; the batch ACK is longer
                answer += client.socket.recv(65536)
            answer = answer[1:-2]
            assert [msa(b"x" + a + b"xx") for a in split_batch(answer)] == [
                ("AA", f"BM{i:03d}") for i in range(50)
            ]
            pipelined = b"".join(
                b"\x0b"
                + f"MSH|^~\\&|PIPER|H|C|D|2026||ORU^R01|PM{i:03d}|P|2.5.1\rPID|1\r".encode()
                + b"\x1c\r"
                for i in range(40)
            )
            client.socket.sendall(pipelined)  # 40 frames without waiting: answered in order
            answer = b""
            while answer.count(b"\x1c\r") < 40:
                answer += client.socket.recv(65536)
            controls = [msa(f + b"\x1c\r")[1] for f in answer.split(b"\x1c\r")[:40]]
            assert controls == [f"PM{i:03d}" for i in range(40)]
    finally:
        conduit.stop()
    stored = rows(
        database_url, "SELECT sending_application, sending_facility, control_id, status FROM message"
    )
    keys = {(a, f, c) for a, f, c, s in stored if s != "rejected"}
    assert len(keys) == len([r for r in stored if r[3] != "rejected"])  # duplicates stored once
    expected = {
        (h.sending_application, h.sending_facility, h.control_id)
        for h in (parse_header(p.read_bytes()) for p in CORPUS)
        if accept_ack_wanted(h, True)
    }
    assert expected <= keys
    assert [r for r in stored if r[3] == "rejected"] == [("", "", "", "rejected")]
    in_order = rows(
        database_url, "SELECT control_id FROM message WHERE sending_application = 'BATCHER' ORDER BY id"
    )
    assert [r[0] for r in in_order] == [f"BM{i:03d}" for i in range(50)]
    piped = rows(
        database_url, "SELECT control_id FROM message WHERE sending_application = 'PIPER' ORDER BY id"
    )
    assert [r[0] for r in piped] == [f"PM{i:03d}" for i in range(40)]  # stored in arrival order


def _channel(folder: Path, name: str, port: int, extra: str) -> None:
    folder.mkdir(parents=True, exist_ok=True)
    (folder / f"{name}.yaml").write_text(
        f"name: {name}\nsource:\n  url: mllp://127.0.0.1:{port}\n{extra}", encoding="utf-8"
    )


class Hl7Peer:
    """python-hl7's asyncio MLLP server in a thread, acknowledging with its own create_ack."""

    def __init__(self) -> None:
        self.received: list[str] = []
        self.loop = asyncio.new_event_loop()
        self.port = free_port()
        ready = threading.Event()

        async def on_client(reader, writer) -> None:  # type: ignore[no-untyped-def]
            try:
                while not writer.is_closing():
                    message = await reader.readmessage()
                    self.received.append(str(message.segment("MSH")[10]))
                    writer.writemessage(message.create_ack())
                    await writer.drain()
            except (asyncio.IncompleteReadError, ConnectionError):
                pass

        async def main() -> None:
            self.server = await start_hl7_server(on_client, "127.0.0.1", self.port)
            ready.set()

        self.thread = threading.Thread(
            target=lambda: (self.loop.run_until_complete(main()), self.loop.run_forever())
        )
        self.thread.daemon = True
        self.thread.start()
        ready.wait(10)

    def close(self) -> None:
        self.loop.call_soon_threadsafe(self.server.close)
        self.loop.call_soon_threadsafe(self.loop.stop)
        self.thread.join(5)


def test_allowed_senders_and_outbound_relay(tmp_path: Path, database_url: str) -> None:
    peer = Hl7Peer()
    lab_port, relay_port = free_port(), free_port()
    channels = tmp_path / "channels"
    _channel(channels, "lab", lab_port, '  allowed_senders: ["XN-1000^LAB"]\n')
    _channel(
        channels,
        "relay",
        relay_port,
        "ordered: true\ndestinations:\n  - name: ris\n"
        f"    url: mllp://127.0.0.1:{peer.port}\n    ordered: true\n    options: {{ack_timeout: 5s}}\n",
    )
    env = {"CONDUIT_CHANNELS_DIR": str(channels), "CONDUIT_MESSAGING_POLL_SECONDS": "0.2"}
    msg = "MSH|^~\\&|{app}|LAB|CONDUIT|HOSP|2026||ORM^O01|{cid}|P|2.3\rPID|1||42^^^HOSP^MR\r"
    try:
        conduit = ConduitProcess(tmp_path / "data", database_url, "--only", "mllp", env=env)
        conduit.start(wait_for=("mllp",))
        try:
            wait_for_port(lab_port, proc=conduit.proc)
            with MLLPClient("127.0.0.1", lab_port) as client:
                assert msa(client.send_message(msg.format(app="XN-1000", cid="OK1"))) == ("AA", "OK1")
                refused = client.send_message(msg.format(app="INTRUDER", cid="NO1"))
                assert msa(refused) == ("AR", "NO1")
                assert b"ERR|" in refused and b"not allowed" in refused
            with MLLPClient("127.0.0.1", relay_port) as client:
                for i in range(5):
                    assert msa(client.send_message(msg.format(app="HIS", cid=f"R{i}"))) == ("AA", f"R{i}")
            deadline = time.monotonic() + 20
            while len(peer.received) < 5 and time.monotonic() < deadline:
                time.sleep(0.1)
            assert peer.received == [f"R{i}" for i in range(5)], conduit.log()[-3000:]
        finally:
            conduit.stop()
    finally:
        peer.close()
    stored = dict(rows(database_url, "SELECT control_id, status FROM message WHERE channel = 'lab'"))
    assert stored["NO1"] == "rejected"  # refused, and kept for staff
    sent = rows(
        database_url,
        "SELECT count(*) FROM message_stage s JOIN message m ON m.id = s.message_id "
        "WHERE m.channel = 'relay' AND s.destination = 'ris' AND s.status = 'sent'",
    )
    assert sent == [(5,)]
