"""C-FIND (PS3.4 C.4.1) for the Patient Root and Study Root information models, translated to SQL.

``KEYS`` is the table of every attribute the index can match or return: keyword -> (level, column, kind).
Matching follows PS3.4 C.2.2.2: an empty value matches everything (universal), ``*``/``?`` are wildcards,
a ``-`` in a DA/TM value is a range, a backslash-separated UID value is a list, anything else is a single
value. Person names match case-insensitively when configured (C.2.2.2.1 leaves that to the SCP).
The answer carries only the keys asked for, plus the unique keys of the levels above and at the query
level, QueryRetrieveLevel and SpecificCharacterSet.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from dataclasses import dataclass
from functools import cache
from typing import Any

from pydicom.config import IGNORE
from pydicom.datadict import dictionary_VR, keyword_for_tag
from pydicom.dataelem import DataElement
from pydicom.dataset import Dataset
from pydicom.multival import MultiValue
from pydicom.tag import BaseTag, Tag
from sqlalchemy import ColumnElement, Select, and_, bindparam, false, func, or_, select
from sqlalchemy.sql.compiler import SQLCompiler

from engine.db import Database
from engine.db.direct import CompiledStatement, read_rows
from services.pacs import status
from services.pacs.header import person_name_norm
from services.pacs.models import PacsInstance, PacsPatient, PacsSeries, PacsStudy

__all__ = ["KEYS", "LEVELS", "FindQuery", "QueryError", "run_find", "wildcard_to_like"]

LEVELS = ("PATIENT", "STUDY", "SERIES", "IMAGE")
_PATIENT, _STUDY, _SERIES, _IMAGE = range(4)


@dataclass(frozen=True)
class Key:
    level: int
    column: Any
    kind: str  # str | pn | date | time | uid | int | modalities | count
    norm_column: Any = None
    """Upper-cased column used for case-insensitive person-name matching."""


def _count(outer: Any, column: Any, *where: ColumnElement[bool]) -> Any:
    """A COUNT subquery correlated to the ``outer`` row (the "Number of ... Related ..." keys are
    computed over indexed foreign keys when asked for, not stored)."""
    return select(func.count(column)).where(*where).correlate(outer).scalar_subquery()


KEYS: dict[str, Key] = {
    # patient level (PS3.4 C.6.1.1.2); in the Study Root they are attributes of the study
    "PatientID": Key(_PATIENT, PacsPatient.patient_id, "str"),
    "PatientName": Key(_PATIENT, PacsPatient.patient_name, "pn", PacsPatient.patient_name_norm),
    "PatientBirthDate": Key(_PATIENT, PacsPatient.patient_birth_date, "date"),
    "PatientSex": Key(_PATIENT, PacsPatient.patient_sex, "str"),
    "NumberOfPatientRelatedStudies": Key(
        _PATIENT, _count(PacsPatient, PacsStudy.pk, PacsStudy.patient_pk == PacsPatient.pk), "count"
    ),
    # study level (C.6.1.1.3)
    "StudyInstanceUID": Key(_STUDY, PacsStudy.study_instance_uid, "uid"),
    "StudyDate": Key(_STUDY, PacsStudy.study_date, "date"),
    "StudyTime": Key(_STUDY, PacsStudy.study_time, "time"),
    "AccessionNumber": Key(_STUDY, PacsStudy.accession_number, "str"),
    "StudyID": Key(_STUDY, PacsStudy.study_id, "str"),
    "StudyDescription": Key(_STUDY, PacsStudy.study_description, "str"),
    "ReferringPhysicianName": Key(
        _STUDY, PacsStudy.referring_physician_name, "pn", PacsStudy.referring_physician_name_norm
    ),
    "ModalitiesInStudy": Key(_STUDY, PacsStudy.modalities_in_study, "modalities"),
    "NumberOfStudyRelatedSeries": Key(
        _STUDY, _count(PacsStudy, PacsSeries.pk, PacsSeries.study_pk == PacsStudy.pk), "count"
    ),
    "NumberOfStudyRelatedInstances": Key(
        _STUDY,
        _count(
            PacsStudy,
            PacsInstance.pk,
            PacsInstance.series_pk == PacsSeries.pk,
            PacsSeries.study_pk == PacsStudy.pk,
        ),
        "count",
    ),
    # series level (C.6.1.1.4)
    "SeriesInstanceUID": Key(_SERIES, PacsSeries.series_instance_uid, "uid"),
    "Modality": Key(_SERIES, PacsSeries.modality, "str"),
    "SeriesNumber": Key(_SERIES, PacsSeries.series_number, "int"),
    "SeriesDescription": Key(_SERIES, PacsSeries.series_description, "str"),
    "SeriesDate": Key(_SERIES, PacsSeries.series_date, "date"),
    "NumberOfSeriesRelatedInstances": Key(
        _SERIES, _count(PacsSeries, PacsInstance.pk, PacsInstance.series_pk == PacsSeries.pk), "count"
    ),
    # composite object instance level (C.6.1.1.5)
    "SOPInstanceUID": Key(_IMAGE, PacsInstance.sop_instance_uid, "uid"),
    "SOPClassUID": Key(_IMAGE, PacsInstance.sop_class_uid, "uid"),
    "InstanceNumber": Key(_IMAGE, PacsInstance.instance_number, "int"),
}

#: unique key of each level (C.6.1.1.1 / C.6.2.1.1)
_UNIQUE = {
    _PATIENT: "PatientID",
    _STUDY: "StudyInstanceUID",
    _SERIES: "SeriesInstanceUID",
    _IMAGE: "SOPInstanceUID",
}
_TABLES = (PacsPatient, PacsStudy, PacsSeries, PacsInstance)
_NOT_KEYS = {"QueryRetrieveLevel", "SpecificCharacterSet", "TimezoneOffsetFromUTC"}


class QueryError(Exception):
    def __init__(self, status_code: int, comment: str) -> None:
        super().__init__(comment)
        self.status = status_code
        self.comment = comment


@dataclass(frozen=True)
class FindQuery:
    model: str  # "patient" | "study"
    identifier: Dataset


def wildcard_to_like(value: str, escape: str = "!") -> str:
    """``DOE*`` -> ``DOE%`` with LIKE's own metacharacters escaped."""
    out = []
    for ch in value:
        if ch in (escape, "%", "_"):
            out.append(escape + ch)
        elif ch == "*":
            out.append("%")
        elif ch == "?":
            out.append("_")
        else:
            out.append(ch)
    return "".join(out)


