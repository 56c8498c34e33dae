"""The MLLP listener over real loopback sockets, with python-hl7's MLLPClient as the sender and an
in-memory inbox (the real inbox is exercised end to end in test_mllp_e2e.py)."""

from __future__ import annotations

import socket
import ssl
import time
from pathlib import Path

import hl7
import pytest
from hl7.client import MLLPClient
from mllp_fixtures import CORPUS_DIR, FakeInbox, Pki

from adapters.mllp.framing import CR, EB, SB, FrameDecoder, frame
from engine.hl7v2.ack import accept_ack_wanted
from engine.hl7v2.batch import is_batch, split_batch
from engine.hl7v2.header import parse_header

CORPUS = sorted(CORPUS_DIR.glob("*/*.hl7"))
ORU = (
    b"MSH|^~\\&|XN-1000|LAB|CONDUIT|HOSP|20261120101500||ORU^R01^ORU_R01|{cid}|P|2.5.1\r"
    b"PID|1||123456^^^HOSP^MR||DOE^JOHN\rOBX|1|NM|718-7^Hemoglobin^LN||13.5|g/dL|||N|||F\r"
)


def oru(cid: str) -> bytes:
    return ORU.replace(b"{cid}", cid.encode())


_pending: dict[int, tuple[FrameDecoder, list]] = {}


def read_frame(sock: socket.socket, timeout: float = 5.0) -> bytes:
    """The next frame from ``sock`` (frames that arrived together are kept for the next call)."""
    sock.settimeout(timeout)
    decoder, buf = _pending.setdefault(id(sock), (FrameDecoder(), []))
    while not buf:
        data = sock.recv(65536)
        if not data:
            raise ConnectionError("closed")
        buf.extend(decoder.feed(data))
    item = buf.pop(0)
    assert isinstance(item, bytes)
    return item


def connect(port: int) -> socket.socket:
    sock = socket.create_connection(("127.0.0.1", port))
    sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
    _pending.pop(id(sock), None)
    return sock


def msa(ack: bytes) -> tuple[str, str]:
    seg = hl7.parse(ack.decode("utf-8", errors="replace")).segment("MSA")
    return str(seg[1]), str(seg[2])


@pytest.mark.parametrize("path", CORPUS, ids=lambda p: p.name)
def test_every_corpus_message_gets_its_ack(mllp_server, path: Path) -> None:
    server = mllp_server()
    raw = path.read_bytes()
    with MLLPClient("127.0.0.1", server.port) as client:
        client.socket.settimeout(5)
        if is_batch(raw):
            expected = [parse_header(m) for m in split_batch(raw)]
            answer = client.send_message(raw)
            acks = split_batch(answer[1:-2])
            wanted = [h for h in expected if accept_ack_wanted(h, True)]
            assert len(acks) == len(wanted)
            assert len(server.inbox.stored) == 2  # the third is a duplicate of the first (same MSH-10)
            return
        header = parse_header(raw)
        if not accept_ack_wanted(header, True):  # MSH-15 NE/ER: no accept ACK for a success
            client.socket.settimeout(0.3)
            client.socket.send(frame(raw))
            with pytest.raises(TimeoutError):
                client.socket.recv(100)
            assert len(server.inbox.stored) == 1
            return
        answer = client.send_message(raw)
    assert answer.startswith(SB) and answer.endswith(EB + CR)
    ack = hl7.parse(answer[1:-2].decode(errors="replace"))
    code, control = str(ack.segment("MSA")[1]), str(ack.segment("MSA")[2])
    assert control == header.control_id
    assert code == ("CA" if header.enhanced_mode else "AA")
    assert str(ack.segment("MSH")[5]) == header.sending_application
    assert str(ack.segment("MSH")[9]).startswith("ACK")
    assert server.inbox.stored[0].raw == raw and server.inbox.stored[0].peer.startswith("127.0.0.1:")


def test_pipelined_frames_are_answered_in_order(mllp_server) -> None:
    server = mllp_server()
    with connect(server.port) as sock:
        sock.sendall(b"".join(frame(oru(f"P{i}")) for i in range(20)))
        controls = [msa(read_frame(sock))[1] for _ in range(20)]
    assert controls == [f"P{i}" for i in range(20)]
    assert [m.header.control_id for m in server.inbox.stored] == controls


def _sample(name: str) -> float:
    from prometheus_client import REGISTRY

    return REGISTRY.get_sample_value(name, {"channel": "test"}) or 0.0


