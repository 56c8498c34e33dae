"""The catalogue of hook points: what each event carries and when it fires.

Handlers are plain callables ``handler(event) -> None`` registered with :meth:`EventBus.subscribe`. They run
*after* the unit of work that caused the event has committed, so a handler only ever sees durable state.
A failing handler is logged and does not affect the caller or the other handlers; a handler that must not
lose work records it durably itself (e.g. enqueues a message) inside its own unit of work.

=========================  ========================================  =====================================
event name                 payload                                   fired when
=========================  ========================================  =====================================
``resource.created``       :class:`ResourceEvent`                    a FHIR resource got its first version
``resource.updated``       :class:`ResourceEvent`                    a FHIR resource got a new version
``resource.deleted``       :class:`ResourceEvent` (resource=None)    a FHIR resource was deleted
``message.received``       :class:`MessageEvent`                     an inbound message was stored
``message.processed``      :class:`MessageEvent`                     a message finished its pipeline
``instance.stored``        :class:`InstanceEvent`                    a DICOM instance was stored + indexed
=========================  ========================================  =====================================
"""

from __future__ import annotations

import logging
from collections import defaultdict
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

__all__ = [
    "RESOURCE_CREATED",
    "RESOURCE_UPDATED",
    "RESOURCE_DELETED",
    "MESSAGE_RECEIVED",
    "MESSAGE_PROCESSED",
    "INSTANCE_STORED",
    "Event",
    "ResourceEvent",
    "MessageEvent",
    "InstanceEvent",
    "EventBus",
]

log = logging.getLogger(__name__)

RESOURCE_CREATED = "resource.created"
RESOURCE_UPDATED = "resource.updated"
RESOURCE_DELETED = "resource.deleted"
MESSAGE_RECEIVED = "message.received"
MESSAGE_PROCESSED = "message.processed"
INSTANCE_STORED = "instance.stored"


@dataclass(frozen=True)
class Event:
    name: str


@dataclass(frozen=True)
class ResourceEvent(Event):
    resource_type: str
    id: str
    version_id: int
    resource: dict[str, Any] | None = None


@dataclass(frozen=True)
class MessageEvent(Event):
    message_id: int
    channel: str
    status: str


@dataclass(frozen=True)
class InstanceEvent(Event):
    sop_instance_uid: str
    study_instance_uid: str
    extra: dict[str, Any] = field(default_factory=dict)


Handler = Callable[[Any], None]


class EventBus:
    """In-process publish/subscribe. Subscriptions are keyed by event name; ``*`` receives everything."""

    def __init__(self) -> None:
        self._handlers: dict[str, list[Handler]] = defaultdict(list)

    def subscribe(self, name: str, handler: Handler) -> Callable[[], None]:
        self._handlers[name].append(handler)
        return lambda: self._handlers[name].remove(handler)

    def publish(self, event: Event) -> None:
        for handler in [*self._handlers.get(event.name, ()), *self._handlers.get("*", ())]:
            try:
                handler(event)
            except Exception as exc:  # a listener's bug must not undo a committed write
                # the exception's text may quote resource content: only its class at ERROR
                log.error("event handler %r failed for %s: %s", handler, event.name, exc.__class__.__name__)
                log.debug("event handler failure", exc_info=True)
