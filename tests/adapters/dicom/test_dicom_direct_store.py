"""The direct C-STORE path (adapters/dicom/direct_store.py): which requests it takes, what it stores and
answers, and how it ends an association whose data set breaks the protocol."""

from __future__ import annotations

import ssl
import struct
import threading
import time
from io import BytesIO
from pathlib import Path
from types import SimpleNamespace
from typing import Any

import pydicom
import pytest
from dicom_corpus import make_corpus
from pydicom.uid import CTImageStorage
from pynetdicom import AE, evt
from pynetdicom.dimse_messages import C_STORE_RQ
from pynetdicom.dimse_primitives import C_STORE
from pynetdicom.pdu import P_DATA_TF
from pynetdicom.pdu_primitives import P_DATA

from adapters.dicom.direct_store import DirectStoreReceiver
from adapters.dicom.handlers import DimseHandlers
from adapters.dicom.part10 import part10_header
from engine.aligned import BUFFERS, CHUNK, is_aligned
from services.pacs.storage import storage_key
from tests.support import self_signed_certificate


class _Calls:
    """Which path served each C-STORE: pynetdicom's handler, or ``store_received`` called directly."""

    def __init__(self, monkeypatch: pytest.MonkeyPatch) -> None:
        self.handler = 0
        self.received: list[tuple[bool, bool]] = []  # (on the DUL thread, the object aligned)
        on_c_store, store_received = DimseHandlers.on_c_store, DimseHandlers.store_received
        calls = self

        def counting_on_c_store(self: DimseHandlers, event: Any) -> Any:
            calls.handler += 1
            return on_c_store(self, event)

        def recording_store_received(self: DimseHandlers, part10: Any, **kwargs: Any) -> Any:
            on_dul = type(threading.current_thread()).__name__ == "_WakingDUL"
            calls.received.append((on_dul, isinstance(part10, memoryview) and is_aligned(part10)))
            return store_received(self, part10, **kwargs)

        monkeypatch.setattr(DimseHandlers, "on_c_store", counting_on_c_store)
        monkeypatch.setattr(DimseHandlers, "store_received", recording_store_received)

    @property
    def direct(self) -> int:
        return len(self.received) - self.handler


def _associate(port: int, *paths: Path, max_pdu: int = 16_382) -> Any:
    ae = AE(ae_title="TESTSCU")
    ae.maximum_pdu_size = max_pdu
    for path in paths:  # in the file's own transfer syntax: sent as it is, never converted
        ds = pydicom.dcmread(path, stop_before_pixels=True)
        ae.add_requested_context(ds.SOPClassUID, [ds.file_meta.TransferSyntaxUID])
    assoc = ae.associate("127.0.0.1", port, ae_title="CONDUIT")
    assert assoc.is_established
    return assoc


def _expected_file(path: Path) -> bytes:
    """What Conduit stores for a file sent as it is (pynetdicom sends its data set unchanged): its own
    Part 10 header, then the file's data set bytes."""
    raw = path.read_bytes()
    (meta_length,) = struct.unpack_from("<I", raw, 140)  # (0002,0000) value, after preamble and DICM
    ds = pydicom.dcmread(path, stop_before_pixels=True)
    header = part10_header(ds.SOPClassUID, ds.SOPInstanceUID, ds.file_meta.TransferSyntaxUID, "TESTSCU")
    return header + raw[144 + meta_length :]


def _stored(scp: Any, path: Path) -> bytes | None:
    ds = pydicom.dcmread(path, stop_before_pixels=True)
    file = scp.pacs.storage.path(storage_key(ds.StudyInstanceUID, ds.SOPInstanceUID))
    return file.read_bytes() if file.exists() else None


@pytest.mark.parametrize(
    ("max_pdu", "rows", "peer_max_pdu"),
    [(1_048_576, 16, 16_382), (4_096, 64, 16_382), (16_384, 1_100, 16_382), (1_048_576, 16, 64)],
    # the last: a peer taking PDUs shorter than the C-STORE-RSP command set gets it in fragments
    ids=["one-pdu", "many-pdus", "larger-than-the-first-buffer", "peer-takes-small-pdus"],
)
def test_stored_objects_are_received_directly_and_kept_byte_for_byte(
    start_scp: Any,
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
    max_pdu: int,
    rows: int,
    peer_max_pdu: int,
) -> None:
    calls = _Calls(monkeypatch)
    scp = start_scp(max_pdu=max_pdu)
    plan = make_corpus(tmp_path / "corpus", count=3, rows=rows)
    assoc = _associate(scp.port, *plan.files, max_pdu=peer_max_pdu)
    try:
        for path in plan.files:
            status = assoc.send_c_store(path)
            assert status is not None and status.Status == 0x0000
    finally:
        assoc.release()
    assert calls.handler == 0 and calls.received == [(True, True)] * 3
    for path in plan.files:
        assert _stored(scp, path) == _expected_file(path)


