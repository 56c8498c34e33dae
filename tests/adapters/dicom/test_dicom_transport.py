"""Transport-level behaviour: garbage on the socket, the association limit, DICOM TLS, TCP_NODELAY,
C-STORE requests served on the DUL thread."""

from __future__ import annotations

import socket
import ssl
import threading
import time
from io import BytesIO
from pathlib import Path
from typing import Any

import pytest
from pynetdicom import AE
from pynetdicom.sop_class import Verification

from tests.support import self_signed_certificate


def _echo(port: int, **kwargs: Any) -> Any:
    ae = AE(ae_title="TESTSCU")
    ae.add_requested_context(Verification)
    ae.acse_timeout = 5
    assoc = ae.associate("127.0.0.1", port, ae_title="CONDUIT", **kwargs)
    if not assoc.is_established:
        return None
    status = assoc.send_c_echo()
    assoc.release()
    return status


def test_garbage_and_truncated_pdus_do_not_hurt_the_server(scp: Any) -> None:
    for payload in (
        b"\xff" * 64,
        b"\x01\x00\x00\x00\xff\xff",
        b"GET / HTTP/1.1\r\n\r\n",
        b"\x04\x00\x00\x00\x00\x10",
        b"\x04\x00\x00\x00\x00\x06\x00\x00\x00\xff\x01\x03",  # P-DATA-TF whose item overruns it
    ):
        with socket.create_connection(("127.0.0.1", scp.port), timeout=5) as sock:
            sock.sendall(payload)
            sock.shutdown(socket.SHUT_WR)
            try:
                sock.recv(1024)  # an A-ABORT or a closed connection, either is fine
            except OSError:
                pass
    assert _echo(scp.port).Status == 0x0000


def test_association_limit(start_scp: Any) -> None:
    scp = start_scp(max_associations=1)
    ae = AE(ae_title="HOLDER")
    ae.add_requested_context(Verification)
    holder = ae.associate("127.0.0.1", scp.port, ae_title="CONDUIT")
    assert holder.is_established
    try:
        assert _echo(scp.port) is None  # rejected: local limit exceeded
    finally:
        holder.release()
    # the released association's thread finishes asynchronously: the slot frees up shortly after
    deadline = time.monotonic() + 5
    status = _echo(scp.port)
    while status is None and time.monotonic() < deadline:
        time.sleep(0.1)
        status = _echo(scp.port)
    assert status is not None and status.Status == 0x0000


def test_sockets_have_tcp_nodelay(scp: Any) -> None:
    ae = AE(ae_title="TESTSCU")
    ae.add_requested_context(Verification)
    assoc = ae.associate("127.0.0.1", scp.port, ae_title="CONDUIT")
    try:
        [server_side] = list(scp.server.active_associations)
        sock = server_side.dul.socket.socket
        assert sock.getsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY) == 1
    finally:
        assoc.release()


def test_association_wakeup_sockets_serve_many_messages_and_close_on_release(scp: Any) -> None:
    # the server's DUL thread waits in select() on its socket and a wake-up socketpair (adapters.dicom.server)
    ae = AE(ae_title="TESTSCU")
    ae.add_requested_context(Verification)
    assoc = ae.associate("127.0.0.1", scp.port, ae_title="CONDUIT")
    assert assoc.is_established
    [server_side] = list(scp.server.active_associations)
    sock = server_side.dul.socket
    from pynetdicom.transport import AssociationSocket

    assert type(sock).recv is not AssociationSocket.recv  # the large-read recv, not pynetdicom's 4 KiB one
    wake_ends = (sock.wake_r, sock.wake_w)
    assert all(end.fileno() != -1 for end in wake_ends)
    try:
        for _ in range(30):
            status = assoc.send_c_echo()
            assert status is not None and status.Status == 0x0000
    finally:
        assoc.release()
    deadline = time.monotonic() + 5
    while any(end.fileno() != -1 for end in wake_ends) and time.monotonic() < deadline:
        time.sleep(0.05)
    assert all(end.fileno() == -1 for end in wake_ends), "wake-up sockets leaked after release"


@pytest.fixture
def certificate(tmp_path: Path) -> tuple[Path, Path]:
    return self_signed_certificate(tmp_path)


