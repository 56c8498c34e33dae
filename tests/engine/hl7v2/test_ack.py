"""build_ack and the MSH-15/MSH-16 rules, checked by parsing every ACK with python-hl7."""

from __future__ import annotations

from datetime import UTC, datetime
from pathlib import Path

import hl7
import pytest
from hypothesis import given
from hypothesis import strategies as st

from engine.errors import Issue
from engine.hl7v2.ack import (
    accept_ack_wanted,
    accept_code,
    application_ack,
    application_ack_wanted,
    build_ack,
    error_code,
    escape,
)
from engine.hl7v2.batch import is_batch
from engine.hl7v2.header import MessageHeader, parse_header

CORPUS = sorted(Path(__file__).parents[2].joinpath("fixtures", "hl7v2").glob("*/*.hl7"))
MESSAGES = [p for p in CORPUS if not is_batch(p.read_bytes())]


def parsed(ack: bytes, charset: str = "utf-8") -> hl7.Message:
    return hl7.parse(ack.decode(charset))


@pytest.mark.parametrize("path", MESSAGES, ids=lambda p: p.name)
def test_corpus_ack_swaps_and_echoes(path: Path) -> None:
    header = parse_header(path.read_bytes())
    ack = parsed(build_ack(header, "AA"))
    msh = ack.segment("MSH")
    assert str(msh[3]) == header.receiving_application and str(msh[4]) == header.receiving_facility
    assert str(msh[5]) == header.sending_application and str(msh[6]) == header.sending_facility
    assert str(msh[10]) and str(msh[10]) != header.control_id
    assert str(msh[12]) == header.version
    assert str(ack.segment("MSA")[1]) == "AA"
    assert str(ack.segment("MSA")[2]) == header.control_id
    assert str(msh[9]).startswith(f"ACK^{header.trigger_event}")


def test_message_type_and_delimiters_follow_the_message() -> None:
    h = parse_header(b"MSH#$%*!#A#B#C#D#2026##ORU$R01$ORU_R01#42#T#2.5.1\r")
    ack = build_ack(h, "AA", control_id="ACK1", timestamp=datetime(2026, 1, 2, 3, 4, 5, tzinfo=UTC))
    assert ack == b"MSH#$%*!#C#D#A#B#20260102030405+0000##ACK$R01$ACK#ACK1#T#2.5.1\rMSA#AA#42\r"


def test_old_versions_have_no_structure_component() -> None:
    h = parse_header(b"MSH|^~\\&|A|B|C|D|2026||ADT^A01|7|P|2.2\r")
    assert str(parsed(build_ack(h, "AA")).segment("MSH")[9]) == "ACK^A01"


def test_err_segment_v25_form() -> None:
    h = parse_header(b"MSH|^~\\&|A|B|C|D|2026||ORU^R01|7|P|2.5.1\r")
    issue = Issue("value | not ^ numeric", location="OBX[2]-5.1", code="102")
    ack = parsed(build_ack(h, "AE", [issue, Issue("just so", severity="warning", code="not-supported")]))
    errs = ack.segments("ERR")
    assert len(errs) == 2
    assert str(errs[0][2]) == "OBX^2^5^1^1"
    assert str(errs[0][3]) == "102^Data type error^HL70357"
    assert str(errs[0][4]) == "E"
    assert str(errs[0][8]) == "value \\F\\ not \\S\\ numeric"
    assert str(errs[1][3]).startswith("200^") and str(errs[1][4]) == "W"


def test_err_segment_eld_form_before_25() -> None:
    h = parse_header(b"MSH|^~\\&|A|B|C|D|2026||ADT^A01|7|P|2.3\r")
    raw = build_ack(h, "AR", [Issue("PID-3 missing", location="PID-3", code="101")]).decode()
    assert "\rERR|PID^1^3^101&Required field missing&HL70357\r" in raw
    assert str(parsed(raw.encode()).segment("MSA")[3]) == "PID-3 missing"


def test_unknown_header_gets_an_ar_on_defaults_with_escaped_echo() -> None:
    raw = build_ack(None, "AR", [Issue("no MSH", location="MSH", code="100")], echo_control_id="x|y\r")
    ack = parsed(raw)
    assert str(ack.segment("MSA")[1]) == "AR"
    assert str(ack.segment("MSA")[2]) == "x\\F\\y\\.br\\"
    assert str(ack.segment("MSH")[12]) == "2.5.1"


