"""Benchmark of the FHIR REST API on PostgreSQL, with the bare-stack limit measured in the same run.

    python bench/fhir_rest.py [--database-url postgresql+psycopg://postgres@127.0.0.1:5432/postgres]
                              [--resources 100000] [--seconds 10] [--connections 16]

Steps, all against a fresh database created (and dropped) by the run:

1. **ingest** — transaction Bundles (1 Patient + 20 Observations, urn:uuid references) POSTed by 4 client
   threads to a real ``conduit serve --only fhir``; resources/s overall and per CPU-second of the server
   process (the "per core" figure: PostgreSQL's own CPU is not counted);
2. **bulk load** to ``--resources`` through the repository in-process (the records port), so searches run
   over a realistic table;
3. **read by id** — ``GET /fhir/Patient/{id}`` cycling over 1,000 ids with ``--connections`` concurrent
   connections, driven by ``wrk`` when installed (``apt-get install wrk``), else by Python threads;
4. **bare-stack limit** — the same load on a tiny uvicorn app + psycopg returning the stored JSON by primary
   key with no FHIR logic (``--bare-server`` runs it);
5. **search latency** — p50/p99 of typical searches, one client, sequential.

Prints one JSON document with every figure; docs/benchmarks.md quotes medians of runs.
"""

from __future__ import annotations

import argparse
import json
import os
import random
import re
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import threading
import time
import uuid
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

LOINC = "http://loinc.org"
MRN = "urn:oid:2.16.840.1.113883.19.5"
CODES = ["718-7", "2345-7", "2160-0", "6690-2", "789-8", "777-3", "4548-4", "2951-2", "2823-3", "1742-6"]


# ------------------------------------------------------------------------------------------------ helpers


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def wait_http(url: str, timeout: float = 60) -> None:
    import httpx

    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        try:
            if httpx.get(url, timeout=2).status_code < 500:
                return
        except httpx.HTTPError:
            pass
        time.sleep(0.1)
    raise TimeoutError(url)


def cpu_seconds(pid: int) -> float:
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def client() -> Any:
    import httpx

    transport = httpx.HTTPTransport(socket_options=[(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)])
    return httpx.Client(timeout=60, transport=transport)


def patient(i: int) -> dict[str, Any]:
    return {
        "resourceType": "Patient",
        "identifier": [{"system": MRN, "value": f"B-{i}"}],
        "name": [{"family": f"Family{i % 5000}", "given": [f"Given{i % 97}"]}],
        "gender": random.choice(["female", "male"]),
        "birthDate": f"{1930 + i % 90}-{1 + i % 12:02d}-{1 + i % 28:02d}",
    }


def observation(subject: str, n: int) -> dict[str, Any]:
    return {
        "resourceType": "Observation",
        "status": "final",
        "code": {"coding": [{"system": LOINC, "code": CODES[n % len(CODES)]}]},
        "subject": {"reference": subject},
        "effectiveDateTime": f"2026-{1 + n % 12:02d}-{1 + n % 28:02d}T08:{n % 60:02d}:00Z",
        "valueQuantity": {
            "value": round(random.uniform(1, 20), 1),
            "unit": "g/dL",
            "system": "http://unitsofmeasure.org",
            "code": "g/dL",
        },
    }


def transaction_bundle(i: int) -> dict[str, Any]:
    urn = f"urn:uuid:{uuid.uuid4()}"
    entries = [{"fullUrl": urn, "resource": patient(i), "request": {"method": "POST", "url": "Patient"}}]
    entries += [
        {"resource": observation(urn, n), "request": {"method": "POST", "url": "Observation"}}
        for n in range(20)
    ]
    return {"resourceType": "Bundle", "type": "transaction", "entry": entries}


def percentile(values: list[float], q: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(round(q * (len(ordered) - 1))))]


# -------------------------------------------------------------------------------------------- the stages


def ingest(base: str, server_pid: int, bundles: int, threads: int = 4) -> dict[str, float]:
    counter = iter(range(bundles))
    lock = threading.Lock()
    failures: list[str] = []

    def work() -> None:
        with client() as http:
            while True:
                with lock:
                    i = next(counter, None)
                if i is None:
                    return
                r = http.post(
                    base,
                    json=transaction_bundle(10_000_000 + i),
                    headers={"Content-Type": "application/fhir+json"},
                )
                if r.status_code != 200:
                    failures.append(f"{r.status_code} {r.text[:200]}")

    cpu0, t0 = cpu_seconds(server_pid), time.perf_counter()
    pool = [threading.Thread(target=work) for _ in range(threads)]
    for t in pool:
        t.start()
    for t in pool:
        t.join()
    elapsed, cpu = time.perf_counter() - t0, cpu_seconds(server_pid) - cpu0
    if failures:
        raise RuntimeError(f"{len(failures)} bundles failed, e.g. {failures[0]}")
    resources = bundles * 21
    return {
        "bundles": bundles,
        "resources": resources,
        "seconds": round(elapsed, 2),
        "resources_per_s": round(resources / elapsed),
        "server_cpu_s": round(cpu, 2),
        "resources_per_server_cpu_s": round(resources / cpu) if cpu else 0,
    }


