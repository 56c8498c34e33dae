"""The FHIR REST listener for ``conduit serve``: uvicorn serving :func:`build_app` inside the running loop.

The runtime owns the process signals (SIGTERM/SIGINT stop every listener together), so uvicorn's own
signal capture is switched off. The socket is bound here, before uvicorn starts, so a busy port is an
``OSError`` from :meth:`start` (``conduit serve`` reports it) rather than uvicorn exiting the process.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import socket
from collections.abc import Iterator
from typing import Any

import anyio.to_thread
import uvicorn

from adapters.fhir_rest.app import BASE_PATH, build_app
from adapters.fhir_rest.settings import FhirRestSettings

__all__ = ["FhirListener", "create"]

log = logging.getLogger(__name__)


class _Server(uvicorn.Server):
    @contextlib.contextmanager
    def capture_signals(self) -> Iterator[None]:
        yield  # the runtime's loop handles SIGINT/SIGTERM and calls FhirListener.stop()


def _bind(host: str, port: int) -> socket.socket:
    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    sock = socket.socket(family, socket.SOCK_STREAM)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    # accepted connections inherit TCP_NODELAY on Linux; without it a response written as headers + body
    # waits for the client's delayed ACK (~40 ms per request)
    sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
    try:
        sock.bind((host, port))
    except OSError:
        sock.close()
        raise
    sock.listen(1024)
    sock.setblocking(False)
    return sock


class FhirListener:
    name = "fhir"

    def __init__(self, runtime: Any, settings: FhirRestSettings | None = None) -> None:
        self.runtime = runtime
        self.settings = settings or FhirRestSettings()
        core = runtime.settings
        self.host: str = core.host
        self.port: int = core.fhir_port
        self.tls = bool(core.tls_cert and core.tls_key)
        self._server: _Server | None = None
        self._task: asyncio.Task[None] | None = None
        self._socket: socket.socket | None = None

    def describe(self) -> str:
        scheme = "https" if self.tls else "http"
        return f"FHIR R4  {scheme}://{self.host}:{self.port}{BASE_PATH}"

    async def start(self) -> None:
        core = self.runtime.settings
        config = uvicorn.Config(
            build_app(self.runtime, self.settings),
            host=self.host,
            port=self.port,
            lifespan="off",
            access_log=False,
            log_config=None,
            server_header=False,
            timeout_graceful_shutdown=10,
            ssl_certfile=str(core.tls_cert) if self.tls else None,
            ssl_keyfile=str(core.tls_key) if self.tls else None,
        )
        # the thread pool that runs blocking handlers (run_in_threadpool) belongs to this loop
        anyio.to_thread.current_default_thread_limiter().total_tokens = self.settings.worker_threads
        self._socket = _bind(self.host, self.port)
        if self.port == 0:
            self.port = self._socket.getsockname()[1]
        self._server = _Server(config)
        self._task = asyncio.create_task(self._server.serve(sockets=[self._socket]))
        while not self._server.started:
            if self._task.done():
                self._task.result()  # raises what stopped it
                raise OSError("the FHIR listener stopped while starting")
            await asyncio.sleep(0.01)

    async def stop(self) -> None:
        if self._server is None or self._task is None:
            return
        self._server.should_exit = True
        app = self._server.config.app
        try:
            await asyncio.wait_for(self._task, timeout=15)
        except (TimeoutError, asyncio.CancelledError):
            self._task.cancel()
        finally:
            if self._socket is not None:
                self._socket.close()
            reads = getattr(getattr(app, "state", None), "read_units", None)
            if reads is not None:
                reads.dispose()
            raw_reads = getattr(getattr(app, "state", None), "raw_reads", None)
            if raw_reads is not None:
                await raw_reads.close()
            self._server = None
            self._task = None


def create(runtime: Any) -> FhirListener:
    return FhirListener(runtime)