def _wildcard_to_glob(value: str) -> str:
    # SQLite's LIKE ignores ASCII case; GLOB is case-sensitive and speaks * and ? natively
    return "".join("[" + ch + "]" if ch in "[]" else ch for ch in value)


#: how one matching key restricts, values apart: an operator, the column it tests, and its values
#: (None for an open end of a range). Statements that differ only in their values render the same SQL.
Plan = tuple[str, Any, tuple[Any, ...]]


def _plan(key: Key, value: str, *, sqlite: bool, case_insensitive: bool) -> Plan | None:
    """How one non-empty matching key restricts, or None when the value cannot restrict (counts)."""
    column = key.column
    if key.kind == "count":
        return None
    if key.kind == "uid":
        uids = tuple(u.strip().rstrip("\x00") for u in value.split("\\") if u.strip())
        return ("in" if len(uids) > 1 else "=", column, uids)
    if key.kind in ("date", "time"):
        if "-" in value:
            low, _, high = value.partition("-")
            low, high = low.strip(), high.strip()
            # a time upper bound "0900" must include 09:00:xx.ffffff: pad past every longer value
            pad = "" if key.kind == "date" else "\x7f"
            return ("range", column, (low or None, high + pad if high else None))
        if key.kind == "date":
            return ("=", column, (value,))
        return ("like", column, (wildcard_to_like(value) + "%",))
    if key.kind == "int":
        try:
            return ("=", column, (int(value),))
        except ValueError:
            return ("false", column, ())  # an unparsable number matches nothing
    if key.kind == "modalities":
        codes = [c.strip() for c in value.split("\\") if c.strip()]
        return ("any-like", column, tuple("%!\\" + wildcard_to_like(c) + "!\\%" for c in codes))
    if key.kind == "pn" and case_insensitive:
        column, value = key.norm_column, person_name_norm(value) if "*" not in value else value.upper()
    if "*" in value or "?" in value:
        if sqlite:
            return ("glob", column, (_wildcard_to_glob(value),))
        return ("like", column, (wildcard_to_like(value),))
    return ("=", column, (value,))


def _render(plan: Plan, bind: Callable[[Any], Any]) -> ColumnElement[bool]:
    """The SQL of a plan; ``bind`` turns each value into what the expression compares with (the value
    itself, or a named bind parameter), called once per value that is not None, in order."""
    op, column, values = plan
    if op == "=":
        return column == bind(values[0])  # type: ignore[no-any-return]
    if op == "in":
        return column.in_([bind(v) for v in values])  # type: ignore[no-any-return]
    if op == "like":
        return column.like(bind(values[0]), escape="!")  # type: ignore[no-any-return]
    if op == "glob":
        return column.op("GLOB")(bind(values[0]))  # type: ignore[no-any-return]
    if op == "any-like":
        return or_(*(column.like(bind(v), escape="!") for v in values))
    if op == "range":
        low, high = values
        conditions = [column != ""]
        if low is not None:
            conditions.append(column >= bind(low))
        if high is not None:
            conditions.append(column <= bind(high))
        return and_(*conditions)
    assert op == "false", op
    return false()


