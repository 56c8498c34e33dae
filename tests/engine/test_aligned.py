"""The pool of page-aligned buffers for direct I/O (engine/aligned.py)."""

from __future__ import annotations

from engine.aligned import CHUNK, AlignedBuffers, is_aligned


def test_aligned_buffers_are_reused_only_when_nothing_refers_into_them() -> None:
    pool = AlignedBuffers()
    first = pool.take()
    assert len(first) == CHUNK and is_aligned(memoryview(first))
    pool.give(first)
    assert pool.take() is first  # reused
    view = memoryview(first)[4096:]
    pool.give(first)  # a view is alive: left to the garbage collector, never handed out again
    second = pool.take()
    assert second is not first
    view.release()
    large = pool.take(CHUNK + 1)
    assert len(large) == 2 * CHUNK
    pool.give(large)  # not kept: only CHUNK-sized buffers are pooled
    assert pool.take() is not large


def test_only_writable_memory_on_a_block_boundary_counts_as_aligned() -> None:
    buffer = AlignedBuffers().take()
    with memoryview(buffer) as view:
        assert is_aligned(view[4096:])
        assert not is_aligned(view[100:])
        assert not is_aligned(view[:0])
    assert not is_aligned(memoryview(bytes(8192)))  # read-only: cannot be located, so copied
