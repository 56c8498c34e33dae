"""The association server: pynetdicom's threaded server plus what a production SCP needs.

* TCP_NODELAY on every association socket. pynetdicom leaves Nagle on, so each small DIMSE response
  waits for the peer's delayed ACK (~40 ms on Linux) and a C-ECHO costs 40 ms instead of 1.
* Calling-AE policy at A-ASSOCIATE time: loopback peers are always accepted, others only when the
  allow-list admits their AE title (and address, when the entry names one); otherwise A-ASSOCIATE-RJ
  (rejected-permanent, service-user, calling-AE-title-not-recognized, PS3.8 9.3.4).
* A socket that reads PDUs with large ``recv_into`` calls: pynetdicom reads 4 KiB at a time, which is a
  measurable share of the CPU per 0.5 MB image.
* Wake-ups instead of polling. pynetdicom's two threads per association poll: the DUL thread sleeps
  between checks of its socket and of the outgoing queue, the association thread sleeps 1 ms between
  checks of the DIMSE queue. Each C-STORE paid that latency three times (request in, request to handler,
  response out) — about 1.5 ms of an image's ~10. Here the DUL thread waits in ``select`` on the socket
  and on a wake-up socket that the outgoing queue pokes on every put, and the association thread waits
  on the DIMSE queue itself; both still wake every few ms to run pynetdicom's timer/release checks, which
  also makes an idle association far cheaper than the 2,000 polls a second it cost before.
* A C-STORE request served on the DUL thread that decoded it, when the association thread is idle
  (``_InlineStoreQueue``): the request no longer goes to the association thread and its response back,
  two thread hand-offs (and GIL hand-overs) fewer per stored object.
* P-DATA without pynetdicom's generic codecs on the C-STORE path (see ``adapters.dicom.pdata``): received
  PDUs are split into views instead of copies, a C-STORE request's command set is read directly, and
  its response is encoded directly.
"""

from __future__ import annotations

import ipaddress
import logging
import queue
import select
import socket
import ssl
import struct
import threading
import time
from collections.abc import Callable
from datetime import datetime
from functools import partial
from typing import Any

from pynetdicom import _config, evt
from pynetdicom import service_class as _service_class
from pynetdicom._globals import MODE_ACCEPTOR
from pynetdicom.acse import ACSE
from pynetdicom.association import Association
from pynetdicom.dimse import DIMSEServiceProvider
from pynetdicom.dimse_messages import DIMSEMessage
from pynetdicom.dimse_primitives import C_STORE
from pynetdicom.dul import DULServiceProvider
from pynetdicom.pdu_primitives import P_DATA
from pynetdicom.service_class import StorageServiceClass
from pynetdicom.sop_class import uid_to_service_class
from pynetdicom.transport import AssociationSocket, RequestHandler, ThreadedAssociationServer
from pynetdicom.utils import make_target

from adapters.dicom.direct_store import ConnectionClosed, DirectStoreReceiver, ProtocolError, StoreTarget
from adapters.dicom.identifier import fast_encode
from adapters.dicom.pdata import (
    ReceivedPData,
    c_find_rq_primitive,
    c_find_rsp_command,
    c_store_rq_primitive,
    c_store_rsp_command,
    split_p_data,
)

__all__ = ["ConduitAssociationServer", "set_nodelay"]

log = logging.getLogger(__name__)
#: where pynetdicom's own reactor logs (kept to warnings, adapters/dicom/ae.py)
_PYNETDICOM_LOG = logging.getLogger("pynetdicom.association")

# pynetdicom's service classes encode each C-FIND match (and C-GET/C-MOVE identifiers) with pydicom's
# generic writer; flat text-only data sets are written directly, byte for byte the same (identifier.py),
# anything else still goes through pydicom. Applied once, at import, for every association in the process.
if not hasattr(_service_class.encode, "__wrapped__"):
    _service_class.encode = fast_encode(_service_class.encode)

