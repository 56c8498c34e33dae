#!/usr/bin/env python3
"""DICOM store and query benchmark: Conduit beside Orthanc and DCMTK's storescp, in the same run.

* C-STORE throughput: DCMTK storescu sends N CT-like instances (512x512x16 bit, ~0.5 MB each) over ONE
  association to each server, fresh and empty each run; images/s and MB/s (1 MB = 1e6 B), median of runs.
* C-FIND latency: each query server (Conduit, Orthanc) is loaded with --find-instances small instances
  (same patient/study plan, tiny pixels: the index size is what matters), then a Study Root STUDY-level
  query by PatientID is repeated inside ONE open association per server (pynetdicom SCU, TCP_NODELAY),
  alternating between the servers query by query; median ms. Queries start once every server is idle:
  after a load Conduit writes one FHIR ImagingStudy per study in the background (10,000 instances: a
  thousand studies, tens of seconds), which would otherwise compete with the queries for the GIL.

Conduit runs as ``python -m engine serve --only dicom`` (SQLite in a temporary data folder, or with
--database-url a fresh database on that server each run), so acknowledgements mean what they mean in production: file and folder fsynced,
index row committed. Orthanc runs with its defaults: SQLite index, and since 1.7.4 ``SyncStorageArea``
on (strace shows an fdatasync of each stored file and of its index before the response; no folder
fsync). storescp writes files without any fsync. Everything binds 127.0.0.1; TCP_NODELAY=1 is exported for the DCMTK tools and
Orthanc (Debian's DCMTK 3.6.7 leaves Nagle on otherwise).

Usage: python bench/dicom_store.py [--count 500] [--runs 3] [--find-instances 10000] [--find-runs 50]
                                   [--peers orthanc,storescp] [--work /tmp/conduit-dicom-bench]
                                   [--keep-stored]
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import socket
import statistics
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(ROOT / "tests" / "adapters" / "dicom"))

from dicom_corpus import make_corpus  # noqa: E402  (the corpus generator shared with the tests)

ENV = {**os.environ, "TCP_NODELAY": "1"}


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def tool(name: str) -> str:
    """The DCMTK binary (pyenv shims put pynetdicom's Python apps of the same name first on PATH)."""
    for folder in os.environ.get("PATH", "").split(os.pathsep) + ["/usr/bin"]:
        path = Path(folder) / name
        if path.is_file() and os.access(path, os.X_OK) and path.read_bytes()[:4] == b"\x7fELF":
            return str(path)
    raise SystemExit(f"DCMTK {name} not found")


def wait_echo(port: int, aet: str, timeout: float = 60) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        r = subprocess.run(
            [tool("echoscu"), "-aec", aet, "127.0.0.1", str(port)], env=ENV, capture_output=True
        )
        if r.returncode == 0:
            return
        time.sleep(0.2)
    raise RuntimeError(f"{aet} on {port} does not answer C-ECHO")


class Server:
    def __init__(self, label: str, work: Path, database_url: str | None) -> None:
        self.label, self.work, self.database_url = label, work, database_url
        self.port = free_port()
        self.proc: subprocess.Popen[bytes] | None = None
        self.aet = {"conduit": "CONDUIT", "orthanc": "ORTHANC", "storescp": "STORESCP"}[label]

    def start(self) -> Server:
        if self.work.exists():
            shutil.rmtree(self.work)
        self.work.mkdir(parents=True)
        log = open(self.work / "server.log", "wb")
        if self.label == "conduit":
            env = {
                **ENV,
                "CONDUIT_DATA_DIR": str(self.work / "data"),
                "CONDUIT_DICOM_PORT": str(self.port),
                "CONDUIT_LOG_LEVEL": "WARNING",
            }
            cmd = [sys.executable, "-m", "engine", "serve", "--only", "dicom"]
            if self.database_url:  # a database of its own, fresh each run, as the SQLite file is
                env["CONDUIT_DATABASE_URL"] = self._fresh_database()
                cmd.append("--upgrade-db")
            self.proc = subprocess.Popen(cmd, cwd=ROOT, env=env, stdout=log, stderr=log)
        elif self.label == "orthanc":
            config = {
                "Name": "bench",
                "StorageDirectory": str(self.work / "storage"),
                "IndexDirectory": str(self.work / "storage"),
                "StorageCompression": False,
                "Plugins": [],
                "HttpServerEnabled": True,
                "HttpPort": free_port(),
                "RemoteAccessAllowed": False,
                "AuthenticationEnabled": False,
                "DicomServerEnabled": True,
                "DicomAet": "ORTHANC",
                "DicomPort": self.port,
                "DicomCheckCalledAet": False,
                "DicomAlwaysAllowEcho": True,
                "DicomAlwaysAllowStore": True,
                "DicomAlwaysAllowFind": True,
                "UnknownSopClassAccepted": True,
                "DicomModalities": {},
                "SaveJobs": False,
            }
            (self.work / "orthanc.json").write_text(json.dumps(config))
            orthanc = shutil.which("Orthanc") or "Orthanc"
            self.proc = subprocess.Popen(
                [orthanc, str(self.work / "orthanc.json")], env=ENV, stdout=log, stderr=log
            )
        else:
            (self.work / "out").mkdir()
            cmd = [
                tool("storescp"),
                "--aetitle",
                "STORESCP",
                "--output-directory",
                str(self.work / "out"),
                "+xa",
                str(self.port),
            ]
            self.proc = subprocess.Popen(cmd, env=ENV, stdout=log, stderr=log)
        wait_echo(self.port, self.aet)
        return self

    def cpu_seconds(self) -> float:
        try:
            fields = Path(f"/proc/{self.proc.pid}/stat").read_text().rsplit(")", 1)[1].split()  # type: ignore[union-attr]
            return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")
        except (OSError, IndexError):
            return float("nan")

    def wait_idle(self, timeout: float = 600, busy: float = 0.02) -> float:
        """Seconds until the server uses less than ``busy`` of a core over one second: work a load
        leaves behind (Conduit writes an ImagingStudy per study) finishes before the queries start."""
        t0 = time.monotonic()
        while time.monotonic() - t0 < timeout:
            cpu0 = self.cpu_seconds()
            time.sleep(1.0)
            if self.cpu_seconds() - cpu0 < busy:
                break
        return time.monotonic() - t0

    def stop(self) -> None:
        if self.proc and self.proc.poll() is None:
            self.proc.terminate()
            try:
                self.proc.wait(30)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait(10)
        if self.database_url and self.label == "conduit":
            self._drop_database()

    _BENCH_DB = f"conduit_dicom_bench_{os.getpid()}"

    def _admin(self) -> Any:
        from sqlalchemy import create_engine
        from sqlalchemy.engine import make_url

        assert self.database_url
        return create_engine(make_url(self.database_url), isolation_level="AUTOCOMMIT")

    def _fresh_database(self) -> str:
        from sqlalchemy import text
        from sqlalchemy.engine import make_url

        self._drop_database()
        admin = self._admin()
        with admin.connect() as c:
            c.execute(text(f'CREATE DATABASE "{self._BENCH_DB}"'))
        admin.dispose()
        assert self.database_url
        return make_url(self.database_url).set(database=self._BENCH_DB).render_as_string(hide_password=False)

    def _drop_database(self) -> None:
        from sqlalchemy import text

        admin = self._admin()
        with admin.connect() as c:
            c.execute(text(f'DROP DATABASE IF EXISTS "{self._BENCH_DB}" WITH (FORCE)'))
        admin.dispose()


def delete_stored(work: Path) -> None:
    if not work.is_dir():
        return
    for stored in work.iterdir():  # the server's log stays
        if stored.name != "server.log":
            shutil.rmtree(stored, ignore_errors=True) if stored.is_dir() else stored.unlink()


def store(server: Server, folder: Path) -> tuple[float, int, float]:
    cpu0 = server.cpu_seconds()
    t0 = time.perf_counter()
    r = subprocess.run(
        [tool("storescu"), "-v", "-aec", server.aet, "127.0.0.1", str(server.port), "+sd", str(folder)],
        env=ENV,
        capture_output=True,
        text=True,
    )
    elapsed = time.perf_counter() - t0
    ok = (r.stdout + r.stderr).count("Received Store Response (Success)")
    return elapsed, ok, server.cpu_seconds() - cpu0


class FindClient:
    """One open association to a query server (pynetdicom SCU, TCP_NODELAY)."""

    def __init__(self, server: Server, patient_id: str) -> None:
        from pynetdicom import AE, evt
        from pynetdicom.sop_class import StudyRootQueryRetrieveInformationModelFind

        from adapters.dicom.server import nodelay_on_open

        self.model = StudyRootQueryRetrieveInformationModelFind
        self.patient_id = patient_id
        ae = AE(ae_title="BENCHSCU")
        ae.add_requested_context(self.model)
        self.assoc = ae.associate(
            "127.0.0.1", server.port, ae_title=server.aet, evt_handlers=[(evt.EVT_CONN_OPEN, nodelay_on_open)]
        )
        assert self.assoc.is_established
        self.times: list[float] = []
        self.matches = self.query(timed=False)

    def query(self, timed: bool = True) -> int:
        from pydicom.dataset import Dataset

        ds = Dataset()
        ds.QueryRetrieveLevel = "STUDY"
        ds.PatientID = self.patient_id
        for kw in (
            "StudyInstanceUID",
            "StudyDate",
            "StudyTime",
            "AccessionNumber",
            "PatientName",
            "StudyDescription",
        ):
            setattr(ds, kw, "")
        t0 = time.perf_counter()
        n = sum(1 for st, _ in self.assoc.send_c_find(ds, self.model) if st and st.Status in (0xFF00, 0xFF01))
        if timed:
            self.times.append((time.perf_counter() - t0) * 1000)
        return n

    def close(self) -> None:
        self.assoc.release()


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--count", type=int, default=500)
    ap.add_argument("--runs", type=int, default=3)
    ap.add_argument("--find-instances", type=int, default=10_000)
    ap.add_argument("--find-runs", type=int, default=50)
    ap.add_argument("--peers", default="orthanc,storescp")
    ap.add_argument(
        "--keep-stored",
        action="store_true",
        help="keep what each server stored until the bench ends, as a server in service keeps it (default: "
        "delete it once the server stops; see the comment in main)",
    )
    ap.add_argument("--work", type=Path, default=Path("/tmp/conduit-dicom-bench"))
    ap.add_argument(
        "--database-url",
        default=None,
        help="a PostgreSQL server for Conduit: a fresh database is made on it each run (default: SQLite in --work)",
    )
    a = ap.parse_args()
    work: Path = a.work
    work.mkdir(parents=True, exist_ok=True)
    targets = ["conduit", *[p for p in a.peers.split(",") if p]]

    ct = work / "corpus-ct"
    if not ct.exists() or len(list(ct.glob("*.dcm"))) != a.count:
        shutil.rmtree(ct, ignore_errors=True)
        print(f"generating {a.count} CT instances (512x512x16)", file=sys.stderr)
        make_corpus(ct, count=a.count, patients=20, rows=512, modalities=("CT",))
    ct_bytes = sum(p.stat().st_size for p in ct.glob("*.dcm"))

    results: dict[str, dict[str, Any]] = {t: {"store_s": [], "ok": [], "cpu_s": []} for t in targets}
    try:
        for run in range(a.runs):
            # the order turns each run and what a server stored is deleted once it stopped: on this VM, page
            # cache pages on guest memory not touched since boot cost several times more to fill (storescp's
            # CPU for the same run tripled), so no server may always be the one that meets them. With
            # --keep-stored every run of a page-cache writer meets such memory (storescp and Orthanc slow
            # down, Conduit's direct I/O largely not), and no run scans past thousands of just-deleted inodes
            # (ext4 without a journal skips recently deleted ones one by one at every file creation)
            for target in targets[run % len(targets) :] + targets[: run % len(targets)]:
                server = Server(
                    target, work / f"{target}-run{run}", a.database_url if target == "conduit" else None
                )
                server.start()
                try:
                    elapsed, ok, cpu = store(server, ct)
                finally:
                    server.stop()
                    if not a.keep_stored:
                        delete_stored(server.work)
                results[target]["store_s"].append(elapsed)
                results[target]["ok"].append(ok)
                results[target]["cpu_s"].append(cpu)
                print(
                    f"run {run + 1} {target}: {elapsed:.2f}s, {ok}/{a.count} ok, server cpu {cpu:.1f}s",
                    file=sys.stderr,
                )
    finally:
        if a.keep_stored:  # kept only while the runs last: gigabytes otherwise left in --work
            for target in targets:
                for run in range(a.runs):
                    delete_stored(work / f"{target}-run{run}")

    small = work / f"corpus-find-{a.find_instances}"
    if a.find_instances and (not small.exists() or len(list(small.glob("*.dcm"))) != a.find_instances):
        shutil.rmtree(small, ignore_errors=True)
        print(f"generating {a.find_instances} small instances for C-FIND", file=sys.stderr)
        make_corpus(
            small,
            count=a.find_instances,
            patients=200,
            studies_per_patient=5,
            series_per_study=4,
            rows=8,
            salt=7,
        )
    # every query server is loaded first, then the queries alternate between them (one round = one query
    # to each), so drift in the machine's load hits all of them alike
    servers: dict[str, Server] = {}
    clients: dict[str, FindClient] = {}
    try:
        for target in [t for t in targets if t != "storescp"] if a.find_instances else []:
            server = servers[target] = Server(
                target, work / f"{target}-find", a.database_url if target == "conduit" else None
            ).start()
            t0 = time.perf_counter()
            _, ok, _ = store(server, small)
            results[target].update(find_loaded=ok, find_load_s=time.perf_counter() - t0)
            print(f"{target}: loaded {ok} in {results[target]['find_load_s']:.0f}s", file=sys.stderr)
        for target, server in servers.items():
            waited = server.wait_idle()
            print(f"{target}: idle after {waited:.0f}s of background work", file=sys.stderr)
        for target, server in servers.items():
            clients[target] = FindClient(server, "PAT0007")
        for _ in range(a.find_runs):
            for client in clients.values():
                client.query()
    finally:
        for client in clients.values():
            client.close()
        for server in servers.values():
            server.stop()
    for target, client in clients.items():
        median_ms = statistics.median(client.times)
        results[target].update(find_ms=median_ms, find_matches=client.matches)
        print(f"{target}: study C-FIND median {median_ms:.2f} ms ({client.matches} matches)", file=sys.stderr)

    print(
        f"\n{a.count} CT instances, {ct_bytes / 1e6:.1f} MB, one storescu association, median of {a.runs} runs"
    )
    print(
        f"| server | images/s | MB/s | stored | server CPU s | study C-FIND ms ({a.find_instances} instances) |"
    )
    print("| --- | --- | --- | --- | --- | --- |")
    for target, r in results.items():
        find = f"{r['find_ms']:.2f}" if "find_ms" in r else "-"
        if not r["store_s"]:  # --runs 0: C-FIND only
            print(f"| {target} | - | - | - | - | {find} |")
            continue
        med = statistics.median(r["store_s"])
        print(
            f"| {target} | {a.count / med:.0f} | {ct_bytes / 1e6 / med:.1f} | {min(r['ok'])}/{a.count} | "
            f"{statistics.median(r['cpu_s']):.1f} | {find} |"
        )
    (work / "results.json").write_text(json.dumps(results, indent=1))
    return 0


if __name__ == "__main__":
    sys.exit(main())
