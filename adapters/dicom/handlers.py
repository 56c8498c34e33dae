"""DIMSE event handlers: translate pynetdicom events into ``pacs`` port calls and render the outcomes.

No business rules here: each handler extracts what the request carries (calling AE, identifier, bytes),
calls the port, and turns the returned status/datasets into the DIMSE response. Any unexpected error
becomes a failure status (never an exception out of a handler, never a crash of the association thread).
"""

from __future__ import annotations

import logging
import time
from collections.abc import Iterator
from io import BytesIO
from typing import Any

import pydicom
from pydicom.dataset import Dataset
from pynetdicom import evt

from adapters.dicom.contexts import QR_MODEL, contexts_for
from adapters.dicom.logs import log_failure
from adapters.dicom.part10 import part10_header
from adapters.dicom.server import nodelay_on_open
from adapters.dicom.settings import DicomSettings

__all__ = ["DimseHandlers"]

log = logging.getLogger(__name__)

_OUT_OF_RESOURCES = 0xA700
_UNABLE_TO_PROCESS = 0xC000
_MOVE_UNABLE = 0xA801
_PENDING = 0xFF00
_SUB_OPERATION_PACE = 0.002


def _status(code: int, comment: str = "") -> Dataset:
    ds = Dataset()
    ds.Status = code
    if comment:
        ds.ErrorComment = comment[:64]
    return ds


def _calling_ae(event: Any) -> str:
    return str(event.assoc.requestor.ae_title or "").strip()