#: decides whether ``(calling AE title, peer address)`` may associate
CallingPolicy = Callable[[str, str], bool]

_RECV_CHUNK = 1 << 20
#: longest the DUL thread waits in select() for the socket or the outgoing queue before it runs
#: pynetdicom's periodic checks (ARTIM timer, kill flag); data and outgoing messages wake it at once
_DUL_IDLE_WAIT = 0.005
#: longest the association thread waits on the DIMSE queue before its release/abort checks
_REACTOR_WAIT = 0.005
#: C-FIND matches queued for the DUL thread before it is woken anyway
_MAX_HELD = 16
_PDU_HEADER = struct.Struct(">BBL")
#: what pynetdicom serves every C-STORE as under _config.UNRESTRICTED_STORAGE_SERVICE
_ANY_STORAGE_CLASS = "1.2.840.10008.5.1.4.1.1.1"
_P_DATA_TF = 0x04
#: PS3.8 E.2 Message Control Header: data set, last fragment
_LAST_DATA_SET_FRAGMENT = b"\x02"


def set_nodelay(sock: socket.socket) -> None:
    try:
        sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
    except OSError:  # not a TCP socket (tests over socketpair): nothing to tune
        pass


def is_loopback_address(address: str) -> bool:
    try:
        return ipaddress.ip_address(address.split("%")[0]).is_loopback
    except ValueError:
        return False


class _WakingQueue(queue.Queue):  # type: ignore[type-arg]
    """The DUL's outgoing-primitive queue: every put also wakes the DUL thread out of its select()."""

    def __init__(self, waker: socket.socket) -> None:
        super().__init__()
        self.waker = waker

    #: items queued by ``put_quietly`` since the DUL thread was last woken
    held = 0

    def put(self, item: Any, block: bool = True, timeout: float | None = None) -> None:
        super().put(item, block, timeout)
        self.wake()

    def put_quietly(self, item: Any) -> None:
        """Queue without waking the DUL thread: for a C-FIND match that the next response follows at once.
        The next ``put`` (at the latest the final response), every ``_MAX_HELD``-th item or the DUL's own
        idle check (``_DUL_IDLE_WAIT``) sends it; the matches then leave in one burst instead of one
        GIL hand-off between the two threads per match."""
        super().put(item)
        self.held += 1
        if self.held >= _MAX_HELD:
            self.wake()

    def wake(self) -> None:
        self.held = 0
        try:
            self.waker.send(b"\0")
        except OSError:  # closed with the association, or full of pending wake-ups: either is fine
            pass


def _message_to_primitive(message: DIMSEMessage) -> Any:
    primitive: Any = c_store_rq_primitive(message)
    if primitive is None:
        primitive = c_find_rq_primitive(message)
    if primitive is None:
        primitive = type(message).message_to_primitive(message)
    return primitive


class _InlineStoreQueue(queue.Queue):  # type: ignore[type-arg]
    """The DIMSE layer's queue of received messages. A C-STORE request that arrives while the association
    thread serves nothing and no request waits before it is served right here, on the DUL thread that
    decoded it, whose loop then sends the response itself: per stored object the request's hand-off to
    the association thread and the response's back are gone (a 500-image storescu burst: 1.43-1.48 s ->
    1.20-1.30 s). Everything else is queued for the association thread as pynetdicom does, responses
    too (a C-GET's sub-operations wait there for their C-STORE-RSPs).

    C-STORE handlers therefore run on the DUL thread: they must not wait for anything on their own
    association (``event.assoc.send_*``, ``release``), whose answers only that thread could read.
    A request that pynetdicom's own blocking ``get_msg`` takes while it waits for a response (a C-GET's
    sub-operations, a Storage Commitment report) is dropped by pynetdicom as unexpected and never
    counted as served: the association then serves its C-STOREs on the association thread, as before."""

    def __init__(self, assoc: _WaitingAssociation) -> None:
        super().__init__()
        self.assoc = assoc
        #: requests queued and not yet served by the association thread: while there are any, a new
        #: one is queued behind them (taken off the queue is not served yet)
        self.requests = 0

    def put(self, item: Any, block: bool = True, timeout: float | None = None) -> None:
        context_id, primitive = item
        request = bool(getattr(primitive, "is_valid_request", False))
        if type(primitive) is C_STORE and request and self.requests == 0:
            if self.assoc.serve_store_inline(primitive, context_id):
                return
        if request:
            with self.mutex:
                self.requests += 1
        super().put(item, block, timeout)

    def served(self) -> None:
        """The association thread finished a request it took from here."""
        with self.mutex:
            self.requests = max(0, self.requests - 1)


