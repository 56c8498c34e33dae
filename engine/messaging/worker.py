"""Queue workers: one asyncio task per queue, woken by the inbox (an asyncio.Event), polling as fallback.

Blocking database work runs in threads (``asyncio.to_thread``). Unordered queues send a claimed batch
concurrently, ordered ones one after the other up to the first that does not go through; either way the
batch's attempts are then recorded in one transaction (one flush, not one per item). The pool follows channel reloads: tasks of queues
that disappeared are stopped after their current item, new queues get a task; nothing is lost because
every item lives in the database and an interrupted claim simply expires.
"""

from __future__ import annotations

import asyncio
import logging
import os
import socket
import time
import uuid
from collections.abc import Callable
from typing import Any

from engine import metrics
from engine.db import Database
from engine.messaging.channels import Channel, DestinationConfig
from engine.messaging.destinations import DestinationRegistry
from engine.messaging.inbox import pipeline_queue
from engine.messaging.logsafe import describe
from engine.messaging.models import StageStatus
from engine.messaging.ports import Destination
from engine.messaging.processing import Attempt, LostLease, Processor, destination_queue
from engine.messaging.queue import Claimed, claim, claim_stage, queue_depths, release
from engine.messaging.registry import ChannelRegistry
from engine.messaging.settings import MessagingSettings

__all__ = ["WorkerPool"]

log = logging.getLogger(__name__)


