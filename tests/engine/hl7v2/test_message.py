"""The HL7 v2 tokenizer, escapes, explicit null, structure grouping and field paths."""

from __future__ import annotations

import pytest
from hypothesis import given
from hypothesis import strategies as st

from engine.errors import InvalidInput
from engine.hl7v2.escape import DEFAULT_DELIMITERS, Delimiters, escape, unescape
from engine.hl7v2.message import NULL, is_null, parse
from engine.hl7v2.paths import PathSyntaxError, compile_path

ORU = (
    "MSH|^~\\&|LAB|ACME|EHR|HOSP|20230209145442||ORU^R01^ORU_R01|42|P|2.5.1\r"
    'PID|1||123^^^HOSP^MR~456^^^OTHER^PI||Doe^Jane||19700101|""\r'
    "ORC|RE|P1||||||||||\r"
    "OBR|1|P1|F1|A^Panel A^L\r"
    "OBX|1|NM|a1^A one^L||1.5|mg|||||F\r"
    "NTE|1||note on a1\r"
    "OBX|2|ST|a2^A two^L||x\\S\\y \\T\\ z|||||F\r"
    "ZZZ|custom\r"
    "ORC|RE|P2\r"
    "OBR|2|P2|F2|B^Panel B^L\r"
    "OBX|1|NM|b1^B one^L||7|mg|||||F\r"
)


def test_segments_fields_and_msh_numbering():
    msg = parse(ORU.encode())
    assert [s.name for s in msg.segments][:4] == ["MSH", "PID", "ORC", "OBR"]
    assert msg.msh.get(1) == "|" and msg.msh.get(2) == "^~\\&"
    assert (msg.message_type, msg.trigger_event, msg.structure_id, msg.version) == (
        "ORU",
        "R01",
        "ORU_R01",
        "2.5.1",
    )
    pid = msg.first("PID")
    assert pid.get(3, rep=2, comp=4) == "OTHER"
    assert pid.get(5, comp=2) == "Jane"
    assert pid.get(99) == ""


def test_explicit_null_is_distinct_from_empty():
    pid = parse(ORU).first("PID")
    assert pid.get(8) is NULL and is_null(pid.get(8)) and not pid.get(8)
    assert pid.get(9) == "" and pid.get(9) is not NULL


def test_escape_sequences_are_decoded_on_read():
    obx = parse(ORU).all("OBX")[1]
    assert obx.get(5) == "x^y & z"
    assert unescape("a\\F\\b\\R\\c\\E\\d\\X0D0A\\e\\.br\\f") == "a|b~c\\d\r\ne\nf"
    assert unescape("\\H\\bold\\N\\") == "bold"
    assert unescape("BSV 4\\5 re.") == "BSV 4\\5 re."  # unterminated: kept, never lost
    assert unescape("\\Q\\") == "\\Q\\"  # unknown: kept as sent


@given(st.text(alphabet=st.characters(blacklist_characters="\r", blacklist_categories=("Cs",))))
def test_escape_round_trips(text: str):
    assert unescape(escape(text)) == text.replace("\r\n", "\n")


def test_other_delimiters_and_truncation_character():
    msg = parse("MSH#*@!$#A#B##20230101##ADT*A01#1#P#2.7\rPID#1##7@8*X*Y\r")
    assert msg.delimiters == Delimiters("#", "*", "@", "!", "$", "")
    pid = msg.first("PID")
    assert pid.get(3, rep=2, comp=3) == "Y"
    five = parse("MSH|^~\\&#|A|B|||20230101||ORU^R01|1|P|2.8\rPID|1||1\\P\\2\r")
    assert five.delimiters.truncation == "#"
    assert five.first("PID").get(3) == "1#2"


@pytest.mark.parametrize("raw", [b"", b"PID|1", b"MSH", b"MSH|A|B|C", b"MSH|^~\\&|A\rP!D|x"])
def test_not_a_message_is_invalid_input(raw: bytes):
    with pytest.raises(InvalidInput):
        parse(raw)


