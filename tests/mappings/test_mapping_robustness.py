"""Bad input never crashes the mapping: any bytes give a MappingResult or a MappingError, never another
exception (the pipeline keeps the message for staff with the error)."""

from __future__ import annotations

from pathlib import Path

import orjson
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from engine.errors import MappingError
from engine.mapping import map_message

CORPUS = Path(__file__).resolve().parents[1] / "fixtures" / "hl7v2"
SEEDS = [p.read_bytes() for p in sorted(CORPUS.rglob("*.hl7")) if not p.name.startswith("pyhl7-batch")]


def _map(raw: bytes) -> None:
    try:
        result = map_message(raw)
    except MappingError as exc:
        assert exc.issues and exc.message
        return
    assert result.bundle["type"] == "transaction"
    orjson.dumps(result.bundle)  # plain JSON only: no explicit-null marker or other object leaks out


@settings(max_examples=300, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(
    seed=st.sampled_from(SEEDS),
    cuts=st.lists(st.tuples(st.integers(0, 10_000), st.integers(0, 40)), max_size=4),
    junk=st.binary(max_size=12),
)
def test_mangled_corpus_messages_never_crash(seed: bytes, cuts: list[tuple[int, int]], junk: bytes):
    data = bytearray(seed)
    for at, length in cuts:
        at %= max(1, len(data))
        data[at : at + length] = junk
    _map(bytes(data))


@settings(max_examples=200, deadline=None)
@given(st.binary(max_size=300))
def test_random_bytes_never_crash(data: bytes):
    _map(b"MSH|^~\\&|A|B|||20230101||ORU^R01|1|P|2.5\r" + data)
    _map(data)
