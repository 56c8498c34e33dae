"""HL7 v2 batch files (HL7 v2.5 2.10.3): ``[FHS] { BHS { MSH ... } BTS } [FTS]``.

:func:`split_batch` returns the messages of a batch one by one (each as its own bytes, segments joined by
CR) so the listener stores and acknowledges each separately; :func:`build_batch_ack` wraps the per-message
ACKs in BHS/BTS (and FHS/FTS when the input had a file header) so the batch is answered in one frame.

BTS-1 (batch message count) and FTS-1 (file batch count) are checked when valued: a count that does not
match means something was lost on the way, which is the very thing they exist to detect.
"""

from __future__ import annotations

from datetime import UTC, datetime

from engine.errors import InvalidInput, Issue
from engine.hl7v2.ack import echo_field

__all__ = ["is_batch", "split_batch", "build_batch_ack"]

_ENVELOPE = (b"FHS", b"BHS", b"BTS", b"FTS")


def _segments(raw: bytes) -> list[bytes]:
    return [s for s in raw.replace(b"\r\n", b"\r").replace(b"\n", b"\r").split(b"\r") if s.strip()]


def is_batch(raw: bytes) -> bool:
    """True when ``raw`` starts with a file (FHS) or batch (BHS) header."""
    head = raw.lstrip(b" \t\r\n")
    if head.startswith(b"\xef\xbb\xbf"):
        head = head[3:]
    return head[:3] in (b"FHS", b"BHS")


def _count(segment: bytes, name: str) -> int | None:
    sep = segment[3:4] or b"|"
    fields = segment.split(sep)
    value = fields[1].strip() if len(fields) > 1 else b""
    if not value:
        return None
    if not value.isdigit():
        raise InvalidInput(
            f"{name} is not a number", [Issue(f"{name} is not a number", location=name, code="102")]
        )
    return int(value)


def split_batch(raw: bytes) -> list[bytes]:
    """The messages inside ``raw``; a single message (no FHS/BHS) comes back as ``[raw]`` unchanged.

    Raises :class:`~engine.errors.InvalidInput` when segments come before the first MSH of a batch
    (location ``BHS``, Table 0357 code 100) or when BTS-1 / FTS-1 disagree with what was found.
    """
    if not is_batch(raw):
        return [raw]
    messages: list[list[bytes]] = []
    current: list[bytes] | None = None
    in_batch = 0
    batches = 0
    for segment in _segments(raw):
        kind = segment.lstrip(b"\xef\xbb\xbf")[:3]
        if kind in _ENVELOPE:
            if current is not None:
                messages.append(current)
                current = None
            if kind == b"BHS":
                batches += 1
                in_batch = 0
            elif kind == b"BTS":
                expected = _count(segment, "BTS-1")
                if expected is not None and expected != in_batch:
                    text = f"BTS-1 says {expected} messages, the batch holds {in_batch}"
                    raise InvalidInput(text, [Issue(text, location="BTS-1", code="100")])
            elif kind == b"FTS":
                expected = _count(segment, "FTS-1")
                if expected is not None and expected != batches:
                    text = f"FTS-1 says {expected} batches, the file holds {batches}"
                    raise InvalidInput(text, [Issue(text, location="FTS-1", code="100")])
            continue
        if kind == b"MSH":
            if current is not None:
                messages.append(current)
            current = [segment]
            in_batch += 1
        elif current is None:
            text = f"a {kind.decode('latin-1')} segment comes before the first MSH of the batch"
            raise InvalidInput(text, [Issue(text, location="BHS", code="100")])
        else:
            current.append(segment)
    if current is not None:
        messages.append(current)
    return [b"\r".join(m) + b"\r" for m in messages]


def build_batch_ack(raw: bytes, acks: list[bytes], *, encoding: str = "utf-8") -> bytes:
    """One batch answering ``raw``: BHS, the ACK messages, ``BTS|<count>`` (wrapped in FHS/FTS when ``raw``
    had an FHS). BHS-3/4 and BHS-5/6 are the input's sender and receiver swapped; BHS-11 echoes BHS-11
    (batch control ID) of the input so the sender can match the answer."""
    segments = _segments(raw)
    head = next((s for s in segments if s[:3] in (b"FHS", b"BHS")), b"BHS|^~\\&")
    sep = head[3:4].decode("latin-1") or "|"
    fields = head.decode(encoding, errors="replace").split(sep)
    enc = fields[1] if len(fields) > 1 else "^~\\&"

    def field(n: int, among: list[str]) -> str:
        return among[n - 1] if n - 1 < len(among) else ""

    bhs_fields = next(
        (s.decode(encoding, errors="replace").split(sep) for s in segments if s[:3] == b"BHS"), fields
    )
    now = datetime.now(UTC).astimezone()
    stamp = now.strftime("%Y%m%d%H%M%S%z")

    def header(name: str, source: list[str]) -> str:
        def echo(n: int) -> str:
            return echo_field(field(n, source), enc)

        out = [name, echo_field(enc, "^~\\&"), echo(5), echo(6), echo(3), echo(4), stamp]
        out += ["", "", "", "", echo(11)]
        return sep.join(out)

    body = [header("BHS", bhs_fields).encode(encoding)]
    for ack in acks:
        body.extend(s for s in _segments(ack))
    body.append(f"BTS{sep}{len(acks)}".encode(encoding))
    if head[:3] == b"FHS":
        body = [header("FHS", fields).encode(encoding), *body, f"FTS{sep}1".encode(encoding)]
    return b"\r".join(body) + b"\r"
