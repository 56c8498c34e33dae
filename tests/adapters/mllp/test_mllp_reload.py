"""The mllp listener follows the channels port: sources opened, closed and reopened on reload."""

from __future__ import annotations

import asyncio
import socket
from collections.abc import Callable
from dataclasses import replace
from pathlib import Path

import pytest
from mllp_fixtures import FakeInbox

from adapters.mllp.framing import FrameDecoder, frame
from adapters.mllp.listener import MllpListener
from engine.errors import ConfigurationError
from engine.events import EventBus
from engine.messaging.ports import MllpSource
from engine.runtime import Runtime
from engine.settings import ConduitSettings
from tests.support import free_port


class FakeChannels:
    def __init__(self, sources: list[MllpSource]):
        self.sources = sources
        self.callbacks: list[Callable[[], None]] = []

    def mllp_sources(self) -> list[MllpSource]:
        return list(self.sources)

    def on_change(self, callback: Callable[[], None]) -> None:
        self.callbacks.append(callback)

    def change(self, sources: list[MllpSource]) -> None:
        self.sources = sources
        for callback in self.callbacks:
            callback()


def _runtime(tmp_path: Path, channels: FakeChannels, inbox: FakeInbox, **settings: object) -> Runtime:
    runtime = Runtime(settings=ConduitSettings(data_dir=tmp_path, **settings), db=None, bus=EventBus())  # type: ignore[arg-type]
    runtime.provide("channels", channels)
    runtime.provide("inbox", inbox)
    return runtime


async def _ack(port: int, cid: str) -> bytes:
    reader, writer = await asyncio.open_connection("127.0.0.1", port)
    writer.write(frame(f"MSH|^~\\&|A|B|C|D|2026||ADT^A01|{cid}|P|2.5\r".encode()))
    decoder, got = FrameDecoder(), []
    while not got:
        got = decoder.feed(await asyncio.wait_for(reader.read(4096), 5))
    writer.close()
    return got[0]  # type: ignore[return-value]


def _closed(port: int) -> bool:
    with socket.socket() as s:
        return s.connect_ex(("127.0.0.1", port)) != 0


def test_sources_follow_reloads(tmp_path: Path) -> None:
    async def scenario() -> None:
        a, b, c = free_port(), free_port(), free_port()
        channels = FakeChannels([MllpSource("one", port=a), MllpSource("two", port=b)])
        inbox = FakeInbox()
        listener = MllpListener(_runtime(tmp_path, channels, inbox))
        await listener.start()
        try:
            assert f"mllp://127.0.0.1:{a} (one)" in listener.describe()
            assert b"MSA|AA|M1" in await _ack(a, "M1")
            assert b"MSA|AA|M2" in await _ack(b, "M2")
            # "one" moves to another port, "two" is removed
            channels.change([MllpSource("one", port=c)])
            for _ in range(100):
                if set(listener.servers) == {"one"} and listener.servers["one"].port == c:
                    break
                await asyncio.sleep(0.02)
            assert b"MSA|AA|M3" in await _ack(c, "M3")
            assert _closed(a) and _closed(b)
            assert [m.channel for m in inbox.stored] == ["one", "two", "one"]
        finally:
            await listener.stop()
        assert _closed(c)

    asyncio.run(scenario())


def test_non_loopback_without_tls_is_refused(tmp_path: Path) -> None:
    async def scenario() -> None:
        channels = FakeChannels([MllpSource("open", host="0.0.0.0", port=free_port())])
        listener = MllpListener(_runtime(tmp_path, channels, FakeInbox()))
        with pytest.raises(ConfigurationError, match="without TLS"):
            await listener.start()
        assert listener.servers == {}  # nothing was opened on the network

    asyncio.run(scenario())


def test_port_in_use_is_a_configuration_error(tmp_path: Path) -> None:
    async def scenario() -> None:
        with socket.socket() as busy:
            busy.bind(("127.0.0.1", 0))
            busy.listen()
            port = busy.getsockname()[1]
            source = replace(MllpSource("x"), port=port)
            listener = MllpListener(_runtime(tmp_path, FakeChannels([source]), FakeInbox()))
            with pytest.raises(ConfigurationError):
                await listener.start()

    asyncio.run(scenario())


def test_several_processes_share_the_port(tmp_path: Path) -> None:
    """With ``mllp_processes`` above 1 every listener binds with SO_REUSEPORT (two here, as the main
    process and a child would) and both answer; a socket bound without it still refuses the port."""
    from prometheus_client import REGISTRY

    async def scenario() -> None:
        port = free_port()
        first, second = FakeInbox(), FakeInbox()
        runtimes = [
            _runtime(tmp_path, FakeChannels([MllpSource("one", port=port)]), inbox, mllp_processes=2)
            for inbox in (first, second)
        ]
        runtimes[1].ingest_child = True  # the main process opens the port first, then its child joins
        listeners = [MllpListener(runtime) for runtime in runtimes]
        for listener in listeners:
            await listener.start()
        try:
            assert REGISTRY.get_sample_value("conduit_mllp_processes") == 2
            for i in range(40):  # connections spread over both listening sockets
                assert f"MSA|AA|M{i}".encode() in await _ack(port, f"M{i}")
            assert first.stored and second.stored
            assert len(first.stored) + len(second.stored) == 40
            with socket.socket() as plain, pytest.raises(OSError):
                plain.bind(("127.0.0.1", port))
        finally:
            for listener in listeners:
                await listener.stop()
        assert _closed(port)

    asyncio.run(scenario())


def test_a_second_main_process_does_not_join_a_shared_port(tmp_path: Path) -> None:
    """SO_REUSEPORT lets any process of the same user bind the port: a second ``conduit serve
    --mllp-processes 2`` must be refused at start, not silently take part of the first one's traffic."""

    async def scenario() -> None:
        port = free_port()

        def listener() -> MllpListener:
            return MllpListener(
                _runtime(
                    tmp_path, FakeChannels([MllpSource("one", port=port)]), FakeInbox(), mllp_processes=2
                )
            )

        first = listener()
        await first.start()
        try:
            with pytest.raises(ConfigurationError, match="in use"):
                await listener().start()
            assert b"MSA|AA|M1" in await _ack(port, "M1")  # the first one still serves
        finally:
            await first.stop()

    asyncio.run(scenario())