class _WaitingDIMSE(DIMSEServiceProvider):
    #: serialises sending whole messages (set per association in ``_Handler._create_association``)
    send_lock: threading.RLock | None = None

    def get_msg(self, block: bool = False) -> Any:
        if block:
            return super().get_msg(block)
        # the acceptor reactor's non-blocking poll (after a fixed 1 ms sleep): wait for a message instead
        try:
            return self.msg_queue.get(timeout=_REACTOR_WAIT)
        except queue.Empty:
            return None, None

    def receive_primitive(self, primitive: Any) -> None:
        if self.message is None:
            # pynetdicom calls message.message_to_primitive() once the message is complete: a C-STORE-RQ's
            # is read straight from its command set (c_store_rq_primitive), anything else as before
            message = self.message = DIMSEMessage()
            message.message_to_primitive = partial(_message_to_primitive, message)  # type: ignore[method-assign]
        super().receive_primitive(primitive)

    def send_msg(self, primitive: Any, context_id: int) -> None:
        """C-STORE and C-FIND responses that carry only a status (and a C-FIND match) are encoded directly
        and leave as ONE P-DATA (command and identifier as two values of one PDU, PS3.8 9.3.5), so each
        costs one wake-up of the DUL thread instead of two; everything else goes through pynetdicom.
        One message at a time: a C-STORE response sent by the DUL thread (inline) must not land between
        the P-DATAs of a message another thread is sending (a Storage Commitment report), PS3.8 E.1."""
        lock = self.send_lock
        if lock is None:
            self._send_msg(primitive, context_id)
            return
        with lock:
            self._send_msg(primitive, context_id)

    def _send_msg(self, primitive: Any, context_id: int) -> None:
        command = c_store_rsp_command(primitive)
        identifier = b""
        if command is None:
            command = c_find_rsp_command(primitive)
            if command is not None and primitive.Identifier is not None:
                identifier = primitive.Identifier.getvalue()
        if (
            command is None
            or self.assoc.get_handlers(evt.EVT_DIMSE_SENT)  # they expect pynetdicom's message object
            # PDV item headers (4-byte length, context ID) and the data set's control header
            or 0 < self.maximum_pdu_size < len(command) + 6 + (len(identifier) + 7 if identifier else 0)
        ):
            super().send_msg(primitive, context_id)
            return
        pdata = P_DATA()
        values = pdata.presentation_data_value_list
        values.append((context_id, command))
        if identifier:
            values.append((context_id, _LAST_DATA_SET_FRAGMENT + identifier))
            outgoing = self.dul.to_provider_queue
            if isinstance(outgoing, _WakingQueue):
                outgoing.put_quietly(pdata)  # a pending match: more follow, the final response wakes
                return
        self.dul.send_pdu(pdata)


