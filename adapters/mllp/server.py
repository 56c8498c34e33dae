"""The asyncio MLLP server of one :class:`~engine.messaging.ports.MllpSource`.

Each connection is an :class:`asyncio.Protocol` feeding a :class:`FrameDecoder`; its frames are handled one
after the other by a task of its own (answers go back in the order the messages came, and a sender that
pipelines frames is paced by pausing reads). TCP_NODELAY is set on every socket: an ACK is one small
write that must not wait for Nagle's algorithm.

Connections are closed after ``idle_timeout_s`` without data (never while a message is being stored),
after an oversize frame (answered AR first), and on shutdown (after ``stop_grace_s`` for messages being
stored).
"""

from __future__ import annotations

import asyncio
import logging
import socket
import ssl
from collections import deque
from typing import cast

from adapters.mllp import metrics
from adapters.mllp.framing import FrameDecoder, Oversize, frame
from adapters.mllp.handler import MessageHandler
from adapters.mllp.settings import MllpSettings
from adapters.mllp.tls import server_context
from engine.messaging.ports import Inbox, MllpSource

__all__ = ["MllpServer"]

log = logging.getLogger(__name__)

_PAUSE_AT = 64  # frames queued on one connection before reading pauses
_RESUME_AT = 16
_RUN = 32  # pipelined frames of one connection handed to the inbox at once


def _subject(cert: dict | None) -> str | None:
    if not cert:
        return None
    parts = [f"{k}={v}" for rdn in cert.get("subject", ()) for (k, v) in rdn]
    return ",".join(parts) or None


class _Connection(asyncio.Protocol):
    def __init__(self, server: MllpServer):
        self.server = server
        self.loop = asyncio.get_running_loop()
        self.decoder = FrameDecoder(server.source.max_frame_bytes)
        self.queue: deque[bytes | Oversize] = deque()
        self.wakeup = asyncio.Event()
        self.writable = asyncio.Event()
        self.writable.set()
        self.transport: asyncio.Transport | None = None
        self.peer = "?"
        self.closed = False
        self.eof = False
        self.busy = False
        self.settled = asyncio.Event()  # set while no frame is being handled (shutdown waits for it)
        self.settled.set()
        self.paused = False
        self.last_activity = self.loop.time()
        self.timer: asyncio.TimerHandle | None = None
        self.task: asyncio.Task[None] | None = None

    # -- asyncio.Protocol -------------------------------------------------------------------------------
    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        # uvloop's transports implement the asyncio.Transport interface without subclassing it
        self.transport = cast(asyncio.Transport, transport)
        sock = transport.get_extra_info("socket")
        if sock is not None:
            try:
                sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
            except OSError:
                pass
        peername = transport.get_extra_info("peername") or ("?", 0)
        host, port = str(peername[0]), peername[1]
        # the inbox checks allowed_peers on this "host:port" form; a TLS subject is only logged
        self.peer = f"[{host}]:{port}" if ":" in host else f"{host}:{port}"
        subject = _subject(transport.get_extra_info("peercert"))
        if subject:
            log.info(
                "mllp %s: TLS client %s connected from %s", self.server.source.channel, subject, self.peer
            )
        if len(self.server.connections) >= self.server.settings.max_connections:
            log.warning(
                "mllp %s: too many connections; closing one from %s", self.server.source.channel, host
            )
            transport.abort()
            return
        self.server.connections.add(self)
        self.server.counts["connections"] += 1
        self.server.metric_connections.inc()
        self.task = self.loop.create_task(self._run())
        self._arm(self.server.source.idle_timeout_s)

    def data_received(self, data: bytes) -> None:
        self.last_activity = self.loop.time()
        items = self.decoder.feed(data)
        if items:
            self.queue.extend(items)
            self.wakeup.set()
            if len(self.queue) >= _PAUSE_AT and not self.paused and self.transport is not None:
                self.paused = True
                self.transport.pause_reading()

    def eof_received(self) -> bool:
        self.eof = True  # the peer finished sending: answer what is queued, then close
        self.wakeup.set()
        # keeping a half-closed connection open works for TCP only (asyncio's TLS transport cannot)
        return self.server.ssl is None

    def connection_lost(self, exc: Exception | None) -> None:
        self.closed = True
        self.writable.set()
        self.wakeup.set()
        if self.timer is not None:
            self.timer.cancel()
        if self in self.server.connections:
            self.server.connections.discard(self)
            self.server.metric_connections.dec()

    def pause_writing(self) -> None:
        self.writable.clear()

    def resume_writing(self) -> None:
        self.writable.set()

    # -- work ----------------------------------------------------------------------------------------------
    def _arm(self, delay: float) -> None:
        self.timer = self.loop.call_later(max(delay, 0.01), self._idle_check)

    def _idle_check(self) -> None:
        if self.closed or self.transport is None:
            return
        idle = self.loop.time() - self.last_activity
        limit = self.server.source.idle_timeout_s
        if idle >= limit and not self.busy and not self.queue:
            log.info("mllp %s: closing idle connection from %s", self.server.source.channel, self.peer)
            self.server.counts["idle_closed"] += 1
            metrics.IDLE_CLOSED.labels(self.server.source.channel).inc()
            self.transport.close()
            return
        self._arm(limit - idle if idle < limit else limit)

    async def _run(self) -> None:
        handler = self.server.handler
        transport = self.transport
        assert transport is not None
        try:
            while True:
                while not self.queue:
                    if self.closed or self.eof:
                        return
                    self.wakeup.clear()
                    await self.wakeup.wait()
                if isinstance(self.queue[0], Oversize):
                    item = self.queue.popleft()
                    assert isinstance(item, Oversize)
                    self.server.counts["oversize"] += 1
                    metrics.OVERSIZE.labels(self.server.source.channel).inc()
                    if not self.closed:
                        transport.write(frame(handler.oversize(item, self.peer)))
                    return
                # frames the sender pipelined go to the inbox together (its group commit then stores them in
                # one transaction); they are started in arrival order and answered in that order
                run: list[bytes] = []
                while self.queue and len(run) < _RUN and isinstance(self.queue[0], bytes):
                    run.append(self.queue.popleft())  # type: ignore[arg-type]
                if self.paused and len(self.queue) <= _RESUME_AT and not self.closed:
                    self.paused = False
                    transport.resume_reading()
                self.server.metric_frames.inc(len(run))
                self.busy = True
                self.settled.clear()
                try:
                    if len(run) == 1:  # the usual send-wait-ACK sender: no task needed
                        pending = [handler.handle(run[0], self.peer)]
                    else:
                        pending = [self.loop.create_task(handler.handle(p, self.peer)) for p in run]
                    for waiting in pending:
                        answer = await waiting
                        if answer is not None and not self.closed:
                            await self.writable.wait()
                            if not self.closed:
                                transport.write(frame(answer))
                finally:
                    self.busy = False
                    self.settled.set()
                    self.last_activity = self.loop.time()
        except asyncio.CancelledError:
            raise
        except Exception:  # a bug here must cost one connection, not the listener
            log.exception("mllp %s: connection from %s failed", self.server.source.channel, self.peer)
        finally:
            channel = self.server.source.channel
            self.server.counts["junk_bytes"] += self.decoder.junk_bytes
            self.server.counts["abandoned_frames"] += self.decoder.abandoned_frames
            metrics.JUNK_BYTES.labels(channel).inc(self.decoder.junk_bytes)
            metrics.ABANDONED_FRAMES.labels(channel).inc(self.decoder.abandoned_frames)
            if self.decoder.abandoned_frames:
                log.warning(
                    "mllp %s: %d frame(s) from %s had no end byte and were dropped unanswered",
                    self.server.source.channel,
                    self.decoder.abandoned_frames,
                    self.peer,
                )
            if not self.closed:
                transport.close()


