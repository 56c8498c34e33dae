"""Transport-level behaviour: garbage on the socket, the association limit, DICOM TLS, TCP_NODELAY."""

from __future__ import annotations

import socket
import ssl
import time
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


def _ct_client(port: int) -> Any:
    from pynetdicom.sop_class import CTImageStorage, StudyRootQueryRetrieveInformationModelFind

    ae = AE(ae_title="TESTSCU")
    ae.add_requested_context(CTImageStorage, "1.2.840.10008.1.2.1")
    ae.add_requested_context(StudyRootQueryRetrieveInformationModelFind)
    ae.acse_timeout = ae.dimse_timeout = ae.network_timeout = 10
    assoc = ae.associate("127.0.0.1", port, ae_title="CONDUIT")
    assert assoc.is_established
    return assoc


def _ct_instance(tmp_path: Path) -> Any:
    import pydicom
    from dicom_corpus import make_corpus

    make_corpus(tmp_path / "ct", count=1, patients=1, studies_per_patient=1, modalities=("CT",))
    [path] = (tmp_path / "ct").glob("*.dcm")
    return pydicom.dcmread(path)


def test_c_store_is_served_on_the_dul_thread_other_requests_on_the_association_thread(
    scp: Any, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A C-STORE that arrives while the association thread is idle is served by the DUL thread that
    decoded it (no hand-off either way); a C-FIND still goes to the association thread."""
    import threading

    from pydicom.dataset import Dataset
    from pynetdicom.sop_class import StudyRootQueryRetrieveInformationModelFind

    pacs = scp.runtime.ports["pacs"]
    threads: dict[str, threading.Thread] = {}
    real_store, real_find = pacs.store, pacs.find

    def store(*args: Any, **kwargs: Any) -> Any:
        threads["store"] = threading.current_thread()
        return real_store(*args, **kwargs)

    def find(*args: Any, **kwargs: Any) -> Any:
        threads["find"] = threading.current_thread()
        return real_find(*args, **kwargs)

    monkeypatch.setattr(pacs, "store", store)
    monkeypatch.setattr(pacs, "find", find)
    ds = _ct_instance(tmp_path)
    assoc = _ct_client(scp.port)
    try:
        [server_side] = list(scp.server.active_associations)
        for _ in range(3):
            assert assoc.send_c_store(ds).Status == 0x0000
        query = Dataset()
        query.QueryRetrieveLevel = "STUDY"
        query.StudyInstanceUID = ds.StudyInstanceUID
        answers = list(assoc.send_c_find(query, StudyRootQueryRetrieveInformationModelFind))
        assert answers[-1][0].Status == 0x0000 and len(answers) == 2
    finally:
        assoc.release()
    assert threads["store"] is server_side.dul
    assert threads["find"] is server_side


def test_an_abort_while_serving_a_c_store_on_the_dul_thread_does_not_hang_it(
    scp: Any, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """pynetdicom aborts the association when a service class raises; from the DUL thread its blocking
    abort would wait for that very thread forever. The A-ABORT is queued instead and goes out."""
    from pynetdicom.service_class import StorageServiceClass

    def broken(self: Any, req: Any, context: Any) -> None:
        raise RuntimeError("service class bug")

    monkeypatch.setattr(StorageServiceClass, "SCP", broken)
    ds = _ct_instance(tmp_path)
    assoc = _ct_client(scp.port)
    [server_side] = list(scp.server.active_associations)
    started = time.monotonic()
    status = assoc.send_c_store(ds)
    assert not status  # no response: the association was aborted
    assert time.monotonic() - started < 5
    deadline = time.monotonic() + 5
    while not assoc.is_aborted and time.monotonic() < deadline:
        time.sleep(0.05)
    assert assoc.is_aborted
    while (server_side.dul.is_alive() or server_side.is_alive()) and time.monotonic() < deadline:
        time.sleep(0.05)
    assert not server_side.dul.is_alive() and not server_side.is_alive()
    monkeypatch.undo()
    assert _echo(scp.port).Status == 0x0000
