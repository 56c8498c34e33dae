"""The runtime wires adapters and services together around one Database and EventBus.

engine/ imports no adapter or service: both tables below name modules, loaded by import path, so the
direction of imports stays adapters/services -> engine.

* a **service module** exposes ``install(runtime: Runtime) -> None``: it provides the ports it implements
  (``runtime.provide("records", factory)``) and subscribes to events;
* a **listener module** exposes ``create(runtime: Runtime) -> Listener``.
"""

from __future__ import annotations

import asyncio
import importlib
import importlib.util
import logging
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any, Protocol, runtime_checkable

from engine.db import Database, UnitOfWork
from engine.db import migrate as migrations
from engine.errors import ConfigurationError
from engine.events import EventBus
from engine.settings import ConduitSettings

__all__ = ["LISTENERS", "SERVICES", "Listener", "Runtime", "build_runtime"]

log = logging.getLogger(__name__)

#: listener name -> module exposing ``create(runtime) -> Listener``
LISTENERS: dict[str, str] = {
    "fhir": "adapters.fhir_rest.listener",
    "mllp": "adapters.mllp.listener",
    "dicom": "adapters.dicom.listener",
}

#: modules exposing ``install(runtime)``, in dependency order: services provide ports; adapters that are
#: not listeners (outbound senders) register themselves on ports such as ``destinations``
SERVICES: tuple[str, ...] = (
    "services.records.wiring",
    "engine.messaging.wiring",
    "engine.mapping.wiring",
    "services.lis.wiring",
    "services.pacs.wiring",
    "adapters.mllp.wiring",
    "adapters.http.wiring",
    "adapters.dicom.wiring",
)


@runtime_checkable
class Listener(Protocol):
    """A network listener run by ``conduit serve``."""

    name: str

    async def start(self) -> None:
        """Bind and begin serving; return once the socket accepts connections."""

    async def stop(self) -> None:
        """Stop accepting, finish or abandon in-flight work safely, release the socket."""

    def describe(self) -> str:
        """One line for the startup banner, e.g. ``FHIR R4  http://127.0.0.1:8080/fhir``."""
        ...


@dataclass
class Runtime:
    settings: ConduitSettings
    db: Database
    bus: EventBus
    ports: dict[str, Any] = field(default_factory=dict)
    reload_hooks: list[Callable[[], None]] = field(default_factory=list)
    background: list[Callable[[], Any]] = field(default_factory=list)
    """Coroutine factories run beside the listeners by ``conduit serve`` (queue workers, forwarders)."""
    ingest_background: list[Callable[[], Any]] = field(default_factory=list)
    """The few of ``background`` that an MLLP ingest child (engine.ingest_processes) runs too: what its
    inbox needs (closing it on shutdown), never what must run once (workers, retention, the pid file)."""
    ingest_child: bool = False
    """This process is an MLLP ingest child: it joins ports its main process opened first."""

    def provide(self, name: str, implementation: Any) -> None:
        self.ports[name] = implementation

    def port(self, name: str) -> Any:
        try:
            return self.ports[name]
        except KeyError:
            raise ConfigurationError(f"no implementation installed for port {name!r}") from None

    def records(self, uow: UnitOfWork) -> Any:
        """The record store (engine.fhir.repository.ResourceRepository) bound to ``uow``."""
        return self.port("records")(uow)

    def reload(self) -> None:
        for hook in self.reload_hooks:
            hook()


def _module_available(name: str) -> bool:
    try:
        return importlib.util.find_spec(name) is not None
    except ModuleNotFoundError:
        return False


def build_runtime(settings: ConduitSettings, *, db: Database | None = None) -> Runtime:
    """Create the Database and install every available service."""
    bus = db.bus if db is not None else EventBus()
    db = db or Database(str(settings.database_url), bus=bus)
    runtime = Runtime(settings=settings, db=db, bus=bus)
    for module_name in SERVICES:
        if _module_available(module_name):
            importlib.import_module(module_name).install(runtime)
    return runtime


def available_listeners() -> list[str]:
    return [name for name, mod in LISTENERS.items() if _module_available(mod)]


def create_listener(name: str, runtime: Runtime) -> Listener:
    if name not in LISTENERS:
        raise ConfigurationError(f"unknown listener {name!r}; known: {', '.join(LISTENERS)}")
    if not _module_available(LISTENERS[name]):
        raise ConfigurationError(f"listener {name!r} is not available in this build")
    listener: Listener = importlib.import_module(LISTENERS[name]).create(runtime)
    return listener


def prepare_database(runtime: Runtime, *, upgrade: bool) -> None:
    """Check durability and migration state; upgrade when asked (always for the embedded database)."""
    runtime.db.check_durability()
    if upgrade or runtime.db.is_sqlite:
        migrations.upgrade(runtime.db.engine)
    elif not migrations.is_current(runtime.db.engine):
        raise ConfigurationError(
            "the database schema is not current: run `conduit db upgrade` (or `conduit serve --upgrade-db`)"
        )


async def run_listeners(
    runtime: Runtime,
    names: list[str],
    stop: asyncio.Event,
    background: list[Callable[[], Any]] | None = None,
) -> None:
    """Start ``names`` and the background tasks (``runtime.background`` unless given), serve until
    ``stop`` is set, then shut down in reverse."""
    started: list[Listener] = []
    tasks: list[asyncio.Task[Any]] = []
    try:
        for name in names:
            listener = create_listener(name, runtime)
            await listener.start()
            started.append(listener)
            log.info("listening: %s", listener.describe())
        for factory in runtime.background if background is None else background:
            tasks.append(asyncio.create_task(factory()))
        await stop.wait()
    finally:
        for task in tasks:
            task.cancel()
        for task in tasks:
            try:
                await task
            except (asyncio.CancelledError, Exception):
                pass
        for listener in reversed(started):
            try:
                await listener.stop()
            except Exception:
                log.exception("error stopping %s", listener.name)
