"""Registers the ``http`` and ``https`` schemes on the ``destinations`` port."""

from __future__ import annotations

import logging
from typing import Any

from adapters.http.destination import create_http_destination

__all__ = ["install"]

log = logging.getLogger(__name__)


def install(runtime: Any) -> None:
    registry = runtime.ports.get("destinations")
    if registry is None:  # no message pipeline in this build: nothing sends
        log.debug("no destinations port; the http sender is not registered")
        return
    registry.register("http", create_http_destination)
    registry.register("https", create_http_destination)
