"""A FHIR listener served from a background thread, for tests and benchmarks over real loopback sockets."""

from __future__ import annotations

import asyncio
import socket
import threading
from typing import Any

import httpx

from adapters.fhir_rest.listener import FhirListener
from adapters.fhir_rest.settings import FhirRestSettings

__all__ = ["ThreadedListener", "nodelay_transport"]


def nodelay_transport() -> httpx.HTTPTransport:
    """httpx writes a request in pieces; without TCP_NODELAY each waits ~40 ms for a delayed ACK."""
    return httpx.HTTPTransport(socket_options=[(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)])


class ThreadedListener:
    """A started :class:`FhirListener` (port 0: the OS picks) served from a background thread."""

    def __init__(self, runtime: Any, settings: FhirRestSettings | None = None) -> None:
        self.listener = FhirListener(runtime, settings or FhirRestSettings())
        self.listener.host, self.listener.port = "127.0.0.1", 0
        self._loop = asyncio.new_event_loop()
        self._stop: asyncio.Event | None = None
        self._ready = threading.Event()
        self._error: BaseException | None = None
        self._thread = threading.Thread(target=self._run, daemon=True)

    def _run(self) -> None:
        async def main() -> None:
            self._stop = asyncio.Event()
            try:
                await self.listener.start()
            except BaseException as exc:  # surfaced by __enter__
                self._error = exc
                self._ready.set()
                return
            self._ready.set()
            await self._stop.wait()
            await self.listener.stop()

        self._loop.run_until_complete(main())
        self._loop.close()

    @property
    def base(self) -> str:
        return f"http://127.0.0.1:{self.listener.port}"

    def __enter__(self) -> ThreadedListener:
        self._thread.start()
        self._ready.wait(30)
        if self._error is not None:
            raise self._error
        return self

    def __exit__(self, *exc: object) -> None:
        if self._stop is not None and not self._loop.is_closed():
            self._loop.call_soon_threadsafe(self._stop.set)
        self._thread.join(20)
