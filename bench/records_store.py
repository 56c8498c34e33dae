"""Record-store benchmark: transaction-bundle ingest and search latency straight on the repository (no HTTP).

    python bench/records_store.py --url postgresql+psycopg://postgres@127.0.0.1:5432/bench --resources 100000
    python bench/records_store.py --url sqlite:////tmp/bench.db --resources 20000

Ingest: transaction Bundles of one Patient + 20 Observations (urn:uuid references), one unit of work each,
reported in resources/s on one process. Search: p50/p99 of typical queries once ``--resources`` are stored.
The database must be empty or throw-away: the script migrates it and adds data.
"""

from __future__ import annotations

import argparse
import random
import statistics
import time
import uuid
from typing import Any

from engine.db import Database, migrate
from services.records.repository import SqlResourceRepository
from services.records.statistics import analyze

LOINC = ["718-7", "2345-7", "2160-0", "6690-2", "789-8", "4548-4", "2951-2", "2823-3", "17861-6", "1742-6"]


def bundle(n: int) -> dict[str, Any]:
    pid = f"urn:uuid:{uuid.uuid4()}"
    entries = [
        {
            "fullUrl": pid,
            "resource": {
                "resourceType": "Patient",
                "identifier": [{"system": "urn:oid:1.2.3.4", "value": f"MRN{n:07d}"}],
                "name": [
                    {
                        "family": random.choice(["Smith", "Müller", "Nguyen", "Garcia", "Okafor"])
                        + str(n % 1000),
                        "given": ["Alex"],
                    }
                ],
                "gender": random.choice(["male", "female"]),
                "birthDate": f"{random.randint(1930, 2020)}-{random.randint(1, 12):02d}-{random.randint(1, 28):02d}",
            },
            "request": {"method": "POST", "url": "Patient"},
        }
    ]
    for i in range(20):
        code = LOINC[i % len(LOINC)]
        entries.append(
            {
                "resource": {
                    "resourceType": "Observation",
                    "status": "final",
                    "category": [
                        {
                            "coding": [
                                {
                                    "system": "http://terminology.hl7.org/CodeSystem/observation-category",
                                    "code": "laboratory",
                                }
                            ]
                        }
                    ],
                    "code": {
                        "coding": [{"system": "http://loinc.org", "code": code, "display": f"Test {code}"}]
                    },
                    "subject": {"reference": pid},
                    "effectiveDateTime": f"2024-{random.randint(1, 12):02d}-{random.randint(1, 28):02d}T10:{i:02d}:00Z",
                    "valueQuantity": {
                        "value": round(random.uniform(1, 200), 1),
                        "unit": "mg/dL",
                        "system": "http://unitsofmeasure.org",
                        "code": "mg/dL",
                    },
                },
                "request": {"method": "POST", "url": "Observation"},
            }
        )
    return {"resourceType": "Bundle", "type": "transaction", "entry": entries}


def pct(values: list[float], p: float) -> float:
    values = sorted(values)
    return values[min(len(values) - 1, int(len(values) * p))]


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--url", required=True)
    ap.add_argument(
        "--resources", type=int, default=21000, help="total resources to have stored before searching"
    )
    ap.add_argument("--searches", type=int, default=200)
    ap.add_argument("--search-only", action="store_true", help="skip ingest: search the data already stored")
    args = ap.parse_args()
    db = Database(args.url)
    migrate.upgrade(db.engine)
    random.seed(7)
    bundles = max(1, args.resources // 21)
    start = time.perf_counter()
    cpu_start = time.process_time()
    timed_first = min(bundles, 200)
    for n in range(0 if args.search_only else bundles):
        with db.unit_of_work() as uow:
            SqlResourceRepository(uow).transaction(bundle(n))
        if n + 1 == timed_first:
            elapsed = time.perf_counter() - start
            cpu = time.process_time() - cpu_start
            print(
                f"ingest: {timed_first * 21 / elapsed:,.0f} resources/s wall, "
                f"{timed_first * 21 / cpu:,.0f} per CPU-second of Conduit's process "
                f"({timed_first} bundles of 21, {db.dialect})"
            )
        if (n + 1) % 1000 == 0:
            print(
                f"  {n + 1} bundles, {(n + 1) * 21 / (time.perf_counter() - start):,.0f} resources/s overall",
                flush=True,
            )
    analyze(db)  # SQLite: what the records service's background task does a minute after start
    if db.dialect == "postgresql":  # what autovacuum does soon after a bulk load (visibility map, stats)
        with db.engine.connect().execution_options(isolation_level="AUTOCOMMIT") as conn:
            conn.exec_driver_sql("VACUUM ANALYZE")
    queries = {
        "Patient?identifier=sys|value": lambda: (
            "Patient",
            [("identifier", f"urn:oid:1.2.3.4|MRN{random.randrange(bundles):07d}")],
        ),
        "Patient?family=prefix": lambda: ("Patient", [("family", f"smith{random.randrange(1000)}")]),
        "Observation?subject=&code=": lambda: (
            "Observation",
            [
                ("subject:Patient.identifier", f"urn:oid:1.2.3.4|MRN{random.randrange(bundles):07d}"),
                ("code", "http://loinc.org|718-7"),
            ],
        ),
        "Observation?code=&date=ge": lambda: (
            "Observation",
            [("code", "http://loinc.org|2345-7"), ("date", "ge2024-12-20"), ("_count", "50")],
        ),
        "Observation?value-quantity=gt": lambda: (
            "Observation",
            [("value-quantity", "gt199.5|http://unitsofmeasure.org|mg/dL")],
        ),
        "Patient?_has:Observation:subject:code": lambda: (
            "Patient",
            [
                ("_has:Observation:subject:code", "718-7"),
                ("identifier", f"MRN{random.randrange(bundles):07d}"),
            ],
        ),
        "Observation?_sort=-date&_count=20": lambda: (
            "Observation",
            [("code", "http://loinc.org|789-8"), ("_sort", "-date"), ("_count", "20")],
        ),
    }
    with db.unit_of_work() as uow:
        repo = SqlResourceRepository(uow)
        ids = [m.id for m in repo.search("Observation", [("_count", "200")]).matches]
        times = []
        for _ in range(args.searches):
            t0 = time.perf_counter()
            repo.read_raw("Observation", random.choice(ids))
            times.append((time.perf_counter() - t0) * 1000)
        print(f"read_raw by id: p50 {pct(times, 0.5):.2f} ms  p99 {pct(times, 0.99):.2f} ms")
        for name, make in queries.items():
            times = []
            for _ in range(args.searches):
                rtype, params = make()
                t0 = time.perf_counter()
                repo.search(rtype, params)
                times.append((time.perf_counter() - t0) * 1000)
            print(f"{name:45s} p50 {statistics.median(times):6.2f} ms  p99 {pct(times, 0.99):6.2f} ms")
    db.dispose()


if __name__ == "__main__":
    main()
