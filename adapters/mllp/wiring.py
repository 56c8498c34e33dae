"""Installs the outbound MLLP sender: registers the ``mllp`` and ``mllps`` schemes on the ``destinations``
port (the listener is separate: ``adapters.mllp.listener``, started by ``conduit serve``)."""

from __future__ import annotations

import logging

from adapters.mllp.client import create_destination
from engine.runtime import Runtime

__all__ = ["install"]

log = logging.getLogger(__name__)


def install(runtime: Runtime) -> None:
    registry = runtime.ports.get("destinations")
    if registry is None:  # the messaging service is not installed in this build: nothing sends
        log.debug("no destinations port; the mllp sender is not registered")
        return
    registry.register("mllp", create_destination)
    registry.register("mllps", create_destination)
