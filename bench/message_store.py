"""Message store benchmark: the inbox's group commit in process, without MLLP, on SQLite and PostgreSQL.

C concurrent receivers each await ``inbox.receive`` N times (a 25-segment ORU^R01 with a fresh MSH-10);
every answer comes after the durable commit. Also measures the raw flush cost of the storage (an INSERT +
COMMIT loop) so the figures can be read against what the disk allows, and the loop-side cost with the
database write replaced by nothing (the ceiling of the Python code around it).

Usage (from the repository root):
    python bench/message_store.py                       # sqlite + postgresql, 1 and 16 receivers
    python bench/message_store.py --backends sqlite --n 2000
PostgreSQL: --pg-url (default postgresql+psycopg://postgres@127.0.0.1:5432/test); a scratch database is
created and dropped.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import statistics
import tempfile
import time
import uuid
from datetime import UTC, datetime
from pathlib import Path

from sqlalchemy import create_engine, text
from sqlalchemy.engine import make_url

from engine.db import Database, migrate
from engine.hl7v2.header import MessageHeader
from engine.messaging import inbox as inbox_module
from engine.messaging.channels import load_channel_dirs
from engine.messaging.inbox import GroupCommitInbox
from engine.messaging.ports import InboundMessage, ReceiveOutcome

RAW = (
    "MSH|^~\\&|XN-1000|LAB|CONDUIT|HOSP|20261120101500||ORU^R01^ORU_R01|{cid}|P|2.5.1\r"
    + "PID|1||123456^^^HOSP^MR||DOE^JOHN^A||19700101|M\r"
    + "".join(
        f"OBX|{i}|NM|{718 + i}-7^Analyte {i}^LN||{13.5 + i}|g/dL|12.0-17.5|N|||F\r" for i in range(1, 24)
    )
)


async def _receivers(inbox: GroupCommitInbox, conns: int, n: int) -> tuple[float, list[float]]:
    latencies: list[float] = []

    async def one(k: int) -> None:
        for i in range(n):
            cid = f"{uuid.uuid4().hex[:12]}{k}-{i}"
            header = MessageHeader(sending_application="XN-1000", sending_facility="LAB", message_type="ORU",
                                   trigger_event="R01", control_id=cid, version="2.5.1")  # fmt: skip
            message = InboundMessage(
                "bench", RAW.format(cid=cid).encode(), header, "127.0.0.1:1", datetime.now(UTC)
            )
            started = time.perf_counter()
            outcome = await inbox.receive(message)
            latencies.append(time.perf_counter() - started)
            assert outcome.stored

    started = time.perf_counter()
    await asyncio.gather(*(one(k) for k in range(conns)))
    return conns * n / (time.perf_counter() - started), sorted(latencies)


def _flush_cost(db: Database, rounds: int = 200) -> float:
    with db.engine.begin() as conn:
        conn.execute(text("CREATE TABLE IF NOT EXISTS bench_flush (v INTEGER)"))
    started = time.perf_counter()
    for i in range(rounds):
        with db.engine.begin() as conn:
            conn.execute(text("INSERT INTO bench_flush VALUES (:v)"), {"v": i})
    return (time.perf_counter() - started) / rounds * 1000


def run(url: str, label: str, n: int, conns_list: list[int], fake: bool = False) -> None:
    db = Database(url)
    migrate.upgrade(db.engine)
    folder = Path(tempfile.mkdtemp())
    (folder / "bench.yaml").write_text(
        'name: bench\nsource: {url: "mllp://127.0.0.1:1"}\ndestinations: [{url: "http://x/"}]\n'
    )
    channels = load_channel_dirs([folder])
    inbox = GroupCommitInbox(db, channels.get)
    real_write_tx = inbox_module.write_tx
    if fake:  # the Python around the commit, with the database write replaced by nothing
        inbox._write = lambda conn, batch, *_: [ReceiveOutcome(True, 1, "AA") for _ in batch]  # type: ignore[method-assign]
        inbox_module.write_tx = lambda _db: contextlib.nullcontext(None)  # type: ignore[assignment]
    try:
        if not fake:
            print(f"{label:22} flush: {_flush_cost(db):.2f} ms per INSERT+COMMIT")
        for conns in conns_list:
            before = inbox.batches
            rate, lat = asyncio.run(_receivers(inbox, conns, n // conns if conns > 1 else n))
            per_batch = len(lat) / max(1, inbox.batches - before)
            print(
                f"{label:22} {conns:>3} receivers {rate:>8.0f} msg/s  p50 {statistics.median(lat) * 1000:6.2f} ms"
                f"  p99 {lat[int(len(lat) * 0.99)] * 1000:7.2f} ms  {per_batch:5.1f} msg/commit"
            )
    finally:
        inbox.close()
        db.dispose()
        inbox_module.write_tx = real_write_tx


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--backends", default="sqlite,postgresql")
    parser.add_argument("--n", type=int, default=2000, help="messages per run")
    parser.add_argument("--conns", default="1,16")
    parser.add_argument("--pg-url", default="postgresql+psycopg://postgres@127.0.0.1:5432/test")
    args = parser.parse_args()
    conns = [int(c) for c in args.conns.split(",")]
    backends = args.backends.split(",")
    if "sqlite" in backends:
        with tempfile.TemporaryDirectory() as tmp:
            run(f"sqlite:///{tmp}/bench.db", "sqlite", args.n, conns)
        with tempfile.TemporaryDirectory() as tmp:
            run(f"sqlite:///{tmp}/bench.db", "no write (ceiling)", args.n, conns, fake=True)
    if "postgresql" in backends:
        base = make_url(args.pg_url)
        name = f"conduit_bench_{uuid.uuid4().hex[:8]}"
        admin = create_engine(base, isolation_level="AUTOCOMMIT")
        with admin.connect() as conn:
            conn.execute(text(f'CREATE DATABASE "{name}"'))
        try:
            run(base.set(database=name).render_as_string(hide_password=False), "postgresql", args.n, conns)
        finally:
            with admin.connect() as conn:
                conn.execute(text(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)'))
            admin.dispose()


if __name__ == "__main__":
    main()
