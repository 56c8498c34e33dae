"""The inbox's PostgreSQL commits on the event loop that received the messages, not on a writer thread.

A writer thread costs every message two thread hand-offs (the loop wakes the writer, the writer wakes the
loop) and their context switches, and at many senders the two threads queue for the GIL in turn. Here
the loop sends the batch's transaction itself (``engine.db.one_wait``: BEGIN, the inserts, COMMIT, in
one write) on a connection it keeps, waits for the answer as for any socket, and answers the callers
directly; what arrives meanwhile is the next batch. "Store, then acknowledge" is unchanged: a caller's
future resolves with its outcome only once the server's answer to the COMMIT is read.

Only the common case runs here: new messages, all inserted. The rest goes to the inbox's writer thread,
whose retries already know each case (:meth:`GroupCommitInbox._store`):

* a message whose duplicate key was taken (``ON CONFLICT DO NOTHING`` left it out): looked up there;
* no connection, or the kept one found closed before anything was sent: nothing was stored;
* the server refused the transaction (its first answer was an error, as from a backend terminated
  while idle), or answered every statement with one of them failed (deadlock victim, constraint): the
  transaction was rolled back, nothing of it was stored.

A connection lost after the transaction went out, before its answer, may hide a COMMIT the server made:
its callers get :class:`StoreUnavailable`, never a positive answer, and the batch is not written again.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Callable, Sequence
from typing import Any

from engine.db import Database
from engine.db.one_wait import OneWait
from engine.errors import StoreUnavailable
from engine.messaging.logsafe import describe
from engine.messaging.ports import ReceiveOutcome

__all__ = ["LoopCommitter"]

log = logging.getLogger(__name__)

#: builds ``batch``'s transaction on a psycopg connection (with this connection's scratch ``session``)
#: and how to read each message's outcome from its results (None: left out, its key taken)
Prepare = Callable[
    [Any, dict[str, Any], list[Any]], tuple[OneWait, Callable[[list[Any]], list[ReceiveOutcome | None]]]
]


class LoopCommitter:
    """Group-commits what one event loop's callers :meth:`submit`: one transaction in flight at a time on
    one kept connection, the next batch made of what queued up meanwhile. Used from its loop only, but
    :meth:`close`, from any thread."""

    def __init__(
        self,
        loop: asyncio.AbstractEventLoop,
        db: Database,
        *,
        prepare: Prepare,
        answer: Callable[[list[Any], Sequence[ReceiveOutcome | BaseException]], None],
        hand_over: Callable[[list[Any]], None],
        max_batch: int,
    ) -> None:
        self._loop = loop
        self._db = db
        self._prepare = prepare
        #: resolves the callers' futures (on this loop) and counts the outcomes
        self._answer = answer
        #: gives messages to the writer thread, which stores and answers them
        self._hand_over = hand_over
        self._max_batch = max_batch
        self._pending: list[Any] = []
        self._draining: asyncio.Task[None] | None = None
        self._conn: Any = None  # a SQLAlchemy Connection from the pool, in autocommit mode
        self._session: dict[str, Any] = {}  # the statements prepared on it
        self._closing = False

    def submit(self, pending: Any) -> None:
        """Queue a message (``_Pending``) for the next commit; its future resolves once decided."""
        if self._closing:
            self._hand_over([pending])
            return
        self._pending.append(pending)
        if self._draining is None:
            self._draining = self._loop.create_task(self._drain())

    async def _drain(self) -> None:
        try:
            while self._pending:
                batch = self._pending[: self._max_batch]
                del self._pending[: self._max_batch]
                await self._commit(batch)
        finally:
            self._draining = None
            if self._pending:  # cancelled (the loop is shutting down): the thread stores what is left
                left, self._pending = self._pending, []
                self._hand_over(left)
            if self._closing:
                self._release()

    async def _commit(self, batch: list[Any]) -> None:
        try:
            conn = await self._connection()
            tx, outcomes = self._prepare(conn.connection.dbapi_connection, self._session, batch)
        except BaseException as exc:  # nothing was sent: the writer thread connects and stores them
            self._drop()
            self._hand_over(batch)
            if not isinstance(
                exc, Exception
            ):  # cancelled while connecting: the batch is answered all the same
                raise
            log.warning(
                "inbox: no connection on the event loop (%s); the writer thread stores", describe(exc)
            )
            return
        try:
            tx.send()
            while tx.flush():
                await self._ready(tx.socket, write=True)
            while not tx.read():
                await self._ready(tx.socket)
            results = tx.results()  # the server's verdict: raises its error (the transaction rolled back)
        except BaseException as exc:
            self._drop()
            if isinstance(exc, Exception) and (tx.answered or tx.refused):
                self._hand_over(batch)  # rolled back, nothing stored: the writer thread's retries decide
                return
            # the connection broke (or the wait was cancelled) with the COMMIT out and unanswered: it may
            # have been done; no positive answer, no second write
            if isinstance(exc, Exception):
                log.error("inbox: commit of %d message(s) failed: %s", len(batch), describe(exc))
            self._answer(batch, [_unavailable() for _ in batch])
            if not isinstance(exc, Exception):
                raise
            return
        try:
            found = outcomes(results)
        except Exception as exc:  # committed, but its answer unreadable: no positive answer
            log.error("inbox: the answer to a commit could not be read: %s", describe(exc))
            self._answer(batch, [_unavailable() for _ in batch])
            return
        stored = [(p, o) for p, o in zip(batch, found, strict=True) if o is not None]
        if stored:
            self._answer([p for p, _ in stored], [o for _, o in stored])
        taken = [p for p, o in zip(batch, found, strict=True) if o is None]
        if taken:
            self._hand_over(taken)

    async def _connection(self) -> Any:
        conn = self._conn
        if conn is None or conn.closed or conn.invalidated:
            # checking out may connect and pings: blocking work, off the loop
            self._conn = conn = await self._loop.run_in_executor(None, self._connect)
            self._session = {}
        return conn

    def _connect(self) -> Any:
        conn = self._db.engine.connect()
        # the transaction's BEGIN and COMMIT go in its own pipeline (see InboxSql.one_wait)
        conn.execution_options(isolation_level="AUTOCOMMIT")
        return conn

    async def _ready(self, fd: int, *, write: bool = False) -> None:
        """Wait until ``fd`` is readable (writable)."""
        ready = self._loop.create_future()
        if write:
            self._loop.add_writer(fd, _wake, ready)
        else:
            self._loop.add_reader(fd, _wake, ready)
        try:
            await ready
        finally:
            if write:
                self._loop.remove_writer(fd)
            else:
                self._loop.remove_reader(fd)

    def _drop(self) -> None:
        """Discard the kept connection (broken, or left in an unknown state): the pool opens a new one."""
        conn, self._conn = self._conn, None
        self._session = {}
        if conn is not None:
            try:
                conn.invalidate()
                conn.close()
            except Exception:  # already broken: nothing left to release
                pass

    def close(self, timeout: float = 30.0) -> None:
        """Let the commits in flight and those queued finish, then give the connection back. From any
        thread but the loop's own (whose commits could not go on while it waits here)."""
        self._closing = True
        loop = self._loop
        if _runs(loop):  # a drain in progress gives the connection back when it ends
            if self._draining is None:
                self._release()
            return
        if not loop.is_closed() and loop.is_running():
            try:
                asyncio.run_coroutine_threadsafe(self._finish(), loop).result(timeout)
                return
            except Exception as exc:  # the commits took too long, or the loop stopped meanwhile
                if not loop.is_closed() and loop.is_running():
                    # the loop owns the connection: it gives up the commit in flight (its callers get
                    # StoreUnavailable) and the connection, never this thread under its feet
                    log.warning("inbox: the event loop's commits did not end in time (%s)", describe(exc))
                    try:
                        loop.call_soon_threadsafe(self._give_up)
                    except RuntimeError:  # closed just now
                        pass
                    return
        # the loop no longer runs: nothing uses the connection any more
        left, self._pending = self._pending, []
        if left:
            self._hand_over(left)
        if self._draining is not None:  # a commit suspended half-way: never hand that connection on
            self._drop()
        else:
            self._release()

    def _give_up(self) -> None:
        if self._draining is not None:
            self._draining.cancel()  # its end drops the connection and hands what waits to the thread
        else:
            self._release()

    async def _finish(self) -> None:
        while self._draining is not None:
            await asyncio.wait({self._draining})
        self._release()

    def _release(self) -> None:
        conn, self._conn = self._conn, None
        if conn is not None:
            try:
                conn.close()  # back to the pool
            except Exception:
                pass


def _wake(ready: asyncio.Future[None]) -> None:
    if not ready.done():
        ready.set_result(None)


def _unavailable() -> StoreUnavailable:
    return StoreUnavailable("the message store is unavailable; the message was not stored")


def _runs(loop: asyncio.AbstractEventLoop) -> bool:
    """Whether the calling thread runs ``loop``."""
    try:
        return asyncio.get_running_loop() is loop
    except RuntimeError:
        return False
