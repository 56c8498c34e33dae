"""Contracts between transports (adapters/mllp ...) and the message store/pipeline (engine/messaging).

* A source listener (adapters/mllp) hands every received message to the ``inbox`` port and renders the
  returned :class:`ReceiveOutcome` as its protocol's acknowledgement. It acknowledges positively only when
  ``outcome.stored`` is true.
* The ``channels`` port tells listeners which sources to open (:class:`MllpSource`) and notifies them when
  channel files are reloaded.
* Outbound transports register a :class:`Destination` factory per URL scheme on the ``destinations`` port,
  so the pipeline can send to ``mllp://``, ``http(s)://``, ``file://``, ``dicom://`` without importing them.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import datetime
from typing import Protocol

from engine.errors import Issue
from engine.hl7v2.header import MessageHeader

__all__ = [
    "InboundMessage",
    "ReceiveOutcome",
    "Inbox",
    "MllpSource",
    "ChannelDirectory",
    "SendResult",
    "Destination",
    "DestinationFactory",
    "DestinationRegistry",
]


@dataclass(frozen=True)
class InboundMessage:
    channel: str
    raw: bytes
    """The message exactly as received, without MLLP framing."""
    header: MessageHeader | None
    """None when the MSH could not be parsed (the message is still kept, and answered AR)."""
    peer: str
    """Remote address ``host:port`` (or the TLS subject when available)."""
    received_at: datetime
    problems: tuple[Issue, ...] = ()
    """Why the transport could not read the message (an unparseable MSH, a batch whose counts disagree):
    the inbox keeps the message as rejected with these as the reason."""


@dataclass(frozen=True)
class ReceiveOutcome:
    stored: bool
    """True once the raw message is durably committed: only then may an AA/CA be sent."""
    message_id: int | None
    ack_code: str
    """Table 0008 code to answer: AA/AE/AR (original mode) or CA/CE/CR (enhanced accept ACK)."""
    duplicate: bool = False
    issues: list[Issue] = field(default_factory=list)
    """Problems to report in ERR segments (location such as ``MSH-9``, text, Table 0357 code in ``code``)."""
    application_ack: bytes | None = None
    """A ready application ACK when the channel answers after processing (original mode), else None."""


class Inbox(Protocol):
    async def receive(self, message: InboundMessage) -> ReceiveOutcome:
        """Store ``message`` durably (group-committed) and decide the acknowledgement."""
        ...


@dataclass(frozen=True)
class MllpSource:
    channel: str
    host: str = "127.0.0.1"
    port: int = 2575
    tls_cert: str | None = None
    tls_key: str | None = None
    tls_client_ca: str | None = None
    """When set, client certificates are required and verified against this CA bundle."""
    max_frame_bytes: int = 10 * 1024 * 1024
    idle_timeout_s: float = 300.0
    default_charset: str = "utf-8"
    allowed_senders: tuple[str, ...] = ()
    """``MSH-3^MSH-4`` patterns (``*`` wildcard); empty = anyone."""
    allowed_peers: tuple[str, ...] = ()
    """CIDR or addresses; empty = anyone (loopback binding is the default protection)."""


class ChannelDirectory(Protocol):
    def mllp_sources(self) -> list[MllpSource]: ...

    def on_change(self, callback: Callable[[], None]) -> None:
        """Call ``callback`` after channel files were reloaded (listeners re-open changed sources)."""
        ...


@dataclass(frozen=True)
class SendResult:
    ok: bool
    response: str = ""
    """What the peer answered (the ACK text, HTTP status line ...), kept in the message's stage."""
    retryable: bool = True
    """False for a definitive rejection (AR, HTTP 4xx): retrying cannot help."""


class Destination(Protocol):
    async def send(self, payload: bytes, *, content_type: str) -> SendResult: ...

    async def close(self) -> None: ...


#: builds a Destination from its URL and options (the channel file's destination block)
DestinationFactory = Callable[[str, dict[str, object]], Destination]


class DestinationRegistry(Protocol):
    """The ``destinations`` port (added by the messaging work): outbound transports register their scheme
    in their ``install(runtime)``: ``runtime.port("destinations").register("mllp", factory)``."""

    def register(self, scheme: str, factory: DestinationFactory) -> None: ...

    def schemes(self) -> list[str]: ...

    def create(self, url: str, options: dict[str, object]) -> Destination: ...