class DimseHandlers:
    def __init__(self, pacs: Any, settings: DicomSettings) -> None:
        self.pacs = pacs
        self.settings = settings

    def bindings(self) -> list[tuple[Any, Any]]:
        return [
            (evt.EVT_C_ECHO, self.on_c_echo),
            (evt.EVT_C_STORE, self.on_c_store),
            (evt.EVT_C_FIND, self.on_c_find),
            (evt.EVT_C_MOVE, self.on_c_move),
            (evt.EVT_C_GET, self.on_c_get),
            (evt.EVT_N_CREATE, self.on_n_create),
            (evt.EVT_N_SET, self.on_n_set),
            (evt.EVT_N_ACTION, self.on_n_action),
        ]

    # PS3.4 A: Verification ---------------------------------------------------------------------------
    def on_c_echo(self, event: Any) -> int:
        return 0x0000

    # PS3.4 B: Storage --------------------------------------------------------------------------------
    @property
    def max_object_bytes(self) -> int:
        return self.settings.max_object_bytes

    def on_c_store(self, event: Any) -> Dataset | int:
        try:
            request = event.request
            dataset = event.encoded_dataset(include_meta=False)
            if len(dataset) > self.settings.max_object_bytes:
                return _status(_OUT_OF_RESOURCES, "object larger than the configured maximum")
            sop_class = str(request.AffectedSOPClassUID or "")
            sop_instance = str(request.AffectedSOPInstanceUID or "")
            calling = _calling_ae(event)
            try:
                header = part10_header(sop_class, sop_instance, str(event.context.transfer_syntax), calling)
            except (ValueError, UnicodeError):
                return _status(_UNABLE_TO_PROCESS, "request UIDs cannot be written to a file meta header")
            code, comment = self.store_received(
                header + dataset, sop_class_uid=sop_class, sop_instance_uid=sop_instance, calling_ae=calling
            )
            if code == 0x0000:
                return 0x0000  # an int status spares pynetdicom validating a response dataset
            return _status(code, comment)
        except Exception:
            log_failure(log, "C-STORE handler failed")
            return _status(_UNABLE_TO_PROCESS, "internal error; the object was not stored")

    def store_received(
        self, part10: bytes | memoryview, *, sop_class_uid: str, sop_instance_uid: str, calling_ae: str
    ) -> tuple[int, str]:
        """Store a received object (Part 10 header and data set, its size already checked); the status and
        error comment to answer with. Also called for the C-STOREs ``adapters.dicom.direct_store`` takes."""
        try:
            outcome = self.pacs.store(
                part10, calling_ae=calling_ae, sop_instance_uid=sop_instance_uid, sop_class_uid=sop_class_uid
            )
            return outcome.status, outcome.comment
        except Exception:
            log_failure(log, "C-STORE failed")
            return _UNABLE_TO_PROCESS, "internal error; the object was not stored"

    # PS3.4 C.4.1 / K.6: C-FIND -----------------------------------------------------------------------
    def on_c_find(self, event: Any) -> Iterator[tuple[int, Dataset | None]]:
        try:
            identifier = event.identifier
            sop_class = str(event.request.AffectedSOPClassUID)
            if sop_class in QR_MODEL:
                results = self.pacs.find(
                    QR_MODEL[sop_class], identifier, lambda: event.is_cancelled, self.settings.ae_title
                )
            else:
                results = self.pacs.worklist(identifier, lambda: event.is_cancelled)
            yield from results
        except Exception:
            log_failure(log, "C-FIND handler failed")
            yield _UNABLE_TO_PROCESS, None

    # PS3.4 C.4.2: C-MOVE -----------------------------------------------------------------------------
    def _load(self, ref: Any) -> Dataset | None:
        try:
            return pydicom.dcmread(BytesIO(self.pacs.read(ref)))
        except Exception:
            log.error("cannot read stored instance for a retrieve sub-operation")
            return None

    def on_c_move(self, event: Any) -> Iterator[Any]:
        try:
            identifier = event.identifier
            model = QR_MODEL[str(event.request.AffectedSOPClassUID)]
            destination = str(event.move_destination or "").strip()
        except Exception:
            log_failure(log, "C-MOVE request could not be decoded")
            yield None, None
            return
        remote = self.settings.remote_table.get(destination)
        if remote is None:
            log.warning("C-MOVE to unknown destination AE refused")
            yield None, None  # pynetdicom answers 0xA801 Move Destination unknown
            return
        outcome = self.pacs.retrieve(model, identifier)
        contexts = contexts_for((r.sop_class_uid, r.transfer_syntax_uid) for r in outcome.instances)
        options: dict[str, Any] = {"evt_handlers": [(evt.EVT_CONN_OPEN, nodelay_on_open)]}
        if contexts:
            options["contexts"] = contexts
        yield remote.host, remote.port, options
        if outcome.status != 0x0000:
            # pynetdicom turns a count of 0 into Success; announce one so the failure status is sent
            yield 1
            yield outcome.status, None
            return
        yield len(outcome.instances)
        yield from self._sub_operations(event, outcome.instances, pace=True)

    def _sub_operations(
        self, event: Any, refs: list[Any], *, pace: bool = False
    ) -> Iterator[tuple[int, Dataset | None]]:
        for n, ref in enumerate(refs):
            if pace and n:
                # C-MOVE sub-operations go out on pynetdicom's own association, whose reactor must resume
                # between two send_c_store() calls or it may steal the next response (see scu._await_reactor)
                time.sleep(_SUB_OPERATION_PACE)
            if event.is_cancelled:
                yield 0xFE00, None
                return
            ds = self._load(ref)
            if ds is None:
                # a stored file that cannot be read: report it as a failed sub-operation
                failed = Dataset()
                failed.FailedSOPInstanceUIDList = [ref.sop_instance_uid]
                yield 0xA702, failed
                return
            yield _PENDING, ds

    # PS3.4 C.4.3: C-GET ------------------------------------------------------------------------------
    def on_c_get(self, event: Any) -> Iterator[Any]:
        try:
            identifier = event.identifier
            model = QR_MODEL[str(event.request.AffectedSOPClassUID)]
        except Exception:
            log_failure(log, "C-GET request could not be decoded")
            yield 1
            yield _UNABLE_TO_PROCESS, None
            return
        outcome = self.pacs.retrieve(model, identifier)
        if outcome.status != 0x0000:
            # pynetdicom turns a count of 0 into Success; announce one so the failure status is sent
            yield 1
            yield outcome.status, None
            return
        yield len(outcome.instances)
        yield from self._sub_operations(event, outcome.instances)

    # PS3.4 F.7: MPPS ---------------------------------------------------------------------------------
    def on_n_create(self, event: Any) -> tuple[Any, Dataset | None]:
        try:
            return self.pacs.mpps_create(
                str(event.request.AffectedSOPInstanceUID or ""), event.attribute_list
            )
        except Exception:
            log_failure(log, "N-CREATE handler failed")
            return 0x0110, None

    def on_n_set(self, event: Any) -> tuple[Any, Dataset | None]:
        try:
            return self.pacs.mpps_set(
                str(event.request.RequestedSOPInstanceUID or ""), event.modification_list
            )
        except Exception:
            log_failure(log, "N-SET handler failed")
            return 0x0110, None

    # PS3.4 J.3: Storage Commitment -------------------------------------------------------------------
    def on_n_action(self, event: Any) -> tuple[Any, Dataset | None]:
        try:
            if int(event.request.ActionTypeID or 0) != 1:
                return 0x0123, None  # No such action type
            request = event.action_information
            report = self.pacs.commitment(request)
        except Exception:
            log_failure(log, "N-ACTION handler failed")
            return 0x0110, None
        if report is None:
            return 0x0106, None  # invalid attribute value: no TransactionUID / references
        self.notifier.schedule(event.assoc, _calling_ae(event), report)
        return 0x0000, None

    notifier: Any = None
