"""Page-aligned buffers, kept for reuse, for objects written with direct I/O (O_DIRECT).

A direct write needs its memory aligned to the device's block size; an anonymous mmap is page-aligned.
Buffers are reused because memory this process has already touched costs nothing more to write into,
where a fresh allocation may fault in every page again (on a VM that hands freed memory back to its
host, at a cost comparable to the copy itself). The DICOM adapter receives a C-STORE data set straight
into one (``adapters.dicom.direct_store``), so the storage writes it without copying it first.
"""

from __future__ import annotations

import ctypes
import mmap
import threading

__all__ = ["ALIGN", "CHUNK", "AlignedBuffers", "BUFFERS", "is_aligned"]

ALIGN = 4096  # offsets, lengths and addresses of direct writes: the largest common block size
CHUNK = 1 << 20  # the size of each pooled buffer
_KEEP = 32  # as many as the default maximum of concurrent associations


class AlignedBuffers:
    """A pool of ``CHUNK``-sized page-aligned buffers (anonymous mmaps); larger ones are made to size and
    never kept. A buffer comes back only when nothing still refers into it: one with a live memoryview
    is left to the garbage collector instead, so a reader that kept a view never sees it reused."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._free: list[mmap.mmap] = []

    def take(self, size: int = CHUNK) -> mmap.mmap:
        """A buffer of at least ``size`` bytes (a multiple of ``CHUNK``)."""
        if size <= CHUNK:
            with self._lock:
                if self._free:
                    return self._free.pop()
            return mmap.mmap(-1, CHUNK)
        return mmap.mmap(-1, -(-size // CHUNK) * CHUNK)

    def give(self, buffer: mmap.mmap) -> None:
        if len(buffer) != CHUNK:
            _close_quietly(buffer)
            return
        try:
            buffer.resize(CHUNK)  # no-op, but refused (BufferError) while a view of it is alive
        except (BufferError, OSError, ValueError):
            return
        with self._lock:
            if len(self._free) < _KEEP:
                self._free.append(buffer)
                return
        buffer.close()


def _close_quietly(buffer: mmap.mmap) -> None:
    try:
        buffer.close()
    except BufferError:  # a view is alive: the mapping goes with its last reference
        pass


def is_aligned(view: memoryview) -> bool:
    """Whether ``view`` starts on an ``ALIGN`` boundary (a slice of a pooled buffer at a block offset).
    Only writable memory can be located this way; read-only memory (bytes) counts as unaligned."""
    if view.readonly or not view.c_contiguous or view.nbytes == 0:
        return False
    return ctypes.addressof(ctypes.c_char.from_buffer(view)) % ALIGN == 0


BUFFERS = AlignedBuffers()
"""The process's pool: shared by the receiving adapter and the storage's own copies."""
