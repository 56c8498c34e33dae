"""Helpers of the MLLP tests (a unique module name, imported by the test modules and conftest.py): an
in-memory inbox twin, a server running in a background event loop, and a throw-away CA with server and
client certificates for TLS."""

from __future__ import annotations

import asyncio
import datetime as dt
import threading
from dataclasses import dataclass, field
from pathlib import Path

from adapters.mllp.server import MllpServer
from adapters.mllp.settings import MllpSettings
from engine.errors import StoreUnavailable
from engine.messaging.ports import InboundMessage, MllpSource, ReceiveOutcome

CORPUS_DIR = Path(__file__).parents[2] / "fixtures" / "hl7v2"


@dataclass
class FakeInbox:
    """The inbox port in memory: stores, detects duplicates on MSH-3/4/10, answers like the real one
    (AA/CA by MSH-15/16, AR without a header). Knobs make it fail, lie or answer late."""

    fail: bool = False
    lie: bool = False  # answer AA without storing
    delay: float = 0.0
    application_ack: bytes | None = None
    stored: list[InboundMessage] = field(default_factory=list)
    seen: dict[tuple[str, str, str], str] = field(default_factory=dict)

    async def receive(self, message: InboundMessage) -> ReceiveOutcome:
        if self.delay:
            await asyncio.sleep(self.delay)
        if self.fail:
            raise StoreUnavailable("database down")
        h = message.header
        enhanced = h is not None and h.enhanced_mode
        if self.lie:
            return ReceiveOutcome(stored=False, message_id=None, ack_code="AA")
        if h is None:
            self.stored.append(message)
            return ReceiveOutcome(True, len(self.stored), "CR" if enhanced else "AR")
        key = (h.sending_application, h.sending_facility, h.control_id)
        if key in self.seen:
            return ReceiveOutcome(True, None, self.seen[key], duplicate=True)
        self.stored.append(message)
        code = "CA" if enhanced else "AA"
        self.seen[key] = code
        return ReceiveOutcome(True, len(self.stored), code, application_ack=self.application_ack)


class BackgroundServer:
    """An MllpServer served by an event loop in a thread, so blocking clients (python-hl7's MLLPClient,
    raw sockets) can be used from the test."""

    def __init__(self, source: MllpSource, inbox: FakeInbox, settings: MllpSettings | None = None):
        self.loop = asyncio.new_event_loop()
        self.thread = threading.Thread(target=self.loop.run_forever, daemon=True)
        self.thread.start()
        self.server = MllpServer(source, inbox, settings)
        self.inbox = inbox
        self.call(self.server.start())

    def call(self, coro):  # type: ignore[no-untyped-def]
        return asyncio.run_coroutine_threadsafe(coro, self.loop).result(30)

    @property
    def port(self) -> int:
        return self.server.port

    def close(self) -> None:
        self.call(self.server.stop())
        self.loop.call_soon_threadsafe(self.loop.stop)
        self.thread.join(10)
        self.loop.close()


@dataclass
class Pki:
    ca: Path
    server_cert: Path
    server_key: Path
    client_cert: Path
    client_key: Path


def write_pki(folder: Path) -> Pki:
    from cryptography import x509
    from cryptography.hazmat.primitives import hashes, serialization
    from cryptography.hazmat.primitives.asymmetric import ec
    from cryptography.x509.oid import NameOID

    now = dt.datetime.now(dt.UTC)

    def name(cn: str) -> x509.Name:
        return x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, cn)])

    def key_pem(key: ec.EllipticCurvePrivateKey) -> bytes:
        return key.private_bytes(
            serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption()
        )

    ca_key = ec.generate_private_key(ec.SECP256R1())
    ca = (
        x509.CertificateBuilder()
        .subject_name(name("Conduit test CA"))
        .issuer_name(name("Conduit test CA"))
        .public_key(ca_key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - dt.timedelta(minutes=5))
        .not_valid_after(now + dt.timedelta(days=1))
        .add_extension(x509.BasicConstraints(ca=True, path_length=None), critical=True)
        .add_extension(
            x509.KeyUsage(False, False, False, False, False, True, True, False, False), critical=True
        )
        .add_extension(x509.SubjectKeyIdentifier.from_public_key(ca_key.public_key()), critical=False)
        .sign(ca_key, hashes.SHA256())
    )

    def leaf(cn: str, server: bool) -> tuple[bytes, bytes]:
        key = ec.generate_private_key(ec.SECP256R1())
        builder = (
            x509.CertificateBuilder()
            .subject_name(name(cn))
            .issuer_name(ca.subject)
            .public_key(key.public_key())
            .serial_number(x509.random_serial_number())
            .not_valid_before(now - dt.timedelta(minutes=5))
            .not_valid_after(now + dt.timedelta(days=1))
            .add_extension(x509.BasicConstraints(ca=False, path_length=None), critical=True)
            .add_extension(
                x509.AuthorityKeyIdentifier.from_issuer_public_key(ca_key.public_key()), critical=False
            )
            .add_extension(
                x509.ExtendedKeyUsage(
                    [
                        x509.oid.ExtendedKeyUsageOID.SERVER_AUTH
                        if server
                        else x509.oid.ExtendedKeyUsageOID.CLIENT_AUTH
                    ]
                ),
                critical=False,
            )
        )
        if server:
            import ipaddress

            builder = builder.add_extension(
                x509.SubjectAlternativeName(
                    [x509.DNSName("localhost"), x509.IPAddress(ipaddress.ip_address("127.0.0.1"))]
                ),
                critical=False,
            )
        cert = builder.sign(ca_key, hashes.SHA256())
        return cert.public_bytes(serialization.Encoding.PEM), key_pem(key)

    folder.mkdir(parents=True, exist_ok=True)
    pki = Pki(*(folder / n for n in ("ca.pem", "server.pem", "server.key", "client.pem", "client.key")))
    pki.ca.write_bytes(ca.public_bytes(serialization.Encoding.PEM))
    cert, key = leaf("localhost", True)
    pki.server_cert.write_bytes(cert)
    pki.server_key.write_bytes(key)
    cert, key = leaf("lab-analyzer-1", False)
    pki.client_cert.write_bytes(cert)
    pki.client_key.write_bytes(key)
    return pki
