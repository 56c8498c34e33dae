"""DirectStatement writes and reads exactly what Connection.execute does, on both databases."""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Any

import pytest
from sqlalchemy import bindparam, insert, select, text, update

from engine.db.direct import DirectStatement
from services.pacs.models import PacsPatient, PacsStudy

_TOUCH = (
    update(PacsStudy)
    .where(PacsStudy.pk == bindparam("study_pk"))
    .values(fhir_dirty=True, change_seq=PacsStudy.change_seq + 1, updated_at=bindparam("now"))
)


def test_direct_statements_store_what_execute_stores(runtime: Any) -> None:
    now = datetime(2026, 11, 22, 1, 2, 3, 456789, tzinfo=UTC)
    with runtime.db.engine.begin() as conn:
        patient = conn.execute(insert(PacsPatient), {"patient_id": "P-DIRECT"}).inserted_primary_key[0]
        study: dict[str, Any] = {
            "patient_pk": patient,
            "study_date": "20261122",
            "study_time": "010203",
            "accession_number": "",
            "study_id": "7",
            "study_description": "Tête",
            "referring_physician_name": "",
            "referring_physician_name_norm": "",
            "modalities_in_study": "\\CT\\",
            "fhir_dirty": False,
            "change_seq": 4,
            "imaging_study_id": None,
            "updated_at": now,
        }
        conn.execute(insert(PacsStudy), {"study_instance_uid": "1.2.1", **study})
        DirectStatement(insert(PacsStudy)).execute(conn, {"study_instance_uid": "1.2.2", **study})
        find = DirectStatement(select(PacsStudy.pk).where(PacsStudy.study_instance_uid == bindparam("uid")))
        first = find.first(conn, {"uid": "1.2.1"})
        second = find.first(conn, {"uid": "1.2.2"})
        assert first is not None and second is not None
        assert find.first(conn, {"uid": "1.2.3"}) is None
        later = datetime(2026, 11, 22, 2, 0, 0, tzinfo=UTC)
        conn.execute(_TOUCH, {"study_pk": first[0], "now": later})
        DirectStatement(_TOUCH).execute(conn, {"study_pk": second[0], "now": later})

        columns = ("study_description", "modalities_in_study", "fhir_dirty", "change_seq", "updated_at")
        rows = conn.execute(
            select(*(PacsStudy.__table__.c[c] for c in columns))
            .where(PacsStudy.study_instance_uid.in_(["1.2.1", "1.2.2"]))
            .order_by(PacsStudy.study_instance_uid)
        ).all()
        stored = conn.execute(
            text(
                "SELECT CAST(updated_at AS VARCHAR(64)) FROM pacs_study WHERE study_instance_uid LIKE '1.2.%'"
            )
        ).all()
    assert rows[0] == rows[1]
    assert rows[0][2:4] == (True, 5)
    assert rows[0][4].replace(tzinfo=UTC) == later
    assert stored[0] == stored[1]  # the same form on disk, not just the same value read back


def test_a_direct_insert_that_would_need_a_column_default_is_refused(runtime: Any) -> None:
    with runtime.db.engine.begin() as conn, pytest.raises(ValueError, match="patient_name"):
        DirectStatement(insert(PacsPatient)).execute(conn, {"patient_id": "P-DEFAULTS"})
