"""C-STORE received and answered by the DUL thread itself, beside pynetdicom's DIMSE machinery.

Per stored object pynetdicom runs its state machine once per PDU, assembles the message in a BytesIO,
turns it into a primitive, an event and a response primitive, and sends the response through its
outgoing queue and state machine again; the data set is copied three times on its way to the handler
(into the BytesIO, out of it, behind the Part 10 header) and once more into an aligned buffer for the
direct write. On a 500-image storescu burst that machinery was half of the DUL thread's time.

Here, a C-STORE request that nothing else could notice is taken at its command set and its data set is
read from the socket straight into a page-aligned buffer behind the object's Part 10 header, which
the storage then writes with direct I/O as it is (``engine.aligned``). The response is the
C-STORE-RSP pynetdicom would send; it goes straight to the socket when nothing else waits to be sent.

A request is taken only when

* its command set is the only value of its own P-DATA-TF PDU (DCMTK and pynetdicom send it so), holds
  just the usual elements (``pdata.C_STORE_RQ_TAGS``) and announces a data set;
* the association is established and not releasing, pynetdicom holds no partly received message, and
  no request is being served or waits to be;
* its presentation context is accepted and its SOP class is served by the Storage service class;
* no handler watches PDUs, raw data or DIMSE messages, and EVT_C_STORE is bound to the target's own
  handler.

Anything else goes through pynetdicom, untouched. While a data set is being read, a fragment that
breaks PS3.8 (another context, a command fragment before the last data set fragment) is a protocol
error: the rest of its PDU is read and dropped and the association is aborted, as pynetdicom does for
a PDU it cannot decode. Values after the last fragment in the same PDU (the next message's, PS3.8 E.1
only recommends against it) are handed on as a P-DATA of their own. Any other PDU arriving mid data
set (an A-ABORT, say) drops the partial object and goes to pynetdicom, as does the end of the
association (``abandon``).
"""

from __future__ import annotations

import logging
import mmap
import struct
from typing import Any, Protocol

from pynetdicom import _config, evt
from pynetdicom.dimse_primitives import C_STORE
from pynetdicom.pdu_primitives import P_DATA

from adapters.dicom.part10 import part10_header
from adapters.dicom.pdata import C_STORE_RSP, c_store_rq_fields, rsp_command
from engine.aligned import BUFFERS

__all__ = ["StoreTarget", "DirectStoreReceiver", "ProtocolError", "ConnectionClosed"]

log = logging.getLogger(__name__)

_OUT_OF_RESOURCES = 0xA700  # PS3.4 B.2.3: Refused, Out of Resources
_PDV_HEADER = struct.Struct(">LBB")  # item length, presentation context ID, message control header
_P_DATA_TF_HEADER = struct.Struct(">BBLLB")  # PDU type, reserved, PDU length; item length, context ID
#: events whose handlers expect pynetdicom's own objects for every PDU and message
_WATCHING = (
    evt.EVT_PDU_RECV,
    evt.EVT_PDU_SENT,
    evt.EVT_DATA_RECV,
    evt.EVT_DATA_SENT,
    evt.EVT_DIMSE_RECV,
    evt.EVT_DIMSE_SENT,
)
#: scratch for bytes read only to be dropped (an object refused, the rest of a broken PDU): small,
#: since a refused object may be gigabytes
_DRAIN = 1 << 16


class StoreTarget(Protocol):
    """What stores the objects: the EVT_C_STORE handler pynetdicom would call, and the same storing for
    an object received here. ``store_received`` returns the response's status and error comment."""

    @property
    def max_object_bytes(self) -> int: ...

    def on_c_store(self, event: Any) -> Any: ...

    def store_received(
        self, part10: memoryview, *, sop_class_uid: str, sop_instance_uid: str, calling_ae: str
    ) -> tuple[int, str]: ...


class ProtocolError(Exception):
    """A received fragment that breaks PS3.8 Annex E; the association is aborted."""


class ConnectionClosed(Exception):
    """The peer closed the connection in the middle of a PDU."""


