"""ACK messages (HL7 v2.5 2.9: original and enhanced acknowledgement modes).

* :func:`build_ack` writes the ACK for one message: sender and receiver swapped (MSH-3/4 <-> MSH-5/6), a new
  MSH-10, MSA-2 echoing the message's MSH-10, MSH-9 ``ACK^<trigger>^ACK``, the message's own delimiters,
  processing ID, version and character set, and one ERR segment per issue.
* :func:`accept_ack_wanted` / :func:`application_ack_wanted` apply MSH-15 / MSH-16 (Table 0155).
* :func:`application_ack` is what the pipeline sends after processing (original mode: the only ACK;
  enhanced mode: the application ACK MSH-16 asks for).

ERR follows the message's version: v2.5 and later use ERR-2 (ERL location), ERR-3 (Table 0357 code),
ERR-4 (severity, Table 0516) and ERR-8 (user message); earlier versions get the ERR-1 ELD form
(segment^sequence^field^code&text&HL70357) and the text in MSA-3.
"""

from __future__ import annotations

import itertools
import os
import re
import time
from collections.abc import Sequence
from datetime import UTC, datetime

from engine.errors import Issue
from engine.hl7v2.charset import codec_for
from engine.hl7v2.escape import Delimiters
from engine.hl7v2.escape import escape as escape_value
from engine.hl7v2.header import MessageHeader

__all__ = [
    "TABLE_0357",
    "ORIGINAL_CODES",
    "ENHANCED_CODES",
    "DEFAULT_VERSION",
    "build_ack",
    "accept_ack_wanted",
    "application_ack_wanted",
    "accept_code",
    "application_ack",
    "error_code",
    "new_control_id",
    "echo_field",
]

#: HL7 Table 0357 (Message error condition codes)
TABLE_0357: dict[str, str] = {
    "0": "Message accepted",
    "100": "Segment sequence error",
    "101": "Required field missing",
    "102": "Data type error",
    "103": "Table value not found",
    "104": "Value too long",
    "200": "Unsupported message type",
    "201": "Unsupported event code",
    "202": "Unsupported processing id",
    "203": "Unsupported version id",
    "204": "Unknown key identifier",
    "205": "Duplicate key identifier",
    "206": "Application record locked",
    "207": "Application internal error",
}

#: Table 0008, original mode (MSA-1) and enhanced-mode accept ACK (commit) codes
ORIGINAL_CODES = ("AA", "AE", "AR")
ENHANCED_CODES = ("CA", "CE", "CR")

#: version written on an ACK for a message whose MSH-12 could not be read
DEFAULT_VERSION = "2.5.1"

#: FHIR issue-type codes (engine.errors.Issue.code) -> the closest Table 0357 condition
_FHIR_TO_0357 = {
    "required": "101",
    "value": "102",
    "invalid": "102",
    "structure": "100",
    "code-invalid": "103",
    "not-supported": "200",
    "not-found": "204",
    "duplicate": "205",
    "conflict": "205",
    "lock-error": "206",
    "too-long": "104",
}

_SEVERITY = {"error": "E", "fatal": "E", "warning": "W", "information": "I"}
_LOCATION = re.compile(
    r"^(?P<seg>[A-Z][A-Z0-9]{2})(?:\[(?P<seq>\d+)\])?"
    r"(?:-(?P<field>\d+)(?:\[(?P<rep>\d+)\])?(?:\.(?P<comp>\d+)(?:\.(?P<sub>\d+))?)?)?$"
)
_CONTROL = re.compile("[\x00-\x1f\x7f]")  # a character test per character cost most of an ACK
_counter = itertools.count(1)
_ALPHABET = "0123456789ABCDEFGHIJKLMNOPQRSTUVWXYZ"


def _base36(n: int) -> str:
    out = ""
    while True:
        n, r = divmod(n, 36)
        out = _ALPHABET[r] + out
        if not n:
            return out


# process start time (seconds) and pid make the prefix unique per process; the counter within it
_prefix = "C" + _base36(int(datetime.now(UTC).timestamp()))[-6:] + _base36(os.getpid() % 46656).rjust(3, "0")


def _stamp(when: datetime) -> str:
    return when.strftime("%Y%m%d%H%M%S") + when.strftime("%z")


_last_stamp: tuple[int, str] = (-1, "")


def _now_stamp() -> str:
    """MSH-7 of an ACK written now: local time to the second, formatted once per second (an ACK per
    message at thousands a second otherwise formats the same second over and over)."""
    global _last_stamp
    second = int(time.time())
    last = _last_stamp
    if last[0] != second:
        last = _last_stamp = (second, _stamp(datetime.fromtimestamp(second, UTC).astimezone()))
    return last[1]


