"""P-DATA on the C-STORE hot path, without pynetdicom's generic PDU and command-set codecs.

* Receiving: a P-DATA-TF PDU (PS3.8 9.3.5) is split into its presentation data values as views of the
  received buffer. pynetdicom copies every 128 KiB PDU four times on its way to the DIMSE layer (joined
  to its header, turned into bytes, sliced per item, sliced again per value); a 0.5 MB image arrives in
  four or five such PDUs.
* Receiving a C-STORE-RQ's command set (PS3.7 9.3.1.1): its few elements are read from their encoded
  values instead of being converted one by one through pydicom (``c_store_rq_primitive``).
* Sending: the C-STORE-RSP command set (PS3.7 9.3.1.2) is written directly. pynetdicom builds a pydicom
  Dataset for it and encodes it twice (once to learn its group length), about a fifth of the CPU it
  spends per stored image. Responses carrying anything beyond the status (an error comment or offending
  element) still go through pynetdicom.
"""

from __future__ import annotations

import struct
from typing import Any

from pynetdicom.dimse_messages import C_FIND_RQ, C_STORE_RQ
from pynetdicom.dimse_primitives import C_FIND, C_STORE
from pynetdicom.pdu_primitives import P_DATA

__all__ = [
    "C_STORE_RQ_TAGS",
    "C_STORE_RSP",
    "ReceivedPData",
    "rsp_command",
    "split_p_data",
    "c_store_rsp_command",
    "c_find_rsp_command",
    "c_store_rq_primitive",
    "c_store_rq_fields",
    "c_find_rq_primitive",
]

_ITEM_LENGTH = struct.Struct(">L")
#: PS3.7 E.1: C-STORE-RSP Command Field; Command Data Set Type "no data set"
C_STORE_RSP = 0x8001
_C_FIND_RSP = 0x8020
_NO_DATA_SET = 0x0101
#: PS3.8 E.2 Message Control Header: command, last fragment
_LAST_COMMAND_FRAGMENT = b"\x03"


class ReceivedPData:
    """Stands for pynetdicom's P_DATA_TF in the DUL's received-PDU queue: the state machine only asks it
    for its primitive (fsm DT-2 / AR-7)."""

    __slots__ = ("primitive",)

    def __init__(self, primitive: P_DATA) -> None:
        self.primitive = primitive

    def to_primitive(self) -> P_DATA:
        return self.primitive


def split_p_data(body: bytearray) -> P_DATA:
    """The P-DATA primitive of a P-DATA-TF PDU's variable field (everything after its 6-byte header);
    each value is a view of ``body``, whose first byte is the message control header. ValueError when
    the items do not add up to the PDU length."""
    primitive = P_DATA()
    values = primitive.presentation_data_value_list  # appended to directly: the setter insists on bytes
    view = memoryview(body)
    offset, end = 0, len(view)
    while offset < end:
        if end - offset < 6:
            raise ValueError("truncated presentation data value item")
        (item_length,) = _ITEM_LENGTH.unpack_from(view, offset)
        # Item length covers the context ID and the value; the value holds at least its control header
        if item_length < 2 or offset + 4 + item_length > end:
            raise ValueError("presentation data value item length does not fit the PDU")
        values.append((view[offset + 4], view[offset + 5 : offset + 4 + item_length]))
        offset += 4 + item_length
    return primitive


def _element(tag: int, value: bytes) -> bytes:
    # implicit VR little endian (PS3.5 7.1.3): group, element, 4-byte length, value
    return struct.pack("<HHI", 0x0000, tag, len(value)) + value


def _uid(value: Any) -> bytes:
    raw = str(value).encode("ascii")
    return raw + b"\x00" if len(raw) % 2 else raw  # UI pads with NUL to an even length (PS3.5 6.2)


def _text(value: str) -> bytes:
    raw = value.encode("ascii")
    return raw + b" " if len(raw) % 2 else raw  # text pads with a space (PS3.5 6.2)


