"""The ``destinations`` port: a Destination factory per URL scheme, registered by outbound transports.

``adapters/http`` registers ``http``/``https``, ``adapters/mllp`` registers ``mllp``, this package
registers ``file``. The ``records`` destination is not a transport: the pipeline writes the transformed
Bundle into the record store inside the same transaction that marks the stage sent (see
:mod:`engine.messaging.delivery`), so a crash can neither lose nor duplicate it.
"""

from __future__ import annotations

from engine.errors import ConfigurationError
from engine.messaging.ports import Destination, DestinationFactory

__all__ = ["DestinationRegistry"]


class DestinationRegistry:
    """Implements :class:`engine.messaging.ports.DestinationRegistry`."""

    def __init__(self) -> None:
        self._factories: dict[str, DestinationFactory] = {}

    def register(self, scheme: str, factory: DestinationFactory) -> None:
        self._factories[scheme.lower()] = factory

    def schemes(self) -> list[str]:
        return sorted(self._factories)

    def create(self, url: str, options: dict[str, object]) -> Destination:
        scheme = url.split(":", 1)[0].lower()
        factory = self._factories.get(scheme)
        if factory is None:
            raise ConfigurationError(
                f"no transport is installed for {scheme}:// destinations (installed: {', '.join(self.schemes())})"
            )
        return factory(url, options)
