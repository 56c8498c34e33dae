"""Build the pynetdicom Application Entity from the settings (shared by the listener and the SCUs)."""

from __future__ import annotations

import logging
import ssl

from pynetdicom import AE, _config

from adapters.dicom.settings import DicomSettings

__all__ = ["build_ae", "server_ssl_context", "client_ssl_context"]

# No patient data in logs: pynetdicom logs every request and, at INFO, the C-FIND identifiers it receives
# and returns (names, birth dates). Keep its own messages to warnings and never log identifiers.
_config.LOG_REQUEST_IDENTIFIERS = False
_config.LOG_RESPONSE_IDENTIFIERS = False
# ...and skip its per-message logging handlers altogether: they format every DIMSE message even when the
# logger drops the result (a measurable share of the CPU per C-STORE)
_config.LOG_HANDLER_LEVEL = "none"
logging.getLogger("pynetdicom").setLevel(logging.WARNING)


def build_ae(settings: DicomSettings) -> AE:
    ae = AE(ae_title=settings.ae_title)
    ae.maximum_pdu_size = settings.max_pdu
    ae.maximum_associations = settings.max_associations
    ae.network_timeout = settings.network_timeout
    ae.acse_timeout = 30
    ae.dimse_timeout = 60
    ae.connection_timeout = settings.retrieve_timeout
    ae.require_called_aet = True  # a wrong Called AE Title gets A-ASSOCIATE-RJ (PS3.8 9.3.4)
    return ae


def server_ssl_context(settings: DicomSettings) -> ssl.SSLContext | None:
    if not settings.tls_enabled:
        return None
    context = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    context.minimum_version = ssl.TLSVersion.TLSv1_2
    context.load_cert_chain(str(settings.tls_cert), str(settings.tls_key))
    if settings.tls_ca:
        context.load_verify_locations(str(settings.tls_ca))
        context.verify_mode = ssl.CERT_REQUIRED
    return context


def client_ssl_context(settings: DicomSettings) -> ssl.SSLContext | None:
    """TLS for our outgoing associations when TLS is configured (same CA, our certificate as client)."""
    if not settings.tls_enabled:
        return None
    context = ssl.create_default_context(
        ssl.Purpose.SERVER_AUTH, cafile=str(settings.tls_ca) if settings.tls_ca else None
    )
    context.check_hostname = False  # DICOM peers are addressed by IP in AE tables
    context.load_cert_chain(str(settings.tls_cert), str(settings.tls_key))
    return context