def ensure_port_free(host: str, port: int) -> None:
    """OSError (address in use) when something listens on ``host:port``, even with SO_REUSEPORT: a bind
    without that option is refused by any listener there."""
    if port == 0:
        return
    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    with socket.socket(family, socket.SOCK_STREAM) as probe:
        probe.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)  # as the listener: TIME_WAIT is no owner
        probe.bind((host, port))


class MllpServer:
    """Serves one MLLP source until :meth:`stop`."""

    def __init__(
        self,
        source: MllpSource,
        inbox: Inbox,
        settings: MllpSettings | None = None,
        *,
        reuse_port: bool = False,
    ):
        self.source = source
        #: share the port with the other ingest processes of ``conduit serve --mllp-processes N``
        self.reuse_port = reuse_port
        self.settings = settings or MllpSettings()
        self.handler = MessageHandler(source, inbox)
        self.connections: set[_Connection] = set()
        self.counts = {
            "connections": 0,
            "oversize": 0,
            "idle_closed": 0,
            "junk_bytes": 0,
            "abandoned_frames": 0,
        }
        self._server: asyncio.Server | None = None
        self.metric_connections = metrics.CONNECTIONS.labels(source.channel)
        self.metric_frames = metrics.FRAMES.labels(source.channel)
        self.ssl: ssl.SSLContext | None = (
            server_context(source.tls_cert, source.tls_key, source.tls_client_ca) if source.tls_cert else None
        )

    @property
    def url(self) -> str:
        return f"mllp{'s' if self.ssl else ''}://{self.source.host}:{self.port}"

    @property
    def port(self) -> int:
        if self._server is not None and self._server.sockets:
            return int(self._server.sockets[0].getsockname()[1])
        return self.source.port

    async def start(self) -> None:
        loop = asyncio.get_running_loop()
        self._server = await loop.create_server(
            lambda: _Connection(self),
            self.source.host,
            self.source.port,
            ssl=self.ssl,
            ssl_handshake_timeout=self.settings.tls_handshake_timeout_s if self.ssl else None,
            reuse_address=True,
            reuse_port=self.reuse_port or None,
            backlog=512,
        )

    async def stop(self) -> None:
        if self._server is None:
            return
        self._server.close()
        # messages being stored get their ACK written before the connection closes; a sender whose ACK
        # is lost resends, and the inbox answers the duplicate with the original code
        waiting = [asyncio.ensure_future(c.settled.wait()) for c in self.connections if c.busy]
        if waiting:
            _, late = await asyncio.wait(waiting, timeout=self.settings.stop_grace_s)
            for future in late:
                future.cancel()
        for connection in list(self.connections):
            if connection.task is not None:
                connection.task.cancel()
            if connection.transport is not None:
                if connection.busy:
                    connection.transport.abort()
                else:
                    connection.transport.close()  # flushes the ACKs already written
        await self._server.wait_closed()
        self._server = None