def _condition(key: Key, value: str, *, sqlite: bool, case_insensitive: bool) -> ColumnElement[bool] | None:
    """The SQL for one non-empty matching key, or None when the value cannot restrict (counts)."""
    plan = _plan(key, value, sqlite=sqlite, case_insensitive=case_insensitive)
    return None if plan is None else _render(plan, lambda v: v)


def _value(key: Key, raw: Any) -> Any:
    if raw is None:
        return None
    if key.kind == "modalities":
        return [c for c in str(raw).split("\\") if c] or None
    if key.kind in ("int", "count"):
        return str(raw)
    return raw if raw != "" else None


def _element_value(identifier: Dataset, keyword: str) -> str:
    elem = identifier.data_element(keyword)
    if elem is None or elem.value is None or elem.VR == "SQ":
        return ""
    value = elem.value
    if isinstance(value, MultiValue | list | tuple):
        return "\\".join(str(v) for v in value)
    return str(value).strip()


def _find_plan(
    query: FindQuery, level: int, *, sqlite: bool, case_insensitive: bool
) -> tuple[list[str], list[Plan]]:
    """The keywords (in order) the answers carry, and how the identifier's matching keys restrict."""
    identifier = query.identifier
    returned: list[str] = []
    plans: list[Plan] = []
    for elem in identifier:
        if elem.tag.group == 0x0000:
            continue
        keyword = keyword_for_tag(elem.tag)
        key = KEYS.get(keyword)
        if keyword in _NOT_KEYS or key is None or key.level > level:
            continue
        returned.append(keyword)
        value = _element_value(identifier, keyword)
        if value and value != "*":
            plan = _plan(key, value, sqlite=sqlite, case_insensitive=case_insensitive)
            if plan is not None:
                plans.append(plan)
    first = _PATIENT if query.model == "patient" else _STUDY
    for lvl in range(first, level + 1):
        if _UNIQUE[lvl] not in returned:
            returned.append(_UNIQUE[lvl])
    return returned, plans


def _statement(level: int, returned: list[str], plans: list[Plan], bind: Callable[[Any], Any]) -> Select[Any]:
    stmt = select(*(KEYS[k].column.label(k) for k in returned)).select_from(_TABLES[level])
    # join upwards: every row at the query level has exactly one parent per level, so no duplicates
    if level >= _IMAGE:
        stmt = stmt.join(PacsSeries, PacsSeries.pk == PacsInstance.series_pk)
    if level >= _SERIES:
        stmt = stmt.join(PacsStudy, PacsStudy.pk == PacsSeries.study_pk)
    if level >= _STUDY:
        stmt = stmt.join(PacsPatient, PacsPatient.pk == PacsStudy.patient_pk)
    if plans:
        stmt = stmt.where(and_(*(_render(plan, bind) for plan in plans)))
    return stmt.order_by(_TABLES[level].pk)


def build_select(
    query: FindQuery, level: int, *, sqlite: bool, case_insensitive: bool
) -> tuple[Select[Any], list[str]]:
    """The SELECT answering ``query`` and the keywords (in order) its columns carry."""
    returned, plans = _find_plan(query, level, sqlite=sqlite, case_insensitive=case_insensitive)
    return _statement(level, returned, plans, lambda v: v), returned


class _Numbered:
    """Binds a statement's values as parameters v0, v1, ... in the order ``_render`` asks for them."""

    def __init__(self) -> None:
        self.count = 0

    def __call__(self, value: Any) -> Any:
        param = bindparam(f"v{self.count}", value)
        self.count += 1
        return param


#: compiled C-FIND statements by dialect and query shape (the same keys asked with the same kinds of
#: values): a query of a known shape costs its values and the driver's execute, not SQLAlchemy's
#: statement building, cache-key walk and execution context (~0.5 ms of a study query's CPU)
_COMPILED: dict[tuple[Any, ...], CompiledStatement | None] = {}
_COMPILED_MAX = 512
_MISSING = object()


def _compiled(
    db: Database, shape: tuple[Any, ...], build: Callable[[], Select[Any]]
) -> CompiledStatement | None:
    dialect = db.engine.dialect
    key = (dialect.name, dialect.driver, shape)
    # one read: another association's thread may clear the cache between a membership test and a lookup
    found = _COMPILED.get(key, _MISSING)
    if found is not _MISSING:
        return found  # type: ignore[return-value]
    stmt = build()
    form: CompiledStatement | None = None
    # only columns whose driver values are the final values (text, integers) may skip SQLAlchemy's
    # result processing; anything else keeps the ordinary execute path
    if all(
        column.type.dialect_impl(dialect).result_processor(dialect, None) is None
        for column in stmt.selected_columns
    ):
        compiled = stmt.compile(dialect=dialect)
        assert isinstance(compiled, SQLCompiler)
        form = CompiledStatement(compiled, dialect)
    if len(_COMPILED) >= _COMPILED_MAX:
        _COMPILED.clear()
    _COMPILED[key] = form
    return form