def bulk_load(database_url: str, total: int) -> dict[str, Any]:
    """Transaction Bundles (1 Patient + 20 Observations) through the records port in-process, one unit of
    work each: the repository's bulk path, without HTTP."""
    from engine.runtime import build_runtime
    from engine.settings import ConduitSettings

    runtime = build_runtime(ConduitSettings(database_url=database_url, data_dir=Path(tempfile.mkdtemp())))
    made, i, patient_ids = 0, 0, []
    t0 = time.perf_counter()
    while made < total:
        with runtime.db.unit_of_work() as uow:
            response = runtime.records(uow).transaction(transaction_bundle(i))
        patient_ids.append(response["entry"][0]["response"]["location"].split("/")[1])
        made += 21
        i += 1
    elapsed = time.perf_counter() - t0
    with runtime.db.engine.connect().execution_options(isolation_level="AUTOCOMMIT") as conn:
        conn.exec_driver_sql("VACUUM ANALYZE")  # what autovacuum does soon after a bulk load
    runtime.db.dispose()
    return {
        "resources": made,
        "seconds": round(elapsed, 1),
        "resources_per_s": round(made / elapsed),
        "patient_ids": patient_ids,
        "patients": i,
    }


_WRK_SCRIPT = """
local paths = {}
for line in io.lines("%s") do paths[#paths + 1] = line end
local i = 0
request = function()
  i = i %% #paths + 1
  return wrk.format("GET", paths[i], {["Accept"] = "application/fhir+json"})
end
done = function(summary, latency, requests)
  io.write(string.format("JSON{\\"requests\\":%%d,\\"errors\\":%%d,\\"non2xx\\":%%d,\\"p50_ms\\":%%.3f,\\"p99_ms\\":%%.3f}\\n",
    summary.requests, summary.errors.connect + summary.errors.read + summary.errors.write + summary.errors.timeout,
    summary.errors.status, latency:percentile(50) / 1000, latency:percentile(99) / 1000))
end
"""


def load_reads(base_url: str, paths: list[str], seconds: int, connections: int) -> dict[str, float]:
    """Read throughput over ``paths`` (wrk when installed, else Python threads)."""
    if shutil.which("wrk"):
        with tempfile.TemporaryDirectory() as tmp:
            listing = Path(tmp) / "paths.txt"
            listing.write_text("\n".join(paths) + "\n")
            script = Path(tmp) / "reads.lua"
            script.write_text(_WRK_SCRIPT % listing)
            out = subprocess.run(
                ["wrk", "-t2", f"-c{connections}", f"-d{seconds}s", "-s", str(script), base_url],
                capture_output=True,
                text=True,
                check=True,
            ).stdout
        stats = json.loads(re.search(r"JSON(\{.*\})", out).group(1))  # type: ignore[union-attr]
        rps = float(re.search(r"Requests/sec:\s+([\d.]+)", out).group(1))  # type: ignore[union-attr]
        return {"tool": "wrk", "requests_per_s": round(rps), **stats}
    done = [0]
    latencies: list[float] = []
    stop = time.monotonic() + seconds

    def work(offset: int) -> None:
        with client() as http:
            k = offset
            while time.monotonic() < stop:
                t = time.perf_counter()
                r = http.get(base_url + paths[k % len(paths)])
                latencies.append(time.perf_counter() - t)
                if r.status_code != 200:
                    raise RuntimeError(r.text[:200])
                done[0] += 1
                k += 1

    pool = [threading.Thread(target=work, args=(n * 37,)) for n in range(connections)]
    t0 = time.perf_counter()
    for t in pool:
        t.start()
    for t in pool:
        t.join()
    return {
        "tool": "python-threads",
        "requests_per_s": round(done[0] / (time.perf_counter() - t0)),
        "p50_ms": round(percentile(latencies, 0.5) * 1000, 2),
        "p99_ms": round(percentile(latencies, 0.99) * 1000, 2),
    }


