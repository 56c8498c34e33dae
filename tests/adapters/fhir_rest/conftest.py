"""Fixtures for the FHIR REST tests: the real listener on a free loopback port, in a thread with its own
event loop, over the ``runtime`` fixture (SQLite, and PostgreSQL when configured)."""

from __future__ import annotations

import asyncio
import threading
from collections.abc import Iterator
from typing import Any

import httpx
import pytest

from adapters.fhir_rest.listener import FhirListener
from adapters.fhir_rest.settings import FhirRestSettings


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


@pytest.fixture
def server(runtime: Any) -> Iterator[ThreadedListener]:
    with ThreadedListener(runtime) as running:
        yield running


@pytest.fixture
def fhir(server: ThreadedListener) -> Iterator[httpx.Client]:
    """An httpx client whose base is the FHIR base URL (``/fhir``)."""
    with httpx.Client(base_url=server.base + "/fhir", timeout=30) as client:
        yield client
