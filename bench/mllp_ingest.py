"""MLLP ingest benchmark: ORU^R01 messages (~25 segments) sent send-wait-ACK, each ACK only after the
message is durably committed, on 1 and 16 connections, against ``conduit serve --only mllp`` on SQLite
and on PostgreSQL, beside two peers measured in the same run: a raw asyncio MLLP ACK echo (the ceiling for
a Python listener: no parsing, no storage) and hl7apy's MLLPServer (parses, builds an ACK, stores nothing).

The peer harness is adapted from /work/shared/bench/mllp_peers.py (the project's shared peer benchmarks);
its echo server, hl7apy handler, message and client loop are copied here so this script runs on its own.

Also measured: one connection keeping ``--window`` messages in flight (a pipelining sender), and ACK
latency at half the 16-connection throughput (paced senders), the figure the target
"p99 ACK <= 20 ms at half rate" speaks of.

``--mllp-processes N`` runs the server with N MLLP ingest processes (``conduit serve --mllp-processes``);
the CPU printed is then that of the main process and its children together.

Usage (from the repository root):
    python bench/mllp_ingest.py                         # sqlite + postgresql + peers
    python bench/mllp_ingest.py --backends sqlite --peers echo --n 4000
    python bench/mllp_ingest.py --channel default       # with the shipped channel (mapping to FHIR) running
PostgreSQL: --pg-url (default postgresql+psycopg://postgres@127.0.0.1:5432/test); a scratch database is
created and dropped.

``--channel store`` (default) benchmarks ingest alone: a channel that stores and acknowledges and has no
destinations, so the pipeline does not compete for the CPU; ``--channel default`` keeps the shipped
channel (HL7 v2 -> FHIR mapping into the record store) running behind the listener.
"""

from __future__ import annotations

import argparse
import asyncio
import multiprocessing as mp
import os
import socket
import statistics
import subprocess
import sys
import tempfile
import time
import uuid
from pathlib import Path

SB, EB, CR = b"\x0b", b"\x1c", b"\x0d"
ORU = (
    "\r".join(
        [
            "MSH|^~\\&|XN-1000|LAB|CONDUIT|HOSP|20261120101500||ORU^R01^ORU_R01|{cid}|P|2.5.1",
            "PID|1||123456^^^HOSP^MR||DOE^JOHN^A||19700101|M|||1 MAIN ST^^CITY^ST^12345",
            "PV1|1|O|CLINIC^^^HOSP",
            "ORC|RE|ORD123|FIL456",
            "OBR|1|ORD123|FIL456|CBC^Complete blood count^L|||20261120090000||||||||||||||20261120100000|||F",
        ]
        + [
            f"OBX|{i}|NM|{718 + i}-7^Analyte {i}^LN||{13.5 + i}|g/dL|12.0-17.5|N|||F|||20261120100000"
            for i in range(1, 21)
        ]
    )
    + "\r"
)
ROOT = Path(__file__).resolve().parents[1]


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def cpu_seconds(pid: int) -> float:
    """User + system CPU of process ``pid`` so far, all its threads (Linux /proc; NaN elsewhere)."""
    try:
        fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    except OSError:
        return float("nan")
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def tree_cpu_seconds(pid: int) -> float:
    """CPU of ``pid`` and its children (the ingest children of ``--mllp-processes``; their CPU is counted
    while they run, so read it before they are stopped)."""
    return cpu_seconds(pid) + sum(cpu_seconds(child) for child in _children(pid))


def listening(port: int) -> int:
    """Sockets listening on ``port`` (several with SO_REUSEPORT), from /proc/net/tcp."""
    want = f":{port:04X}"
    lines = Path("/proc/net/tcp").read_text().splitlines()[1:]
    return sum(1 for line in lines if line.split()[1].endswith(want) and line.split()[3] == "0A")