def test_dicom_tls(start_scp: Any, certificate: tuple[Path, Path]) -> None:
    cert, key = certificate
    scp = start_scp(tls_cert=cert, tls_key=key)
    assert "dicom+tls" in scp.describe()
    client = ssl.create_default_context(ssl.Purpose.SERVER_AUTH, cafile=str(cert))
    assert _echo(scp.port, tls_args=(client, "127.0.0.1")).Status == 0x0000
    assert _echo(scp.port) is None  # plain DICOM to a TLS port gets nowhere


def test_part10_header_reads_back_as_file_meta() -> None:
    from io import BytesIO

    import pydicom

    from adapters.dicom.part10 import part10_header

    header = part10_header("1.2.840.10008.5.1.4.1.1.2", "1.2.3.45", "1.2.840.10008.1.2.4.50", "CT01")
    meta = pydicom.dcmread(BytesIO(header)).file_meta
    assert meta.MediaStorageSOPInstanceUID == "1.2.3.45"  # odd length: NUL-padded, read back clean
    assert meta.TransferSyntaxUID == "1.2.840.10008.1.2.4.50"
    assert meta.SourceApplicationEntityTitle == "CT01"
    assert meta.FileMetaInformationGroupLength == len(header) - 132 - 12
    with pytest.raises(UnicodeError):
        part10_header("1.2.é", "1.2", "1.2")


def test_quiet_puts_wake_the_dul_thread_once_per_burst() -> None:
    from adapters.dicom.server import _MAX_HELD, _WakingQueue

    reader, writer = socket.socketpair()
    reader.setblocking(False)

    def wakeups() -> int:
        try:
            return len(reader.recv(4096))
        except BlockingIOError:
            return 0

    outgoing = _WakingQueue(writer)
    try:
        for n in range(3):
            outgoing.put_quietly(n)
        assert wakeups() == 0 and outgoing.qsize() == 3  # held matches: queued, the DUL not yet woken
        outgoing.put("final")
        assert wakeups() == 1  # the final response wakes it once for all four
        for n in range(_MAX_HELD):
            outgoing.put_quietly(n)
        assert wakeups() == 1  # a long answer is never held back for more than _MAX_HELD matches
    finally:
        reader.close()
        writer.close()


class _FakeAssociation:
    """What _InlineStoreQueue asks of an association: to serve a C-STORE inline, unless it is busy."""

    def __init__(self) -> None:
        self.busy = False
        self.served: list[tuple[Any, int]] = []

    def serve_store_inline(self, primitive: Any, context_id: int) -> bool:
        if self.busy:
            return False
        self.served.append((primitive, context_id))
        return True


def _store_request(message_id: int = 1) -> Any:
    from pynetdicom.dimse_primitives import C_STORE

    request = C_STORE()
    request.MessageID = message_id
    request.AffectedSOPClassUID = "1.2.840.10008.5.1.4.1.1.2"
    request.AffectedSOPInstanceUID = f"1.2.3.{message_id}"
    request.Priority = 0
    request.DataSet = BytesIO(b"")
    return request


def test_a_store_request_is_served_inline_only_when_no_request_waits_or_is_served() -> None:
    from pynetdicom.dimse_primitives import C_FIND, C_STORE

    from adapters.dicom.server import _InlineStoreQueue

    assoc = _FakeAssociation()
    received = _InlineStoreQueue(assoc)  # type: ignore[arg-type]
    first = _store_request(1)
    received.put((1, first))
    assert assoc.served == [(first, 1)] and received.empty()  # served by the putting thread

    assoc.busy = True  # e.g. the association thread is serving a request
    busy = _store_request(2)
    received.put((1, busy))
    assert received.get_nowait() == (1, busy)  # queued for the association thread
    assoc.busy = False
    received.served()

    find = C_FIND()
    find.MessageID = 3
    find.AffectedSOPClassUID = "1.2.840.10008.5.1.4.1.2.2.1"
    find.Priority = 0
    find.Identifier = BytesIO(b"")
    assert find.is_valid_request
    received.put((1, find))
    assert received.get_nowait() == (1, find)  # taken by the association thread, not served yet
    after = _store_request(4)
    received.put((1, after))  # so this one waits behind it: order kept
    assert received.get_nowait() == (1, after)
    received.served()
    received.served()
    last = _store_request(5)
    received.put((1, last))  # both served: inline again
    assert [p for p, _ in assoc.served] == [first, last]

    response = C_STORE()  # a C-GET sub-operation's C-STORE-RSP: always for the waiting sender
    response.MessageIDBeingRespondedTo = 7
    response.Status = 0x0000
    received.put((1, response))
    assert received.get_nowait() == (1, response)
    assert received.requests == 0  # a response is no request to wait for


