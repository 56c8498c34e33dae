"""split_batch and build_batch_ack on the corpus batch and hand-made envelopes."""

from __future__ import annotations

from pathlib import Path

import hl7
import pytest

from engine.errors import InvalidInput
from engine.hl7v2.ack import build_ack
from engine.hl7v2.batch import build_batch_ack, is_batch, split_batch
from engine.hl7v2.header import parse_header

BATCH = Path(__file__).parents[2] / "fixtures" / "hl7v2" / "ADT_A04" / "pyhl7-batch-FHS-BHS-3msgs.hl7"


def test_corpus_batch_splits_into_its_three_messages() -> None:
    raw = BATCH.read_bytes()
    assert is_batch(raw)
    messages = split_batch(raw)
    ids = [parse_header(m).control_id for m in messages]
    assert ids == ["12334456778890", "12334456778891", "12334456778890"]
    for message in messages:
        assert message.startswith(b"MSH|") and message.endswith(b"PV1|1|O||||^^^^^1\r")
        assert message.count(b"\r") == 6
        assert b"BTS" not in message and b"BHS" not in message


def test_single_message_is_returned_unchanged() -> None:
    raw = b"MSH|^~\\&|A|B|C|D|2026||ADT^A01|1|P|2.5\rPID|1\r"
    assert not is_batch(raw)
    assert split_batch(raw) == [raw]


def test_bhs_without_fhs_and_lf_terminators() -> None:
    raw = b"BHS|^~\\&|A|B\nMSH|^~\\&|A|B|C|D|2026||ADT^A01|1|P|2.5\nPID|1\nBTS|1\n"
    assert split_batch(raw) == [b"MSH|^~\\&|A|B|C|D|2026||ADT^A01|1|P|2.5\rPID|1\r"]


def test_empty_batch() -> None:
    assert split_batch(b"BHS|^~\\&\rBTS|0\r") == []


@pytest.mark.parametrize(
    ("raw", "location"),
    [
        (b"BHS|^~\\&\rPID|1\rMSH|^~\\&|A|B|C|D|2026||ADT^A01|1|P|2.5\rBTS|1\r", "BHS"),
        (b"BHS|^~\\&\rMSH|^~\\&|A|B|C|D|2026||ADT^A01|1|P|2.5\rBTS|2\r", "BTS-1"),
        (b"BHS|^~\\&\rMSH|^~\\&|A|B|C|D|2026||ADT^A01|1|P|2.5\rBTS|x\r", "BTS-1"),
        (b"FHS|^~\\&\rBHS|^~\\&\rBTS|0\rFTS|3\r", "FTS-1"),
    ],
)
def test_broken_envelopes_are_located(raw: bytes, location: str) -> None:
    with pytest.raises(InvalidInput) as caught:
        split_batch(raw)
    assert caught.value.issues[0].location == location


def test_batch_ack_wraps_one_ack_per_message() -> None:
    raw = BATCH.read_bytes()
    acks = [build_ack(parse_header(m), "AA") for m in split_batch(raw)]
    answer = build_batch_ack(raw, acks)
    segments = [s[:3] for s in answer.split(b"\r") if s]
    assert segments[0] == b"FHS" and segments[1] == b"BHS" and segments[-2:] == [b"BTS", b"FTS"]
    assert segments.count(b"MSA") == 3 and answer.count(b"\rBTS|3\r") == 1
    bhs = answer.split(b"\r")[1].decode().split("|")  # bhs[n - 1] is BHS-n
    assert (bhs[3], bhs[5]) == ("AUSDHSV", "ABCHS")  # BHS-4 and BHS-6: sender and receiver swapped
    assert bhs[11] == "abchs20070101123401-1"  # BHS-12 refers to the batch answered
    reparsed = split_batch(answer)
    assert [str(hl7.parse(m.decode()).segment("MSA")[2]) for m in reparsed] == [
        "12334456778890",
        "12334456778891",
        "12334456778890",
    ]
