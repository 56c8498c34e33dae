"""MLLP framing (HL7 v2 MLLP Release 1, HL7 v2.5.1 Appendix C.4): ``<VT> message <FS><CR>``.

:class:`FrameDecoder` is incremental and tolerant, because lab analyzers on serial-to-TCP converters are not:

* bytes may arrive one at a time or many frames per read;
* bytes outside a frame (line noise, keep-alive newlines, a peer speaking another protocol) are discarded
  and counted in ``junk_bytes``;
* a start byte inside a frame means the previous frame lost its end: the partial frame is dropped (counted
  in ``abandoned_frames``) and never acknowledged, so the sender's ACK timeout makes it send again;
* ``<FS>`` not followed by ``<CR>`` still ends the frame (some senders omit the CR);
* a frame longer than ``max_frame_bytes`` yields :class:`Oversize` (with the first bytes, so the MSH can
  still be read for the AR) and the decoder stops: the connection is to be closed.
"""

from __future__ import annotations

from dataclasses import dataclass

__all__ = ["SB", "EB", "CR", "frame", "Oversize", "FrameDecoder"]

SB = b"\x0b"  # start block, <VT>
EB = b"\x1c"  # end block, <FS>
CR = b"\x0d"  # carriage return after the end block

_SB, _EB, _CR = SB[0], EB[0], CR[0]
_HEAD = 4096  # bytes of an oversize frame kept so its MSH can be read for the AR


def frame(payload: bytes) -> bytes:
    """Wrap ``payload`` in an MLLP block."""
    return SB + payload + EB + CR


@dataclass(frozen=True)
class Oversize:
    """A frame passed ``max_frame_bytes``; ``head`` is its beginning (the MSH, normally)."""

    head: bytes
    size: int


class FrameDecoder:
    """Turns a byte stream into MLLP payloads. ``feed`` returns complete frames (bytes) in order, and
    :class:`Oversize` once when the limit is passed (after which input is ignored)."""

    __slots__ = (
        "max_frame_bytes",
        "junk_bytes",
        "abandoned_frames",
        "_buf",
        "_in_frame",
        "_await_cr",
        "_dead",
    )

    def __init__(self, max_frame_bytes: int = 10 * 1024 * 1024):
        self.max_frame_bytes = max_frame_bytes
        self.junk_bytes = 0
        self.abandoned_frames = 0
        self._buf = bytearray()
        self._in_frame = False
        self._await_cr = False  # an <FS> ended the last frame: swallow one following <CR>
        self._dead = False

    @property
    def in_frame(self) -> bool:
        """True while a frame has started and not ended (a partial message is buffered)."""
        return self._in_frame

    @property
    def buffered(self) -> int:
        return len(self._buf)

    def feed(self, data: bytes) -> list[bytes | Oversize]:
        out: list[bytes | Oversize] = []
        if self._dead or not data:
            return out
        i, n = 0, len(data)
        while i < n:
            if self._await_cr:
                self._await_cr = False
                if data[i] == _CR:
                    i += 1
                    continue
            if not self._in_frame:
                start = data.find(SB, i)
                if start < 0:
                    self.junk_bytes += n - i
                    return out
                self.junk_bytes += start - i
                i = start + 1
                self._in_frame = True
                self._buf.clear()
                continue
            end = data.find(EB, i)
            restart = data.find(SB, i, end if end >= 0 else n)
            if restart >= 0:  # a new start byte before any end: the previous frame lost its end
                self.abandoned_frames += 1
                self._buf.clear()
                i = restart + 1
                continue
            stop = end if end >= 0 else n
            if len(self._buf) + (stop - i) > self.max_frame_bytes:
                keep = max(0, _HEAD - len(self._buf))
                head = bytes(self._buf[:_HEAD]) + data[i : i + keep]
                out.append(Oversize(head, len(self._buf) + stop - i))
                self._dead = True
                self._buf.clear()
                return out
            self._buf += data[i:stop]
            if end < 0:
                return out
            out.append(bytes(self._buf))
            self._buf.clear()
            self._in_frame = False
            self._await_cr = True
            i = end + 1
        return out
