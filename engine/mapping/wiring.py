"""Runtime wiring of the mapping layer: the ``mapping`` port and a reload hook.

The channel pipeline calls :func:`engine.mapping.map_message`, backed by the process-wide registry built
from :class:`~engine.mapping.settings.MappingSettings`. ``install`` loads it once per process (not per
runtime), so a broken mapping file stops ``conduit serve`` at start-up with its file:line instead of
failing every message later; ``runtime.reload()`` re-reads the files.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from engine.mapping import map_message, render_message
from engine.mapping.registry import Registry, default_registry, reset_default_registry

if TYPE_CHECKING:
    from engine.runtime import Runtime

__all__ = ["install"]


def install(runtime: Runtime) -> None:
    def reload() -> None:
        reset_default_registry(Registry.from_settings())

    default_registry()
    runtime.provide("mapping", map_message)
    runtime.provide("render_message", render_message)
    runtime.reload_hooks.append(reload)
