"""Our C-STORE SCU: sends stored objects to a remote AE (auto-forwarding, ``dicom://`` destinations).

One association per batch; the contexts proposed are each object's own transfer syntax first, then the
uncompressed ones, so objects go out as they were received whenever the peer accepts that.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Sequence
from dataclasses import dataclass
from io import BytesIO
from typing import Any

import pydicom
from pydicom.dataset import Dataset
from pynetdicom import AE, evt

from adapters.dicom.ae import client_ssl_context
from adapters.dicom.contexts import contexts_for
from adapters.dicom.remotes import RemoteAE
from adapters.dicom.server import nodelay_on_open
from adapters.dicom.settings import DicomSettings

__all__ = ["StoreResult", "store_to"]

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class StoreResult:
    status: int | None
    """The peer's C-STORE status, None when nothing was sent (association or context failure)."""
    detail: str = ""

    @property
    def ok(self) -> bool:
        return self.status is not None and (self.status == 0x0000 or self.status >> 12 == 0xB)


def store_to(settings: DicomSettings, remote: RemoteAE, objects: Sequence[bytes]) -> list[StoreResult]:
    """C-STORE each Part 10 object to ``remote`` over one association; one result per object."""
    datasets: list[Dataset | None] = []
    for data in objects:
        try:
            datasets.append(pydicom.dcmread(BytesIO(data)))
        except Exception:
            datasets.append(None)
    contexts = contexts_for(
        (str(ds.SOPClassUID), str(ds.file_meta.TransferSyntaxUID)) for ds in datasets if ds is not None
    )
    results = [StoreResult(None, "unreadable object") if ds is None else StoreResult(None) for ds in datasets]
    if not contexts:
        return results
    ae = AE(ae_title=settings.ae_title)
    ae.maximum_pdu_size = settings.max_pdu
    ae.network_timeout = settings.network_timeout
    ae.acse_timeout = settings.retrieve_timeout
    ae.dimse_timeout = 120
    ae.connection_timeout = settings.retrieve_timeout
    assoc = ae.associate(
        remote.host,
        remote.port,
        contexts=contexts,
        ae_title=remote.ae_title,
        tls_args=(client_ssl_context(settings), "") if settings.tls_enabled else None,  # type: ignore[arg-type]
        evt_handlers=[(evt.EVT_CONN_OPEN, nodelay_on_open)],
    )
    if not assoc.is_established:
        return [StoreResult(None, f"association with {remote.ae_title} failed") for _ in datasets]
    try:
        for i, ds in enumerate(datasets):
            if ds is None:
                continue
            if not assoc.is_established:
                results[i] = StoreResult(None, "association lost")
                continue
            try:
                _await_reactor(assoc)
                rsp = assoc.send_c_store(ds)
                code = getattr(rsp, "Status", None)
                results[i] = StoreResult(
                    int(code) if code is not None else None, "" if code is not None else "no response"
                )
            except Exception as exc:  # e.g. no accepted context for this transfer syntax
                results[i] = StoreResult(None, exc.__class__.__name__)
    finally:
        if assoc.is_established:
            assoc.release()
    return results


def _await_reactor(assoc: Any, timeout: float = 1.0) -> None:
    """Wait until the association's reactor has resumed after the previous send_*().

    pynetdicom pauses its reactor for each send_*() and checks a flag the reactor sets when it parks; if
    the next send starts before the reactor thread woke from the last pause, that flag is stale, the
    reactor runs on and can take the next response off the queue ("unexpected C-STORE service message",
    then a DIMSE timeout). Seen under load; waiting for the reactor to resume closes the window.
    """
    deadline = time.monotonic() + timeout
    while getattr(assoc, "_is_paused", False) and assoc.is_established and time.monotonic() < deadline:
        time.sleep(0.0001)