def test_both_paths_store_the_same_bytes(start_scp: Any, tmp_path: Path) -> None:
    direct, pynetdicom_path = start_scp(), start_scp(direct_store=False)
    first, second = make_corpus(tmp_path / "corpus", count=2, patients=1, studies_per_patient=1).files
    for scp, path in ((direct, first), (pynetdicom_path, second)):
        assoc = _associate(scp.port, path)
        try:
            assert assoc.send_c_store(path).Status == 0x0000
        finally:
            assoc.release()
    assert _stored(direct, first) == _expected_file(first)
    assert _stored(pynetdicom_path, second) == _expected_file(second)


def test_a_refusal_is_answered_with_its_status_and_error_comment(
    start_scp: Any, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    calls = _Calls(monkeypatch)
    scp = start_scp()
    [path] = make_corpus(tmp_path / "corpus", count=1).files
    dataset = pydicom.dcmread(path)
    del dataset.StudyInstanceUID  # nothing to file the object under
    assoc = _associate(scp.port, path)
    try:
        status = assoc.send_c_store(dataset)
        assert status.Status == 0xC000
        assert "StudyInstanceUID" in status.ErrorComment
        assert assoc.send_c_store(path).Status == 0x0000  # the association goes on
    finally:
        assoc.release()
    assert calls.handler == 0 and calls.direct == 2


def test_an_object_over_the_size_limit_is_read_to_its_end_and_refused(
    start_scp: Any, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    calls = _Calls(monkeypatch)
    scp = start_scp(max_object_bytes=100_000, max_pdu=16_384)
    small, large = (
        make_corpus(tmp_path / "small", count=1).files
        + make_corpus(tmp_path / "large", count=1, rows=300, salt=1).files
    )
    assoc = _associate(scp.port, small, large)
    try:
        status = assoc.send_c_store(large)  # 180 kB in twelve PDUs
        assert status.Status == 0xA700
        assert status.ErrorComment == "object larger than the configured maximum"
        assert assoc.send_c_store(small).Status == 0x0000  # the next request's PDUs are read as such
    finally:
        assoc.release()
    assert _stored(scp, large) is None and _stored(scp, small) == _expected_file(small)
    assert calls.handler == 0 and calls.received == [(True, True)]


@pytest.mark.parametrize(
    ("scp_settings", "request_extra"),
    [
        ({}, {"originator_aet": "MOVER", "originator_id": 5}),  # a C-MOVE sub-operation's command set
        ({"direct_store": False}, {}),  # the path turned off
    ],
    ids=["more-command-elements", "turned-off"],
)
def test_other_requests_go_through_pynetdicom(
    start_scp: Any,
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
    scp_settings: dict[str, Any],
    request_extra: dict[str, Any],
) -> None:
    calls = _Calls(monkeypatch)
    scp = start_scp(**scp_settings)
    [path] = make_corpus(tmp_path / "corpus", count=1).files
    assoc = _associate(scp.port, path)
    try:
        assert assoc.send_c_store(path, **request_extra).Status == 0x0000
    finally:
        assoc.release()
    assert calls.handler == 1 and calls.direct == 0
    assert _stored(scp, path) == _expected_file(path)


# -- a data set that breaks the protocol, sent as raw PDUs -------------------------------------------------
def _request_pdus(path: Path, context_id: int, max_pdu: int = 4_096, message_id: int = 1) -> list[bytes]:
    """The encoded P-DATA-TF PDUs of a C-STORE-RQ for ``path``: its command set, then its data set."""
    dataset = pydicom.dcmread(path)
    request = C_STORE()
    request.MessageID = message_id
    request.AffectedSOPClassUID = dataset.SOPClassUID
    request.AffectedSOPInstanceUID = dataset.SOPInstanceUID
    request.Priority = 2
    raw = path.read_bytes()
    (meta_length,) = struct.unpack_from("<I", raw, 140)
    request.DataSet = BytesIO(raw[144 + meta_length :])
    message = C_STORE_RQ()
    message.primitive_to_message(request)
    return [_p_data_tf(pdata) for pdata in message.encode_msg(context_id, max_pdu)]


def _p_data_tf(primitive: P_DATA) -> bytes:
    pdu = P_DATA_TF()
    pdu.from_primitive(primitive)
    return bytes(pdu.encode())


def _pdu(context_id: int, control: int, value: bytes) -> bytes:
    item = struct.pack(">LBB", len(value) + 2, context_id, control) + value
    return struct.pack(">BBL", 0x04, 0, len(item)) + item


def _wait_until_ended(server_side: Any) -> None:
    deadline = time.monotonic() + 10
    while (server_side.dul.is_alive() or server_side.is_alive()) and time.monotonic() < deadline:
        time.sleep(0.05)
    assert not server_side.dul.is_alive() and not server_side.is_alive()


class _Raw:
    """An association whose C-STORE command set and first data fragment went out as raw PDUs, the
    direct path reading its data set, and the SCU's own reader stopped: the test writes and reads the
    socket itself."""

    def __init__(
        self, start_scp: Any, tmp_path: Path, monkeypatch: pytest.MonkeyPatch, **settings: Any
    ) -> None:
        self.calls = _Calls(monkeypatch)
        self.scp = start_scp(**settings)  # after the patch: the handler it binds is the counting one
        self.paths = make_corpus(tmp_path / "corpus", count=2, rows=64, modalities=("CT",)).files
        self.path = self.paths[0]
        assoc = _associate(self.scp.port, self.path)
        [self.server_side] = list(self.scp.server.active_associations)
        [context] = assoc.accepted_contexts
        self.context_id = context.context_id
        self.pdus = _request_pdus(self.path, self.context_id)
        assert len(self.pdus) > 2
        assoc.dul._kill_thread = True  # pynetdicom's SCU reads no more of the socket
        assoc.dul.join(5)
        self.sock = assoc.dul.socket.socket
        self.sock.sendall(self.pdus[0] + self.pdus[1])
        self.receiver = self.server_side.dul.direct
        deadline = time.monotonic() + 5
        while not self.receiver.active and time.monotonic() < deadline:
            time.sleep(0.01)
        assert self.receiver.active

    def answers(self, seconds: float = 5.0) -> tuple[list[int], bool]:
        """The types of the PDUs the server sends within ``seconds``, and whether it closed the connection."""
        received = b""
        self.sock.settimeout(0.1)
        deadline = time.monotonic() + seconds
        closed = False
        while time.monotonic() < deadline:
            try:
                chunk = self.sock.recv(65536)
            except TimeoutError:
                continue
            except OSError:
                closed = True
                break
            if not chunk:
                closed = True
                break
            received += chunk
        types, offset = [], 0
        while offset + 6 <= len(received):
            pdu_type, _, length = struct.unpack_from(">BBL", received, offset)
            types.append(pdu_type)
            offset += 6 + length
        return types, closed


_A_ABORT = struct.pack(">BBLBBBB", 0x07, 0, 4, 0, 0, 0, 0)
_A_RELEASE_RQ = struct.pack(">BBL4x", 0x05, 0, 4)


@pytest.mark.parametrize(
    "breaking",
    [
        # a fragment on another presentation context, whose value looks like the header of a huge PDU
        lambda cx: _pdu(cx + 2, 0x00, b"\x04\x00" + struct.pack(">L", 768 << 20) + b"\0" * 58),
        lambda cx: _pdu(cx, 0x01, b"\0" * 64),  # a command fragment in the middle of the data set
        # an item longer than the PDU that holds it
        lambda cx: struct.pack(">BBLLBB", 0x04, 0, 6 + 64, 2 + 200, cx, 0x02) + b"\0" * 64,
    ],
    ids=["other-context", "command-fragment", "item-overrun"],
)
def test_a_data_set_that_breaks_the_protocol_aborts_the_association_once(
    start_scp: Any, tmp_path: Path, monkeypatch: pytest.MonkeyPatch, breaking: Any
) -> None:
    raw = _Raw(start_scp, tmp_path, monkeypatch)
    raw.server_side.dul.artim_timer.timeout = 1  # how long it waits for the peer to close after an A-ABORT
    raw.sock.sendall(breaking(raw.context_id))
    # one A-ABORT, nothing of the broken PDU read as further PDUs, and the connection closed by the server
    assert raw.answers() == ([0x07], True)
    _wait_until_ended(raw.server_side)
    assert not raw.receiver.active
    assert raw.calls.received == [] and _stored(raw.scp, raw.path) is None
    second = _associate(raw.scp.port, raw.path)  # the server goes on
    try:
        assert second.send_c_store(raw.path).Status == 0x0000
    finally:
        second.release()


@pytest.mark.parametrize(
    ("ending", "answer"), [(_A_ABORT, []), (_A_RELEASE_RQ, [0x06])], ids=["abort", "release"]
)
def test_an_association_ending_in_the_middle_of_a_data_set_drops_the_object(
    start_scp: Any, tmp_path: Path, monkeypatch: pytest.MonkeyPatch, ending: bytes, answer: list[int]
) -> None:
    raw = _Raw(start_scp, tmp_path, monkeypatch)
    buffer = raw.receiver.buffer
    given: list[Any] = []
    real_give = BUFFERS.give
    monkeypatch.setattr(BUFFERS, "give", lambda b: given.append(b) or real_give(b))
    raw.sock.sendall(ending)
    types, _ = raw.answers(2.0)
    assert types == answer  # pynetdicom's answer: none to an A-ABORT, an A-RELEASE-RP to a release
    _wait_until_ended(raw.server_side)
    assert not raw.receiver.active and given == [buffer]  # the partial object dropped, its buffer back
    assert raw.calls.received == [] and _stored(raw.scp, raw.path) is None


def test_reserved_bits_of_the_message_control_header_are_not_checked(
    start_scp: Any, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """PS3.8 E.2: bits 2-7 of a fragment's message control header are never checked by the receiver."""
    raw = _Raw(start_scp, tmp_path, monkeypatch)
    # the rest of the data set, bit 2 set in each fragment's header (byte 11 of a one-value PDU)
    raw.sock.sendall(b"".join(pdu[:11] + bytes([pdu[11] | 0x04]) + pdu[12:] for pdu in raw.pdus[2:]))
    types, _ = raw.answers(2.0)
    assert types == [0x04]  # the C-STORE-RSP
    assert raw.calls.received == [(True, True)]
    assert _stored(raw.scp, raw.path) == _expected_file(raw.path)


def test_an_object_that_cannot_be_given_memory_is_refused_and_the_association_goes_on(
    start_scp: Any, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    real_take = BUFFERS.take

    def take(size: int = CHUNK) -> Any:
        if size > CHUNK:
            raise OSError(12, "Cannot allocate memory")
        return real_take(size)

    monkeypatch.setattr(BUFFERS, "take", take)
    scp = start_scp(max_pdu=16_384)
    small, large = (
        make_corpus(tmp_path / "small", count=1).files
        + make_corpus(tmp_path / "large", count=1, rows=1_100, salt=1).files
    )
    assoc = _associate(scp.port, small, large)
    try:
        status = assoc.send_c_store(large)  # 2.4 MB: more than the first buffer
        assert status.Status == 0xA700
        assert status.ErrorComment == "not enough memory to receive the object"
        assert assoc.send_c_store(small).Status == 0x0000
    finally:
        assoc.release()
    assert _stored(scp, large) is None and _stored(scp, small) == _expected_file(small)


def test_objects_are_received_directly_over_tls(
    start_scp: Any, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    cert, key = self_signed_certificate(tmp_path)
    calls = _Calls(monkeypatch)
    scp = start_scp(tls_cert=cert, tls_key=key, max_pdu=4_096)
    plan = make_corpus(tmp_path / "corpus", count=2, rows=200)
    ae = AE(ae_title="TESTSCU")
    for path in plan.files:
        ds = pydicom.dcmread(path, stop_before_pixels=True)
        ae.add_requested_context(ds.SOPClassUID, [ds.file_meta.TransferSyntaxUID])
    client = ssl.create_default_context(ssl.Purpose.SERVER_AUTH, cafile=str(cert))
    assoc = ae.associate("127.0.0.1", scp.port, ae_title="CONDUIT", tls_args=(client, "127.0.0.1"))
    assert assoc.is_established
    try:
        for path in plan.files:
            assert assoc.send_c_store(path).Status == 0x0000
    finally:
        assoc.release()
    assert calls.received == [(True, True)] * 2
    for path in plan.files:
        assert _stored(scp, path) == _expected_file(path)


def test_direct_and_pynetdicom_requests_may_alternate_on_one_association(
    start_scp: Any, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    calls = _Calls(monkeypatch)
    scp = start_scp()  # after the patch: the handler it binds is the counting one
    paths = make_corpus(tmp_path / "corpus", count=4).files
    assoc = _associate(scp.port, *paths)
    try:
        for i, path in enumerate(paths):
            extra = {"originator_aet": "MOVER", "originator_id": i} if i % 2 else {}
            assert assoc.send_c_store(path, **extra).Status == 0x0000
    finally:
        assoc.release()
    assert calls.handler == 2 and calls.direct == 2
    for path in paths:
        assert _stored(scp, path) == _expected_file(path)


def test_values_after_the_last_fragment_in_the_same_pdu_are_the_next_message(
    start_scp: Any, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """PS3.8 E.1 only recommends against a PDU holding the end of one message and the start of the next."""
    raw = _Raw(start_scp, tmp_path, monkeypatch)
    first, second = raw.paths
    following = _request_pdus(second, raw.context_id, message_id=2)
    *middle, last = raw.pdus[2:]
    items = last[6:] + following[0][6:]  # the first data set's last fragment, the next command set
    raw.sock.sendall(b"".join(middle) + struct.pack(">BBL", 0x04, 0, len(items)) + items)
    raw.sock.sendall(b"".join(following[1:]))
    types, _ = raw.answers(2.0)
    assert types == [0x04, 0x04]  # both C-STORE-RSPs
    assert raw.calls.received == [(True, True)] * 2
    assert _stored(raw.scp, first) == _expected_file(first)
    assert _stored(raw.scp, second) == _expected_file(second)


def test_a_peer_that_stalls_in_the_middle_of_a_data_set_is_timed_out_and_its_buffer_given_back(
    start_scp: Any, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    raw = _Raw(start_scp, tmp_path, monkeypatch, network_timeout=1)
    buffer = raw.receiver.buffer
    given: list[Any] = []
    real_give = BUFFERS.give
    monkeypatch.setattr(BUFFERS, "give", lambda b: given.append(b) or real_give(b))
    _wait_until_ended(raw.server_side)  # nothing more is sent: the network timeout ends it
    assert not raw.receiver.active and given == [buffer]
    assert raw.calls.received == [] and _stored(raw.scp, raw.path) is None


@pytest.mark.parametrize("watching", ["dimse-handler", "other-store-handler"])
def test_an_association_whose_messages_are_watched_goes_through_pynetdicom(
    start_scp: Any, tmp_path: Path, monkeypatch: pytest.MonkeyPatch, watching: str
) -> None:
    calls = _Calls(monkeypatch)
    scp = start_scp()
    seen: list[Any] = []
    if watching == "dimse-handler":
        scp.server.bind(evt.EVT_DIMSE_RECV, lambda event: seen.append(event.message))
    else:
        handlers = scp.handlers
        scp.server.bind(evt.EVT_C_STORE, lambda event: seen.append(event) or handlers.on_c_store(event))
    [path] = make_corpus(tmp_path / "corpus", count=1).files
    assoc = _associate(scp.port, path)
    try:
        assert assoc.send_c_store(path).Status == 0x0000
    finally:
        assoc.release()
    assert seen and calls.handler == 1 and calls.direct == 0
    assert _stored(scp, path) == _expected_file(path)


@pytest.mark.parametrize("waiting", [False, True], ids=["nothing-waits", "a-message-waits"])
def test_the_response_goes_straight_out_only_when_nothing_waits_to_be_sent(waiting: bool) -> None:
    import queue

    sent: list[bytes] = []
    queued: list[Any] = []
    outgoing: queue.Queue[Any] = queue.Queue()
    if waiting:
        outgoing.put("a Storage Commitment report's P-DATA")
    dul = SimpleNamespace(
        to_provider_queue=outgoing, socket=SimpleNamespace(send=sent.append), send_pdu=queued.append
    )
    assoc = SimpleNamespace(
        dimse=SimpleNamespace(send_lock=threading.RLock()),
        dul=dul,
        requestor=SimpleNamespace(maximum_length=16_384),
    )
    receiver = DirectStoreReceiver(assoc, target=None)  # type: ignore[arg-type]
    receiver.context_id, receiver.message_id = 3, 7
    receiver.sop_class_uid, receiver.sop_instance_uid = CTImageStorage, "1.2.3.4"
    receiver._respond(0x0000, "")
    if waiting:
        [pdata] = queued
        [(context_id, command)] = pdata.presentation_data_value_list
        assert sent == [] and context_id == 3
    else:
        [pdu] = sent
        assert queued == [] and pdu[:1] == b"\x04"
        command = pdu[11:]  # PDU header, item length, context ID
        assert struct.unpack(">LB", pdu[6:11]) == (len(command) + 1, 3)
        assert struct.unpack(">L", pdu[2:6]) == (len(pdu) - 6,)
    assert command[:1] == b"\x03"  # one command fragment, the last
