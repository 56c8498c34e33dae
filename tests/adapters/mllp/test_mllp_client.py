"""The outbound MLLP sender against python-hl7's asyncio MLLP server (a peer nobody here wrote, answering
with its own ``Message.create_ack``) and against misbehaving peers: late, mismatched and refused ACKs."""

from __future__ import annotations

import asyncio
import time
from collections.abc import Awaitable, Callable

import hl7
import pytest
from hl7.mllp import start_hl7_server
from mllp_fixtures import FakeInbox, Pki

from adapters.mllp.client import MllpDestination, read_ack
from adapters.mllp.framing import FrameDecoder, frame
from adapters.mllp.server import MllpServer
from engine.messaging.ports import MllpSource

MSG = "MSH|^~\\&|CONDUIT|HOSP|RIS|RAD|20261120101500||ORM^O01|{cid}|P|2.3\rPID|1||42^^^HOSP^MR\r"


def msg(cid: str) -> bytes:
    return MSG.format(cid=cid).encode()


async def python_hl7_peer(received: list[str], code: str = "AA") -> tuple[asyncio.Server, int]:
    async def on_client(reader, writer) -> None:  # type: ignore[no-untyped-def]
        try:
            while not writer.is_closing():
                message = await reader.readmessage()
                received.append(str(message.segment("MSH")[10]))
                writer.writemessage(message.create_ack(ack_code=code))
                await writer.drain()
        except (asyncio.IncompleteReadError, ConnectionError):
            pass

    server = await start_hl7_server(on_client, "127.0.0.1", 0)
    return server, server.sockets[0].getsockname()[1]


