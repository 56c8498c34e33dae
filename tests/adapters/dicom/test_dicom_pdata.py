"""The P-DATA fast paths read and write exactly what pynetdicom's own codecs do."""

from __future__ import annotations

from io import BytesIO
from typing import Any

import pytest
from pydicom.uid import CTImageStorage
from pynetdicom.dimse_messages import C_FIND_RQ, C_FIND_RSP, C_STORE_RQ, C_STORE_RSP, DIMSEMessage
from pynetdicom.dimse_primitives import C_FIND, C_STORE
from pynetdicom.pdu import P_DATA_TF
from pynetdicom.pdu_primitives import P_DATA
from pynetdicom.sop_class import StudyRootQueryRetrieveInformationModelFind

from adapters.dicom.pdata import (
    ReceivedPData,
    c_find_rq_primitive,
    c_find_rsp_command,
    c_store_rq_fields,
    c_store_rq_primitive,
    c_store_rsp_command,
    rsp_command,
    split_p_data,
)


def _p_data_tf(*values: tuple[int, bytes]) -> bytes:
    primitive = P_DATA()
    primitive.presentation_data_value_list = [list(v) for v in values]
    pdu = P_DATA_TF()
    pdu.from_primitive(primitive)
    return pdu.encode()


def test_split_p_data_gives_the_values_pynetdicom_decodes() -> None:
    values = [(1, b"\x03" + b"command" * 3), (3, b"\x00" + bytes(range(256)) * 40), (5, b"\x02")]
    encoded = _p_data_tf(*values)
    reference = P_DATA_TF()
    reference.decode(encoded)

    body = bytearray(encoded[6:])
    split = ReceivedPData(split_p_data(body)).to_primitive().presentation_data_value_list

    assert [(cid, bytes(v)) for cid, v in split] == reference.to_primitive().presentation_data_value_list
    assert [(cid, bytes(v)) for cid, v in split] == values
    body[-1] = 0x03  # views, not copies: the last value is the PDU's last byte
    assert bytes(split[-1][1]) == b"\x03"


@pytest.mark.parametrize(
    "body",
    [
        b"\x00\x00\x00\x08\x01\x03ab",  # item longer than the PDU
        b"\x00\x00\x00\x01\x01",  # no message control header
        b"\x00\x00\x00\x00",  # truncated item header
        b"\x00\x00\x00\x03\x01\x03a\x00",  # a stray byte after the last item
    ],
)
def test_split_p_data_refuses_items_that_do_not_add_up(body: bytes) -> None:
    with pytest.raises(ValueError):
        split_p_data(bytearray(body))


def _store_rsp(status: int, **extra: object) -> C_STORE:
    rsp = C_STORE()
    rsp.MessageIDBeingRespondedTo = 7
    rsp.AffectedSOPClassUID = CTImageStorage
    rsp.AffectedSOPInstanceUID = "1.2.826.0.1.3680043.8.498.123"  # odd length: NUL-padded
    rsp.Status = status
    for name, value in extra.items():
        setattr(rsp, name, value)
    return rsp


def _pynetdicom_command(rsp: C_STORE) -> bytes:
    message = C_STORE_RSP()
    message.primitive_to_message(rsp)
    [pdata] = list(message.encode_msg(1, 16_384))
    [(_, command)] = pdata.presentation_data_value_list
    return command


@pytest.mark.parametrize("status", [0x0000, 0xB007, 0xA700])
def test_c_store_rsp_command_is_pynetdicoms_encoding(status: int) -> None:
    rsp = _store_rsp(status)
    assert c_store_rsp_command(rsp) == _pynetdicom_command(rsp)


@pytest.mark.parametrize("comment", ["", "cannot parse", "odd length"])
def test_rsp_command_with_an_error_comment_is_pynetdicoms_encoding(comment: str) -> None:
    """The direct C-STORE path answers refusals with their comment itself."""
    rsp = _store_rsp(0xC000, **({"ErrorComment": comment} if comment else {}))
    encoded = rsp_command(
        0x8001,
        sop_class_uid=CTImageStorage,
        message_id=7,
        status=0xC000,
        sop_instance_uid="1.2.826.0.1.3680043.8.498.123",
        error_comment=comment,
    )
    assert encoded == _pynetdicom_command(rsp)


def test_c_store_rsp_with_more_than_a_status_is_left_to_pynetdicom() -> None:
    assert c_store_rsp_command(_store_rsp(0xC000, ErrorComment="cannot parse")) is None
    request = _store_rsp(0x0000)
    request.MessageIDBeingRespondedTo = None
    request.MessageID = 7
    assert c_store_rsp_command(request) is None  # a request, not a response


def _receivedc_store_rq_fields(**extra: object) -> Any:
    request = C_STORE()
    request.MessageID = 11
    request.AffectedSOPClassUID = CTImageStorage
    request.AffectedSOPInstanceUID = "1.2.826.0.1.3680043.8.498.123"
    request.Priority = 1
    request.DataSet = BytesIO(b"\x08\x00\x18\x00")
    for name, value in extra.items():
        setattr(request, name, value)
    sent = C_STORE_RQ()
    sent.primitive_to_message(request)
    message = DIMSEMessage()
    for pdata in sent.encode_msg(3, 16_384):
        complete = message.decode_msg(pdata)
    assert complete
    return message


