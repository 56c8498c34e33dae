#!/usr/bin/env python3
"""ImagingStudy build benchmark: CPU time to build one study's ImagingStudy from the PACS index.

A temporary SQLite database is migrated and filled with one study of --instances instances (index rows
written directly, no files: the build reads the index only), then ``build_imaging_study`` is timed
--runs times inside one unit of work (the row reading and the mapping, as the sync does it) and the
median process CPU time is printed, with the share of the rows' reading measured apart.

Usage: PYTHONPATH=$PWD python bench/imaging_study.py [--instances 500] [--series 4] [--runs 50]
"""

from __future__ import annotations

import argparse
import statistics
import sys
import tempfile
import time
from datetime import UTC, datetime
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from engine.db import Database, migrate  # noqa: E402
from services.pacs.imaging_study import build_imaging_study  # noqa: E402
from services.pacs.models import PacsInstance, PacsPatient, PacsSeries, PacsStudy  # noqa: E402


def fill(db: Database, instances: int, series: int) -> int:
    now = datetime.now(UTC)
    with db.unit_of_work() as uow:
        patient = PacsPatient(patient_id="P1", patient_name="Doe^John", patient_name_norm="DOE^JOHN")
        uow.session.add(patient)
        uow.session.flush()
        study = PacsStudy(
            patient_pk=patient.pk,
            study_instance_uid="1.2.3.1",
            study_date="20240115",
            study_time="083000.123456",
            accession_number="A1",
            study_description="CHEST",
            modalities_in_study="\\CT\\SR\\",
            updated_at=now,
        )
        uow.session.add(study)
        uow.session.flush()
        rows = []
        for s in range(series):
            row = PacsSeries(
                study_pk=study.pk,
                series_instance_uid=f"1.2.3.1.{s + 1}",
                modality="CT",
                series_number=s + 1,
                series_description=f"SERIES {s + 1}",
            )
            uow.session.add(row)
            rows.append(row)
        uow.session.flush()
        for i in range(instances):
            uow.session.add(
                PacsInstance(
                    series_pk=rows[i % series].pk,
                    sop_instance_uid=f"1.2.3.1.{i % series + 1}.{i + 1}",
                    sop_class_uid="1.2.840.10008.5.1.4.1.1.2",
                    instance_number=i + 1,
                    transfer_syntax_uid="1.2.840.10008.1.2.1",
                    storage_key=f"k{i}",
                    size=1,
                    stored_at=now,
                )
            )
        return study.pk


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--instances", type=int, default=500)
    parser.add_argument("--series", type=int, default=4)
    parser.add_argument("--runs", type=int, default=50)
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        db = Database(f"sqlite:///{tmp}/bench.db")
        migrate.upgrade(db.engine)
        study_pk = fill(db, args.instances, args.series)
        times = []
        with db.unit_of_work() as uow:
            study = uow.session.get(PacsStudy, study_pk)
            patient = uow.session.get(PacsPatient, study.patient_pk)
            resource = build_imaging_study(uow, study, patient, "Patient/1", "ServiceRequest/2")
            assert resource["numberOfInstances"] == args.instances
            for _ in range(args.runs):
                t0 = time.process_time()
                build_imaging_study(uow, study, patient, "Patient/1", "ServiceRequest/2")
                times.append(time.process_time() - t0)
        db.dispose()
    print(
        f"build_imaging_study, {args.instances} instances in {args.series} series: "
        f"median {statistics.median(times) * 1000:.2f} ms CPU, min {min(times) * 1000:.2f} ms "
        f"({args.runs} runs)"
    )


if __name__ == "__main__":
    main()
