"""The interpreter's shortcuts give what the general way gives, and a mapped message is freed without the
garbage collector.

A tracking run (``track=True``, what ``conduit map test`` uses) always takes the general way — every read
makes Values, so it can record which fields were read — which makes it the oracle for the shortcuts of an
ordinary run: plain fields converted from their raw text, ``equals`` compared on it."""

from __future__ import annotations

import gc

import pytest

from engine.mapping import map_message

HEAD = (
    "MSH|^~\\&|LAB|ACME\\T\\CO|EHR|HOSP|20230209145442+0100||ORU^R01^ORU_R01|{cid}|P|2.5.1\r"
    "PID|1||123456^^^HOSP&1.2.3.4&ISO^MR||Doe^Jane||19700101|F\r"
    "ORC|RE|ORD1^EHR|{filler}^LAB\r"
    "OBR|1|ORD1^EHR|{filler}^LAB|24323-8^Panel^LN|||{obr7}|||||||||||||||{obr22}|||{obr25}\r"
)

#: OBX-11 (status, read by table and by ``equals`` in the event rules), OBX-14 (a date), OBX-4 and OBX-1 (the
#: identity's join), OBX-5/7/8 (Values for their converters): plain, escaped, repeated, explicit null,
#: several components, not a date or not a number at all
OBX = [
    "OBX|1|NM|1001-1^Test 1^LN||1.5|mg/dL|1.0-11|N|||F|||20230209130100\r",
    "OBX|2|NM|1002-2^Test 2^LN|\\F\\2|2.5|mg/dL|1.0-12|N|||C|||20230209130100~20230209130200\r",
    'OBX|3|NM|1003-3^Test 3^LN|""|3.5|mg/dL|1.0-13|N|||F|||""\r',
    "OBX|4|NM|1004-4^Test 4^LN|a^b|4.5|mg/dL|1.0-14|N|||F~C|||2023XX09\r",
    "OBX| 5 |NM|1005-5^Test 5^LN|a&b|5.5|mg/dL|1.0-15|N||| W |||20230209130100^x\r",
    "OBX|6|NM|1006-6^Test 6^LN||6.5|mg/dL|1.0-16|N|||X|||  \r",
    "OBX|7|NM|1007-7&x^Test 7^LN||7.5|mg/dL|1.0-17|N|||\\X46\\|||2023020913\\T\\\r",
    "OBX|8|NM|1008-8^Test 8^LN||abc|mg/dL|<5|H~L|||F\r",
    "OBX|9|CWE|1009-9^Test 9^LN||POS||negative|A|||F\r",
    # whole fields of several components (CWE value, CWE units, XCN observer): plain, empty or null ones
    "OBX|10|CWE|1010-0^Test 10^LN||POS^Positive^L|mg/dL^milligram per deciliter^UCUM|^|N^Normal^HL70078|||F"
    "||||||1234^Smith^John\r",
    'OBX|11|NM|1011-1^Test 11^LN||11.5|^^UCUM|1.0-21|""^x|||F||||||^^\r',
    'OBX|12|CWE|1012-2^Test 12^LN||""^Gone^L|""^x||N^^|||F||||||""^Smith\r',
]

CASES = {
    "plain": {
        "cid": "C1",
        "filler": "FIL1",
        "obr7": "20230209110000",
        "obr22": "20230209140000",
        "obr25": "F",
    },
    "escaped": {"cid": "C\\S\\2", "filler": "F\\R\\1", "obr7": "\\X32\\0230209", "obr22": "", "obr25": "C"},
    "null and bad": {"cid": '""', "filler": '""', "obr7": "2023-02-09", "obr22": '""', "obr25": "X~F"},
    "components": {"cid": "C4^x", "filler": "F4&s", "obr7": "20230209^1", "obr22": "2023^02", "obr25": "^X"},
}


def _message(case: dict[str, str]) -> bytes:
    return (HEAD.format(**case) + "".join(OBX)).encode()


def _outcome(raw: bytes, track: bool) -> object:
    try:
        result = map_message(raw, track=track)
    except Exception as exc:  # noqa: BLE001 - the oracle compares failures too
        return ("failed", type(exc).__name__, str(exc))
    issues = [(i.message, i.location, i.severity) for i in result.issues]
    return result.bundle, issues


@pytest.mark.parametrize("name", sorted(CASES))
def test_shortcuts_give_what_the_general_way_gives(name: str) -> None:
    raw = _message(CASES[name])
    fast, general = _outcome(raw, track=False), _outcome(raw, track=True)
    assert general[0] != "failed"  # type: ignore[index]
    # the conversions that fail (OBX-14 "2023XX09") are reported, at the field, by both ways
    for failed in ("OBX[4]-14 ", "OBX[8]-5 "):
        assert any((loc or "").startswith(failed) for _, loc, _ in general[1])  # type: ignore[index]
    # Provenance.recorded is the clock when MSH-7 says nothing; here it is given, so whole bundles compare
    assert fast == general


def test_a_mapped_message_leaves_no_reference_cycle_behind() -> None:
    raw = _message(CASES["plain"])
    map_message(raw)  # compiles the mappings: what that keeps for the process is not the message's
    gc.collect()
    was_enabled = gc.isenabled()
    gc.disable()
    try:
        map_message(raw)
        map_message(raw, track=True)
        assert gc.collect() == 0  # everything the runs made was freed by reference counting already
    finally:
        if was_enabled:
            gc.enable()
