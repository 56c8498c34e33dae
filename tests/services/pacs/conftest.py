"""Fixtures for the PACS service tests: the service on the test database (SQLite and PostgreSQL) and a
builder of small Part 10 objects in memory."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import pytest

from services.pacs.port import Pacs
from services.pacs.settings import PacsSettings
from services.pacs.wiring import install


@pytest.fixture
def make_pacs(runtime: Any) -> Callable[..., Pacs]:
    """Install the PACS with the given PacsSettings fields (replacing the default one)."""

    def make(**fields: Any) -> Pacs:
        return install(runtime, PacsSettings(**fields))

    return make


@pytest.fixture
def pacs(make_pacs: Callable[..., Pacs]) -> Pacs:
    return make_pacs()
