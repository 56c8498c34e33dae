"""Storage Commitment results (PS3.4 J.3.3): the N-EVENT-REPORT that follows each N-ACTION.

Sent from a worker thread once the N-ACTION response is out: on the same association while the SCU keeps
it open, otherwise on a new association to the calling AE (which must then be listed in
CONDUIT_DICOM_REMOTES), where we propose the SCP role for Storage Commitment (PS3.4 J.3.3.1).
"""

from __future__ import annotations

import logging
import queue
import threading
import time
from typing import Any

from pynetdicom import AE, evt
from pynetdicom.pdu_primitives import SCP_SCU_RoleSelectionNegotiation
from pynetdicom.presentation import build_context
from pynetdicom.sop_class import StorageCommitmentPushModel

from adapters.dicom.ae import client_ssl_context
from adapters.dicom.logs import log_failure
from adapters.dicom.server import nodelay_on_open
from adapters.dicom.settings import DicomSettings

__all__ = ["CommitmentNotifier", "STORAGE_COMMITMENT_INSTANCE"]

log = logging.getLogger(__name__)

#: the well-known SOP Instance of the Storage Commitment Push Model (PS3.4 J.3.5)
STORAGE_COMMITMENT_INSTANCE = "1.2.840.10008.1.20.1.1"


class CommitmentNotifier:
    def __init__(self, ae: AE, settings: DicomSettings) -> None:
        self.ae = ae
        self.settings = settings
        self._queue: queue.Queue[tuple[Any, str, Any] | None] = queue.Queue()
        self._thread = threading.Thread(target=self._run, name="dicom-commitment", daemon=True)
        self._thread.start()
        self.sent: list[str] = []
        """Transaction UIDs reported so far (for diagnostics and tests)."""

    def schedule(self, assoc: Any, calling_ae: str, report: Any) -> None:
        self._queue.put((assoc, calling_ae, report))

    def close(self) -> None:
        self._queue.put(None)
        self._thread.join(timeout=5)

    def _run(self) -> None:
        while True:
            item = self._queue.get()
            if item is None:
                return
            assoc, calling_ae, report = item
            try:
                self._send(assoc, calling_ae, report)
            except Exception:
                log_failure(log, "could not send the storage commitment N-EVENT-REPORT")

    def _send(self, assoc: Any, calling_ae: str, report: Any) -> None:
        time.sleep(0.05)  # let the N-ACTION response leave first
        if assoc is not None and assoc.is_established:
            status, _ = assoc.send_n_event_report(
                report.dataset, report.event_type, StorageCommitmentPushModel, STORAGE_COMMITMENT_INSTANCE
            )
            if status is not None and getattr(status, "Status", None) is not None:
                self.sent.append(report.transaction_uid)
                return
        remote = self.settings.remote_table.get(calling_ae)
        if remote is None:
            log.warning("storage commitment result undeliverable: calling AE not in CONDUIT_DICOM_REMOTES")
            return
        role = SCP_SCU_RoleSelectionNegotiation()
        role.sop_class_uid = StorageCommitmentPushModel
        role.scu_role = False
        role.scp_role = True
        ae = AE(ae_title=self.settings.ae_title)
        ae.network_timeout = self.settings.network_timeout
        ae.acse_timeout = 30
        ae.dimse_timeout = 60
        cx = build_context(StorageCommitmentPushModel)
        peer = ae.associate(
            remote.host,
            remote.port,
            contexts=[cx],
            ae_title=remote.ae_title,
            ext_neg=[role],
            tls_args=(client_ssl_context(self.settings), "") if self.settings.tls_enabled else None,
            evt_handlers=[(evt.EVT_CONN_OPEN, nodelay_on_open)],
        )
        if not peer.is_established:
            log.warning("storage commitment result undeliverable: association to %s refused", remote.ae_title)
            return
        try:
            peer.send_n_event_report(
                report.dataset, report.event_type, StorageCommitmentPushModel, STORAGE_COMMITMENT_INSTANCE
            )
            self.sent.append(report.transaction_uid)
        finally:
            peer.release()
