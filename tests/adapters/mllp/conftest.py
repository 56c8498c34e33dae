"""Fixtures of the MLLP tests; the helpers they use live in mllp_fixtures.py."""

from __future__ import annotations

from collections.abc import Callable, Iterator
from dataclasses import replace

import hypothesis  # noqa: F401  imported at collection: see below
import pytest
from mllp_fixtures import BackgroundServer, FakeInbox, Pki, write_pki

from adapters.mllp.settings import MllpSettings
from engine.messaging.ports import MllpSource

# hypothesis's pytest plugin imports hypothesis lazily in the terminal summary when no test used it; on
# CPython 3.11.7 that import, after the threaded socket tests here, trips "SystemError: AST constructor
# recursion depth mismatch" (a CPython bug fixed in 3.11.8). Importing it up front avoids the late import.


@pytest.fixture
def mllp_server() -> Iterator[Callable[..., BackgroundServer]]:
    """``mllp_server(inbox=FakeInbox(), **MllpSource fields)`` -> a running server on a free port."""
    started: list[BackgroundServer] = []

    def start(inbox: FakeInbox | None = None, settings: MllpSettings | None = None, **source: object):
        src = replace(MllpSource(channel="test", host="127.0.0.1", port=0), **source)  # type: ignore[arg-type]
        server = BackgroundServer(src, inbox or FakeInbox(), settings)
        started.append(server)
        return server

    yield start
    for server in started:
        server.close()


@pytest.fixture(scope="session")
def pki(tmp_path_factory: pytest.TempPathFactory) -> Pki:
    return write_pki(tmp_path_factory.mktemp("pki"))