def test_charset_is_echoed_and_used() -> None:
    h = parse_header("MSH|^~\\&|LABÖ|H|R|F|2026||ADT^A01|1|P|2.5||||||8859/1\r".encode("latin-1"))
    raw = build_ack(h, "AE", [Issue("Größe falsch")])
    assert "LABÖ".encode("latin-1") in raw and "Größe".encode("latin-1") in raw
    assert str(parsed(raw, "latin-1").segment("MSH")[18]) == "8859/1"


def test_invalid_code_is_refused() -> None:
    with pytest.raises(ValueError):
        build_ack(None, "OK")


@pytest.mark.parametrize(
    ("msh15", "success", "wanted"),
    [("AL", True, True), ("AL", False, True), ("NE", True, False), ("NE", False, False)]
    + [("ER", True, False), ("ER", False, True), ("SU", True, True), ("SU", False, False)],
)
def test_accept_ack_table_0155(msh15: str, success: bool, wanted: bool) -> None:
    assert accept_ack_wanted(MessageHeader(accept_ack_type=msh15), success) is wanted
    assert application_ack_wanted(MessageHeader(application_ack_type=msh15), success) is wanted


def test_original_mode_always_answers_and_codes() -> None:
    original = MessageHeader()
    assert accept_ack_wanted(original, False) and application_ack_wanted(original, True)
    assert accept_code(original, "A") == "AA"
    assert accept_code(MessageHeader(accept_ack_type="AL"), "R") == "CR"
    assert accept_ack_wanted(MessageHeader(application_ack_type="AL"), True)  # empty MSH-15 reads as AL
    assert not application_ack_wanted(MessageHeader(accept_ack_type="AL"), True)  # empty MSH-16: none


def test_application_ack_follows_msh16() -> None:
    h = parse_header(b"MSH|^~\\&|A|B|C|D|2026||ORU^R01|7|P|2.5.1|||AL|ER\r")
    assert application_ack(h, "A") is None
    ack = application_ack(h, "E", [Issue("mapping failed", location="OBX-5", code="207")])
    assert ack is not None and str(parsed(ack).segment("MSA")[1]) == "AE"


def test_error_code_mapping() -> None:
    assert error_code(Issue("x", code="205")) == "205"
    assert error_code(Issue("x", code="required")) == "101"
    assert error_code(Issue("x", code="exception")) == "207"


_text = st.text(alphabet=st.characters(blacklist_categories=("Cs",)), max_size=40)


@given(
    fields=st.lists(_text, min_size=6, max_size=6),
    code=st.sampled_from(["AA", "AE", "AR", "CA", "CE", "CR"]),
    messages=st.lists(_text, max_size=3),
    locations=st.lists(st.one_of(st.none(), _text, st.just("OBX[3]-5.2.1")), max_size=3),
    version=st.sampled_from(["2.3", "2.4", "2.5.1", "2.8", ""]),
)
def test_any_header_gives_a_well_formed_ack(
    fields: list[str], code: str, messages: list[str], locations: list[str | None], version: str
) -> None:
    app, fac, rapp, rfac, trigger, control = (escape(f, "|", "^~\\&") for f in fields)
    header = MessageHeader(
        sending_application=app,
        sending_facility=fac,
        receiving_application=rapp,
        receiving_facility=rfac,
        message_type="ADT",
        trigger_event=trigger,
        control_id=control or "1",
        version=version,
    )
    issues = [Issue(m, location=loc) for m, loc in zip(messages, locations + [None] * 3, strict=False)]
    raw = build_ack(header, code, issues)
    text = raw.decode("utf-8")
    assert text.count("\r") == 2 + (len(issues) if version not in ("2.3", "2.4") else min(1, len(issues)))
    ack = hl7.parse(text)
    assert str(ack.segment("MSA")[1]) == code
    # python-hl7 strips trailing white space of the last segment, so read MSA-2 from the bytes themselves
    msa = next(seg for seg in text.split("\r") if seg.startswith("MSA|"))
    assert msa.split("|")[2] == (control or "1")
    assert str(ack.segment("MSH")[5]) == app


@given(control=_text, message=_text)
def test_unparsed_message_ack_is_well_formed(control: str, message: str) -> None:
    raw = build_ack(None, "AR", [Issue(message, location="MSH")], echo_control_id=control)
    assert b"\x0b" not in raw and b"\x1c" not in raw
    ack = hl7.parse(raw.decode())
    assert str(ack.segment("MSA")[1]) == "AR"
