"""The outbound MLLP sender: the :class:`~engine.messaging.ports.Destination` for ``mllp://host:port``
(``mllps://`` or ``options.tls`` for TLS).

* One message in flight per connection; the pipeline awaits :meth:`MllpDestination.send`, and a lock keeps
  concurrent callers in order, so the order of a destination is the order of its sends.
* The ACK is matched on MSA-2 = MSH-10 of what was sent. No ACK within ``ack_timeout``, an ACK for another
  message, or a cancelled send resets the connection: the next frame on it can never be mistaken for the
  answer to this one, and the message does NOT count as sent.
* MSA-1 AA/CA is success; AE/CE a retryable error; AR/CR a definitive rejection (not retryable).
* A failed connect waits out a backoff (doubling from ``reconnect_initial`` to ``reconnect_max``) before
  the next attempt.

Options (the channel file's ``options:`` block of the destination)::

    options:
      ack_timeout: 30s          # wait for the ACK
      connect_timeout: 10s
      reconnect_initial: 200ms
      reconnect_max: 5s
      tls: {ca: ca.pem, cert: client.pem, key: client.key, verify: true}   # or tls: true
"""

from __future__ import annotations

import asyncio
import logging
import socket
import ssl
import time
from urllib.parse import urlsplit

from adapters.mllp.framing import FrameDecoder, Oversize, frame
from adapters.mllp.tls import client_context
from engine.errors import ConfigurationError, InvalidInput
from engine.hl7v2.header import parse_header
from engine.messaging.durations import parse_duration
from engine.messaging.ports import SendResult

__all__ = ["MllpDestination", "create_destination", "read_ack"]

log = logging.getLogger(__name__)

_OK, _RETRY, _REJECT = ("AA", "CA"), ("AE", "CE"), ("AR", "CR")
_MAX_ACK_BYTES = 1024 * 1024


def read_ack(ack: bytes) -> tuple[str, str]:
    """MSA-1 and MSA-2 of an ACK (empty strings when it has no MSA)."""
    for segment in ack.replace(b"\n", b"\r").split(b"\r"):
        if segment.startswith(b"MSA") and len(segment) > 3:
            fields = segment.split(segment[3:4])
            code = fields[1].decode("latin-1").strip() if len(fields) > 1 else ""
            control = fields[2].decode("latin-1") if len(fields) > 2 else ""
            return code, control
    return "", ""


def _seconds(options: dict[str, object], key: str, default: float) -> float:
    value = options.get(key)
    if value is None:
        return default
    try:
        return parse_duration(value)
    except ValueError as exc:
        raise ConfigurationError(f"mllp destination option {key}: {exc}") from exc