def test_byte_at_a_time_with_junk_and_a_lost_end_byte(mllp_server) -> None:
    junk_before, abandoned_before = (
        _sample("conduit_mllp_junk_bytes_total"),
        _sample("conduit_mllp_abandoned_frames_total"),
    )
    server = mllp_server()
    stream = (
        b"\r\nGET / HTTP/1.0\r\n" + SB + b"MSH|^~\\&|LOST" + frame(oru("B1")) + b"noise" + frame(oru("B2"))
    )
    with connect(server.port) as sock:
        for byte in stream:
            sock.send(bytes([byte]))
        assert msa(read_frame(sock)) == ("AA", "B1")
        assert msa(read_frame(sock)) == ("AA", "B2")
    assert [m.header.control_id for m in server.inbox.stored] == ["B1", "B2"]
    deadline = time.monotonic() + 5
    while server.server.counts["abandoned_frames"] < 1 and time.monotonic() < deadline:
        time.sleep(0.02)
    assert server.server.counts["abandoned_frames"] == 1
    assert server.server.counts["junk_bytes"] == len(b"\r\nGET / HTTP/1.0\r\n") + len(b"noise")
    assert _sample("conduit_mllp_junk_bytes_total") - junk_before == server.server.counts["junk_bytes"]
    assert _sample("conduit_mllp_abandoned_frames_total") - abandoned_before == 1


def test_end_byte_without_cr_still_ends_the_frame(mllp_server) -> None:
    server = mllp_server()
    with connect(server.port) as sock:
        sock.sendall(SB + oru("N1") + EB + SB + oru("N2") + EB)
        assert msa(read_frame(sock))[1] == "N1"
        assert msa(read_frame(sock))[1] == "N2"


def test_garbage_frame_gets_ar_and_is_kept(mllp_server) -> None:
    server = mllp_server()
    with connect(server.port) as sock:
        sock.sendall(frame(b"\x00\xff this is not HL7 | at all"))
        ack = hl7.parse(read_frame(sock).decode())
        sock.sendall(frame(b"MSH|^~\\&|A|B|C|D|2026||ADT^A01||P|2.5\r"))  # MSH-10 missing
        ack2 = hl7.parse(read_frame(sock).decode())
    assert str(ack.segment("MSA")[1]) == "AR" and str(ack.segment("ERR")[2]) == "MSH^1"
    assert str(ack.segment("ERR")[3]).startswith("100^")
    assert str(ack2.segment("MSA")[1]) == "AR" and str(ack2.segment("ERR")[2]) == "MSH^1^10^1"
    assert str(ack2.segment("MSH")[5]) == "A"  # built on what could be read: sender and receiver swapped
    assert [m.header for m in server.inbox.stored] == [None, None]


def test_oversize_frame_gets_ar_then_close(mllp_server) -> None:
    server = mllp_server(max_frame_bytes=2000)
    with connect(server.port) as sock:
        sock.sendall(SB + oru("BIG") + b"OBX|1|TX|||" + b"x" * 5000 + b"\r" + EB + CR)
        code, control = msa(read_frame(sock))
        assert (code, control) == ("AR", "BIG")
        sock.settimeout(5)
        assert sock.recv(100) == b""  # closed
    assert server.inbox.stored == []


def test_idle_connection_is_closed(mllp_server) -> None:
    server = mllp_server(idle_timeout_s=0.3)
    with connect(server.port) as sock:
        sock.sendall(frame(oru("I1")))
        assert msa(read_frame(sock))[1] == "I1"
        started = time.monotonic()
        sock.settimeout(5)
        assert sock.recv(100) == b""
        assert 0.2 < time.monotonic() - started < 3


def test_store_unavailable_never_gets_aa(mllp_server) -> None:
    server = mllp_server(FakeInbox(fail=True))
    with MLLPClient("127.0.0.1", server.port) as client:
        ack = hl7.parse(client.send_message(oru("S1"))[1:-2].decode())
    assert str(ack.segment("MSA")[1]) == "AE" and str(ack.segment("MSA")[2]) == "S1"
    assert "storage unavailable" in str(ack.segment("ERR")[8])
    assert str(ack.segment("ERR")[3]).startswith("207^")


def test_inbox_saying_aa_without_storing_is_overruled(mllp_server) -> None:
    server = mllp_server(FakeInbox(lie=True))
    with MLLPClient("127.0.0.1", server.port) as client:
        code, _ = msa(client.send_message(oru("L1"))[1:-2])
    assert code == "AE"


def test_enhanced_mode_accept_ack_rules(mllp_server) -> None:
    server = mllp_server(FakeInbox(fail=True))
    msg = b"MSH|^~\\&|A|B|C|D|2026||ORU^R01|E1|P|2.5.1|||ER|AL\r"
    with connect(server.port) as sock:
        sock.sendall(frame(msg))  # ER and a failure: a CE is sent
        assert msa(read_frame(sock)) == ("CE", "E1")
    server2 = mllp_server()
    with connect(server2.port) as sock:
        sock.sendall(frame(msg.replace(b"E1", b"E2")))  # ER and success: nothing
        sock.sendall(frame(msg.replace(b"E1", b"E3").replace(b"|ER|", b"|AL|")))
        assert msa(read_frame(sock)) == ("CA", "E3")
    assert len(server2.inbox.stored) == 2


