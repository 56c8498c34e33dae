"""TLS contexts for MLLP: the listener's server context (optionally requiring client certificates) and the
sender's client context. TLS 1.2 is the floor (HL7/IHE ATNA profiles require at least that)."""

from __future__ import annotations

import ssl

from engine.errors import ConfigurationError

__all__ = ["server_context", "client_context"]


def server_context(cert: str, key: str | None, client_ca: str | None = None) -> ssl.SSLContext:
    """Serve with ``cert``/``key``; when ``client_ca`` is set, require a client certificate it signed."""
    ctx = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    ctx.minimum_version = ssl.TLSVersion.TLSv1_2
    try:
        ctx.load_cert_chain(cert, key)
        if client_ca:
            ctx.load_verify_locations(cafile=client_ca)
            ctx.verify_mode = ssl.CERT_REQUIRED
    except (OSError, ssl.SSLError) as exc:
        raise ConfigurationError(f"MLLP TLS: cannot load certificate files: {exc}") from exc
    return ctx


def client_context(
    ca: str | None = None, cert: str | None = None, key: str | None = None, verify: bool = True
) -> ssl.SSLContext:
    """Connect verifying the server against ``ca`` (default: the system store); present ``cert`` when set.
    ``verify=False`` skips verification (lab use only; the channel file has to say so explicitly)."""
    ctx = ssl.create_default_context(ssl.Purpose.SERVER_AUTH, cafile=ca)
    ctx.minimum_version = ssl.TLSVersion.TLSv1_2
    if not verify:
        ctx.check_hostname = False
        ctx.verify_mode = ssl.CERT_NONE
    try:
        if cert:
            ctx.load_cert_chain(cert, key)
    except (OSError, ssl.SSLError) as exc:
        raise ConfigurationError(f"MLLP TLS: cannot load client certificate: {exc}") from exc
    return ctx