class DirectStoreReceiver:
    """One association's direct C-STORE path; called on its DUL thread only."""

    def __init__(self, assoc: Any, target: StoreTarget) -> None:
        self.assoc = assoc
        self.target = target
        self.buffer: mmap.mmap | None = None
        self.used = 0  # bytes of ``buffer`` filled: the Part 10 header, then the data set
        self.header_size = 0
        self.refusal = ""  # why the object is refused (too large to keep): the rest is read and dropped
        self.last_seen = False
        self.context_id = 0
        self.message_id = 0
        self.sop_class_uid = ""
        self.sop_instance_uid = ""
        self.calling_ae = ""

    @property
    def active(self) -> bool:
        """A data set is being received here: every P-DATA-TF belongs to it until its last fragment."""
        return self.buffer is not None

    # -- taking a request -------------------------------------------------------------------------------
    def begin(self, primitive: P_DATA) -> bool:
        """Take the C-STORE request whose command set is ``primitive`` (a received P-DATA-TF), or return
        False, having changed nothing, for pynetdicom to handle the PDU."""
        values = primitive.presentation_data_value_list
        if len(values) != 1:
            return False
        context_id, value = values[0]
        if len(value) < 2 or value[0] & 0x03 != 0x03:  # a whole command set: command, last fragment
            return False
        command = c_store_rq_fields(value[1:])
        if command is None:
            return False
        message_id, sop_class_uid, sop_instance_uid = command
        context = self._storage_context(context_id, sop_class_uid)
        if context is None:
            return False
        calling_ae = str(self.assoc.requestor.ae_title or "").strip()
        try:
            header = part10_header(
                sop_class_uid, sop_instance_uid, str(context.transfer_syntax[0]), calling_ae
            )
        except (ValueError, UnicodeError):
            return False  # pynetdicom's path answers it (the handler refuses such UIDs)
        try:
            buffer = BUFFERS.take()
        except (OSError, MemoryError):
            return False  # no memory for a buffer now: pynetdicom's path, with its own
        buffer[: len(header)] = header
        self.buffer, self.used, self.header_size = buffer, len(header), len(header)
        self.refusal, self.last_seen = "", False
        self.context_id, self.message_id = context_id, message_id
        self.sop_class_uid, self.sop_instance_uid, self.calling_ae = (
            sop_class_uid,
            sop_instance_uid,
            calling_ae,
        )
        return True

    def _storage_context(self, context_id: int, sop_class_uid: str) -> Any:
        assoc = self.assoc
        # data transfer (PS3.8 9.2, Sta6): in any other state the state machine decides what a P-DATA
        # means (during a release, say); nor may a release have been requested
        if not assoc.is_established or assoc._sent_release or assoc.dul.state_machine.current_state != "Sta6":
            return None
        if assoc.dul.to_user_queue.qsize():
            return None  # an A-RELEASE or A-ABORT indication the association thread has yet to read
        if _config.STORE_RECV_CHUNKED_DATASET or _config.ENFORCE_UID_CONFORMANCE:
            return None  # pynetdicom's own options: a spooled data set, pydicom's UID rules
        if assoc.dimse.message is not None or not assoc.idle_for_requests():
            return None
        if any(assoc.get_handlers(event) for event in _WATCHING):
            return None
        bound = assoc.get_handlers(evt.EVT_C_STORE)
        if not bound or bound[0] != self.target.on_c_store:
            return None
        return assoc.storage_context(context_id, sop_class_uid)

    # -- receiving the data set -------------------------------------------------------------------------
    def receive(self, sock: Any, pdu_length: int) -> bytearray | None:
        """Read the rest of a P-DATA-TF PDU (its 6-byte header already read) into the data set; answer
        the request once its last fragment is in. Returns what the PDU holds after that last fragment
        (further presentation data values, for the caller to hand on), None when nothing.
        ProtocolError (the rest of the PDU read and dropped, so that nothing of it is taken for the
        next PDU), ConnectionClosed."""
        remaining = pdu_length  # bytes of the PDU not read yet
        while remaining and not self.last_seen:
            if remaining < _PDV_HEADER.size:
                _drain(sock, remaining)
                raise ProtocolError("truncated presentation data value item")
            item_length, context_id, control = _PDV_HEADER.unpack(_recv_exactly(sock, _PDV_HEADER.size))
            remaining -= _PDV_HEADER.size
            problem = self._problem(item_length, context_id, control, remaining)
            if problem:
                _drain(sock, remaining)
                raise ProtocolError(problem)
            self._read_value(sock, item_length - 2)
            remaining -= item_length - 2
            # PS3.8 E.2: bit 0 command or data set, bit 1 last fragment; the others are never checked
            self.last_seen = bool(control & 0x02)
        rest = _recv_exactly(sock, remaining) if remaining else None
        if self.last_seen:
            self._answer()
        return rest

    def _problem(self, item_length: int, context_id: int, control: int, remaining: int) -> str:
        """What is wrong with a presentation data value item of the data set, '' when nothing."""
        if item_length < 2 or item_length - 2 > remaining:
            return "presentation data value item length does not fit the PDU"
        if context_id != self.context_id:
            return "data set fragment on another presentation context"
        if control & 0x01:
            return "command fragment in the middle of a data set"
        return ""

    def _read_value(self, sock: Any, size: int) -> None:
        end = self.used + size
        if not self.refusal and end - self.header_size > self.target.max_object_bytes:
            self.refusal = "object larger than the configured maximum"
        buffer = self.buffer
        assert buffer is not None
        if not self.refusal and end > len(buffer):
            try:
                buffer = self._grow(end)
            except (OSError, MemoryError):  # mmap refused: out of memory or address space
                self.refusal = "not enough memory to receive the object"
        if self.refusal:
            _drain(sock, size)  # read on and drop: the request is answered once it is all in
            return
        with memoryview(buffer) as view:
            _recv_into(sock, view[self.used : end])
        self.used = end

    def _grow(self, size: int) -> mmap.mmap:
        """Room for ``size`` bytes: a buffer twice as large (at most the largest object accepted) with
        what was received so far. A new mapping and a copy: resizing an anonymous shared mapping in
        place (mremap) leaves its new pages without backing (EFAULT on the next read into them)."""
        old = self.buffer
        assert old is not None
        largest = self.header_size + self.target.max_object_bytes
        new = BUFFERS.take(max(size, min(2 * len(old), largest)))
        with memoryview(new) as target, memoryview(old) as source:
            target[: self.used] = source[: self.used]
        BUFFERS.give(old)
        self.buffer = new
        return new

    def abandon(self) -> None:
        """Drop a partly received object (the association is ending, or a protocol error ends it)."""
        buffer, self.buffer = self.buffer, None
        if buffer is not None:
            BUFFERS.give(buffer)

    # -- answering --------------------------------------------------------------------------------------
    def _answer(self) -> None:
        buffer, used = self.buffer, self.used
        self.buffer = None
        assert buffer is not None
        assoc = self.assoc
        try:
            with assoc.serving:  # as a served request: the network timeout waits, nothing runs beside it
                if not assoc.is_established or assoc._sent_release:
                    return  # aborted or releasing meanwhile: pynetdicom drops such a request too
                if self.refusal:
                    status, comment = _OUT_OF_RESOURCES, self.refusal
                else:
                    with memoryview(buffer) as view, view[:used] as part10:
                        status, comment = self.target.store_received(
                            part10,
                            sop_class_uid=self.sop_class_uid,
                            sop_instance_uid=self.sop_instance_uid,
                            calling_ae=self.calling_ae,
                        )
                self._respond(status, comment)
                assoc.dul._idle_timer.restart()  # a long store is no idle association
        except Exception:
            log.exception("C-STORE could not be served; aborting the association")
            assoc.abort(block=False)  # queued: its blocking form would wait for this very thread
        finally:
            BUFFERS.give(buffer)

    def _respond(self, status: int, comment: str) -> None:
        command = rsp_command(
            C_STORE_RSP,
            sop_class_uid=self.sop_class_uid,
            message_id=self.message_id,
            status=status,
            sop_instance_uid=self.sop_instance_uid,
            error_comment=comment[:64],
        )
        assoc = self.assoc
        dimse, dul = assoc.dimse, assoc.dul
        peer_max = assoc.requestor.maximum_length or 0
        with dimse.send_lock:  # whole messages one at a time (another thread may be sending one)
            # the item: its length, the context ID, then the command (behind its message control header)
            pdu_length = 4 + 1 + len(command) if command is not None else 0
            if command is None or 0 < peer_max < pdu_length:
                dimse.send_msg(self._response_primitive(status, comment), self.context_id)
                return
            if dul.to_provider_queue.empty():
                pdu = _P_DATA_TF_HEADER.pack(0x04, 0, pdu_length, 1 + len(command), self.context_id)
                dul.socket.send(pdu + command)
                return
            pdata = P_DATA()  # behind what waits to be sent
            pdata.presentation_data_value_list.append((self.context_id, command))
            dul.send_pdu(pdata)

    def _response_primitive(self, status: int, comment: str) -> C_STORE:
        rsp = C_STORE()
        rsp.MessageIDBeingRespondedTo = self.message_id
        rsp.AffectedSOPClassUID = self.sop_class_uid
        rsp.AffectedSOPInstanceUID = self.sop_instance_uid
        rsp.Status = status
        if comment:
            rsp.ErrorComment = comment[:64]
        return rsp


def _recv_into(sock: Any, view: memoryview) -> None:
    got, size = 0, len(view)
    while got < size:
        try:
            n = sock.recv_into(view[got:], size - got)
        except (OSError, TimeoutError) as exc:
            raise ConnectionClosed() from exc
        if not n:
            raise ConnectionClosed()
        got += n


def _recv_exactly(sock: Any, size: int) -> bytearray:
    data = bytearray(size)
    with memoryview(data) as view:
        _recv_into(sock, view)
    return data


def _drain(sock: Any, size: int) -> None:
    scratch = bytearray(min(size, _DRAIN))
    with memoryview(scratch) as view:
        while size:
            chunk = min(size, len(view))
            _recv_into(sock, view[:chunk])
            size -= chunk
