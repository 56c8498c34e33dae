"""FrameDecoder properties: any chunking gives the same frames; junk never crashes it."""

from __future__ import annotations

from hypothesis import given
from hypothesis import strategies as st

from adapters.mllp.framing import CR, EB, SB, FrameDecoder, Oversize, frame

payload = st.binary(max_size=300).map(lambda b: b.replace(SB, b"").replace(EB, b""))


@given(st.lists(payload, max_size=6), st.lists(st.integers(min_value=1, max_value=50), min_size=1))
def test_any_chunking_gives_the_same_frames(payloads: list[bytes], cuts: list[int]) -> None:
    stream = b"".join(frame(p) for p in payloads)
    decoder, out, i, k = FrameDecoder(), [], 0, 0
    while i < len(stream):
        step = cuts[k % len(cuts)]
        out.extend(decoder.feed(stream[i : i + step]))
        i, k = i + step, k + 1
    assert out == payloads
    assert decoder.junk_bytes == 0 and not decoder.in_frame


@given(st.binary(max_size=2000), st.integers(min_value=1, max_value=64))
def test_arbitrary_bytes_never_crash(stream: bytes, step: int) -> None:
    decoder = FrameDecoder(max_frame_bytes=500)
    for i in range(0, len(stream), step):
        for item in decoder.feed(stream[i : i + step]):
            assert isinstance(item, bytes | Oversize)
            if isinstance(item, bytes):
                assert SB not in item and EB not in item and len(item) <= 500


@given(st.binary(max_size=100).map(lambda b: b.replace(SB, b"")), payload)
def test_junk_before_a_frame_is_counted(junk: bytes, body: bytes) -> None:
    decoder = FrameDecoder()
    assert decoder.feed(junk + frame(body)) == [body]
    assert decoder.junk_bytes == len(junk)


def test_oversize_keeps_the_head_and_stops() -> None:
    decoder = FrameDecoder(max_frame_bytes=10)
    (event,) = decoder.feed(SB + b"MSH|^~\\&|0123456789")
    assert isinstance(event, Oversize) and event.head.startswith(b"MSH|")
    assert decoder.feed(frame(b"ok")) == []


def test_missing_cr_and_restart() -> None:
    decoder = FrameDecoder()
    assert decoder.feed(SB + b"a" + EB + SB + b"lost" + SB + b"b" + EB + CR) == [b"a", b"b"]
    assert decoder.abandoned_frames == 1
