"""``create(runtime) -> Listener``: the DICOM SCP, run by ``conduit serve`` (``--only dicom``)."""

from __future__ import annotations

import asyncio
import logging
import threading
from typing import Any

from adapters.dicom.ae import build_ae, server_ssl_context
from adapters.dicom.contexts import supported_contexts
from adapters.dicom.handlers import DimseHandlers
from adapters.dicom.notify import CommitmentNotifier
from adapters.dicom.server import ConduitAssociationServer, is_loopback_address
from adapters.dicom.settings import DicomSettings
from engine.errors import ConfigurationError
from engine.runtime import Runtime
from engine.settings import is_loopback

__all__ = ["DicomListener", "create"]

log = logging.getLogger(__name__)


class DicomListener:
    name = "dicom"

    def __init__(self, runtime: Runtime, settings: DicomSettings | None = None) -> None:
        self.runtime = runtime
        self.settings = settings or DicomSettings()
        self.host = self.settings.host or runtime.settings.host
        if (
            not is_loopback(self.host)
            and not runtime.settings.insecure
            and not (self.settings.tls_enabled or self.settings.allowed_calling_aes)
        ):
            raise ConfigurationError(
                f"refusing to serve DICOM on {self.host}: configure CONDUIT_DICOM_TLS_CERT/KEY or "
                "CONDUIT_DICOM_ALLOWED_CALLING_AES, bind 127.0.0.1, or pass --insecure (lab use only)"
            )
        self.pacs = runtime.port("pacs")
        self.ae = build_ae(self.settings)
        self.handlers = DimseHandlers(self.pacs, self.settings)
        self.server: ConduitAssociationServer | None = None
        self._thread: threading.Thread | None = None
        self.port = self.settings.port

    def admits(self, calling_ae: str, address: str) -> bool:
        """Loopback peers always; others only through the allow-list (AE title, optionally address)."""
        if is_loopback_address(address):
            return True
        return any(peer.admits(calling_ae, address) for peer in self.settings.allowed_peers)

    async def start(self) -> None:
        self.handlers.notifier = CommitmentNotifier(self.ae, self.settings)
        server: Any = self.ae.make_server(
            (self.host, self.settings.port),
            ae_title=self.settings.ae_title,
            contexts=supported_contexts(),
            ssl_context=server_ssl_context(self.settings),
            evt_handlers=self.handlers.bindings(),
            server_class=ConduitAssociationServer,
            calling_policy=self.admits,
            direct_store=self.handlers if self.settings.direct_store else None,
        )
        self.server = server
        self.port = server.server_address[1]
        self.ae._servers.append(server)  # as AE.start_server does, so ae.shutdown() reaches it
        self._thread = threading.Thread(
            target=server.serve_forever, kwargs={"poll_interval": 0.2}, name="dicom-acceptor", daemon=True
        )
        self._thread.start()

    async def stop(self) -> None:
        server = self.server
        if server is None:
            return
        await asyncio.to_thread(self._shutdown, server)
        self.server = None

    def _shutdown(self, server: Any) -> None:
        server.shutdown()  # stop accepting; releases the listening socket
        # Abort what is still open: nothing is lost, a Success was only ever sent after the commit
        for assoc in list(server.active_associations):
            try:
                assoc.abort()
            except Exception:
                pass
        if self.handlers.notifier is not None:
            self.handlers.notifier.close()
        if self._thread is not None:
            self._thread.join(timeout=5)

    def describe(self) -> str:
        scheme = "dicom+tls" if self.settings.tls_enabled else "dicom"
        return f"DICOM    {scheme}://{self.settings.ae_title}@{self.host}:{self.port}"


def create(runtime: Runtime) -> DicomListener:
    return DicomListener(runtime)
