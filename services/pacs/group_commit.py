"""Group commit: many threads hand work to one transaction, each waits until it is durably committed.

Leader/follower, no extra thread: the first caller that finds no commit running becomes the leader,
takes everything queued so far, commits it in one transaction and wakes the others; a caller whose item
arrived during that commit leads the next one. One association pays no hand-off latency; forty
concurrent associations share one fsync instead of forty.
"""

from __future__ import annotations

import threading
from collections.abc import Callable, Sequence
from typing import Generic, TypeVar

__all__ = ["GroupCommitter"]

T = TypeVar("T")
R = TypeVar("R")


class _Slot(Generic[T, R]):
    __slots__ = ("item", "done", "result", "error")

    def __init__(self, item: T) -> None:
        self.item = item
        self.done = False
        self.result: R | None = None
        self.error: BaseException | None = None


class GroupCommitter(Generic[T, R]):
    """``commit(items) -> results`` runs one transaction for a batch and returns one result per item (or
    raises: then each item is retried alone, so one bad item cannot fail its neighbours)."""

    def __init__(self, commit: Callable[[Sequence[T]], list[R]], *, max_batch: int = 256) -> None:
        self._commit = commit
        self._max_batch = max_batch
        self._cond = threading.Condition()
        self._queue: list[_Slot[T, R]] = []
        self._leader = False

    def submit(self, item: T) -> R:
        slot: _Slot[T, R] = _Slot(item)
        with self._cond:
            self._queue.append(slot)
            while not slot.done:
                if self._leader:
                    self._cond.wait()
                    continue
                self._leader = True
                batch, self._queue = self._queue[: self._max_batch], self._queue[self._max_batch :]
                self._cond.release()
                try:
                    self._run(batch)
                finally:
                    self._cond.acquire()
                    self._leader = False
                    self._cond.notify_all()
        if slot.error is not None:
            raise slot.error
        return slot.result  # type: ignore[return-value]

    def _run(self, batch: list[_Slot[T, R]]) -> None:
        try:
            results = self._commit([s.item for s in batch])
            for slot, result in zip(batch, results, strict=True):
                slot.result = result
        except BaseException:
            if len(batch) == 1:
                batch[0].error = _current_error()
            else:
                for slot in batch:
                    try:
                        slot.result = self._commit([slot.item])[0]
                    except BaseException:
                        slot.error = _current_error()
        for slot in batch:
            slot.done = True


def _current_error() -> BaseException:
    import sys

    error = sys.exc_info()[1]
    assert error is not None
    return error
