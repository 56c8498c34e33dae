"""Fixtures for the record store: a repository per unit of work on the parametrized test database."""

from __future__ import annotations

from collections.abc import Callable, Iterator
from contextlib import contextmanager

import pytest

from engine.db import Database
from services.records.repository import SqlResourceRepository


@pytest.fixture
def records(database: Database) -> Callable[[], contextmanager[SqlResourceRepository]]:  # type: ignore[type-arg]
    """``with records() as repo:`` — a repository bound to a fresh unit of work, committed on exit."""

    @contextmanager
    def open_repo() -> Iterator[SqlResourceRepository]:
        with database.unit_of_work() as uow:
            yield SqlResourceRepository(uow)

    return open_repo