class _FastSocket(AssociationSocket):
    wake_r: socket.socket
    wake_w: socket.socket

    def attach_waker(self) -> socket.socket:
        self.wake_r, self.wake_w = socket.socketpair()
        self.wake_r.setblocking(False)
        self.wake_w.setblocking(False)
        return self.wake_w

    @property
    def ready(self) -> bool:
        sock = self.socket
        if sock is None or self._is_connected is False:
            time.sleep(_DUL_IDLE_WAIT)  # nothing to wait on: keep the DUL loop from spinning meanwhile
            return False
        if isinstance(sock, ssl.SSLSocket) and sock.pending():
            return True  # TLS may hold decrypted bytes select() knows nothing about
        dul = self.assoc.dul
        # block only when the DUL has nothing else queued (its loop would otherwise sleep anyway)
        busy = not dul.event_queue.empty() or not dul.to_provider_queue.empty()
        try:
            ready, _, _ = select.select([sock, self.wake_r], [], [], 0 if busy else _DUL_IDLE_WAIT)
        except (OSError, TimeoutError, ValueError):
            self.event_queue.put("Evt17")  # transport connection closed
            return False
        if self.wake_r in ready:
            try:
                while self.wake_r.recv(4096):
                    pass
            except OSError:  # drained (BlockingIOError) or closed
                pass
        return sock in ready

    def recv(self, nr_bytes: int) -> bytearray:
        sock = self.socket
        assert sock is not None
        # room for one chunk at first, doubled as the bytes arrive: a PDU length field that promises
        # gigabytes costs no memory until they do come
        buffer = bytearray(min(nr_bytes, _RECV_CHUNK))
        got = 0
        while got < nr_bytes:
            if got == len(buffer):
                buffer.extend(bytes(min(nr_bytes - got, len(buffer))))
            with memoryview(buffer) as view:
                n = sock.recv_into(view[got:], min(len(buffer) - got, _RECV_CHUNK))
            if not n:  # connection closed: return what arrived, as pynetdicom's recv does
                break
            got += n
        if got < len(buffer):
            del buffer[got:]
        return buffer

    def close(self) -> None:
        super().close()
        self.close_waker()

    def close_waker(self) -> None:
        for end in (self.wake_r, self.wake_w):
            end.close()