def test_c_store_rq_primitive_is_what_pynetdicom_makes_of_the_request() -> None:
    message = _receivedc_store_rq_fields()
    reference = type(message).message_to_primitive(message)

    primitive = c_store_rq_primitive(message)

    assert primitive is not None
    for name in ("MessageID", "AffectedSOPClassUID", "AffectedSOPInstanceUID", "Priority"):
        assert getattr(primitive, name) == getattr(reference, name), name
    assert primitive.MoveOriginatorApplicationEntityTitle is None
    assert primitive.DataSet is message.data_set and primitive._context_id == 3


def test_c_store_rq_of_a_move_sub_operation_is_left_to_pynetdicom() -> None:
    message = _receivedc_store_rq_fields(
        MoveOriginatorApplicationEntityTitle="MOVER", MoveOriginatorMessageID=4
    )
    assert c_store_rq_primitive(message) is None


def _encoded_command(request: C_STORE) -> memoryview:
    sent = C_STORE_RQ()
    sent.primitive_to_message(request)
    [(_, command)] = next(iter(sent.encode_msg(3, 16_384))).presentation_data_value_list
    assert command[0] == 0x03  # one fragment, the last, of a command set
    return memoryview(command)[1:]


def test_the_direct_path_reads_a_c_store_rq_as_pynetdicom_does() -> None:
    request = C_STORE()
    request.MessageID = 11
    request.AffectedSOPClassUID = CTImageStorage
    request.AffectedSOPInstanceUID = "1.2.826.0.1.3680043.8.498.123"  # odd length: NUL-padded
    request.Priority = 1
    request.DataSet = BytesIO(b"\x08\x00\x18\x00")
    assert c_store_rq_fields(_encoded_command(request)) == (
        11,
        CTImageStorage,
        "1.2.826.0.1.3680043.8.498.123",
    )

    request.Priority = 2  # HIGH
    assert c_store_rq_fields(_encoded_command(request)) is not None
    encoded = bytearray(_encoded_command(request))
    priority_at = encoded.index(bytes.fromhex("0000000702000000")) + 8  # (0000,0700) US, 2 bytes
    encoded[priority_at : priority_at + 2] = b"\x03\x00"  # no priority PS3.7 knows: pynetdicom refuses
    assert c_store_rq_fields(memoryview(encoded)) is None

    request.MoveOriginatorApplicationEntityTitle = "MOVER"  # anything beyond the usual elements
    request.MoveOriginatorMessageID = 4
    assert c_store_rq_fields(_encoded_command(request)) is None


@pytest.mark.parametrize(
    "command",
    [
        b"",
        b"\x00\x00\x00\x01\x02\x00\x00\x00\x01\x00",  # truncated element value
        b"\x08\x00\x00\x01\x02\x00\x00\x00\x01\x00",  # not a command group element
    ],
)
def test_the_direct_path_leaves_an_unreadable_command_set_to_pynetdicom(command: bytes) -> None:
    assert c_store_rq_fields(memoryview(command)) is None


def _find_rsp(status: int, identifier: bytes | None = None, **extra: object) -> C_FIND:
    rsp = C_FIND()
    rsp.MessageIDBeingRespondedTo = 9
    rsp.AffectedSOPClassUID = StudyRootQueryRetrieveInformationModelFind
    rsp.Status = status
    if identifier is not None:
        rsp.Identifier = BytesIO(identifier)
    for name, value in extra.items():
        setattr(rsp, name, value)
    return rsp


@pytest.mark.parametrize(
    ("status", "identifier"),
    [(0xFF00, b"\x08\x00\x52\x00\x06\x00\x00\x00STUDY "), (0x0000, None), (0xFE00, None)],
)
def test_c_find_rsp_command_is_pynetdicoms_encoding(status: int, identifier: bytes | None) -> None:
    rsp = _find_rsp(status, identifier)
    message = C_FIND_RSP()
    message.primitive_to_message(rsp)
    values = [v for pdata in message.encode_msg(1, 16_384) for v in pdata.presentation_data_value_list]
    assert c_find_rsp_command(rsp) == values[0][1]
    if identifier is not None:  # the data set follows as its own, last fragment
        assert values[1][1] == b"\x02" + identifier


def test_c_find_rsp_with_an_error_comment_is_left_to_pynetdicom() -> None:
    assert c_find_rsp_command(_find_rsp(0xC000, ErrorComment="no")) is None
    assert c_find_rsp_command(_store_rsp(0x0000)) is None


def _received(message_type: Any, primitive: Any) -> Any:
    sent = message_type()
    sent.primitive_to_message(primitive)
    message = DIMSEMessage()
    for pdata in sent.encode_msg(5, 16_384):
        complete = message.decode_msg(pdata)
    assert complete
    return message


def test_c_find_rq_primitive_is_what_pynetdicom_makes_of_the_request() -> None:
    request = C_FIND()
    request.MessageID = 12
    request.AffectedSOPClassUID = StudyRootQueryRetrieveInformationModelFind
    request.Priority = 2
    request.Identifier = BytesIO(b"\x08\x00\x52\x00\x06\x00\x00\x00STUDY ")
    message = _received(C_FIND_RQ, request)
    reference = type(message).message_to_primitive(message)

    primitive = c_find_rq_primitive(message)

    assert primitive is not None
    for name in ("MessageID", "AffectedSOPClassUID", "Priority"):
        assert getattr(primitive, name) == getattr(reference, name), name
    assert primitive.Identifier is message.data_set and primitive._context_id == 5
    assert c_find_rq_primitive(_receivedc_store_rq_fields()) is None  # not a C-FIND
