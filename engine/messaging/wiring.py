"""``install(runtime)``: the message store, queue workers and channels, wired onto the Runtime.

Ports provided:

* ``inbox`` — :class:`engine.messaging.inbox.GroupCommitInbox` (``await inbox.receive(InboundMessage)``)
* ``channels`` — :class:`engine.messaging.registry.ChannelRegistry` (``mllp_sources()``, ``on_change(cb)``)
* ``destinations`` — :class:`engine.messaging.destinations.DestinationRegistry` (``register(scheme, f)``)
* ``messages`` — :class:`MessagingService` (store queries, reprocess, prune, reload) for the CLI/admin API

Background: the queue workers, hourly retention pruning, and a pid file (``<data_dir>/conduit.pid``) so ``conduit channels reload``
can signal the running server (SIGHUP). Reload hook: re-read the channel files.
"""

from __future__ import annotations

import asyncio
import logging
import os
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from engine.errors import ConfigurationError
from engine.messaging.destinations import DestinationRegistry
from engine.messaging.file_destination import create_file_destination
from engine.messaging.inbox import GroupCommitInbox
from engine.messaging.registry import ChannelRegistry, channel_dirs, safe_reload
from engine.messaging.settings import MessagingSettings
from engine.messaging.store import MessageStore
from engine.messaging.worker import WorkerPool

__all__ = ["install", "MessagingService", "PID_FILE"]

log = logging.getLogger(__name__)

PID_FILE = "conduit.pid"


@dataclass
class MessagingService:
    settings: MessagingSettings
    registry: ChannelRegistry
    destinations: DestinationRegistry
    inbox: GroupCommitInbox
    pool: WorkerPool
    store: MessageStore

    def reload(self) -> str | None:
        """Re-read channel files; returns the problems text when refused (channels in force are kept)."""
        return safe_reload(self.registry)

    def reprocess(self, message_id: int) -> None:
        self.store.reprocess(message_id)
        self.pool.wake()

    def prune(self) -> int:
        return self.store.prune(default_days=self.settings.retention_days, channels=self.registry.all())


def _pid_file_task(data_dir: Path) -> Any:
    async def run() -> None:
        path = data_dir / PID_FILE
        try:
            data_dir.mkdir(parents=True, exist_ok=True)
            path.write_text(str(os.getpid()))
        except OSError as exc:
            log.warning("cannot write %s: %s", path, exc)
            return
        try:
            await asyncio.Event().wait()
        finally:
            try:
                if path.read_text().strip() == str(os.getpid()):
                    path.unlink()
            except OSError:
                pass

    return run


def _inbox_closer(inbox: GroupCommitInbox) -> Any:
    """On shutdown, let the inbox writers commit what is queued (their callers then get their ACK)."""

    async def run() -> None:
        try:
            await asyncio.Event().wait()
        finally:
            await asyncio.shield(asyncio.to_thread(inbox.close))

    return run


def _retention_task(service: MessagingService, interval_s: float = 3600.0) -> Any:
    """Prune finished messages past their retention once an hour (``conduit messages prune`` on demand)."""

    async def run() -> None:
        while True:
            await asyncio.sleep(interval_s)
            try:
                pruned = await asyncio.to_thread(service.prune)
            except Exception as exc:  # the database may be away for a while: try again next hour
                log.warning("retention: prune failed (%s)", exc.__class__.__name__)
                continue
            if pruned:
                log.info("retention: pruned %d finished message(s)", pruned)

    return run


def install(runtime: Any) -> None:
    settings = MessagingSettings()
    try:
        registry = ChannelRegistry(lambda: channel_dirs(settings))
    except ConfigurationError as exc:
        # keep the CLI usable (messages list/show); a listener asking for sources gets the error
        log.error("%s", exc)
        registry = _BrokenRegistry(lambda: channel_dirs(settings), str(exc))
    destinations = DestinationRegistry()
    destinations.register("file", create_file_destination)
    pool = WorkerPool(runtime.db, registry, destinations, lambda uow: runtime.records(uow), settings)
    inbox = GroupCommitInbox(
        runtime.db,
        registry.get,
        max_batch=settings.group_commit_max,
        writers=settings.inbox_writers,
        on_loop=settings.inbox_on_loop,
        on_stored=pool.wake,
        after_store=pool.process_now,
    )
    service = MessagingService(
        settings, registry, destinations, inbox, pool, MessageStore(runtime.db, registry.get)
    )
    runtime.provide("inbox", inbox)
    runtime.provide("channels", registry)
    runtime.provide("destinations", destinations)
    runtime.provide("messages", service)
    if settings.workers:
        runtime.background.append(pool.run)
    runtime.background.append(_pid_file_task(runtime.settings.data_dir))
    runtime.background.append(_retention_task(service))
    runtime.background.append(_inbox_closer(inbox))
    runtime.ingest_background.append(_inbox_closer(inbox))
    runtime.reload_hooks.append(service.reload)


class _BrokenRegistry(ChannelRegistry):
    """Channel files did not validate at start: listeners get the error; a later reload may fix it."""

    def __init__(self, dirs: Any, problem: str) -> None:
        self.problem: str | None = problem
        super().__init__(dirs, channels={})

    def mllp_sources(self) -> list[Any]:
        if self.problem:
            raise ConfigurationError(self.problem)
        return super().mllp_sources()

    def reload(self) -> Any:
        fresh = super().reload()
        self.problem = None
        return fresh