def new_control_id() -> str:
    """A fresh MSH-10 for a message Conduit writes: unique per process start, at most 20 characters
    (the ST length limit of v2.3-2.5)."""
    return _prefix + _base36(next(_counter))


def escape(text: str, field_separator: str, encoding_characters: str) -> str:
    """Escape ``text`` as one literal value; control characters the shared escaper leaves alone (VT, FS
    and the like) become ``\\Xhh\\`` so echoed text can never end a segment or an MLLP frame."""
    d = Delimiters.from_msh(field_separator, encoding_characters)
    out = escape_value(text, d)
    if _CONTROL.search(out):
        out = "".join(
            f"{d.escape}X{ord(ch):02X}{d.escape}" if ord(ch) < 0x20 or ord(ch) == 0x7F else ch for ch in out
        )
    return out


def echo_field(value: str, encoding_characters: str) -> str:
    """A field of the message echoed into the ACK: its delimiters are kept (MSH-3 is a composite), but a
    control character, which no valid field holds, becomes ``\\Xhh\\`` so it cannot break the ACK or
    its MLLP frame."""
    if not _CONTROL.search(value):
        return value
    esc = encoding_characters[2:3] or "\\"
    return "".join(f"{esc}X{ord(ch):02X}{esc}" if ord(ch) < 0x20 or ord(ch) == 0x7F else ch for ch in value)


def error_code(issue: Issue) -> str:
    """The Table 0357 code for ``issue``: its own code when already numeric, else mapped from FHIR."""
    if issue.code.isdigit():
        return issue.code
    return _FHIR_TO_0357.get(issue.code, "207")


def _version_tuple(version: str) -> tuple[int, ...]:
    parts = []
    for part in version.split("."):
        if not part.isdigit():
            break
        parts.append(int(part))
    return tuple(parts) or (2, 5, 1)


def _table_0155(value: str, success: bool) -> bool:
    """AL always, NE never, ER on errors only, SU on success only; a value outside Table 0155 reads as AL
    (answering is the safe side: a sender waiting for nothing ignores an ACK, the reverse loses time)."""
    mode = value.strip().upper()
    if mode == "NE":
        return False
    if mode == "ER":
        return not success
    if mode == "SU":
        return success
    return True


def accept_ack_wanted(header: MessageHeader | None, success: bool) -> bool:
    """Whether an accept (commit) ACK is sent, per MSH-15 (Table 0155).

    Original mode (MSH-15 and MSH-16 empty) always answers. In enhanced mode an empty MSH-15 is read as AL,
    because a sender that asked for application ACKs still waits on the connection for the commit.
    """
    if header is None or not header.enhanced_mode:
        return True
    return _table_0155(header.accept_ack_type or "AL", success)


def application_ack_wanted(header: MessageHeader | None, success: bool) -> bool:
    """Whether an application ACK is sent after processing, per MSH-16 (Table 0155).

    Original mode: always (the application ACK is the one answer, sent after processing only when the
    channel answers late). Enhanced mode: an empty MSH-16 means none is wanted.
    """
    if header is None or not header.enhanced_mode:
        return True
    return _table_0155(header.application_ack_type or "NE", success)


def accept_code(header: MessageHeader | None, outcome: str) -> str:
    """The MSA-1 code for ``outcome`` ``A`` (accepted), ``E`` (error) or ``R`` (rejected) in the
    message's mode: AA/AE/AR in original mode, CA/CE/CR for an enhanced-mode accept ACK."""
    if outcome not in ("A", "E", "R"):
        raise ValueError(f"outcome must be A, E or R, not {outcome!r}")
    return ("C" if header is not None and header.enhanced_mode else "A") + outcome


def _erl(location: str | None, component: str) -> str:
    """ERR-2 (ERL): segment^sequence^field^repetition^component^subcomponent from ``OBX[2]-5.1``."""
    if not location:
        return ""
    m = _LOCATION.match(location.strip())
    if not m:
        return ""
    parts = [m["seg"], m["seq"] or "1"]
    if m["field"]:
        parts += [m["field"], m["rep"] or "1"]
        if m["comp"]:
            parts.append(m["comp"])
            if m["sub"]:
                parts.append(m["sub"])
    return component.join(parts)


