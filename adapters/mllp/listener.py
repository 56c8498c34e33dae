"""The ``mllp`` listener of ``conduit serve``: one :class:`MllpServer` per MLLP source of the ``channels``
port, storing through the ``inbox`` port; re-synchronised when channel files are reloaded (SIGHUP).

A source on a non-loopback address needs TLS (``source: tls: {cert, key}``) unless ``--insecure``: HL7 v2
carries patient data in clear text otherwise.
"""

from __future__ import annotations

import asyncio
import logging

from adapters.mllp import metrics
from adapters.mllp.server import MllpServer, ensure_port_free
from adapters.mllp.settings import MllpSettings
from engine.errors import ConfigurationError
from engine.messaging.ports import MllpSource
from engine.runtime import Runtime
from engine.settings import is_loopback

__all__ = ["MllpListener", "create"]

log = logging.getLogger(__name__)


class MllpListener:
    name = "mllp"

    def __init__(self, runtime: Runtime, settings: MllpSettings | None = None):
        self.runtime = runtime
        self.settings = settings or MllpSettings()
        self.servers: dict[str, MllpServer] = {}
        self._lock = asyncio.Lock()
        self._loop: asyncio.AbstractEventLoop | None = None
        self._subscribed = False
        self._tasks: set[asyncio.Task[None]] = set()

    def _check(self, source: MllpSource) -> None:
        if not is_loopback(source.host) and not source.tls_cert and not self.runtime.settings.insecure:
            raise ConfigurationError(
                f"channel {source.channel!r}: refusing MLLP on {source.host}:{source.port} without TLS; set "
                "source.tls in the channel file, bind 127.0.0.1, or pass --insecure (lab use only)"
            )

    async def start(self) -> None:
        self._loop = asyncio.get_running_loop()
        metrics.PROCESSES.set(self.runtime.settings.mllp_processes)
        await self.sync(raise_errors=True)
        if not self._subscribed:
            self.runtime.port("channels").on_change(self._changed)
            self._subscribed = True

    def _changed(self) -> None:
        """Channel files were reloaded (maybe from another thread): re-synchronise on the event loop."""
        if self._loop is not None and not self._loop.is_closed():
            self._loop.call_soon_threadsafe(self._schedule_sync)

    def _schedule_sync(self) -> None:
        task = asyncio.get_running_loop().create_task(self.sync())
        self._tasks.add(task)  # keep a reference until done (the loop holds tasks only weakly)
        task.add_done_callback(self._tasks.discard)

    async def sync(self, raise_errors: bool = False) -> None:
        """Open the sources the channels port lists, close the ones gone, reopen the ones changed."""
        async with self._lock:
            inbox = self.runtime.port("inbox")
            wanted = {s.channel: s for s in self.runtime.port("channels").mllp_sources()}
            for name, server in list(self.servers.items()):
                if wanted.get(name) != server.source:
                    await server.stop()
                    del self.servers[name]
                    log.info("mllp: closed %s (%s)", server.url, name)
            for name, source in wanted.items():
                if name in self.servers:
                    continue
                try:
                    self._check(source)
                    shared = self.runtime.settings.mllp_processes > 1
                    if shared and raise_errors and not self.runtime.ingest_child:
                        # SO_REUSEPORT would let this main process join a port another server (a second
                        # `conduit serve` of the same user) listens on and silently take part of its
                        # traffic: at start, the main process must find the port free
                        ensure_port_free(source.host, source.port)
                    server = MllpServer(source, inbox, self.settings, reuse_port=shared)
                    await server.start()
                except (ConfigurationError, OSError) as exc:
                    if raise_errors:
                        await self._stop_all()
                        raise ConfigurationError(f"mllp channel {name!r}: {exc}") from exc
                    log.error("mllp: cannot open channel %s: %s", name, exc)
                    continue
                self.servers[name] = server
                log.info("mllp: listening on %s (%s)", server.url, name)

    async def _stop_all(self) -> None:
        for server in list(self.servers.values()):
            await server.stop()
        self.servers.clear()

    async def stop(self) -> None:
        async with self._lock:
            await self._stop_all()

    def describe(self) -> str:
        if not self.servers:
            return "HL7 v2 MLLP  (no MLLP source configured)"
        return "HL7 v2 MLLP  " + ", ".join(f"{s.url} ({name})" for name, s in self.servers.items())


def create(runtime: Runtime) -> MllpListener:
    return MllpListener(runtime)