def test_application_ack_from_the_inbox_is_sent_as_is(mllp_server) -> None:
    ready = b"MSH|^~\\&|C|D|A|B|2026||ACK^R01^ACK|X1|P|2.5.1\rMSA|AE|APP1\rERR||OBX^1^5|207^x^HL70357|E\r"
    server = mllp_server(FakeInbox(application_ack=ready))
    with MLLPClient("127.0.0.1", server.port) as client:
        assert client.send_message(oru("APP1")) == frame(ready)


def test_batch_of_original_mode_messages_gets_one_batch_ack(mllp_server) -> None:
    server = mllp_server()
    batch = b"BHS|^~\\&|LAB|H|||2026||||B-77\r" + oru("M1") + oru("M2") + b"BTS|2\r"
    with MLLPClient("127.0.0.1", server.port) as client:
        answer = client.send_message(batch)[1:-2]
    assert answer.startswith(b"BHS|") and b"\rBTS|2\r" in answer
    assert [msa(a) for a in split_batch(answer)] == [("AA", "M1"), ("AA", "M2")]


def test_broken_batch_is_kept_and_rejected(mllp_server) -> None:
    server = mllp_server()
    batch = b"BHS|^~\\&|LAB|H\r" + oru("M1") + b"BTS|5\r"
    with MLLPClient("127.0.0.1", server.port) as client:
        ack = hl7.parse(client.send_message(batch)[1:-2].decode())
    assert str(ack.segment("MSA")[1]) == "AR" and str(ack.segment("ERR")[2]).startswith("BTS")
    assert len(server.inbox.stored) == 1 and server.inbox.stored[0].raw == batch


def test_many_concurrent_connections(mllp_server) -> None:
    import threading

    server = mllp_server()
    errors: list[BaseException] = []

    def client(k: int) -> None:
        try:
            with MLLPClient("127.0.0.1", server.port) as c:
                for i in range(10):
                    assert msa(c.send_message(oru(f"K{k}M{i}"))[1:-2]) == ("AA", f"K{k}M{i}")
        except BaseException as exc:  # pragma: no cover - reported below
            errors.append(exc)

    threads = [threading.Thread(target=client, args=(k,)) for k in range(64)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(30)
    assert not errors
    assert len(server.inbox.stored) == 640


def test_tls_with_client_certificates(mllp_server, pki: Pki) -> None:
    server = mllp_server(
        tls_cert=str(pki.server_cert), tls_key=str(pki.server_key), tls_client_ca=str(pki.ca)
    )
    assert server.server.url.startswith("mllps://")
    ctx = ssl.create_default_context(cafile=str(pki.ca))
    ctx.load_cert_chain(str(pki.client_cert), str(pki.client_key))
    with ctx.wrap_socket(connect(server.port), server_hostname="localhost") as tls:
        tls.sendall(frame(oru("T1")))
        assert msa(read_frame(tls)) == ("AA", "T1")
    anonymous = ssl.create_default_context(cafile=str(pki.ca))
    with pytest.raises((ssl.SSLError, ConnectionError, OSError)):
        with anonymous.wrap_socket(connect(server.port), server_hostname="localhost") as tls:
            tls.sendall(frame(oru("T2")))
            read_frame(tls)
    assert [m.header.control_id for m in server.inbox.stored] == ["T1"]


def test_plain_client_on_tls_port_is_not_answered(mllp_server, pki: Pki) -> None:
    server = mllp_server(tls_cert=str(pki.server_cert), tls_key=str(pki.server_key))
    with connect(server.port) as sock:
        sock.sendall(frame(oru("X1")))
        sock.settimeout(5)
        try:
            data = sock.recv(100)
        except ConnectionResetError:
            data = b""
        assert SB not in data
    assert server.inbox.stored == []


def test_python_hl7_asyncio_client(mllp_server) -> None:
    import asyncio

    from hl7.mllp import open_hl7_connection

    server = mllp_server()

    async def scenario() -> list[tuple[str, str]]:
        reader, writer = await open_hl7_connection("127.0.0.1", server.port, encoding="utf-8")
        out = []
        for i in range(10):
            writer.writemessage(hl7.parse(oru(f"AS{i}").decode()))
            await writer.drain()
            ack = await asyncio.wait_for(reader.readmessage(), 5)
            out.append((str(ack.segment("MSA")[1]), str(ack.segment("MSA")[2])))
        writer.close()
        await writer.wait_closed()
        return out

    assert asyncio.run(scenario()) == [("AA", f"AS{i}") for i in range(10)]


def test_stop_lets_a_message_being_stored_get_its_ack(mllp_server) -> None:
    import threading

    server = mllp_server(FakeInbox(delay=0.5))
    with connect(server.port) as sock:
        sock.sendall(frame(oru("ST1")))
        time.sleep(0.1)  # the inbox is now storing it
        started = time.monotonic()
        stopper = threading.Thread(target=lambda: server.call(server.server.stop()))
        stopper.start()
        assert msa(read_frame(sock)) == ("AA", "ST1")
        stopper.join(10)
        assert time.monotonic() - started < 3  # waited for that message, not for the whole grace period
        sock.settimeout(5)
        assert sock.recv(100) == b""