def _err_segments(issues: Sequence[Issue], header: MessageHeader, modern: bool) -> list[str]:
    fs, enc = header.field_separator, header.encoding_characters
    component, repetition, subcomponent = enc[0], enc[1], enc[3]
    if not issues:
        return []
    if modern:
        segments = []
        for issue in issues:
            code = error_code(issue)
            cwe = component.join([code, escape(TABLE_0357.get(code, ""), fs, enc), "HL70357"])
            severity = _SEVERITY.get(issue.severity, "E")
            fields = ["ERR", "", _erl(issue.location, component), cwe, severity, "", "", "", ""]
            fields[8] = escape(issue.message, fs, enc)
            segments.append(fs.join(fields))
        return segments
    elds = []
    for issue in issues:
        code = error_code(issue)
        ce = subcomponent.join([code, escape(TABLE_0357.get(code, ""), fs, enc), "HL70357"])
        erl = _erl(issue.location, component).split(component) if issue.location else []
        erl = (erl + ["", "", ""])[:3]
        elds.append(component.join([*erl, ce]))
    return [fs.join(["ERR", repetition.join(elds)])]


def build_ack(
    header: MessageHeader | None,
    code: str,
    issues: Sequence[Issue] = (),
    control_id: str | None = None,
    *,
    echo_control_id: str | None = None,
    text: str | None = None,
    timestamp: datetime | None = None,
    default_charset: str = "utf-8",
) -> bytes:
    """The ACK for the message described by ``header`` (None: the MSH could not be read).

    ``code`` is MSA-1 (AA/AE/AR or CA/CE/CR); ``issues`` become ERR segments; ``control_id`` is the ACK's
    own MSH-10 (default: a new one); ``echo_control_id`` replaces MSA-2 when the header is unknown;
    ``text`` is MSA-3 (defaults to the first issue's message on versions before 2.5). The result is encoded
    with the message's MSH-18 character set and ends with a segment terminator; it is never framed.
    """
    if code not in ORIGINAL_CODES + ENHANCED_CODES:
        raise ValueError(f"MSA-1 must be one of {ORIGINAL_CODES + ENHANCED_CODES}, not {code!r}")
    known = header is not None
    h = header or MessageHeader()
    fs, enc = h.field_separator, h.encoding_characters
    component = enc[0]
    version = h.version or DEFAULT_VERSION
    numbers = _version_tuple(version)
    modern = numbers >= (2, 5)
    stamp = _stamp(timestamp) if timestamp else _now_stamp()
    if numbers >= (2, 3, 1):
        message_type = component.join(["ACK", h.trigger_event, "ACK"]) if h.trigger_event else "ACK"
    else:
        message_type = component.join(["ACK", h.trigger_event]) if h.trigger_event else "ACK"
    msh = [
        "MSH",
        enc,
        echo_field(h.receiving_application, enc),
        echo_field(h.receiving_facility, enc),
        echo_field(h.sending_application, enc),
        echo_field(h.sending_facility, enc),
        stamp,
        "",
        echo_field(message_type, enc),
        escape(control_id, fs, enc) if control_id else new_control_id(),
        echo_field(h.processing_id, enc) or "P",
        echo_field(version, enc),
    ]
    if h.character_set:
        msh += ["", "", "", "", "", echo_field(h.character_set, enc)]
    echoed = echo_field(h.control_id, enc) if known else escape(echo_control_id or "", fs, enc)
    if text is None and issues and not modern:
        text = issues[0].message
    msa = ["MSA", code, echoed]
    if text:
        msa.append(escape(text[:80] if not modern else text, fs, enc))
    segments = [fs.join(msh[:1]) + fs + fs.join(msh[1:]), fs.join(msa), *_err_segments(issues, h, modern)]
    body = "\r".join(segments) + "\r"
    codec = codec_for(h.character_set, default_charset) or default_charset
    return body.encode(codec, errors="replace")


def application_ack(
    header: MessageHeader,
    outcome: str,
    issues: Sequence[Issue] = (),
    *,
    text: str | None = None,
) -> bytes | None:
    """The application ACK the pipeline sends after processing, or None when MSH-16 does not want one.

    ``outcome`` is ``A``, ``E`` or ``R``; the code is always AA/AE/AR (application ACKs use the original
    codes in both modes, HL7 v2.5 2.9.3.2).
    """
    if outcome not in ("A", "E", "R"):
        raise ValueError(f"outcome must be A, E or R, not {outcome!r}")
    if not application_ack_wanted(header, outcome == "A"):
        return None
    return build_ack(header, "A" + outcome, issues, text=text)
