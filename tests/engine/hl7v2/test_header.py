"""parse_header: every corpus message, delimiters, charsets and the located errors."""

from __future__ import annotations

from pathlib import Path

import hl7
import pytest
from hypothesis import given
from hypothesis import strategies as st

from engine.errors import InvalidInput
from engine.hl7v2.batch import is_batch
from engine.hl7v2.charset import codec_for
from engine.hl7v2.header import HeaderError, parse_header

CORPUS = sorted(Path(__file__).parents[2].joinpath("fixtures", "hl7v2").glob("*/*.hl7"))
MESSAGES = [p for p in CORPUS if not is_batch(p.read_bytes())]


@pytest.mark.parametrize("path", MESSAGES, ids=lambda p: p.name)
def test_corpus_headers_match_python_hl7(path: Path) -> None:
    raw = path.read_bytes()
    header = parse_header(raw)
    msh = hl7.parse(raw.decode("utf-8", errors="replace").replace("\n", "\r")).segment("MSH")
    assert header.control_id == str(msh[10])
    assert header.message_type == str(msh[9]).split("^")[0]
    assert header.sending_application == str(msh[3])
    assert header.version == str(msh[12]).split("^")[0]


def test_fields_of_a_known_message() -> None:
    raw = (
        b"MSH|^~\\&|LAB^1.2.3^ISO|HOSP|CONDUIT|HQ|20261120101500||ORU^R01^ORU_R01|MSG-1|P^T|2.5.1^ISO"
        b"|||AL|ER||8859/1\rPID|1\r"
    )
    h = parse_header(raw)
    assert (h.sending_application, h.sending_facility) == ("LAB^1.2.3^ISO", "HOSP")
    assert (h.receiving_application, h.receiving_facility) == ("CONDUIT", "HQ")
    assert (h.message_type, h.trigger_event, h.message_structure) == ("ORU", "R01", "ORU_R01")
    assert (h.control_id, h.processing_id, h.version) == ("MSG-1", "P", "2.5.1")
    assert (h.accept_ack_type, h.application_ack_type, h.character_set) == ("AL", "ER", "8859/1")
    assert h.enhanced_mode


def test_other_delimiters_lf_terminators_and_bom() -> None:
    h = parse_header(b"\xef\xbb\xbfMSH#$%*!#A#B#C#D#20260101##ADT$A01#X1#P#2.3\nEVN#A01\n")
    assert h.field_separator == "#" and h.encoding_characters == "$%*!"
    assert (h.message_type, h.trigger_event, h.control_id) == ("ADT", "A01", "X1")
    assert not h.enhanced_mode


def test_msh18_decodes_the_header_in_its_charset() -> None:
    raw = "MSH|^~\\&|LABÖ|H|R|F|2026||ADT^A01|1|P|2.5||||||8859/1\r".encode("latin-1")
    assert parse_header(raw).sending_application == "LABÖ"
    utf8 = "MSH|^~\\&|LABÖ|H|R|F|2026||ADT^A01|1|P|2.5||||||UNICODE UTF-8\r".encode()
    assert parse_header(utf8).sending_application == "LABÖ"


@pytest.mark.parametrize(
    ("raw", "location", "code"),
    [
        (b"PID|1\r", "MSH", "100"),
        (b"", "MSH", "100"),
        (b"MSH|^~\r", "MSH-2", "102"),
        (b"MSHA^~\\&|x|y\r", "MSH-1", "102"),
        (b"MSH|^^\\&|A|B|C|D|2026||ADT^A01|1|P|2.5\r", "MSH-2", "102"),
        (b"MSH|^~\\&|A|B|C|D|2026|||1|P|2.5\r", "MSH-9", "101"),
        (b"MSH|^~\\&|A|B|C|D|2026||ADT^A01||P|2.5\r", "MSH-10", "101"),
        (b"MSH|^~\\&|A|B|C|D|2026||ADT^A01|1|P|2.5||||||KLINGON\r", "MSH-18", "103"),
        (b"MSH|^~\\&|A\xff|B|C|D|2026||ADT^A01|1|P|2.5||||||UNICODE UTF-8\r", "MSH-18", "103"),
    ],
)
def test_errors_are_located(raw: bytes, location: str, code: str) -> None:
    with pytest.raises(InvalidInput) as caught:
        parse_header(raw)
    issue = caught.value.issues[0]
    assert (issue.location, issue.code) == (location, code)


def test_partial_header_keeps_what_was_read() -> None:
    with pytest.raises(HeaderError) as caught:
        parse_header(b"MSH|^~\\&|A|B|C|D|2026||ADT^A01||P|2.5\r")
    assert caught.value.partial is not None and caught.value.partial.sending_application == "A"


def test_charset_table() -> None:
    assert codec_for("") == "utf-8"
    assert codec_for("", "latin-1") == "latin-1"
    assert codec_for("UNICODE UTF-8") == "utf-8"
    assert codec_for("8859/1") == "iso8859_1"
    assert codec_for("ASCII") == "ascii"
    assert codec_for("utf8") == "utf-8"
    assert codec_for("nonsense") is None
    # codecs Python knows that are no character set: refused like unknown ones, not a crash later
    assert codec_for("UNDEFINED") is None and codec_for("hex") is None and codec_for("zlib") is None


def test_an_msh18_naming_no_character_set_is_a_located_error() -> None:
    """MSH-18 "UNDEFINED" (Python's codec that refuses every text; found by the MLLP handler's property
    test) is reported as an unknown character set, not a UnicodeError out of the parser."""
    with pytest.raises(HeaderError) as caught:
        parse_header(b"MSH|^~\\&|A|B|C|D|20250101||ADT^A01|1|P|2.5||||||UNDEFINED\r")
    assert caught.value.issues[0].location == "MSH-18"


@given(st.binary(max_size=300))
def test_never_crashes_on_arbitrary_bytes(raw: bytes) -> None:
    try:
        parse_header(raw)
    except InvalidInput as exc:
        assert exc.issues[0].location and exc.issues[0].code.isdigit()


@given(st.binary(max_size=200))
def test_never_crashes_after_a_valid_msh_prefix(tail: bytes) -> None:
    try:
        h = parse_header(b"MSH|^~\\&|" + tail)
    except InvalidInput:
        return
    assert h.field_separator == "|" and h.control_id
