"""Helpers for the message store tests: channels written as files, HL7 v2 messages, a wired messaging stack."""

from __future__ import annotations

import asyncio
import textwrap
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import pytest

from engine.db import Database
from engine.hl7v2.header import MessageHeader
from engine.messaging.channels import Channel, load_channel_dirs
from engine.messaging.destinations import DestinationRegistry
from engine.messaging.file_destination import create_file_destination
from engine.messaging.inbox import GroupCommitInbox
from engine.messaging.ports import InboundMessage, SendResult
from engine.messaging.registry import ChannelRegistry
from engine.messaging.settings import MessagingSettings
from engine.messaging.store import MessageStore
from engine.messaging.worker import WorkerPool


def hl7(
    control_id: str = "MSG0001",
    *,
    msg_type: str = "ADT^A01^ADT_A01",
    sender: str = "LAB",
    facility: str = "HOSP",
    version: str = "2.5.1",
    pid8: str = "F",
    msh15: str = "",
) -> bytes:
    return (
        f"MSH|^~\\&|{sender}|{facility}|CONDUIT|HOSP|20250101120000||{msg_type}|{control_id}|P|{version}|||{msh15}\r"
        f"PID|1||12345^^^HOSP^MR||DOE^JANE||19800101|{pid8}\r"
    ).encode()


def header_of(raw: bytes) -> MessageHeader:
    """A test-side MSH reader (independent of the codec under development elsewhere)."""
    f = raw.split(b"\r", 1)[0].decode().split("|")
    t = f[8].split("^") + ["", "", ""]
    return MessageHeader(
        sending_application=f[2], sending_facility=f[3], receiving_application=f[4], receiving_facility=f[5],
        message_datetime=f[6], message_type=t[0], trigger_event=t[1], message_structure=t[2], control_id=f[9],
        processing_id=f[10], version=f[11], accept_ack_type=f[14] if len(f) > 14 else "",
    )  # fmt: skip


def inbound(raw: bytes, channel: str = "test", peer: str = "127.0.0.1:40000") -> InboundMessage:
    return InboundMessage(channel, raw, header_of(raw), peer, datetime.now(UTC))


def write_channel(folder: Path, text: str, name: str = "test.yaml") -> Path:
    folder.mkdir(parents=True, exist_ok=True)
    path = folder / name
    path.write_text(textwrap.dedent(text))
    return path


@dataclass
class FakeDestination:
    """An in-memory destination whose answers are scripted: a list of SendResult/Exception, then ok."""

    script: list[Any] = field(default_factory=list)
    received: list[bytes] = field(default_factory=list)
    calls: int = 0
    delay: float = 0.0
    fail_when: bytes | None = None
    """Payloads containing these bytes always get a retryable failure."""

    async def send(self, payload: bytes, *, content_type: str) -> SendResult:
        self.calls += 1
        if self.delay:
            await asyncio.sleep(self.delay)
        if self.fail_when is not None and self.fail_when in payload:
            return SendResult(False, "HTTP 503")
        if self.script:
            step = self.script.pop(0)
            if isinstance(step, Exception):
                raise step
            if not step.ok:
                return step
        self.received.append(payload)
        return SendResult(True, "ok")

    async def close(self) -> None:
        return None


@dataclass
class FakeMapping:
    bundle: dict[str, Any]
    mapping: str


class FakeRecords:
    """The records port twin: remembers the bundles it got, inside the caller's unit of work."""

    def __init__(self, fail: Exception | None = None) -> None:
        self.bundles: list[dict[str, Any]] = []
        self.fail = fail

    def __call__(self, uow: Any) -> FakeRecords:
        return self

    def transaction(self, bundle: dict[str, Any]) -> dict[str, Any]:
        if self.fail is not None:
            raise self.fail
        self.bundles.append(bundle)
        return {"resourceType": "Bundle", "type": "transaction-response",
                "entry": [{"response": {"status": "201 Created", "location": "Patient/1/_history/1"}}]}  # fmt: skip


def fake_mapper(raw: bytes, *, mapping: str | None = None) -> FakeMapping:
    from engine.errors import Issue, MappingError

    if b"|ZZZ^" in raw:
        raise MappingError(
            "no mapping for ZZZ", [Issue("no mapping for ZZZ^Z01", location="MSH-9", code="processing")]
        )
    control = raw.split(b"\r", 1)[0].split(b"|")[9].decode()
    return FakeMapping(
        {"resourceType": "Bundle", "type": "transaction", "id": control, "entry": []}, mapping or "auto"
    )


@dataclass
class Stack:
    db: Database
    registry: ChannelRegistry
    destinations: DestinationRegistry
    inbox: GroupCommitInbox
    pool: WorkerPool
    store: MessageStore
    records: FakeRecords
    fakes: dict[str, FakeDestination]
    folder: Path

    def reload_with(self, text: str, name: str = "test.yaml") -> None:
        write_channel(self.folder, text, name)
        self.registry.reload()


@pytest.fixture
def make_stack(database: Database, tmp_path: Path) -> Iterator[Callable[..., Stack]]:
    made: list[Stack] = []

    def make(
        channel_yaml: str, *, records: FakeRecords | None = None, db: Database | None = None, **settings: Any
    ) -> Stack:
        folder = tmp_path / "channels"
        write_channel(folder, channel_yaml)
        registry = ChannelRegistry([folder])
        destinations = DestinationRegistry()
        fakes: dict[str, FakeDestination] = {}

        def fake_factory(url: str, options: dict[str, object]) -> FakeDestination:
            return fakes.setdefault(url, FakeDestination())

        destinations.register("http", fake_factory)
        destinations.register("mllp", fake_factory)
        destinations.register("file", create_file_destination)
        cfg = MessagingSettings(shipped_channels=False, channels_dir=folder,
                                **{"poll_seconds": 0.05, "lease_seconds": 5.0, **settings})  # fmt: skip
        records = records or FakeRecords()
        the_db = db or database
        pool = WorkerPool(the_db, registry, destinations, records, cfg, mapper=fake_mapper)
        inbox = GroupCommitInbox(the_db, registry.get, on_stored=pool.wake, after_store=pool.process_now)
        stack = Stack(
            the_db, registry, destinations, inbox, pool, MessageStore(the_db), records, fakes, folder
        )
        made.append(stack)
        return stack

    yield make
    for stack in made:
        stack.inbox.close()


def channels_from(text: str, folder: Path) -> dict[str, Channel]:
    write_channel(folder, text)
    return load_channel_dirs([folder])


async def wait_for(predicate: Callable[[], bool], timeout: float = 10.0) -> None:
    deadline = asyncio.get_running_loop().time() + timeout
    while not predicate():
        if asyncio.get_running_loop().time() > deadline:
            raise AssertionError("condition not reached in time")
        await asyncio.sleep(0.02)


def terminate_backends(database_url: str) -> None:
    """End every other session on the test database (PostgreSQL), as a restart or an admin would."""
    from sqlalchemy import create_engine, text
    from sqlalchemy.engine import make_url

    admin = create_engine(make_url(database_url).set(database="postgres"), isolation_level="AUTOCOMMIT")
    with admin.connect() as conn:
        conn.execute(
            text(
                "SELECT pg_terminate_backend(pid) FROM pg_stat_activity "
                "WHERE datname = :d AND pid <> pg_backend_pid()"
            ),
            {"d": make_url(database_url).database},
        )
    admin.dispose()