def rsp_command(
    command_field: int,
    *,
    sop_class_uid: str,
    message_id: int,
    status: int,
    sop_instance_uid: str | None = None,
    data_set: bool = False,
    error_comment: str = "",
) -> bytes | None:
    """The encoded command set of a DIMSE-C response carrying its UIDs, status and (optionally) an
    Error Comment, preceded by the message control header of a single, last command fragment; None
    when a value cannot be encoded so (pynetdicom encodes those)."""
    try:
        elements = [
            _element(0x0002, _uid(sop_class_uid)),  # Affected SOP Class UID
            _element(0x0100, struct.pack("<H", command_field)),
            _element(0x0120, struct.pack("<H", message_id)),
            # Command Data Set Type: pynetdicom writes 0x0001 for "a data set follows"
            _element(0x0800, struct.pack("<H", 0x0001 if data_set else _NO_DATA_SET)),
            _element(0x0900, struct.pack("<H", status)),  # Status
        ]
        if error_comment:
            elements.append(_element(0x0902, _text(error_comment)))  # Error Comment (LO)
        if sop_instance_uid is not None:
            elements.append(_element(0x1000, _uid(sop_instance_uid)))
    except (UnicodeError, struct.error):
        return None
    body = b"".join(elements)
    return _LAST_COMMAND_FRAGMENT + _element(0x0000, struct.pack("<I", len(body))) + body


def _rsp_command(command_field: int, primitive: Any, data_set: bool, sop_instance: bool) -> bytes | None:
    """``rsp_command`` for a response primitive that carries only its status and UIDs; None when it
    carries anything else (pynetdicom encodes those)."""
    if primitive.MessageIDBeingRespondedTo is None or primitive.Status is None:
        return None
    if primitive.OffendingElement or primitive.ErrorComment or not primitive.AffectedSOPClassUID:
        return None
    if sop_instance and not primitive.AffectedSOPInstanceUID:
        return None
    return rsp_command(
        command_field,
        sop_class_uid=primitive.AffectedSOPClassUID,
        message_id=primitive.MessageIDBeingRespondedTo,
        status=primitive.Status,
        sop_instance_uid=primitive.AffectedSOPInstanceUID if sop_instance else None,
        data_set=data_set,
    )


def c_store_rsp_command(primitive: Any) -> bytes | None:
    """The encoded command set of a C-STORE response that carries only its status and UIDs, preceded by
    the message control header of a single, last command fragment; None for anything else (pynetdicom
    encodes those)."""
    if not isinstance(primitive, C_STORE):
        return None
    return _rsp_command(C_STORE_RSP, primitive, data_set=False, sop_instance=True)


def c_find_rsp_command(primitive: Any) -> bytes | None:
    """The same for a C-FIND response (PS3.7 9.3.2.2), with or without its identifier; the identifier
    itself is sent as the data set fragment(s) that follow."""
    if not isinstance(primitive, C_FIND):
        return None
    identifier = primitive.Identifier
    return _rsp_command(_C_FIND_RSP, primitive, data_set=identifier is not None, sop_instance=False)


#: the command elements of a plain C-STORE-RQ (PS3.7 9.3.1.1); anything else (a C-MOVE originator)
#: is left to pynetdicom
C_STORE_RQ_TAGS = frozenset(
    {0x00000000, 0x00000002, 0x00000100, 0x00000110, 0x00000700, 0x00000800, 0x00001000}
)


def _us(command_set: Any, tag: int) -> int:
    value = command_set.get_item(tag).value
    if isinstance(value, bytes):  # still encoded (implicit VR little endian, PS3.7 6.3.1)
        if len(value) != 2:
            raise ValueError("US value of unexpected length")
        return int(struct.unpack("<H", value)[0])
    return int(value)


def _ui(command_set: Any, tag: int) -> str:
    value = command_set.get_item(tag).value
    if isinstance(value, bytes):
        value = value.decode("ascii")
    return str(value).rstrip("\x00 ")


