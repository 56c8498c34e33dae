"""Fixtures for the FHIR REST tests: the real listener on a free loopback port, in a thread with its own
event loop, over the ``runtime`` fixture (SQLite, and PostgreSQL when configured)."""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import httpx
import pytest
from fhir_rest_server import ThreadedListener, nodelay_transport


@pytest.fixture
def server(runtime: Any) -> Iterator[ThreadedListener]:
    with ThreadedListener(runtime) as running:
        yield running


@pytest.fixture
def fhir(server: ThreadedListener) -> Iterator[httpx.Client]:
    """An httpx client whose base is the FHIR base URL (``/fhir``)."""
    with httpx.Client(base_url=server.base + "/fhir", timeout=30, transport=nodelay_transport()) as client:
        yield client