def test_line_ends_bom_and_latin1_are_accepted():
    raw = "\ufeffMSH|^~\\&|A|B|||20230101||ADT^A01|1|P|2.5\r\nPID|1||1||Müller^Jörg\n".encode(
        "latin-1", "replace"
    )
    msg = parse(raw.replace(b"?", b""))
    assert msg.first("PID").get(5) == "Müller"


def test_structure_groups_each_obx_under_its_own_obr():
    tree = parse(ORU).tree
    orders = tree.groups("ORDER_OBSERVATION")
    assert len(orders) == 2
    first, second = orders
    assert [s.get(3, comp=1) for s in first.find_all("OBX")] == ["a1", "a2"]
    assert [s.get(3, comp=1) for s in second.find_all("OBX")] == ["b1"]
    obs = first.groups("OBSERVATION")
    assert [s.name for s in obs[0].segments()] == ["OBX", "NTE"]
    zzz = parse(ORU).first("ZZZ")
    assert zzz is not None
    tree2 = parse(ORU).tree
    assert any(s.name == "ZZZ" for g in tree2.groups("OBSERVATION") for s in g.extra)


def test_paths_see_their_own_order_only():
    tree = parse(ORU).tree
    second_obs = tree.groups("OBSERVATION")[-1]
    assert compile_path("OBR-3").first(second_obs).text() == "F2"
    assert compile_path("ORC-2").first(second_obs).text() == "P2"
    assert compile_path("PID-3").first(second_obs).text() == "123^^^HOSP^MR"
    assert compile_path("MSH-10").first(second_obs).text() == "42"
    # a group without an NTE does not borrow the NTE of another OBX
    assert compile_path("NTE-3").values(tree.groups("OBSERVATION")[1]) == []


def test_path_forms():
    tree = parse(ORU).tree
    assert [v.text() for v in compile_path("PID-3[*].1").values(tree)] == ["123", "456"]
    assert [v.text() for v in compile_path("PID-3[?5=PI].1").values(tree)] == ["456"]
    assert [v.c(1) for v in compile_path("OBX[**]-3").values(tree)] == ["a1", "a2", "b1"]
    assert [v.c(1) for v in compile_path("OBX[**?2=ST]-3").values(tree)] == ["a2"]
    v = compile_path("PID-3[2].4").first(tree)
    assert v.location == "PID[1]-3[2].4"
    assert compile_path("PID-5.1.1").first(tree).text() == "Doe"
    with pytest.raises(PathSyntaxError):
        compile_path("PID.3")


def test_default_delimiters():
    assert DEFAULT_DELIMITERS.encoding_characters == "^~\\&"


def test_msh18_character_set_when_not_utf8():
    text = "MSH|^~\\&|A|B|||20230101||ADT^A01|1|P|2.5||||||8859/15\rPID|1||1||Müller€^Jörg\r"
    assert parse(text.encode("iso8859_15")).first("PID").get(5) == "Müller€"
    assert parse(text.encode("utf-8")).first("PID").get(5) == "Müller€"


@pytest.mark.parametrize(
    "field",
    ["", "A", "A^B^C", '""^x^', "a&b^ c ^\\T\\d", "^^^^^^^^^^^1", '^""', "x~y"],
)
def test_texts_is_c_of_each_component(field: str) -> None:
    """Value.texts(n), what the CWE converter reads in one call, is [c(1), ..., c(n)]."""
    message = parse(f"MSH|^~\\&|A|B|C|D|20230101||ORU^R01|1|P|2.5\rOBX|1|CWE|{field}\r".encode())
    for value in compile_path("OBX-3[*]").values(message.tree) or []:
        for n in (1, 3, 9, 12):
            assert value.texts(n) == [value.c(i) for i in range(1, n + 1)]