class MllpDestination:
    """Sends HL7 v2 messages to one MLLP peer and waits for each ACK."""

    def __init__(self, url: str, options: dict[str, object] | None = None):
        options = dict(options or {})
        parts = urlsplit(url)
        if parts.scheme not in ("mllp", "mllps") or not parts.hostname or not parts.port:
            raise ConfigurationError(f"{url!r}: an MLLP destination is mllp://HOST:PORT")
        self.url = url
        self.host, self.port = parts.hostname, parts.port
        self.ack_timeout = _seconds(options, "ack_timeout", 30.0)
        self.connect_timeout = _seconds(options, "connect_timeout", 10.0)
        self.reconnect_initial = _seconds(options, "reconnect_initial", 0.2)
        self.reconnect_max = _seconds(options, "reconnect_max", 5.0)
        tls = options.get("tls")
        self.ssl: ssl.SSLContext | None = None
        if parts.scheme == "mllps" or tls:
            t = tls if isinstance(tls, dict) else {}
            self.ssl = client_context(t.get("ca"), t.get("cert"), t.get("key"), bool(t.get("verify", True)))
        self._lock = asyncio.Lock()
        self._reader: asyncio.StreamReader | None = None
        self._writer: asyncio.StreamWriter | None = None
        self._decoder = FrameDecoder(_MAX_ACK_BYTES)
        self._backoff = 0.0
        self._next_connect = 0.0
        self.connects = 0  # connections opened (tests look at reconnects)

    async def _connect(self) -> None:
        wait = self._next_connect - time.monotonic()
        if wait > 0:
            await asyncio.sleep(wait)
        try:
            # asyncio.timeout, not wait_for: Python 3.11's wait_for may swallow a cancellation (gh-86296)
            async with asyncio.timeout(self.connect_timeout):
                self._reader, self._writer = await asyncio.open_connection(self.host, self.port, ssl=self.ssl)
        except (OSError, TimeoutError, ssl.SSLError) as exc:
            self._backoff = min(
                self.reconnect_max, self._backoff * 2 if self._backoff else self.reconnect_initial
            )
            self._next_connect = time.monotonic() + self._backoff
            raise ConnectionError(
                f"cannot connect to {self.host}:{self.port}: {exc or type(exc).__name__}"
            ) from exc
        sock = self._writer.get_extra_info("socket")
        if sock is not None:
            sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        self._backoff = 0.0
        self._decoder = FrameDecoder(_MAX_ACK_BYTES)
        self.connects += 1

    def _peer_closed(self) -> bool:
        """The peer hung up while the connection was idle (receivers close idle connections): reconnect
        before sending rather than write into a dead socket and fail the attempt."""
        return self._reader is not None and self._reader.at_eof()

    def _reset(self) -> None:
        if self._writer is not None:
            self._writer.transport.abort()
        self._reader = self._writer = None

    async def _read_ack(self) -> bytes:
        assert self._reader is not None
        pending: list[bytes | Oversize] = []
        while not pending:
            data = await self._reader.read(65536)
            if not data:
                raise ConnectionError("the peer closed the connection before acknowledging")
            pending = self._decoder.feed(data)
        first = pending[0]
        if isinstance(first, Oversize) or len(pending) > 1:
            raise ConnectionError("the peer answered with more than one frame")
        return first

    async def send(self, payload: bytes, *, content_type: str = "x-application/hl7-v2+er7") -> SendResult:
        try:
            header = parse_header(payload)
        except InvalidInput as exc:
            return SendResult(False, f"not an HL7 v2 message: {exc}", retryable=False)
        async with self._lock:
            try:
                if self._writer is None or self._writer.is_closing() or self._peer_closed():
                    self._reset()
                    await self._connect()
                assert self._writer is not None
                self._writer.write(frame(payload))
                await self._writer.drain()
                async with asyncio.timeout(self.ack_timeout):
                    ack = await self._read_ack()
            except TimeoutError:
                self._reset()
                return SendResult(False, f"no ACK within {self.ack_timeout:g}s", retryable=True)
            except (ConnectionError, OSError, ssl.SSLError) as exc:
                self._reset()
                return SendResult(False, str(exc) or type(exc).__name__, retryable=True)
            except BaseException:  # cancelled (the pipeline's timeout): whatever arrives later is stale
                self._reset()
                raise
            code, control = read_ack(ack)
            text = ack.decode("utf-8", errors="replace")
            if control != header.control_id:
                self._reset()
                log.warning(
                    "mllp destination %s:%s: ACK for another message; connection reset", self.host, self.port
                )
                return SendResult(
                    False, f"ACK MSA-2 does not match MSH-10 of the message: {text}", retryable=True
                )
        if code in _OK:
            return SendResult(True, text)
        if code in _REJECT:
            return SendResult(False, text, retryable=False)
        return SendResult(False, text, retryable=True)  # AE/CE, or no MSA-1 at all

    async def close(self) -> None:
        async with self._lock:
            if self._writer is not None:
                self._writer.close()
                try:
                    await self._writer.wait_closed()
                except (OSError, ssl.SSLError):
                    pass
            self._reader = self._writer = None


def create_destination(url: str, options: dict[str, object]) -> MllpDestination:
    """The ``mllp`` factory of the ``destinations`` port."""
    return MllpDestination(url, options)
