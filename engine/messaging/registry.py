"""The ``channels`` port: the channels in force, reloaded from their files without a restart."""

from __future__ import annotations

import logging
import threading
from collections.abc import Callable
from pathlib import Path

from engine.errors import ConfigurationError
from engine.messaging.channels import Channel, load_channel_dirs
from engine.messaging.ports import MllpSource
from engine.messaging.settings import SHIPPED_CHANNELS_DIR, MessagingSettings

__all__ = ["ChannelRegistry", "channel_dirs"]

log = logging.getLogger(__name__)


def channel_dirs(settings: MessagingSettings) -> list[Path]:
    """The folders read, in order: shipped channels, then the site's CONDUIT_CHANNELS_DIR."""
    dirs = [SHIPPED_CHANNELS_DIR] if settings.shipped_channels else []
    if settings.channels_dir is not None:
        dirs.append(settings.channels_dir)
    return dirs


class ChannelRegistry:
    """Implements :class:`engine.messaging.ports.ChannelDirectory`.

    A reload that finds invalid files keeps the channels in force (and raises, so the caller can report
    it): a typo must not stop the traffic that is flowing.
    """

    def __init__(
        self, dirs: list[Path] | Callable[[], list[Path]], *, channels: dict[str, Channel] | None = None
    ):
        self._dirs = dirs
        self._lock = threading.Lock()
        self._callbacks: list[Callable[[], None]] = []
        self._channels: dict[str, Channel] = (
            channels if channels is not None else load_channel_dirs(self.dirs())
        )
        self.generation = 0

    def dirs(self) -> list[Path]:
        return self._dirs() if callable(self._dirs) else list(self._dirs)

    # -- ChannelDirectory ------------------------------------------------------------------------------
    def mllp_sources(self) -> list[MllpSource]:
        return [s for ch in self.all() if (s := ch.mllp_source()) is not None]

    def on_change(self, callback: Callable[[], None]) -> None:
        self._callbacks.append(callback)

    # -- lookups ---------------------------------------------------------------------------------------
    def get(self, name: str) -> Channel | None:
        return self._channels.get(name)

    def all(self) -> list[Channel]:
        return list(self._channels.values())

    def reload(self) -> dict[str, Channel]:
        """Re-read the files; on success swap them in and notify. ConfigurationError leaves things as they were."""
        with self._lock:
            fresh = load_channel_dirs(self.dirs())
            self._channels = fresh
            self.generation += 1
        log.info("channels reloaded: %s", ", ".join(sorted(fresh)) or "(none)")
        for callback in list(self._callbacks):
            try:
                callback()
            except Exception:
                log.exception("channel reload callback %r failed", callback)
        return fresh

    def replace(self, channels: dict[str, Channel]) -> None:
        """Swap in already-validated channels (tests, the admin API) and notify."""
        with self._lock:
            self._channels = dict(channels)
            self.generation += 1
        for callback in list(self._callbacks):
            try:
                callback()
            except Exception:
                log.exception("channel reload callback %r failed", callback)


def safe_reload(registry: ChannelRegistry) -> str | None:
    """Reload for a signal handler: returns the problem text instead of raising."""
    try:
        registry.reload()
    except ConfigurationError as exc:
        log.error("channel reload refused, keeping the channels in force: %s", exc)
        return str(exc)
    return None
