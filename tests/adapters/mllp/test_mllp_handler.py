"""MessageHandler properties: whatever arrives in a frame, the answer is a well-formed ACK (or nothing,
when MSH-15 asks for nothing) and never a positive one for a message that was not stored."""

from __future__ import annotations

import asyncio
from dataclasses import replace

import hl7
from hypothesis import given, settings
from hypothesis import strategies as st
from mllp_fixtures import FakeInbox

from adapters.mllp.handler import MessageHandler
from engine.messaging.ports import MllpSource

_field = st.text(
    alphabet=st.characters(blacklist_categories=("Cs",), blacklist_characters="\r\n"), max_size=12
)


@st.composite
def messages(draw: st.DrawFn) -> bytes:
    fields = draw(st.lists(_field, min_size=0, max_size=18))
    body = draw(st.lists(st.binary(max_size=40), max_size=3))
    head = draw(st.sampled_from([b"MSH|^~\\&|", b"MSH|^~\\&#|", b"", b"BHS|^~\\&|", b"MSH"]))
    return head + "|".join(fields).encode("utf-8", "surrogatepass") + b"\r" + b"\r".join(body)


def _check(answer: bytes | None, inbox: FakeInbox) -> None:
    if answer is None:
        return
    text = answer.decode("utf-8", errors="replace")
    assert "\x0b" not in text and "\x1c" not in text
    if text.startswith(("BHS", "FHS")):
        return
    ack = hl7.parse(text)
    code = str(ack.segment("MSA")[1])
    assert code in ("AA", "AE", "AR", "CA", "CE", "CR")
    if inbox.fail:
        assert code not in ("AA", "CA")


@settings(max_examples=150, deadline=None)
@given(messages(), st.booleans())
def test_any_frame_gets_a_well_formed_answer(raw: bytes, fail: bool) -> None:
    inbox = FakeInbox(fail=fail)
    handler = MessageHandler(MllpSource(channel="p"), inbox)
    _check(asyncio.run(handler.handle(raw, "127.0.0.1:1")), inbox)


@settings(max_examples=100, deadline=None)
@given(st.binary(max_size=400))
def test_random_bytes_never_crash(raw: bytes) -> None:
    inbox = FakeInbox()
    handler = MessageHandler(MllpSource(channel="p"), inbox)
    _check(asyncio.run(handler.handle(raw, "127.0.0.1:1")), inbox)


def test_original_mode_answer_is_sent_even_when_msh15_says_ne() -> None:
    class OriginalInbox(FakeInbox):
        async def receive(self, message):  # type: ignore[no-untyped-def]
            outcome = await super().receive(message)
            return replace(outcome, ack_code="A" + outcome.ack_code[1])  # a channel with ack_mode: original

    raw = b"MSH|^~\\&|A|B|C|D|2026||ORU^R01|NE1|P|2.5.1|||NE|NE\r"
    answer = asyncio.run(MessageHandler(MllpSource(channel="p"), OriginalInbox()).handle(raw, "127.0.0.1:1"))
    assert answer is not None and b"MSA|AA|NE1" in answer
    enhanced = asyncio.run(MessageHandler(MllpSource(channel="p"), FakeInbox()).handle(raw, "127.0.0.1:1"))
    assert enhanced is None  # CA under MSH-15 NE: nothing is sent


def test_ack_uses_the_source_default_charset() -> None:
    raw = "MSH|^~\\&|LABÖ|H|C|D|2026||ADT^A01|CS1|P|2.5\r".encode("latin-1")
    handler = MessageHandler(MllpSource(channel="p", default_charset="latin-1"), FakeInbox())
    answer = asyncio.run(handler.handle(raw, "127.0.0.1:1"))
    assert answer is not None and "|LABÖ|H|".encode("latin-1") in answer