async def scripted_peer(answer: Callable[[bytes], Awaitable[bytes | None]]) -> tuple[asyncio.Server, int]:
    """A peer whose answer to each frame is ``await answer(payload)`` (None: say nothing)."""

    async def on_client(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        decoder = FrameDecoder()
        try:
            while data := await reader.read(65536):
                for payload in decoder.feed(data):
                    assert isinstance(payload, bytes)
                    reply = await answer(payload)
                    if reply is not None:
                        writer.write(frame(reply))
        except ConnectionError:
            pass
        finally:
            writer.close()

    server = await asyncio.start_server(on_client, "127.0.0.1", 0)
    return server, server.sockets[0].getsockname()[1]


def ack_for(payload: bytes, code: str = "AA", control: str | None = None) -> bytes:
    m = hl7.parse(payload.decode())
    cid = control if control is not None else str(m.segment("MSH")[10])
    return f"MSH|^~\\&|RIS|RAD|CONDUIT|HOSP|2026||ACK^O01|A{cid}|P|2.3\rMSA|{code}|{cid}\r".encode()


def test_sends_in_order_to_python_hl7_and_matches_acks() -> None:
    async def scenario() -> None:
        received: list[str] = []
        server, port = await python_hl7_peer(received)
        dest = MllpDestination(f"mllp://127.0.0.1:{port}", {"ack_timeout": "5s"})
        try:
            results = [
                await dest.send(msg(f"O{i}"), content_type="x-application/hl7-v2+er7") for i in range(25)
            ]
        finally:
            await dest.close()
            server.close()
            await server.wait_closed()
        assert all(r.ok for r in results)
        assert received == [f"O{i}" for i in range(25)]
        assert read_ack(results[3].response.encode())[1] == "O3"
        assert dest.connects == 1  # one connection, one message in flight at a time

    asyncio.run(scenario())


@pytest.mark.parametrize(
    ("code", "ok", "retryable"), [("AE", False, True), ("AR", False, False), ("CA", True, True)]
)
def test_ack_codes(code: str, ok: bool, retryable: bool) -> None:
    async def scenario() -> None:
        received: list[str] = []
        server, port = await python_hl7_peer(received, code=code)
        dest = MllpDestination(f"mllp://127.0.0.1:{port}", {})
        try:
            result = await dest.send(msg("C1"), content_type="x-application/hl7-v2+er7")
        finally:
            await dest.close()
            server.close()
            await server.wait_closed()
        assert (result.ok, result.retryable) == (ok, retryable)
        assert f"MSA|{code}|C1" in result.response

    asyncio.run(scenario())


def test_late_ack_resets_the_connection_and_does_not_count() -> None:
    async def scenario() -> None:
        async def slow(payload: bytes) -> bytes:
            if b"|SLOW|" in payload:
                await asyncio.sleep(0.6)
            return ack_for(payload)

        server, port = await scripted_peer(slow)
        dest = MllpDestination(f"mllp://127.0.0.1:{port}", {"ack_timeout": "200ms"})
        try:
            late = await dest.send(msg("SLOW"), content_type="x")
            await asyncio.sleep(0.6)  # the late ACK arrives on the old connection, which is gone
            after = await dest.send(msg("NEXT"), content_type="x")
        finally:
            await dest.close()
            server.close()
        assert not late.ok and late.retryable and "no ACK" in late.response
        assert after.ok and read_ack(after.response.encode())[1] == "NEXT"
        assert dest.connects == 2

    asyncio.run(scenario())


def test_mismatched_ack_resets_and_is_retryable() -> None:
    async def scenario() -> None:
        async def wrong(payload: bytes) -> bytes:
            return ack_for(payload, control="SOMETHING-ELSE")

        server, port = await scripted_peer(wrong)
        dest = MllpDestination(f"mllp://127.0.0.1:{port}", {})
        try:
            first = await dest.send(msg("M1"), content_type="x")
            second = await dest.send(msg("M2"), content_type="x")
        finally:
            await dest.close()
            server.close()
        assert not first.ok and first.retryable and "does not match" in first.response
        assert not second.ok and dest.connects == 2

    asyncio.run(scenario())


def test_peer_closing_without_ack_and_refused_connections_back_off() -> None:
    async def scenario() -> None:
        async def silent(payload: bytes) -> None:
            raise ConnectionError  # hang up without answering

        server, port = await scripted_peer(silent)
        dest = MllpDestination(
            f"mllp://127.0.0.1:{port}", {"reconnect_initial": "100ms", "reconnect_max": "300ms"}
        )
        hung_up = await dest.send(msg("H1"), content_type="x")
        assert not hung_up.ok and hung_up.retryable
        server.close()
        await server.wait_closed()
        started = time.monotonic()
        refused = [await dest.send(msg(f"R{i}"), content_type="x") for i in range(3)]
        elapsed = time.monotonic() - started
        await dest.close()
        assert all(not r.ok and r.retryable and "cannot connect" in r.response for r in refused)
        assert 0.25 <= elapsed < 2.0  # waited 100 ms, then 200 ms between the three attempts

    asyncio.run(scenario())


def test_not_hl7_is_not_retryable() -> None:
    result = asyncio.run(MllpDestination("mllp://127.0.0.1:9", {}).send(b"hello", content_type="text/plain"))
    assert not result.ok and not result.retryable


def test_cancelled_send_resets() -> None:
    async def scenario() -> None:
        async def never(payload: bytes) -> None:
            await asyncio.sleep(10)

        server, port = await scripted_peer(never)
        dest = MllpDestination(f"mllp://127.0.0.1:{port}", {})
        with pytest.raises(TimeoutError):
            await asyncio.wait_for(dest.send(msg("X1"), content_type="x"), 0.2)
        assert dest._writer is None  # nothing left that a late ACK could be read from
        await dest.close()
        server.close()

    asyncio.run(scenario())


def test_tls_destination_to_the_tls_listener(pki: Pki) -> None:
    async def scenario() -> None:
        inbox = FakeInbox()
        source = MllpSource(
            channel="t",
            port=0,
            tls_cert=str(pki.server_cert),
            tls_key=str(pki.server_key),
            tls_client_ca=str(pki.ca),
        )
        server = MllpServer(source, inbox)
        await server.start()
        tls = {"ca": str(pki.ca), "cert": str(pki.client_cert), "key": str(pki.client_key)}
        dest = MllpDestination(f"mllp://localhost:{server.port}", {"tls": tls})
        try:
            result = await dest.send(msg("TLS1"), content_type="x")
        finally:
            await dest.close()
            await server.stop()
        assert result.ok, result.response
        assert inbox.stored[0].header is not None and inbox.stored[0].header.control_id == "TLS1"

    asyncio.run(scenario())


def test_peer_closing_idle_connections_costs_no_attempt() -> None:
    async def scenario() -> None:
        async def on_client(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
            decoder = FrameDecoder()
            while not (got := decoder.feed(await reader.read(65536))):
                pass
            writer.write(frame(ack_for(got[0])))  # type: ignore[arg-type]
            await writer.drain()
            writer.close()  # one message per connection, like an idle timeout right after the ACK

        server = await asyncio.start_server(on_client, "127.0.0.1", 0)
        port = server.sockets[0].getsockname()[1]
        dest = MllpDestination(f"mllp://127.0.0.1:{port}", {})
        try:
            results = []
            for i in range(3):
                results.append(await dest.send(msg(f"I{i}"), content_type="x"))
                await asyncio.sleep(0.05)  # the peer's close reaches us while idle
        finally:
            await dest.close()
            server.close()
        assert all(r.ok for r in results), results
        assert dest.connects == 3

    asyncio.run(scenario())