def _children(pid: int) -> list[int]:
    found = []
    for entry in Path("/proc").iterdir():
        if entry.name.isdigit():
            try:
                if int((entry / "stat").read_text().rsplit(")", 1)[1].split()[1]) == pid:
                    found.append(int(entry.name))
            except (OSError, IndexError, ValueError):
                continue
    return found


def wait_port(port: int, timeout: float = 60.0, proc: subprocess.Popen | None = None) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if proc is not None and proc.poll() is not None:
            raise RuntimeError(f"server exited with {proc.returncode}")
        try:
            socket.create_connection(("127.0.0.1", port), 0.2).close()
            return
        except OSError:
            time.sleep(0.1)
    raise TimeoutError(f"nothing on port {port}")


# -- peers (from /work/shared/bench/mllp_peers.py) ---------------------------------------------------------
def run_echo(port: int) -> None:
    ack = SB + b"MSH|^~\\&|CONDUIT|HOSP|XN-1000|LAB|20261120101500||ACK^R01|A1|P|2.5.1\rMSA|AA|X\r" + EB + CR

    async def handle(r: asyncio.StreamReader, w: asyncio.StreamWriter) -> None:
        w.get_extra_info("socket").setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        buf = b""
        while True:
            d = await r.read(65536)
            if not d:
                break
            buf += d
            while (i := buf.find(EB + CR)) >= 0:
                buf = buf[i + 2 :]
                w.write(ack)
            await w.drain()

    async def main() -> None:
        srv = await asyncio.start_server(handle, "127.0.0.1", port)
        async with srv:
            await srv.serve_forever()

    asyncio.run(main())


def run_hl7apy(port: int) -> None:
    from hl7apy.mllp import AbstractHandler, MLLPServer
    from hl7apy.parser import parse_message

    class H(AbstractHandler):
        def reply(self):  # type: ignore[no-untyped-def]
            m = parse_message(self.incoming_message, find_groups=False)
            return (
                "\x0b"
                + f"MSH|^~\\&|CONDUIT|HOSP|{m.msh.msh_3.value}|{m.msh.msh_4.value}|20261120101500||ACK^R01|A1|P|2.5.1\r"
                f"MSA|AA|{m.msh.msh_10.value}\r" + "\x1c\r"
            )

    MLLPServer("127.0.0.1", port, {"ORU^R01^ORU_R01": (H,)}).serve_forever()


# -- clients -------------------------------------------------------------------------------------------------
async def client(
    port: int, n: int, k: int, lat: list[float], tag: str, reconnect: bool, interval: float
) -> None:
    r, w = await asyncio.open_connection("127.0.0.1", port)
    w.get_extra_info("socket").setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
    start = time.perf_counter()
    for i in range(n):
        if reconnect and i:  # hl7apy's server answers one message per connection, then closes
            w.close()
            r, w = await asyncio.open_connection("127.0.0.1", port)
        if interval:  # paced: the i-th message leaves at start + i * interval (no coordinated omission)
            delay = start + i * interval - time.perf_counter()
            if delay > 0:
                await asyncio.sleep(delay)
        frame = SB + ORU.format(cid=f"{tag}C{k}M{i}").encode() + EB + CR
        t = time.perf_counter()
        w.write(frame)
        await w.drain()
        buf = b""
        while not buf.endswith(EB + CR):
            d = await r.read(65536)
            if not d:
                raise ConnectionError("closed")
            buf += d
        if b"MSA|AA|" not in buf and b"MSA|CA|" not in buf:
            raise RuntimeError(f"not a positive ACK: {buf[:200]!r}")
        lat.append(time.perf_counter() - t)
    w.close()