class _WakingDUL(DULServiceProvider):
    #: the association's direct C-STORE path (set in ``_Handler._create_association``), if any
    direct: DirectStoreReceiver | None = None

    def _read_pdu_data(self) -> None:
        """pynetdicom's PDU read, except that a P-DATA-TF is split into views (``split_p_data``)
        instead of being decoded into copies, and that a C-STORE the direct path takes never reaches
        pynetdicom; the events put on the state machine's queue are otherwise the same."""
        assoc = self.assoc
        direct = self.direct
        receiving = direct is not None and direct.active
        if not receiving and (assoc.get_handlers(evt.EVT_DATA_RECV) or assoc.get_handlers(evt.EVT_PDU_RECV)):
            super()._read_pdu_data()  # those handlers expect pynetdicom's own PDU objects
            return
        sock = self.socket
        assert sock is not None
        try:
            header = sock.recv(6)
            pdu_type, _, pdu_length = _PDU_HEADER.unpack(header)
        except (OSError, TimeoutError, struct.error):
            if direct is not None:
                direct.abandon()
            self.event_queue.put("Evt17")  # transport connection closed (or closing mid-header)
            return
        if pdu_type not in (0x01, 0x02, 0x03, 0x04, 0x05, 0x06, 0x07):
            log.error("unknown PDU type 0x%02X received", pdu_type)
            if direct is not None:
                direct.abandon()
            self.event_queue.put("Evt19")  # unrecognised PDU
            return
        if receiving:
            assert direct is not None
            if pdu_type == _P_DATA_TF:
                self._receive_direct(direct, pdu_length)
                return
            direct.abandon()  # an A-ABORT, say, in the middle of a data set: pynetdicom takes it
        try:
            body = sock.recv(pdu_length)
        except (OSError, TimeoutError):
            body = bytearray()
        if len(body) != pdu_length:
            log.error("connection closed before the entire PDU was received")
            self.event_queue.put("Evt17")
            return
        if pdu_type == _P_DATA_TF:
            self._received_p_data(direct, body)
            return
        try:
            pdu, event = self._decode_pdu(header + body)
        except Exception:
            log.error("cannot decode a received PDU")
            self.event_queue.put("Evt19")  # invalid PDU
            return
        self.event_queue.put(event)
        self._recv_pdu.put(pdu)

    def _received_p_data(self, direct: DirectStoreReceiver | None, body: bytearray) -> None:
        """A P-DATA-TF's values (``body``: its variable field) to the direct path when it takes them,
        else to pynetdicom's state machine."""
        try:
            primitive = split_p_data(body)
        except ValueError:
            log.error("cannot decode a received PDU")
            self.event_queue.put("Evt19")  # invalid PDU
            return
        if direct is not None and direct.begin(primitive):
            return  # a C-STORE request the direct path serves: its data set follows
        self.event_queue.put("Evt10")
        self._recv_pdu.put(ReceivedPData(primitive))

    def _receive_direct(self, direct: DirectStoreReceiver, pdu_length: int) -> None:
        sock = self.socket
        assert sock is not None and sock.socket is not None
        try:
            rest = direct.receive(sock.socket, pdu_length)
            if rest is not None:  # the next message's values, in the same PDU as the data set's end
                self._received_p_data(direct, rest)
        except ConnectionClosed:
            direct.abandon()
            log.error("connection closed before the entire PDU was received")
            self.event_queue.put("Evt17")
        except ProtocolError as exc:
            direct.abandon()
            log.error("invalid P-DATA-TF received: %s", exc)
            self.event_queue.put("Evt19")  # invalid PDU: pynetdicom aborts the association

    def run_reactor(self) -> None:
        try:
            super().run_reactor()
        finally:
            # however the association ended (network timeout, killed, closed in Sta13), a partly
            # received object's buffer goes back (a grown one could hold up to max_object_bytes)
            if self.direct is not None:
                self.direct.abandon()
            # an acceptor's DUL thread usually ends without AssociationSocket.close() (the association
            # thread kills it after A-RELEASE; socketserver closes the TCP socket): free the socketpair here
            if isinstance(self.socket, _FastSocket):
                self.socket.close_waker()


