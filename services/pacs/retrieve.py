"""C-MOVE / C-GET (PS3.4 C.4.2, C.4.3): which stored instances an identifier selects, and their bytes.

The identifier is matched like a C-FIND at its QueryRetrieveLevel (normally unique keys only), joined down
to the instances, so one SQL statement lists every object to send.
"""

from __future__ import annotations

from dataclasses import dataclass

from sqlalchemy import and_, select

from engine.db import Database
from services.pacs.models import PacsInstance, PacsPatient, PacsSeries, PacsStudy
from services.pacs.query import KEYS, FindQuery, QueryError, _condition, _element_value, query_level

__all__ = ["INSTANCE_REF_COLUMNS", "InstanceRef", "select_instances"]


@dataclass(frozen=True)
class InstanceRef:
    sop_instance_uid: str
    sop_class_uid: str
    transfer_syntax_uid: str
    storage_key: str
    size: int


#: the columns an InstanceRef is built from, in its field order
INSTANCE_REF_COLUMNS = (
    PacsInstance.sop_instance_uid,
    PacsInstance.sop_class_uid,
    PacsInstance.transfer_syntax_uid,
    PacsInstance.storage_key,
    PacsInstance.size,
)


def select_instances(db: Database, query: FindQuery, *, case_insensitive: bool = True) -> list[InstanceRef]:
    """Instances matching ``query``; QueryError when its level or model is invalid."""
    level = query_level(query)
    conditions = []
    for elem in query.identifier:
        if elem.tag.group == 0x0000 or elem.VR == "SQ":
            continue
        key = KEYS.get(elem.keyword)
        if key is None or key.level > level:
            continue
        value = _element_value(query.identifier, elem.keyword)
        if value and value != "*":
            condition = _condition(key, value, sqlite=db.is_sqlite, case_insensitive=case_insensitive)
            if condition is not None:
                conditions.append(condition)
    if not conditions:
        # a retrieve with no unique key would send the whole archive: refuse rather than guess
        raise QueryError(0xA900, "the identifier names no instances (unique keys missing)")
    stmt = (
        select(*INSTANCE_REF_COLUMNS)
        .join(PacsSeries, PacsSeries.pk == PacsInstance.series_pk)
        .join(PacsStudy, PacsStudy.pk == PacsSeries.study_pk)
        .join(PacsPatient, PacsPatient.pk == PacsStudy.patient_pk)
        .where(and_(*conditions))
        .order_by(PacsSeries.pk, PacsInstance.instance_number, PacsInstance.pk)
    )
    with db.engine.connect() as conn:
        return [InstanceRef(*row) for row in conn.execute(stmt)]
