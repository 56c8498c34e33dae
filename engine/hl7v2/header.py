"""The message header (MSH) of an HL7 v2 message, read without parsing the body.

The MLLP path needs MSH-3/4/9/10/12/15/16/18 for routing, duplicate detection and the ACK; parsing the whole
message (hl7apy costs ~47 ms for a 25-segment ORU^R01) does not belong on that path. ``parse_header`` is
implemented here without a library: it finds the first segment, reads MSH-1/MSH-2 for the delimiters and
splits the fields it needs (~10 µs).

Field values are kept as sent (escape sequences are not decoded), so an ACK can echo them byte for byte
and duplicate keys compare exactly what the sender wrote.
"""

from __future__ import annotations

from dataclasses import dataclass, replace

from engine.errors import InvalidInput, Issue
from engine.hl7v2.charset import codec_for

__all__ = ["MessageHeader", "HeaderError", "parse_header", "segment_terminator_split"]


@dataclass(frozen=True)
class MessageHeader:
    field_separator: str = "|"  # MSH-1
    encoding_characters: str = "^~\\&"  # MSH-2 (component, repetition, escape, subcomponent[, truncation])
    sending_application: str = ""  # MSH-3 (whole field, components joined by the component separator)
    sending_facility: str = ""  # MSH-4
    receiving_application: str = ""  # MSH-5
    receiving_facility: str = ""  # MSH-6
    message_datetime: str = ""  # MSH-7 (as sent)
    message_type: str = ""  # MSH-9.1, e.g. ORU
    trigger_event: str = ""  # MSH-9.2, e.g. R01
    message_structure: str = ""  # MSH-9.3, e.g. ORU_R01
    control_id: str = ""  # MSH-10
    processing_id: str = ""  # MSH-11
    version: str = ""  # MSH-12, e.g. 2.5.1
    accept_ack_type: str = ""  # MSH-15 (Table 0155: AL, NE, ER, SU); empty = original mode
    application_ack_type: str = ""  # MSH-16 (Table 0155)
    character_set: str = ""  # MSH-18, e.g. UNICODE UTF-8, 8859/1

    @property
    def enhanced_mode(self) -> bool:
        """Enhanced acknowledgement mode applies when MSH-15 or MSH-16 is valued (HL7 v2.5 2.9.3)."""
        return bool(self.accept_ack_type or self.application_ack_type)


class HeaderError(InvalidInput):
    """The MSH cannot be used as given. ``partial`` holds what could be read (delimiters, MSH-3/4/10 ...)
    so the AR can still swap sender and receiver and echo MSH-10; it is None when not even MSH-1/2 parsed.

    Issue codes are HL7 Table 0357 codes (``100`` segment sequence error, ``101`` required field missing,
    ``102`` data type error, ``103`` table value not found).
    """

    def __init__(self, message: str, location: str, code: str, partial: MessageHeader | None):
        super().__init__(message, [Issue(message, location=location, code=code)])
        self.partial = partial


def segment_terminator_split(text: str) -> list[str]:
    """Split on the segment terminator (CR), tolerating LF and CRLF as senders on files often use."""
    return text.replace("\r\n", "\r").replace("\n", "\r").split("\r")


def _first_segment(raw: bytes) -> bytes:
    cut = len(raw)
    for terminator in (b"\r", b"\n"):
        at = raw.find(terminator)
        if at != -1:
            cut = min(cut, at)
    return raw[:cut]


def parse_header(raw: bytes, default_charset: str = "utf-8") -> MessageHeader:
    """Read the MSH of one message (not a batch: see :func:`engine.hl7v2.batch.split_batch`).

    Raises :class:`HeaderError` (an :class:`~engine.errors.InvalidInput`) located at the offending field:
    no MSH first (``MSH``, 100), bad delimiters (``MSH-1``/``MSH-2``, 102), MSH-9 message type missing
    (``MSH-9``, 101), MSH-10 missing (``MSH-10``, 101), MSH-18 not a known character set (``MSH-18``, 103).
    Leading whitespace and a UTF-8 byte-order mark are skipped.
    """
    data = raw.lstrip(b" \t\r\n")
    if data.startswith(b"\xef\xbb\xbf"):
        data = data[3:]
    if not data.startswith(b"MSH"):
        raise HeaderError("the message does not start with an MSH segment", "MSH", "100", None)
    segment = _first_segment(data)
    # Delimiters and MSH-18 are ASCII in every 8-bit set of Table 0211: read them as Latin-1 first.
    text = segment.decode("latin-1")
    if len(text) < 8:
        raise HeaderError("MSH is too short to hold its delimiters", "MSH-2", "102", None)
    field_separator = text[3]
    if field_separator.isalnum() or field_separator.isspace() or ord(field_separator) < 0x20:
        raise HeaderError("MSH-1 field separator is not a delimiter character", "MSH-1", "102", None)
    fields = text.split(field_separator)
    encoding = fields[1] if len(fields) > 1 else ""
    if not 4 <= len(encoding) <= 5 or len(set(encoding + field_separator)) != len(encoding) + 1:
        raise HeaderError(
            "MSH-2 encoding characters are not four (or five) distinct delimiters", "MSH-2", "102", None
        )
    if any(ch.isalnum() or ch.isspace() or ord(ch) < 0x20 for ch in encoding):
        raise HeaderError("MSH-2 encoding characters are not delimiter characters", "MSH-2", "102", None)
    component, repetition = encoding[0], encoding[1]

    def field(n: int) -> str:  # MSH-n: MSH-1 is the separator itself, so MSH-n is fields[n - 1]
        return fields[n - 1] if n - 1 < len(fields) else ""

    charset_field = field(18).split(repetition)[0]
    codec = codec_for(charset_field, default_charset)
    if codec is not None and codec not in ("iso8859-1", "latin-1", "latin_1"):
        try:
            fields = segment.decode(codec).split(field_separator)
        except (UnicodeError, LookupError):
            codec = None
    message_type = field(9).split(component)
    header = MessageHeader(
        field_separator=field_separator,
        encoding_characters=encoding,
        sending_application=field(3),
        sending_facility=field(4),
        receiving_application=field(5),
        receiving_facility=field(6),
        message_datetime=field(7),
        message_type=message_type[0],
        trigger_event=message_type[1] if len(message_type) > 1 else "",
        message_structure=message_type[2] if len(message_type) > 2 else "",
        control_id=field(10),
        processing_id=field(11).split(component)[0].strip(),
        version=field(12).split(component)[0].strip(),
        accept_ack_type=field(15).strip(),
        application_ack_type=field(16).strip(),
        character_set=charset_field.strip(),
    )
    if codec is None:
        raise HeaderError(
            "MSH-18 names a character set that is not in HL7 Table 0211 or the message is not valid in it",
            "MSH-18",
            "103",
            replace(header, character_set=""),
        )
    if not header.message_type:
        raise HeaderError("MSH-9 message type is missing", "MSH-9", "101", header)
    if not header.control_id:
        raise HeaderError("MSH-10 message control ID is missing", "MSH-10", "101", header)
    return header