async def pipelined_client(port: int, n: int, k: int, lat: list[float], tag: str, window: int) -> None:
    """Keeps up to ``window`` messages in flight on one connection (ACKs come back in order)."""
    r, w = await asyncio.open_connection("127.0.0.1", port)
    w.get_extra_info("socket").setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
    sent: list[float] = []
    credit = asyncio.Semaphore(window)

    async def reader() -> None:
        buf, done = b"", 0
        while done < n:
            d = await r.read(65536)
            if not d:
                raise ConnectionError("closed")
            buf += d
            while (i := buf.find(EB + CR)) >= 0:
                ack, buf = buf[:i], buf[i + 2 :]
                if b"MSA|AA|" not in ack and b"MSA|CA|" not in ack:
                    raise RuntimeError(f"not a positive ACK: {ack[:200]!r}")
                lat.append(time.perf_counter() - sent[done])
                done += 1
                credit.release()

    task = asyncio.create_task(reader())
    for i in range(n):
        await credit.acquire()
        sent.append(time.perf_counter())
        w.write(SB + ORU.format(cid=f"{tag}W{k}M{i}").encode() + EB + CR)
    await task
    w.close()


Result = tuple[float, float, float, float]  # msg/s, p50 ms, p99 ms, server CPU ms per message


def _result(lat: list[float], elapsed: float, cpu: float) -> Result:
    lat.sort()
    p99 = lat[max(0, int(len(lat) * 0.99) - 1)]
    return len(lat) / elapsed, lat[len(lat) // 2] * 1e3, p99 * 1e3, cpu * 1e3 / len(lat)


def measure_pipelined(port: int, total: int, window: int, pid: int) -> Result:
    lat: list[float] = []
    tag = uuid.uuid4().hex[:8]
    cpu, t = tree_cpu_seconds(pid), time.perf_counter()
    asyncio.run(pipelined_client(port, total, 0, lat, tag, window))
    elapsed = time.perf_counter() - t
    return _result(lat, elapsed, tree_cpu_seconds(pid) - cpu)


def measure(
    port: int, conns: int, total: int, pid: int, reconnect: bool = False, rate: float = 0.0
) -> Result:
    lat: list[float] = []
    per = max(1, total // conns)
    tag = uuid.uuid4().hex[:8]
    interval = conns / rate if rate else 0.0

    async def main() -> None:
        await asyncio.gather(*(client(port, per, k, lat, tag, reconnect, interval) for k in range(conns)))

    cpu, t = tree_cpu_seconds(pid), time.perf_counter()
    asyncio.run(main())
    elapsed = time.perf_counter() - t
    return _result(lat, elapsed, tree_cpu_seconds(pid) - cpu)


# -- conduit -------------------------------------------------------------------------------------------------
class Conduit:
    def __init__(self, backend: str, pg_url: str, channel: str, processes: int = 1):
        self.tmp = Path(tempfile.mkdtemp(prefix="conduit-bench-"))
        self.port = free_port()
        self.pg_admin = None
        if backend == "sqlite":
            url = f"sqlite:///{self.tmp / 'conduit.db'}"
        else:
            from sqlalchemy import create_engine, text
            from sqlalchemy.engine import make_url

            self.db_name = f"conduit_bench_{os.getpid()}"
            base = make_url(pg_url)
            self.pg_admin = create_engine(base, isolation_level="AUTOCOMMIT")
            with self.pg_admin.connect() as c:
                c.execute(text(f'DROP DATABASE IF EXISTS "{self.db_name}"'))
                c.execute(text(f'CREATE DATABASE "{self.db_name}"'))
            url = base.set(database=self.db_name).render_as_string(hide_password=False)
        env = {**os.environ, "CONDUIT_DATA_DIR": str(self.tmp / "data"), "CONDUIT_DATABASE_URL": url,
               "CONDUIT_MLLP_PORT": str(self.port), "CONDUIT_LOG_LEVEL": "WARNING"}  # fmt: skip
        if channel == "store":
            folder = self.tmp / "channels"
            folder.mkdir()
            (folder / "default.yaml").write_text("name: default\nsource:\n  url: mllp://127.0.0.1:2575\n")
            env["CONDUIT_CHANNELS_DIR"] = str(folder)
        self.log = open(self.tmp / "conduit.log", "wb")
        self.proc = subprocess.Popen(
            [sys.executable, "-m", "engine", "serve", "--only", "mllp", "--upgrade-db",
             "--mllp-processes", str(processes)],
            cwd=ROOT, env=env, stdout=self.log, stderr=self.log,
        )  # fmt: skip
        wait_port(self.port, proc=self.proc)
        deadline = time.monotonic() + 60  # the ingest children bind after the main process
        while listening(self.port) < processes and time.monotonic() < deadline:
            time.sleep(0.1)

    def close(self) -> None:
        self.proc.terminate()
        try:
            self.proc.wait(20)
        except subprocess.TimeoutExpired:
            self.proc.kill()
        self.log.close()
        if self.pg_admin is not None:
            from sqlalchemy import text

            with self.pg_admin.connect() as c:
                c.execute(text(f'DROP DATABASE IF EXISTS "{self.db_name}" WITH (FORCE)'))
            self.pg_admin.dispose()


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--conns", default="1,16")
    ap.add_argument("--n", type=int, default=4000, help="messages per measurement")
    ap.add_argument("--backends", default="sqlite,postgresql")
    ap.add_argument("--peers", default="echo,hl7apy")
    ap.add_argument("--pg-url", default="postgresql+psycopg://postgres@127.0.0.1:5432/test")
    ap.add_argument("--channel", choices=("store", "default"), default="store")
    ap.add_argument("--repeat", type=int, default=3, help="runs per measurement; the median is printed")
    ap.add_argument("--window", type=int, default=32, help="also: one connection with this many in flight")
    ap.add_argument("--mllp-processes", type=int, default=1, help="conduit serve --mllp-processes N")
    a = ap.parse_args()
    conns = [int(x) for x in a.conns.split(",")]
    print(
        f"{'target':18} {'conns':>5} {'msg/s':>9} {'p50 ms':>8} {'p99 ms':>8} {'cpu ms/msg':>10}", flush=True
    )

    def report(name: str, c: int, runs: list[Result]) -> float:
        rate = statistics.median(r[0] for r in runs)
        p50 = statistics.median(r[1] for r in runs)
        p99 = statistics.median(r[2] for r in runs)
        cpu = statistics.median(r[3] for r in runs)
        print(f"{name:18} {c:5d} {rate:9.0f} {p50:8.2f} {p99:8.2f} {cpu:10.3f}", flush=True)
        return rate

    for peer in [p for p in a.peers.split(",") if p]:
        port = free_port()
        proc = mp.Process(target={"echo": run_echo, "hl7apy": run_hl7apy}[peer], args=(port,), daemon=True)
        proc.start()
        wait_port(port)
        for c in conns:
            n = a.n if peer != "hl7apy" else min(a.n, 300)
            runs = [
                measure(port, c, n, proc.pid, reconnect=(peer == "hl7apy"))
                for _ in range(a.repeat if peer != "hl7apy" else 1)
            ]
            report(peer, c, runs)
        proc.terminate()
        proc.join()

    for backend in [b for b in a.backends.split(",") if b]:
        conduit = Conduit(backend, a.pg_url, a.channel, a.mllp_processes)
        pid = conduit.proc.pid
        try:
            measure(conduit.port, 4, 400, pid)  # warm-up: connections, prepared statements, imports
            best = 0.0
            for c in conns:
                rate = report(
                    f"conduit/{backend}", c, [measure(conduit.port, c, a.n, pid) for _ in range(a.repeat)]
                )
                best = max(best, rate) if c == max(conns) else best
            if best:
                c = max(conns)
                half = best / 2
                runs = [measure(conduit.port, c, a.n // 2, pid, rate=half) for _ in range(a.repeat)]
                report(f"  @{half:.0f}/s paced", c, runs)
            if a.window > 1:
                runs = [measure_pipelined(conduit.port, a.n, a.window, pid) for _ in range(a.repeat)]
                report(f"  {a.window} in flight", 1, runs)
        finally:
            conduit.close()


if __name__ == "__main__":
    main()