def _select_rows(
    db: Database, query: FindQuery, level: int, *, case_insensitive: bool, limit: int
) -> tuple[list[tuple[Any, ...]], list[str]]:
    returned, plans = _find_plan(query, level, sqlite=db.is_sqlite, case_insensitive=case_insensitive)
    shape = (
        level,
        limit,
        tuple(returned),
        tuple((op, column.key, tuple(v is None for v in values)) for op, column, values in plans),
    )
    values = [v for _, _, plan_values in plans for v in plan_values if v is not None]
    params = {f"v{n}": v for n, v in enumerate(values)}

    def build() -> Select[Any]:
        return _statement(level, returned, plans, _Numbered()).limit(limit)

    form = _compiled(db, shape, build)
    if form is None:
        with db.engine.connect() as conn:
            return [tuple(row) for row in conn.execute(build(), params)], returned
    return read_rows(db.engine, form.sql, form.parameters(params)), returned


def query_level(query: FindQuery) -> int:
    raw = str(query.identifier.get("QueryRetrieveLevel", "")).strip().upper()
    if raw not in LEVELS:
        raise QueryError(status.IDENTIFIER_DOES_NOT_MATCH_SOP_CLASS, "missing or invalid QueryRetrieveLevel")
    level = LEVELS.index(raw)
    if query.model == "study" and level == _PATIENT:
        raise QueryError(
            status.IDENTIFIER_DOES_NOT_MATCH_SOP_CLASS, "the Study Root model has no PATIENT level"
        )
    return level


def run_find(
    db: Database,
    query: FindQuery,
    *,
    case_insensitive: bool = True,
    limit: int = 10_000,
    is_cancelled: Callable[[], bool] = lambda: False,
    retrieve_ae_title: str = "",
) -> Iterator[tuple[int, Dataset | None]]:
    """Yield ``(PENDING, identifier)`` per match, then ``(SUCCESS, None)``; ``(CANCEL, None)`` when the
    peer cancelled; a failure status when the identifier cannot be answered."""
    try:
        level = query_level(query)
    except QueryError as exc:
        yield exc.status, None
        return
    rows, returned = _select_rows(db, query, level, case_insensitive=case_insensitive, limit=limit)
    requested = {keyword_for_tag(e.tag) for e in query.identifier if e.tag.group != 0x0000}
    # answered for every match without the index: where to retrieve from, and that it is on line
    constant = {"RetrieveAETitle": retrieve_ae_title or None, "InstanceAvailability": "ONLINE"}
    unknown = [
        kw for kw in requested if kw and kw not in KEYS and kw not in _NOT_KEYS and kw not in constant
    ]  # returned empty (zero length): PS3.4 C.4.1.1.3.2 allows it
    # the elements every answer shares, worked out once per query rather than once per match
    fixed: list[tuple[str, Any]] = [
        ("SpecificCharacterSet", "ISO_IR 192"),
        ("QueryRetrieveLevel", LEVELS[level]),
    ]
    fixed += [(kw, value) for kw, value in constant.items() if kw in requested]
    for keyword in unknown:
        elem = query.identifier.data_element(keyword)
        if elem is not None and elem.VR != "SQ":
            fixed.append((keyword, None))
    # keys of a deeper level than the query level: returned empty, not matched
    fixed += [(kw, None) for kw in requested if kw in KEYS and kw not in returned]
    columns = [(_spec(kw), KEYS[kw]) for kw in returned]
    constants = [(_spec(kw), value) for kw, value in fixed]
    for row in rows:
        if is_cancelled():
            yield status.CANCEL, None
            return
        # DataElements straight into the Dataset: setattr by keyword looks the tag and VR up every time.
        # No value validation here (half of an element's cost): the values are the index's, read from
        # the stored objects, and an answer reports what is stored
        elements = {
            tag: DataElement(tag, vr, value, validation_mode=IGNORE) for (tag, vr), value in constants
        }
        for ((tag, vr), key), raw in zip(columns, row, strict=True):
            elements[tag] = DataElement(tag, vr, _value(key, raw), validation_mode=IGNORE)
        yield status.PENDING, Dataset(elements)
    yield status.SUCCESS, None


@cache
def _spec(keyword: str) -> tuple[BaseTag, str]:
    """The tag and dictionary VR of a keyword the answers carry."""
    tag = Tag(keyword)
    return tag, dictionary_VR(tag)