class WorkerPool:
    def __init__(
        self,
        db: Database,
        registry: ChannelRegistry,
        destinations: DestinationRegistry,
        processor_records: Any,
        settings: MessagingSettings,
        *,
        mapper: Any = None,
    ) -> None:
        self.db = db
        self.registry = registry
        self.settings = settings
        self.owner = f"{socket.gethostname()[:40]}:{os.getpid()}:{uuid.uuid4().hex[:8]}"
        self._registry_dest = destinations
        self._transports: dict[tuple[str, str, str], Destination] = {}
        self.processor = Processor(db, registry.get, self._transport, processor_records, mapper)
        self._loop: asyncio.AbstractEventLoop | None = None
        #: told the queues an inline pipeline run (ack_after: transformed) filled, when the workers that
        #: serve them run elsewhere (an MLLP ingest child: engine.ingest_processes)
        self.on_queued: Callable[[list[str]], None] | None = None
        self._events: dict[str, asyncio.Event] = {}
        self._tasks: dict[str, asyncio.Task[None]] = {}
        self._stopping = False
        registry.on_change(self._changed_threadsafe)

    # -- wiring ----------------------------------------------------------------------------------------
    def _transport(self, channel: Channel, dest: DestinationConfig) -> Destination:
        key = (channel.name, dest.name, dest.url)
        transport = self._transports.get(key)
        if transport is None:
            transport = self._registry_dest.create(dest.url, dest.options)
            self._transports[key] = transport
        return transport

    def queues(self) -> dict[str, bool]:
        """Every queue of the channels in force -> ordered?"""
        out: dict[str, bool] = {}
        for channel in self.registry.all():
            out[pipeline_queue(channel.name)] = channel.ordered
            for dest in channel.destinations:
                out[destination_queue(channel.name, dest.name)] = dest.ordered
        return out

    def wake(self, channels: set[str] | None = None) -> None:
        """Thread-safe: wake the pipeline workers of ``channels`` (all when None)."""
        loop = self._loop
        if loop is None or loop.is_closed():
            return
        names = [pipeline_queue(c) for c in channels] if channels else list(self._events)
        try:
            loop.call_soon_threadsafe(self._set_events, names)
        except RuntimeError:  # the loop closed meanwhile (shutdown)
            pass

    def wake_queues(self, names: list[str]) -> None:
        """Thread-safe: wake the workers of the queues ``names``."""
        loop = self._loop
        if loop is None or loop.is_closed():
            return
        try:
            loop.call_soon_threadsafe(self._set_events, names)
        except RuntimeError:  # the loop closed meanwhile (shutdown)
            pass

    def _set_events(self, names: list[str]) -> None:
        for name in names:
            event = self._events.get(name)
            if event is not None:
                event.set()

    def _changed_threadsafe(self) -> None:
        loop = self._loop
        if loop is not None and not loop.is_closed():
            try:
                loop.call_soon_threadsafe(self._reconcile)
            except RuntimeError:  # the loop closed meanwhile (shutdown)
                pass

    def _reconcile(self) -> None:
        if self._stopping:
            return
        wanted = self.queues()
        for name in list(self._tasks):
            if name not in wanted:
                self._tasks.pop(name).cancel()
                self._events.pop(name, None)
        for name, ordered in wanted.items():
            if name not in self._tasks or self._tasks[name].done():
                self._events[name] = asyncio.Event()  # bound to this loop (a restarted pool has a new one)
                self._events[name].set()  # look at the queue at once: items may be waiting
                self._tasks[name] = asyncio.create_task(self._queue_loop(name, ordered), name=f"queue {name}")
        # transports of changed destinations are re-created on next use
        live = {(c.name, d.name, d.url) for c in self.registry.all() for d in c.destinations}
        for key in [k for k in self._transports if k not in live]:
            transport = self._transports.pop(key)
            asyncio.ensure_future(transport.close())

    # -- running ---------------------------------------------------------------------------------------
    async def run(self) -> None:
        """The background coroutine: run every queue's worker until cancelled."""
        self._loop = asyncio.get_running_loop()
        self._stopping = False
        self._reconcile()
        try:
            while True:
                await asyncio.sleep(max(self.settings.poll_seconds, 1.0) * 5)
                await self.refresh_depths()
                for name, task in list(self._tasks.items()):
                    if task.done() and not task.cancelled() and task.exception() is not None:
                        log.error("queue worker %s stopped: %s; restarting", name, describe(task.exception()))  # type: ignore[arg-type]
                self._reconcile()
        finally:
            self._stopping = True
            tasks = list(self._tasks.values())
            for task in tasks:
                task.cancel()
            await asyncio.gather(*tasks, return_exceptions=True)
            self._tasks.clear()
            self._events.clear()
            for transport in self._transports.values():
                try:
                    await transport.close()
                except Exception as exc:
                    log.warning("closing a destination failed: %s", describe(exc))
            self._transports.clear()
            self._loop = None

    async def refresh_depths(self) -> None:
        try:
            depths = await asyncio.to_thread(queue_depths, self.db)
        except Exception:
            return
        for name in self.queues():
            channel = name.split(":", 2)[1]
            metrics.QUEUE_DEPTH.labels(channel, name).set(depths.get(name, 0))

    async def _queue_loop(self, name: str, ordered: bool) -> None:
        event = self._events[name]
        limit = self.settings.claim_batch
        while True:
            event.clear()
            try:
                items = await asyncio.to_thread(
                    claim,
                    self.db,
                    name,
                    self.owner,
                    lease_s=self.settings.lease_seconds,
                    limit=limit,
                    ordered=ordered,
                )
            except Exception as exc:  # database away: try again after the poll interval
                log.warning("queue %s: cannot claim (%s)", name, exc.__class__.__name__)
                items = []
            if items:
                if items[0].name == "received":
                    await self._pipeline(items)
                elif (
                    len(items) > 1
                    and self.processor.records_destination(items[0]) is not None
                    and (written := await asyncio.to_thread(self.processor.deliver_records_batch, items))
                ):
                    # written in one transaction, in order; what did not fit in it goes back to the queue
                    await asyncio.to_thread(release, self.db, items[written:])
                elif ordered:
                    await self._run_ordered(items)
                else:
                    await self._run_side_by_side(items)
                continue
            # asyncio.timeout, not wait_for: Python 3.11's wait_for swallows a cancellation that comes as
            # the event is set (gh-86296), and this loop then never ends: the pool's shutdown hangs
            try:
                async with asyncio.timeout(self.settings.poll_seconds):
                    await event.wait()
            except TimeoutError:
                pass

    async def _run_ordered(self, items: list[Claimed]) -> None:
        """One after the other, recorded together (one flush) when the run ends — or sooner when it has
        taken a quarter of the lease (so another process never reclaims what was sent but not yet
        recorded), and in any case when the task is cancelled (shutdown, channel reload): a send that
        went through is recorded before the worker goes, never sent again after the lease expires."""
        attempts: list[Attempt] = []
        flush_after = self.settings.lease_seconds / 4
        started = time.monotonic()
        try:
            for index, item in enumerate(items):
                attempt = await self._attempt(item)
                if isinstance(attempt, Attempt):
                    attempts.append(attempt)
                if not (attempt.result.ok if isinstance(attempt, Attempt) else attempt == StageStatus.SENT):
                    # keep the order: what follows waits until this one is through
                    await asyncio.to_thread(release, self.db, items[index + 1 :])
                    break
                if attempts and time.monotonic() - started > flush_after:
                    done, attempts = attempts, []
                    await self._record(done)
                    started = time.monotonic()
        finally:
            await _unless_cancelled_again(self._record(attempts))

    async def _run_side_by_side(self, items: list[Claimed]) -> None:
        """Sent side by side, then recorded together: one transaction (one flush) per batch; on
        cancellation the sends that completed are still recorded."""
        tasks = [asyncio.ensure_future(self._attempt(item)) for item in items]
        try:
            await asyncio.gather(*tasks)
        finally:
            for task in tasks:
                task.cancel()  # nothing once done; what is still sending stays claimed until its lease ends
            done = [t.result() for t in tasks if t.done() and not t.cancelled() and t.exception() is None]
            await _unless_cancelled_again(self._record([a for a in done if isinstance(a, Attempt)]))

    async def _pipeline(self, items: list[Claimed]) -> None:
        try:
            results = await asyncio.to_thread(self.processor.run_pipeline_batch, items)
        except Exception as exc:
            # the claims expire after the lease and the items are retried; never lose them, never crash.
            # One item must not hold the others back: they go again one by one (in order).
            log.error("pipeline batch of %d item(s) failed: %s", len(items), describe(exc))
            if len(items) == 1:
                return
            results = []
            for item in items:
                try:
                    results += await asyncio.to_thread(self.processor.run_pipeline_batch, [item])
                except Exception as one:
                    log.error("pipeline of message %s failed: %s", item.message_id, describe(one))
        self._set_events(sorted({q for r in results if r is not None for q in r.queues}))

    async def _attempt(self, item: Claimed) -> Attempt | str | None:
        """Send one claimed destination stage: the attempt to record, the new status when it was recorded
        already (the records destination), None when it failed unexpectedly."""
        try:
            return await self.processor.attempt(item)
        except LostLease:
            self._lost(item)
            return None
        except Exception as exc:
            # the claim expires after the lease and the item is retried; never lose it, never crash
            log.error("queue %s: item %s failed: %s", item.queue, item.stage_id, describe(exc))
            return None

    async def _record(self, attempts: list[Attempt]) -> list[str | None]:
        """Record the attempts in one transaction; if that fails (a deadlock, the database away), one by
        one, so that one bad item does not hold back the others. New statuses, None where not recorded."""
        if not attempts:
            return []
        try:
            statuses = await asyncio.to_thread(self.processor.finish_deliveries, attempts)
        except Exception as exc:
            if len(attempts) == 1:
                log.error("queue %s: item %s failed: %s", attempts[0].item.queue, attempts[0].item.stage_id,
                          describe(exc))  # fmt: skip
                return [None]
            log.warning(
                "recording %d deliveries together failed (%s); one by one", len(attempts), describe(exc)
            )
            return [s for a in attempts for s in await self._record([a])]
        for attempt, status in zip(attempts, statuses, strict=True):
            if status is None:
                self._lost(attempt.item)
        return statuses

    @staticmethod
    def _lost(item: Claimed) -> None:
        log.warning("queue %s: item %s was taken over by another worker", item.queue, item.stage_id)

    # -- ack_after: transformed ------------------------------------------------------------------------
    async def process_now(self, channel: Channel, message_id: int) -> tuple[str, list[Any]] | None:
        """Run the pipeline of a just-stored message inline; returns (ACK kind A/E, issues)."""
        from sqlalchemy import select

        from engine.messaging.models import MessageStage

        def find() -> int | None:
            s = MessageStage.__table__
            with self.db.engine.connect() as conn:
                return conn.execute(
                    select(s.c.id).where(s.c.message_id == message_id, s.c.name == "received")
                ).scalar()

        stage_id = await asyncio.to_thread(find)
        if stage_id is None:
            return None
        item = await asyncio.to_thread(
            claim_stage, self.db, stage_id, self.owner, lease_s=self.settings.lease_seconds
        )
        if item is None:
            return None  # a worker got it first; the accept ACK stands
        try:
            result = await asyncio.to_thread(self.processor.run_pipeline, item)
        except Exception as exc:  # stored already: the accept ACK stands and the queue will retry the item
            log.error("inline pipeline run of message %s failed: %s", message_id, describe(exc))
            return None
        self._set_events(result.queues)
        if self.on_queued is not None and result.queues:
            self.on_queued(list(result.queues))
        return ("E", result.issues) if result.status == "error" else ("A", [])


async def _unless_cancelled_again(record: Any) -> None:
    """Await ``record`` to its end even when the awaiting task is being cancelled: recording what was
    sent must not be cut short by the shutdown that interrupted the sending."""
    task = asyncio.ensure_future(record)
    try:
        await asyncio.shield(task)
    except asyncio.CancelledError:
        await task
        raise