def search_latency(
    base: str, patients: int, patient_ids: list[str], rounds: int = 200
) -> dict[str, dict[str, float]]:
    shapes = {
        "Patient?identifier=sys|val": lambda i: f"/Patient?identifier={MRN}|B-{i % patients}",
        "Patient?name=prefix": lambda i: f"/Patient?name=Family{i % 5000}",
        "Observation?subject&code&date=ge": lambda i: (
            f"/Observation?subject=Patient/{patient_ids[i % len(patient_ids)]}&code={LOINC}|{CODES[i % 10]}"
            "&date=ge2026-03-01"
        ),
        "Observation?code&_count=20": lambda i: f"/Observation?code={LOINC}|{CODES[i % 10]}&_count=20",
        "Patient?birthdate=eq": lambda i: (
            f"/Patient?birthdate={1930 + i % 90}-{1 + i % 12:02d}-{1 + i % 28:02d}"
        ),
    }
    results = {}
    with client() as http:
        for name, make in shapes.items():
            times = []
            for _i in range(rounds):
                url = base + make(random.randrange(1_000_000))
                t = time.perf_counter()
                r = http.get(url)
                times.append((time.perf_counter() - t) * 1000)
                if r.status_code != 200:
                    raise RuntimeError(f"{name}: {r.status_code} {r.text[:200]}")
            results[name] = {
                "p50_ms": round(percentile(times, 0.5), 2),
                "p99_ms": round(percentile(times, 0.99), 2),
            }
    return results


# ------------------------------------------------------------------------------------------- bare stack


def bare_server(port: int, database_url: str, loop: str = "auto") -> None:
    """The limit: uvicorn + psycopg returning the stored JSON by key, no FHIR logic, same thread pool."""
    import psycopg
    import uvicorn
    from starlette.concurrency import run_in_threadpool

    dsn = database_url.replace("postgresql+psycopg://", "postgresql://")
    local = threading.local()

    def fetch(resource_type: str, fhir_id: str) -> bytes | None:
        conn = getattr(local, "conn", None)
        if conn is None:
            conn = local.conn = psycopg.connect(dsn, autocommit=True)
        row = conn.execute(
            "SELECT resource FROM records_resource WHERE resource_type = %s AND fhir_id = %s",
            (resource_type, fhir_id),
        ).fetchone()
        return row[0].encode() if row and row[0] else None

    async def app(scope: dict[str, Any], receive: Any, send: Any) -> None:
        if scope["type"] != "http":
            return
        parts = scope["path"].strip("/").split("/")
        body = await run_in_threadpool(fetch, parts[-2], parts[-1]) if len(parts) >= 2 else None
        status = 200 if body else 404
        await send(
            {
                "type": "http.response.start",
                "status": status,
                "headers": [(b"content-type", b"application/fhir+json")],
            }
        )
        await send({"type": "http.response.body", "body": body or b""})

    uvicorn.run(
        app, host="127.0.0.1", port=port, log_level="warning", access_log=False, lifespan="off", loop=loop
    )


# ----------------------------------------------------------------------------------------------- the run


def create_database(admin_url: str) -> str:
    from sqlalchemy import create_engine, text
    from sqlalchemy.engine import make_url

    from engine.db import Database, migrate

    name = f"conduit_bench_{os.getpid()}"
    admin = create_engine(admin_url, isolation_level="AUTOCOMMIT")
    with admin.connect() as conn:
        conn.execute(text(f'DROP DATABASE IF EXISTS "{name}"'))
        conn.execute(text(f'CREATE DATABASE "{name}"'))
    admin.dispose()
    url = make_url(admin_url).set(database=name).render_as_string(hide_password=False)
    db = Database(url)
    migrate.upgrade(db.engine)
    db.dispose()
    return url


def drop_database(admin_url: str, url: str) -> None:
    from sqlalchemy import create_engine, text
    from sqlalchemy.engine import make_url

    name = make_url(url).database
    admin = create_engine(admin_url, isolation_level="AUTOCOMMIT")
    with admin.connect() as conn:
        conn.execute(
            text("SELECT pg_terminate_backend(pid) FROM pg_stat_activity WHERE datname = :n"), {"n": name}
        )
        conn.execute(text(f'DROP DATABASE IF EXISTS "{name}"'))
    admin.dispose()


def start(args: list[str], env: dict[str, str], log: Path) -> subprocess.Popen[bytes]:
    handle = open(log, "ab")
    return subprocess.Popen(args, env=env, stdout=handle, stderr=handle, cwd=ROOT)