class _WaitingAssociation(Association):
    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        #: held while a request is served, by the association thread or (a C-STORE) the DUL thread
        self.serving = threading.Lock()

    def serve_store_inline(self, request: C_STORE, context_id: int) -> bool:
        """Serve a C-STORE request on the calling (DUL) thread; False, having done nothing, when it
        must go to the association thread instead: another request is being served, the association
        is releasing, or pynetdicom's ``_serve_request`` would end it (an unknown presentation context,
        a SOP class with no storage service), which blocks until the DUL thread has stopped and so
        cannot run on it. Unlike ``_serve_request`` this leaves ``_is_paused`` alone: that flag tells
        a thread sending on the association (a Storage Commitment report) that the association thread
        stands still, which an inline store says nothing about."""
        if self._sent_release or not self.is_established:
            return False
        context = self.storage_context(context_id, request.AffectedSOPClassUID)
        if context is None:
            return False
        if not self.serving.acquire(blocking=False):
            return False
        try:
            self.dimse.cancel_req = {}
            StorageServiceClass(self).SCP(request, context)
            self.dimse.cancel_req = {}
        except Exception:
            # pynetdicom aborts here; its blocking abort() waits for this very thread to stop, so the
            # A-ABORT is only queued, and the association thread ends the association once it is sent
            log.exception("C-STORE could not be served; aborting the association")
            self.abort(block=False)
        finally:
            # a long store is no idle association: the network timeout counts from its response
            self.dul._idle_timer.restart()
            self.serving.release()
        return True

    def storage_context(self, context_id: int, sop_class_uid: str) -> Any:
        """The accepted presentation context ``context_id`` when pynetdicom would serve a C-STORE of
        ``sop_class_uid`` on it with the Storage service class, else None (it would abort, or answer
        with another service class)."""
        context = self._accepted_cx.get(context_id)
        if context is None:
            return None
        class_uid = sop_class_uid
        try:
            class_uid = self.acceptor.accepted_common_extended[class_uid][0]
        except KeyError:
            pass
        if _config.UNRESTRICTED_STORAGE_SERVICE:
            class_uid = _ANY_STORAGE_CLASS
        if uid_to_service_class(class_uid) is not StorageServiceClass:
            return None
        return context

    def idle_for_requests(self) -> bool:
        """No request is being served and none waits to be."""
        queued = self.dimse.msg_queue
        return isinstance(queued, _InlineStoreQueue) and queued.requests == 0 and not self.serving.locked()

    def _idle_timeout(self) -> bool:
        """The network timeout ran out, read while no request is served: an inline C-STORE restarts the
        idle timer when it ends, and until then it is no idle association."""
        if not self.serving.acquire(blocking=False):
            return False
        try:
            return self.dul.idle_timer_expired()
        finally:
            self.serving.release()

    def _run_reactor(self) -> None:
        """pynetdicom's acceptor reactor, less the fixed 1 ms sleep that starts each of its loops: its
        DIMSE queue read already waits (``_WaitingDIMSE.get_msg``), and the sleep came after every
        response, so it could hold back the next request. The checks and their order are pynetdicom's."""
        self._is_paused = False
        while not self._kill:
            # send_*() from a handler pauses the reactor here, as in pynetdicom
            self._is_paused = True
            self._reactor_checkpoint.wait()
            self._is_paused = False
            context_id, msg = self.dimse.get_msg(block=False)
            if msg:
                with self.serving:
                    self._serve_request(msg, context_id)
                    # as after an inline C-STORE: the network timeout counts from the end of a request
                    # (a C-MOVE longer than it was aborted right after its final response)
                    self.dul._idle_timer.restart()
                if getattr(msg, "is_valid_request", False):
                    queued = self.dimse.msg_queue
                    if isinstance(queued, _InlineStoreQueue):
                        queued.served()
            if self.is_established and self.acse.is_release_requested():
                self.acse.send_release(is_response=True)
                _PYNETDICOM_LOG.info("Association Released")
                self.is_released = True
                self.is_established = False
                evt.trigger(self, evt.EVT_RELEASED, {})
                self.kill()
                return
            if self.acse.is_aborted():
                _PYNETDICOM_LOG.info(
                    "Association Aborted" + (" (A-P-ABORT)" if self.acse.is_aborted("a-p-abort") else "")
                )
                self.dul.receive_pdu(wait=False)  # so that EVT_ACSE_RECV fires for subscribers
                self.is_aborted = True
                self.is_established = False
                evt.trigger(self, evt.EVT_ABORTED, {})
                self.kill()
                return
            if not self.dul.is_alive():
                self.kill()
                return
            if self._idle_timeout():
                _PYNETDICOM_LOG.error("Network timeout reached")
                if self.network_timeout_response == "A-RELEASE":
                    self._is_paused = True
                    self._reactor_checkpoint.wait()
                    self.release()
                    self._is_paused = False
                else:
                    self.abort()
                self.kill()
                return


class _PolicyACSE(ACSE):
    """ACSE that applies the calling-AE policy before pynetdicom's own checks."""

    policy: CallingPolicy | None = None

    def _negotiate_as_acceptor(self) -> None:
        primitive = self.requestor.primitive
        calling = str(getattr(primitive, "calling_ae_title", "") or "").strip()
        address = self.assoc.requestor.address
        if self.policy is not None and not self.policy(calling, address):
            log.warning("association from %s rejected: calling AE not allowed", address)
            self.requestor.ae_title = calling
            self.send_reject(0x01, 0x01, 0x03)
            evt.trigger(self.assoc, evt.EVT_REJECTED, {})
            self.assoc.kill()
            return
        super()._negotiate_as_acceptor()