def test_a_stored_object_is_served_on_the_thread_that_received_it(
    start_scp: Any, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    import pydicom
    from dicom_corpus import make_corpus

    from adapters.dicom.handlers import DimseHandlers

    served_on: list[bool] = []
    original = DimseHandlers.on_c_store

    def on_c_store(self: DimseHandlers, event: Any) -> Any:
        served_on.append(threading.current_thread() is event.assoc.dul)
        return original(self, event)

    monkeypatch.setattr(DimseHandlers, "on_c_store", on_c_store)
    scp = start_scp(direct_store=False)  # pynetdicom's path (the direct one: test_dicom_direct_store.py)
    plan = make_corpus(tmp_path / "corpus", count=3)
    ae = AE(ae_title="TESTSCU")
    for path in plan.files:
        ae.add_requested_context(pydicom.dcmread(path).SOPClassUID)
    assoc = ae.associate("127.0.0.1", scp.port, ae_title="CONDUIT")
    assert assoc.is_established
    try:
        for path in plan.files:
            status = assoc.send_c_store(pydicom.dcmread(path))
            assert status is not None and status.Status == 0x0000
    finally:
        assoc.release()
    assert served_on == [True, True, True]  # the DUL thread, not the association thread


def test_a_store_request_that_would_end_the_association_is_left_to_the_association_thread(
    scp: Any,
) -> None:
    """pynetdicom aborts on a C-STORE whose SOP class has no storage service; its abort() waits for the
    DUL thread to stop, so served on the DUL thread it would hang that thread for good."""
    from pynetdicom.sop_class import CTImageStorage

    ae = AE(ae_title="TESTSCU")
    ae.add_requested_context(CTImageStorage)
    assoc = ae.associate("127.0.0.1", scp.port, ae_title="CONDUIT")
    assert assoc.is_established
    [server_side] = list(scp.server.active_associations)
    request = _store_request(1)
    request.AffectedSOPClassUID = "1.2.3.4"  # on the accepted CT context, but no storage SOP class
    request.DataSet = BytesIO(b"\x08\x00\x16\x00\x00\x00\x00\x00")
    [context] = assoc.accepted_contexts
    assoc.dimse.send_msg(request, context.context_id)
    _wait_until_ended(server_side)  # aborted, and both threads ended
    assoc.abort()
    assert _echo(scp.port).Status == 0x0000


@pytest.mark.parametrize("direct_store", [True, False], ids=["direct", "pynetdicom"])
def test_a_long_inline_store_is_not_ended_by_the_network_timeout(
    start_scp: Any, tmp_path: Path, monkeypatch: pytest.MonkeyPatch, direct_store: bool
) -> None:
    from adapters.dicom.handlers import DimseHandlers

    original = DimseHandlers.store_received

    def slow_store(self: DimseHandlers, *args: Any, **kwargs: Any) -> Any:
        time.sleep(1.5)  # longer than the network timeout: a slow disk, a locked database
        return original(self, *args, **kwargs)

    monkeypatch.setattr(DimseHandlers, "store_received", slow_store)
    scp = start_scp(network_timeout=1, direct_store=direct_store)
    assoc, dataset = _store_association(scp.port, tmp_path)
    try:
        status = assoc.send_c_store(dataset)
        assert status is not None and status.Status == 0x0000  # answered, not aborted
        assert assoc.is_established
    finally:
        assoc.release()


def test_a_message_sent_from_another_thread_is_never_split_by_an_inline_response() -> None:
    """PS3.8 E.1: the P-DATAs of one message are not interleaved with another's. A Storage Commitment
    report leaves in several P-DATAs from its own thread while the DUL thread may send a C-STORE
    response: whole messages go out one at a time."""
    import queue as queue_module
    from types import SimpleNamespace

    from pynetdicom.dimse import DIMSEServiceProvider
    from pynetdicom.dimse_primitives import C_STORE, N_EVENT_REPORT

    from adapters.dicom.server import _WaitingDIMSE

    sent: list[str] = []
    dul_trying, dul_sent = threading.Event(), threading.Event()

    class Dul:
        to_provider_queue: queue_module.Queue[Any] = queue_module.Queue()

        def send_pdu(self, pdata: Any) -> None:
            sender = threading.current_thread().name
            sent.append(sender)
            if sender == "dul":
                dul_sent.set()
            elif len(sent) == 1:
                # the report's first P-DATA is out: give the DUL thread every chance to cut in
                assert dul_trying.wait(5)
                dul_sent.wait(0.5)

    assoc = SimpleNamespace(
        is_requestor=False,
        dul=Dul(),
        requestor=SimpleNamespace(maximum_length=128),
        get_handlers=lambda event: [],
    )
    dimse = DIMSEServiceProvider(assoc)  # type: ignore[arg-type]
    dimse.__class__ = _WaitingDIMSE
    dimse.send_lock = threading.RLock()  # type: ignore[attr-defined]

    report = N_EVENT_REPORT()
    report.MessageID = 1
    report.AffectedSOPClassUID = "1.2.840.10008.1.20.1"
    report.AffectedSOPInstanceUID = "1.2.840.10008.1.20.1.1"
    report.EventTypeID = 1
    report.EventInformation = BytesIO(b"\x08\x00\x55\x11\x00\x00\x00\x00" * 64)  # several P-DATAs
    response = C_STORE()
    response.MessageIDBeingRespondedTo = 1
    response.AffectedSOPClassUID = "1.2.840.10008.5.1.4.1.1.2"
    response.AffectedSOPInstanceUID = "1.2.3.4"
    response.Status = 0x0000

    def respond() -> None:
        while not sent:  # once the report has begun
            time.sleep(0.001)
        dul_trying.set()
        dimse.send_msg(response, 1)

    reporter = threading.Thread(target=dimse.send_msg, args=(report, 1), name="reporter")
    dul = threading.Thread(target=respond, name="dul")
    dul.start()
    reporter.start()
    reporter.join(10)
    dul.join(10)
    assert len(sent) > 2 and sent[-1] == "dul" and set(sent[:-1]) == {"reporter"}


@pytest.mark.parametrize("direct_store", [True, False], ids=["direct", "pynetdicom"])
def test_a_store_whose_service_fails_on_the_dul_thread_aborts_the_association_cleanly(
    start_scp: Any, tmp_path: Path, monkeypatch: pytest.MonkeyPatch, direct_store: bool
) -> None:
    """pynetdicom aborts when a service class raises; on the DUL thread that abort must not wait for
    the DUL thread itself: the A-ABORT goes out and both of the association's threads end. The direct
    path does the same when answering fails."""
    from pynetdicom.service_class import StorageServiceClass

    from adapters.dicom.direct_store import DirectStoreReceiver

    def broken(*args: Any) -> None:
        raise RuntimeError("service class failure")

    if direct_store:
        monkeypatch.setattr(DirectStoreReceiver, "_respond", broken)
    else:
        monkeypatch.setattr(StorageServiceClass, "SCP", broken)
    scp = start_scp(direct_store=direct_store)
    assoc, dataset = _store_association(scp.port, tmp_path)
    [server_side] = list(scp.server.active_associations)
    status = assoc.send_c_store(dataset)
    assert not status  # no response: the association was aborted
    _wait_until_ended(server_side)
    assert server_side._sent_abort
    monkeypatch.undo()
    assert _echo(scp.port).Status == 0x0000


def _store_association(port: int, tmp_path: Path) -> tuple[Any, Any]:
    """A pynetdicom SCU association to Conduit proposing one generated instance's SOP class, and that
    instance."""
    import pydicom
    from dicom_corpus import make_corpus

    [path] = make_corpus(tmp_path / "corpus", count=1).files
    dataset = pydicom.dcmread(path)
    ae = AE(ae_title="TESTSCU")
    ae.add_requested_context(dataset.SOPClassUID)
    assoc = ae.associate("127.0.0.1", port, ae_title="CONDUIT")
    assert assoc.is_established
    return assoc, dataset


def _wait_until_ended(server_side: Any) -> None:
    """Until both threads of a server-side association (its reactor and its DUL) have ended."""
    deadline = time.monotonic() + 10
    while (server_side.dul.is_alive() or server_side.is_alive()) and time.monotonic() < deadline:
        time.sleep(0.05)
    assert not server_side.dul.is_alive() and not server_side.is_alive()