def stop(proc: subprocess.Popen[bytes]) -> None:
    if proc.poll() is None:
        proc.send_signal(signal.SIGTERM)
        try:
            proc.wait(20)
        except subprocess.TimeoutExpired:
            proc.kill()


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument(
        "--database-url",
        default="postgresql+psycopg://postgres@127.0.0.1:5432/postgres",
        help="a PostgreSQL URL whose user may CREATE DATABASE",
    )
    parser.add_argument(
        "--resources", type=int, default=100_000, help="bulk-loaded resources for reads/search"
    )
    parser.add_argument("--bundles", type=int, default=150, help="transaction bundles in the ingest stage")
    parser.add_argument("--seconds", type=int, default=10, help="duration of each read load")
    parser.add_argument("--connections", type=int, default=16)
    parser.add_argument("--rounds", type=int, default=3, help="read loads per target (median kept)")
    parser.add_argument("--bare-server", nargs=3, metavar=("PORT", "URL", "LOOP"), help=argparse.SUPPRESS)
    options = parser.parse_args()
    if options.bare_server:
        bare_server(int(options.bare_server[0]), options.bare_server[1], options.bare_server[2])
        return

    random.seed(7)
    url = create_database(options.database_url)
    logs = Path(tempfile.mkdtemp(prefix="conduit-bench-"))
    port = free_port()
    env = {
        **os.environ,
        "CONDUIT_DATABASE_URL": url,
        "CONDUIT_FHIR_PORT": str(port),
        "CONDUIT_DATA_DIR": str(logs / "data"),
        "CONDUIT_LOG_LEVEL": "WARNING",
    }
    results: dict[str, Any] = {"date": time.strftime("%Y-%m-%d"), "cores": os.cpu_count()}
    server = start([sys.executable, "-m", "engine", "serve", "--only", "fhir"], env, logs / "conduit.log")
    try:
        base = f"http://127.0.0.1:{port}/fhir"
        wait_http(f"http://127.0.0.1:{port}/ready")
        ingest(base, server.pid, 10)  # warm-up
        results["ingest"] = ingest(base, server.pid, options.bundles)
        print("ingest", results["ingest"], file=sys.stderr)

        loaded = bulk_load(url, options.resources)
        patient_ids = loaded.pop("patient_ids")
        results["bulk_load"] = loaded
        print("bulk load", loaded, file=sys.stderr)

        sample = random.sample(patient_ids, min(1000, len(patient_ids)))
        paths = [f"/fhir/Patient/{pid}" for pid in sample]
        # the limit as uvicorn runs by default (uvloop), and on the stdlib asyncio loop that `conduit serve`
        # uses (asyncio.run), so the cost of the loop and the cost of the FHIR layer can be told apart.
        # Each target is loaded --rounds times, interleaved, and the median round is kept (a noisy machine).
        bares: dict[str, subprocess.Popen[bytes]] = {}
        targets = {"read_conduit": f"http://127.0.0.1:{port}"}
        for label, loop in (("read_bare", "auto"), ("read_bare_asyncio", "asyncio")):
            bare_port = free_port()
            bares[label] = start(
                [sys.executable, __file__, "--bare-server", str(bare_port), url, loop],
                env,
                logs / f"{label}.log",
            )
            wait_http(f"http://127.0.0.1:{bare_port}/fhir/Patient/{sample[0]}")
            targets[label] = f"http://127.0.0.1:{bare_port}"
        try:
            rounds: dict[str, list[dict[str, Any]]] = {label: [] for label in targets}
            for target in targets.values():
                load_reads(target, paths, 2, options.connections)  # warm-up
            for _ in range(options.rounds):
                for label, target in targets.items():
                    cpu0 = cpu_seconds(server.pid) if label == "read_conduit" else 0.0
                    outcome = load_reads(target, paths, options.seconds, options.connections)
                    if label == "read_conduit":
                        outcome["server_cpu_ms_per_request"] = round(
                            (cpu_seconds(server.pid) - cpu0) * 1000 / max(1, outcome["requests"]), 3
                        )
                    rounds[label].append(outcome)
            for label, runs in rounds.items():
                runs.sort(key=lambda r: r["requests_per_s"])
                results[label] = {**runs[len(runs) // 2], "rounds_rps": [r["requests_per_s"] for r in runs]}
        finally:
            for proc in bares.values():
                stop(proc)
        for label in ("read_bare", "read_bare_asyncio"):
            results[f"{label}_ratio"] = round(
                results["read_conduit"]["requests_per_s"] / results[label]["requests_per_s"], 3
            )
        print("reads", {k: results[k]["rounds_rps"] for k in targets}, file=sys.stderr)

        results["search"] = search_latency(base, loaded["patients"], patient_ids)
        results["total_resources"] = loaded["resources"] + results["ingest"]["resources"] + 210
    finally:
        stop(server)
        drop_database(options.database_url, url)
    print(json.dumps(results, indent=2))


if __name__ == "__main__":
    main()