class _Handler(RequestHandler):
    def _create_association(self) -> Any:
        # pynetdicom's own version, except that it deep-copies the server's supported contexts for every
        # association: with ~180 SOP classes x 45 transfer syntaxes that is ~0.5 s of CPU per association.
        # Negotiation only reads them (negotiate_as_acceptor builds new result contexts), so share them.
        server: ConduitAssociationServer = self.server  # type: ignore[assignment]
        assoc = _WaitingAssociation(self.ae, MODE_ACCEPTOR)
        assoc._server = server
        assoc.name = f"AcceptorThread@{datetime.now():%Y%m%d%H%M%S}"
        set_nodelay(self.request)
        sock = AssociationSocket(assoc, client_socket=self.request)
        sock.__class__ = _FastSocket
        assert isinstance(sock, _FastSocket)
        assoc.dul.to_provider_queue = _WakingQueue(sock.attach_waker())
        assoc.set_socket(sock)
        # the DUL thread's idle wait is the select() in _FastSocket.ready, not a sleep
        assoc.dul._run_loop_delay = 0
        assoc.dimse.__class__ = _WaitingDIMSE
        assoc.dimse.msg_queue = _InlineStoreQueue(assoc)
        assoc.dimse.send_lock = threading.RLock()  # an EVT_DIMSE_SENT handler may send again
        assoc.dul.__class__ = _WakingDUL
        if server.direct_store is not None:
            assoc.dul.direct = DirectStoreReceiver(assoc, server.direct_store)
        assoc.dul._target = make_target(assoc.dul.run_reactor)  # Thread bound the old method at __init__
        assoc.acceptor.maximum_length = self.ae.maximum_pdu_size
        assoc.acceptor.ae_title = server.ae_title
        assoc.acceptor.address_info = self.local
        assoc.acceptor.implementation_class_uid = self.ae.implementation_class_uid
        assoc.acceptor.implementation_version_name = self.ae.implementation_version_name
        assoc.acceptor.supported_contexts = list(server.contexts)
        assoc.requestor.address_info = self.remote
        for event in server._handlers:
            if event.is_intervention and server._handlers[event]:
                assoc.bind(event, *server._handlers[event])
            elif isinstance(event, evt.NotificationEvent):
                for handler in server._handlers[event]:
                    assoc.bind(event, handler[0], handler[1])
        acse = _PolicyACSE(assoc)
        acse.policy = server.calling_policy
        assoc.acse = acse
        return assoc


class ConduitAssociationServer(ThreadedAssociationServer):
    """``calling_policy`` admits calling AEs; ``direct_store``, when given, serves the C-STOREs that
    ``adapters.dicom.direct_store`` may take (its ``on_c_store`` must be the bound EVT_C_STORE handler)."""

    calling_policy: CallingPolicy | None = None
    direct_store: StoreTarget | None = None
    daemon_threads = True

    def __init__(
        self,
        *args: Any,
        calling_policy: CallingPolicy | None = None,
        direct_store: StoreTarget | None = None,
        **kwargs: Any,
    ) -> None:
        kwargs.setdefault("request_handler", _Handler)
        super().__init__(*args, **kwargs)
        self.calling_policy = calling_policy
        self.direct_store = direct_store

    def get_request(self) -> tuple[socket.socket, tuple[str, int]]:
        assert self.socket is not None
        client, address = self.socket.accept()
        set_nodelay(client)  # before any TLS handshake byte, so the handshake is not delayed either
        if self.ssl_context:
            client = self.ssl_context.wrap_socket(client, server_side=True)
        return client, address


def nodelay_on_open(event: Any) -> None:
    """EVT_CONN_OPEN handler for associations we request (C-MOVE sub-operations, forwarding, reports)."""
    sock = getattr(getattr(event.assoc.dul, "socket", None), "socket", None)
    if sock is not None:
        set_nodelay(sock)