def c_store_rq_primitive(message: Any) -> C_STORE | None:
    """The C-STORE request primitive of a received C-STORE-RQ message whose command set holds only the
    usual elements, read straight from their encoded values; None for anything else. pynetdicom's
    ``message_to_primitive`` converts every element through pydicom first (~140 us a request)."""
    command_set = message.command_set
    if not isinstance(message, C_STORE_RQ) or message._data_set_file is not None:
        return None
    if set(command_set.keys()) != C_STORE_RQ_TAGS:
        return None
    try:
        message_id, priority = _us(command_set, 0x00000110), _us(command_set, 0x00000700)
        sop_class, sop_instance = _ui(command_set, 0x00000002), _ui(command_set, 0x00001000)
    except (TypeError, ValueError, UnicodeError):
        return None
    if "\\" in sop_class or "\\" in sop_instance:
        return None  # several values: pynetdicom warns and takes the first
    primitive = C_STORE()
    # the setters validate as they do for pynetdicom's own conversion (UIDs: ValueError when invalid)
    primitive.MessageID = message_id
    primitive.AffectedSOPClassUID = sop_class
    primitive.AffectedSOPInstanceUID = sop_instance
    primitive.Priority = priority
    primitive.DataSet = message.data_set
    primitive._context_id = message.context_id
    return primitive


#: a command set element header: group, element, value length (implicit VR little endian, PS3.5 7.1.3)
_COMMAND_ELEMENT = struct.Struct("<HHL")


def c_store_rq_fields(command: memoryview) -> tuple[int, str, str] | None:
    """(Message ID, Affected SOP Class UID, Affected SOP Instance UID) of an encoded C-STORE-RQ command
    set (PS3.7 9.3.1.1, implicit VR little endian) as received, holding just the usual elements and
    announcing a data set; None for anything else, and for values pynetdicom's own conversion would
    refuse (the direct C-STORE path then leaves the request to pynetdicom)."""
    values: dict[int, memoryview] = {}
    offset, end = 0, len(command)
    while offset < end:
        if end - offset < _COMMAND_ELEMENT.size:
            return None
        group, element, length = _COMMAND_ELEMENT.unpack_from(command, offset)
        offset += _COMMAND_ELEMENT.size
        if group != 0 or length > end - offset or element in values:
            return None
        values[element] = command[offset : offset + length]
        offset += length
    if values.keys() != C_STORE_RQ_TAGS:
        return None
    field, data_set = _raw_us(values[0x0100]), _raw_us(values[0x0800])
    message_id, priority = _raw_us(values[0x0110]), _raw_us(values[0x0700])
    if field != 0x0001 or data_set in (None, 0x0101) or message_id is None or priority not in (0, 1, 2):
        return None  # (a priority other than LOW, MEDIUM, HIGH: pynetdicom refuses the message)
    sop_class, sop_instance = _raw_ui(values[0x0002]), _raw_ui(values[0x1000])
    if sop_class is None or sop_instance is None:
        return None
    return message_id, sop_class, sop_instance


def _raw_us(value: memoryview) -> int | None:
    return int.from_bytes(value, "little") if len(value) == 2 else None


def _raw_ui(value: memoryview) -> str | None:
    try:
        uid = bytes(value).decode("ascii").rstrip("\x00 ")
    except UnicodeError:
        return None
    # pynetdicom's own check (without UID conformance): 1-64 characters, one value
    return uid if 0 < len(uid) < 65 and "\\" not in uid else None


#: the command elements of a C-FIND-RQ (PS3.7 9.3.2.1)
_C_FIND_RQ_TAGS = frozenset({0x00000000, 0x00000002, 0x00000100, 0x00000110, 0x00000700, 0x00000800})


def c_find_rq_primitive(message: Any) -> C_FIND | None:
    """The C-FIND request primitive of a received C-FIND-RQ message, read like ``c_store_rq_primitive``;
    None for anything else. Its identifier stays encoded, as pynetdicom leaves it."""
    command_set = message.command_set
    if not isinstance(message, C_FIND_RQ) or set(command_set.keys()) != _C_FIND_RQ_TAGS:
        return None
    try:
        message_id, priority = _us(command_set, 0x00000110), _us(command_set, 0x00000700)
        sop_class = _ui(command_set, 0x00000002)
    except (TypeError, ValueError, UnicodeError):
        return None
    if "\\" in sop_class:
        return None
    primitive = C_FIND()
    primitive.MessageID = message_id
    primitive.AffectedSOPClassUID = sop_class
    primitive.Priority = priority
    primitive.Identifier = message.data_set
    primitive._context_id = message.context_id
    return primitive
