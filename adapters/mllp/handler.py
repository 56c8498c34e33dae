"""One MLLP payload in, the answer out: read the MSH, check who sent it, store it through the ``inbox``
port, and render the :class:`~engine.messaging.ports.ReceiveOutcome` as an ACK.

The rules that keep messages from being lost:

* a positive ACK (AA/CA) only when ``outcome.stored`` is true — an inbox that says AA without storing is
  overruled to AE/CE;
* the inbox failing (database down) gives AE/CE with ERR 207 "storage unavailable": never AA;
* a message whose MSH cannot be read is still handed to the inbox (``header=None``) so staff can see it,
  and is answered AR built on what could be read;
* who may send (``allowed_senders``, ``allowed_peers``) is decided by the inbox, which keeps refused
  messages (status rejected) for staff and answers AR with ERR;
* MSH-15 (enhanced mode) decides whether an accept ACK (CA/CE/CR) is sent at all (NE: never, ER: only
  on errors, SU: only on success); an original-mode answer (AA/AE/AR) is always sent.

A batch (FHS/BHS) is split and each message is stored and acknowledged on its own; the answer is one batch
of those ACKs (BHS ... BTS, inside FHS/FTS when the input had them), sent back as one frame.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Sequence
from datetime import UTC, datetime

from adapters.mllp.framing import Oversize
from engine.errors import InvalidInput, Issue
from engine.hl7v2.ack import accept_ack_wanted, accept_code, build_ack
from engine.hl7v2.batch import build_batch_ack, is_batch, split_batch
from engine.hl7v2.header import HeaderError, MessageHeader, parse_header
from engine.messaging.ports import InboundMessage, Inbox, MllpSource, ReceiveOutcome

__all__ = ["MessageHandler", "STORAGE_UNAVAILABLE"]

log = logging.getLogger(__name__)

STORAGE_UNAVAILABLE = "storage unavailable: the message was not stored; send it again later"
_POSITIVE = ("AA", "CA")


def _msa1(ack: bytes) -> str:
    """MSA-1 of a ready ACK ('' when it has none)."""
    for segment in ack.replace(b"\n", b"\r").split(b"\r"):
        if segment.startswith(b"MSA") and len(segment) > 4:
            return segment[4:].split(segment[3:4])[0].decode("latin-1")
    return ""


class MessageHandler:
    """Handles the payloads of one MLLP source. Stateless apart from counters; shared by its connections."""

    def __init__(self, source: MllpSource, inbox: Inbox):
        self.source = source
        self.inbox = inbox
        self.counts = {"messages": 0, "stored": 0, "store_failures": 0, "unreadable": 0}

    async def handle(self, payload: bytes, peer: str) -> bytes | None:
        """The answer to one frame (unframed), or None when nothing is to be sent (MSH-15 says so)."""
        if is_batch(payload):
            try:
                parts = split_batch(payload)
            except InvalidInput as exc:
                return await self._one(payload, peer, exc.issues)
            # handed to the inbox together, in order, so the group commit stores them in few transactions
            answers = await asyncio.gather(*(self._one(part, peer) for part in parts))
            return build_batch_ack(payload, [a for a in answers if a is not None])
        return await self._one(payload, peer)

    def oversize(self, event: Oversize, peer: str) -> bytes:
        """The AR for a frame over ``max_frame_bytes`` (the connection is closed after it)."""
        try:
            header: MessageHeader | None = parse_header(event.head, self.source.default_charset)
        except HeaderError as exc:
            header = exc.partial
        except InvalidInput:
            header = None
        log.warning(
            "mllp %s: frame from %s over %d bytes refused (AR) and connection closed",
            self.source.channel,
            peer,
            self.source.max_frame_bytes,
        )
        text = f"message larger than this source accepts ({self.source.max_frame_bytes} bytes)"
        issues = [Issue(text, location="MSH", code="207")]
        return build_ack(
            header, accept_code(header, "R"), issues, default_charset=self.source.default_charset
        )

    async def _one(self, raw: bytes, peer: str, found: Sequence[Issue] = ()) -> bytes | None:
        self.counts["messages"] += 1
        issues = list(found)
        header: MessageHeader | None = None
        answer_on: MessageHeader | None = None  # what the ACK is built on: the header, or what was read
        if not issues:
            try:
                header = answer_on = parse_header(raw, self.source.default_charset)
            except HeaderError as exc:
                answer_on = exc.partial
                issues.extend(exc.issues)
        if header is None:
            self.counts["unreadable"] += 1
        try:
            message = InboundMessage(
                channel=self.source.channel,
                raw=raw,
                header=header,
                peer=peer,
                received_at=datetime.now(UTC),
                problems=tuple(issues),
            )
            outcome: ReceiveOutcome = await self.inbox.receive(message)
        except Exception as exc:  # the store is down or broken: never a positive ACK, never a crash
            self.counts["store_failures"] += 1
            log.warning(
                "mllp %s: message from %s not stored (%s); answering with an error",
                self.source.channel,
                peer,
                type(exc).__name__,
            )
            issues.append(Issue(STORAGE_UNAVAILABLE, code="207"))
            return self._answer(answer_on, accept_code(answer_on, "E"), issues)
        if outcome.stored:
            self.counts["stored"] += 1
        if outcome.application_ack is not None and (
            outcome.stored or _msa1(outcome.application_ack) not in _POSITIVE
        ):
            return outcome.application_ack
        code = outcome.ack_code
        if header is not None or not issues:  # an unreadable MSH: our located issues say it better
            issues.extend(outcome.issues)
        if code in _POSITIVE and not outcome.stored:
            log.error(
                "mllp %s: the inbox answered %s without storing; sending an error", self.source.channel, code
            )
            code = accept_code(answer_on, "E")
            issues.append(Issue(STORAGE_UNAVAILABLE, code="207"))
        try:
            return self._answer(answer_on, code, issues)
        except ValueError:  # an ACK code outside Table 0008 from the inbox: answer an error, not nothing
            log.error("mllp %s: the inbox answered an unknown ACK code", self.source.channel)
            return self._answer(
                answer_on, accept_code(answer_on, "E"), [*issues, Issue("internal error", code="207")]
            )

    def _answer(self, header: MessageHeader | None, code: str, issues: Sequence[Issue]) -> bytes | None:
        # MSH-15 governs accept ACKs (CA/CE/CR) only: an original-mode code, also one that a channel with
        # ``ack_mode: original`` chose for an enhanced-mode message, is always sent
        if code.startswith("C") and not accept_ack_wanted(header, code in _POSITIVE):
            return None
        # a message without MSH-18 was read in the source's default_charset: answer in it too
        return build_ack(header, code, issues, default_charset=self.source.default_charset)
