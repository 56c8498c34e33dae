"""The typed search query (engine.fhir.search.model) as SQL over the index tables — Core expressions only,
identical on SQLite and PostgreSQL.

Each index criterion selects ``resource_pk FROM <index> WHERE resource_type=? AND param=? AND <value test>``
(an index-only range scan on the covering (resource_type, param, value..., resource_pk) indexes); several are
intersected, and a search made only of them pages over those keys before touching resource rows
(:func:`criteria_parts`). Negations, ``:missing``, ``_id``/``_lastUpdated`` and ``_has`` stay tests on the
resource row. A single-key ``_sort`` walks the sort index in order (:class:`SortedKeysWalk`). Ranges follow
R4 3.1.1.4: stored dates and searched dates are both [low, high] ranges.
"""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from typing import Any

from sqlalchemy import (
    ColumnElement,
    Select,
    Table,
    and_,
    exists,
    false,
    func,
    intersect,
    literal_column,
    not_,
    or_,
    select,
    true,
)
from sqlalchemy.sql.expression import FromClause

from engine.errors import InvalidInput
from engine.fhir.search.dates import DATE_MAX, DATE_MIN, to_utc_naive
from engine.fhir.search.model import (
    Criterion,
    DateValue,
    HasCriterion,
    NumberValue,
    QuantityValue,
    ReferenceValue,
    SortKey,
    StringValue,
    TokenValue,
    UriValue,
)
from engine.fhir.search.registry import COLUMN_PARAMETERS
from services.records.indexing import normalize
from services.records.models import (
    DateIndex,
    NumberIndex,
    QuantityIndex,
    ReferenceIndex,
    ResourceRow,
    StringIndex,
    TokenIndex,
    UriIndex,
)
from services.records.ucum import UCUM_SYSTEM, canonical

__all__ = [
    "criteria_parts",
    "criteria_clause",
    "sorted_keys_walk",
    "SortedKeysWalk",
    "sort_columns",
    "RESOURCE",
    "INDEX_TABLES",
]

RESOURCE: Table = ResourceRow.__table__  # type: ignore[assignment]
INDEX_TABLES: dict[str, Table] = {
    "token": TokenIndex.__table__,  # type: ignore[dict-item]
    "string": StringIndex.__table__,  # type: ignore[dict-item]
    "date": DateIndex.__table__,  # type: ignore[dict-item]
    "number": NumberIndex.__table__,  # type: ignore[dict-item]
    "quantity": QuantityIndex.__table__,  # type: ignore[dict-item]
    "reference": ReferenceIndex.__table__,  # type: ignore[dict-item]
    "uri": UriIndex.__table__,  # type: ignore[dict-item]
}
_FLOAT_EPS = 1e-9


def _like_escape(text: str) -> str:
    return text.replace("\\", "\\\\").replace("%", "\\%").replace("_", "\\_")


def _prefix_range(column: Any, prefix: str) -> ColumnElement[bool]:
    """starts-with as an index range (binary order of the normalized text) instead of LIKE."""
    if not prefix:
        return true()
    upper = prefix[:-1] + chr(ord(prefix[-1]) + 1)
    return and_(column >= prefix, column < upper)


def _date_test(low: Any, high: Any, value: DateValue) -> ColumnElement[bool]:
    """R4 3.1.1.4.3: the target range [low, high] against the search range [sl, sh]."""
    sl, sh = value.low, value.high
    match value.prefix:
        case "eq":
            return and_(low >= sl, high <= sh)
        case "ne":
            return not_(and_(low >= sl, high <= sh))
        case "gt":
            return high > sh
        case "lt":
            return low < sl
        case "ge":
            return high >= sl
        case "le":
            return low <= sh
        case "sa":
            return low > sh
        case "eb":
            return high < sl
        case _:  # ap: overlap, widened by 10% of the distance to now (at least a day)
            now = to_utc_naive(datetime.now(UTC))
            span = timedelta(seconds=max(abs((now - sl).total_seconds()) * 0.1, 86400.0))
            upper = sh + span if DATE_MAX - sh > span else DATE_MAX
            lower = sl - span if sl - DATE_MIN > span else DATE_MIN
            return and_(low <= upper, high >= lower)


def _number_test(
    low: Any, high: Any, prefix: str, v: float, vlow: float, vhigh: float
) -> ColumnElement[bool]:
    """R4 3.1.1.4.2: eq/ne use the precision range [vlow, vhigh) of the searched number."""
    match prefix:
        case "eq":
            return and_(low >= vlow, high < vhigh)
        case "ne":
            return not_(and_(low >= vlow, high < vhigh))
        case "gt" | "sa":
            return high > v
        case "lt" | "eb":
            return low < v
        case "ge":
            return high >= v
        case "le":
            return low <= v
        case _:  # ap: within 10%
            delta = abs(v) * 0.1
            return and_(low <= v + delta, high >= v - delta)


class _Builder:
    def __init__(self, base_url: str | None) -> None:
        self.base_url = base_url
        self.narrowed = False
        """True when index criteria already narrow the search: _has then probes per candidate."""

    # -- values ------------------------------------------------------------------------------------------
    def value_test(self, crit: Criterion, t: Table, value: Any) -> ColumnElement[bool]:
        kind = crit.param.type
        if isinstance(value, TokenValue):
            if kind == "reference":  # :identifier
                return self._token(t.c.ident_system, t.c.ident_value, value)
            return self._token(t.c.system, t.c.code, value)
        if isinstance(value, StringValue):
            if crit.modifier == "exact":
                return t.c.value == value.value
            norm = normalize(value.value)
            if crit.modifier == "contains":
                return t.c.value_norm.like(f"%{_like_escape(norm)}%", escape="\\")
            return _prefix_range(t.c.value_norm, norm)
        if isinstance(value, DateValue):
            return _date_test(t.c.low, t.c.high, value)
        if isinstance(value, NumberValue):
            return _number_test(
                t.c.value, t.c.value, value.prefix, float(value.value), float(value.low), float(value.high)
            )
        if isinstance(value, QuantityValue):
            return self._quantity(t, value)
        if isinstance(value, ReferenceValue):
            if value.id is None:
                return t.c.url == value.url
            test = and_(t.c.target_id == value.id, t.c.url.is_(None))
            if value.type:
                test = and_(test, t.c.target_type == value.type)
            return test
        if isinstance(value, UriValue):
            if crit.modifier == "below":
                return t.c.uri.like(f"{_like_escape(value.value)}%", escape="\\")
            if crit.modifier == "above":
                cuts = [i for i, ch in enumerate(value.value) if ch == "/"]
                prefixes = {
                    value.value,
                    *(value.value[:i] for i in cuts),
                    *(value.value[: i + 1] for i in cuts),
                }
                prefixes.discard("")
                return t.c.uri.in_(sorted(prefixes))
            return t.c.uri == value.value
        raise InvalidInput(f"parameter {crit.param.code}: unsupported value")

    @staticmethod
    def _token(system_col: Any, code_col: Any, value: TokenValue) -> ColumnElement[bool]:
        tests = []
        if value.code is not None:
            tests.append(code_col == value.code)
        if value.system == "":
            tests.append(system_col.is_(None))
        elif value.system is not None:
            tests.append(system_col == value.system)
        return and_(*tests) if tests else true()

    @staticmethod
    def _quantity(t: Table, value: QuantityValue) -> ColumnElement[bool]:
        v, vlow, vhigh = float(value.value), float(value.low), float(value.high)
        if value.code and value.system in (None, UCUM_SYSTEM):
            canon_code, factor_v = canonical(value.code, v)
            if canon_code is not None and factor_v is not None:
                factor = factor_v / v if v else canonical(value.code, 1.0)[1] or 1.0
                return and_(
                    t.c.canon_code == canon_code,
                    _number_test(
                        t.c.canon_low, t.c.canon_high, value.prefix, v * factor, vlow * factor, vhigh * factor
                    ),
                )
        tests = [_number_test(t.c.low, t.c.high, value.prefix, v, vlow, vhigh)]
        if value.system:
            tests.append(t.c.system == value.system)
        if value.code:
            tests.append(t.c.code == value.code)
        return and_(*tests)

    # -- criteria ---------------------------------------------------------------------------------------
    def criterion(
        self, r: FromClause, resource_type: str | tuple[str, ...] | None, crit: Criterion | HasCriterion
    ) -> ColumnElement[bool]:
        """``resource_type``: the searched type, the possible targets of a chain, or None (all types)."""
        if isinstance(crit, HasCriterion):
            return self._has(r, resource_type, crit)
        code = crit.param.code
        if code == "_id":
            return self._column_id(r, crit)
        if code == "_lastUpdated":
            return self._column_updated(r, crit)
        kind = "string" if crit.modifier == "text" else crit.param.type
        t = INDEX_TABLES[kind]
        param = f"{code}:text" if crit.modifier == "text" else code
        scope = [t.c.param == param]
        if isinstance(resource_type, tuple):
            scope.insert(0, t.c.resource_type.in_(resource_type))
        elif resource_type is not None:
            scope.insert(0, t.c.resource_type == resource_type)
        if crit.chain is not None:
            return r.c.pk.in_(self._chain(t, scope, crit))
        if crit.missing is not None:
            present = r.c.pk.in_(select(t.c.resource_pk).where(*scope))
            return not_(present) if crit.missing else present
        tests = [self.value_test(crit, t, v) for v in crit.values]
        matching = select(t.c.resource_pk).where(*scope, or_(*tests))
        if crit.modifier == "not":  # R4: resources without a matching value, including those without any
            return r.c.pk.not_in(matching)
        return r.c.pk.in_(matching)

    def matching(self, resource_type: str | None, crit: Criterion | HasCriterion) -> Select[Any] | None:
        """The resource keys an index criterion matches, or None when the criterion is not of that kind
        (negations, :missing, column parameters, _has): those stay tests on the resource row."""
        if isinstance(crit, HasCriterion) or crit.param.code in COLUMN_PARAMETERS:
            return None
        if crit.missing is not None or crit.modifier == "not":
            return None
        kind = "string" if crit.modifier == "text" else crit.param.type
        t = INDEX_TABLES[kind]
        param = f"{crit.param.code}:text" if crit.modifier == "text" else crit.param.code
        scope: list[Any] = [t.c.param == param]
        if resource_type is not None:
            scope.insert(0, t.c.resource_type == resource_type)
        if crit.chain is not None:
            return self._chain(t, scope, crit)
        return select(t.c.resource_pk).where(*scope, or_(*[self.value_test(crit, t, v) for v in crit.values]))

    def _column_id(self, r: FromClause, crit: Criterion) -> ColumnElement[bool]:
        if crit.missing is not None:
            return false() if crit.missing else true()
        ids = [v.code for v in crit.values if isinstance(v, TokenValue)]
        return r.c.fhir_id.not_in(ids) if crit.modifier == "not" else r.c.fhir_id.in_(ids)

    def _column_updated(self, r: FromClause, crit: Criterion) -> ColumnElement[bool]:
        if crit.missing is not None:
            return false() if crit.missing else true()
        return or_(
            *[
                _date_test(r.c.last_updated, r.c.last_updated, v)
                for v in crit.values
                if isinstance(v, DateValue)
            ]
        )

    def _chain(self, ref: Table, scope: list[Any], crit: Criterion) -> Select[Any]:
        """References whose target (of each allowed type) matches the chained criterion, written as
        ``target_id IN (ids of matching targets)`` per type so both planners start from the few matching
        targets and probe the (resource_type, param, target_id, target_type) index, instead of joining
        every reference of the parameter to its target."""
        assert crit.chain is not None
        target = RESOURCE.alias("chain_target")
        per_type = []
        for target_type in crit.target_types:
            ids = select(target.c.fhir_id).where(
                target.c.resource_type == target_type,
                target.c.deleted == false(),
                # the index scans need the target type as their leading key column
                self.criterion(target, target_type, crit.chain),
            )
            per_type.append(and_(ref.c.target_type == target_type, ref.c.target_id.in_(ids)))
        return select(ref.c.resource_pk).where(*scope, ref.c.url.is_(None), or_(*per_type))

    def _has(
        self, r: FromClause, resource_type: str | tuple[str, ...] | None, has: HasCriterion
    ) -> ColumnElement[bool]:
        """Resources that a ``source_type`` resource matching the inner criterion refers to by ``param``.
        Alone: ``fhir_id IN (targets of the matching sources)``. Narrowed by index criteria: a correlated
        EXISTS on the (target_type, target_id, ...) index, probing the few candidates' references instead
        of listing every matching source's target."""
        ref = INDEX_TABLES["reference"]
        sources = self.matching(has.source_type, has.criterion)
        if sources is None:  # a negation or :missing inside: test it on the source rows
            source = RESOURCE.alias("has_source")
            sources = select(source.c.pk).where(
                source.c.resource_type == has.source_type,
                source.c.deleted == false(),
                self.criterion(source, has.source_type, has.criterion),
            )
        if not self.narrowed:
            # alone, _has is best answered as the list of targets its sources refer to
            listed = [
                ref.c.resource_type == has.source_type,
                ref.c.param == has.reference_param.code,
                ref.c.url.is_(None),
                ref.c.resource_pk.in_(sources),
            ]
            if isinstance(resource_type, str):
                listed.append(ref.c.target_type == resource_type)
            return r.c.fhir_id.in_(select(ref.c.target_id).where(*listed))
        tests = [
            ref.c.target_type == (resource_type if isinstance(resource_type, str) else r.c.resource_type),
            ref.c.target_id == r.c.fhir_id,
            ref.c.resource_type == has.source_type,
            ref.c.param == has.reference_param.code,
            ref.c.url.is_(None),
            # "+ 0": a membership test on the probed rows, not an index key — SQLite would otherwise
            # iterate the whole IN list for every resource it checks
            (ref.c.resource_pk + 0).in_(sources),
        ]
        return exists(select(ref.c.resource_pk).where(*tests))


def criteria_parts(
    r: FromClause,
    resource_type: str | None,
    criteria: list[Criterion | HasCriterion],
    base_url: str | None = None,
) -> tuple[Any | None, list[ColumnElement[bool]]]:
    """(keys, clauses): ``keys`` selects the resource_pk values that every index criterion matches (not
    necessarily distinct: use it under IN, or apply DISTINCT)
    (an INTERSECT when there are several: both planners read each covering index range once instead of
    probing candidate rows criterion by criterion), None when there is no index criterion; ``clauses`` are
    the remaining tests on the resource table ``r`` (negations, :missing, _id, _lastUpdated, _has).

    Index rows exist only for the current, non-deleted version of a resource of the scoped type, so the
    keys need no further test on the resource row."""
    builder = _Builder(base_url)
    keys: list[Select[Any]] = []
    rest: list[Criterion | HasCriterion] = []
    driver: int | None = None
    for crit in criteria:
        sub = builder.matching(resource_type, crit)
        if sub is not None:
            if driver is None and _names_targets(crit):
                driver = len(keys)
            keys.append(sub)
        else:
            rest.append(crit)
    builder.narrowed = bool(keys)
    clauses = [builder.criterion(r, resource_type, crit) for crit in rest]
    if not keys:
        return None, clauses
    if len(keys) == 1:
        return keys[0], clauses
    if driver is not None:
        return _probed(keys.pop(driver), keys), clauses
    return intersect(*keys), clauses


def _names_targets(crit: Criterion | HasCriterion) -> bool:
    """A reference criterion naming its targets by id (``subject=Patient/1``): a handful of rows at most,
    where the other criteria (``code``, ``date=ge...``) may each match a large share of the table."""
    return (
        isinstance(crit, Criterion)
        and crit.param.type == "reference"
        and crit.chain is None
        and crit.modifier != "identifier"
        and bool(crit.values)
        and all(isinstance(v, ReferenceValue) and v.id is not None for v in crit.values)
    )


def _probed(driver: Select[Any], others: list[Select[Any]]) -> Select[Any]:
    """The driver's keys, each probed for the other criteria by EXISTS on the (resource_pk, param, ...)
    indexes. An INTERSECT reads every criterion's whole range: ``Observation?subject=…&code=…&date=ge…``
    read ~80,000 date and ~10,000 code index rows at 100k observations to keep 2 (docs/benchmarks.md)."""
    d = driver.subquery("driver")
    probes = [other.where(other.selected_columns[0] == d.c.resource_pk).exists() for other in others]
    return select(d.c.resource_pk).where(*probes)


def criteria_clause(
    r: FromClause,
    resource_type: str | None,
    criteria: list[Criterion | HasCriterion],
    base_url: str | None = None,
) -> list[ColumnElement[bool]]:
    """All criteria as WHERE terms on the resource table ``r``."""
    keys, clauses = criteria_parts(r, resource_type, criteria, base_url)
    return clauses if keys is None else [r.c.pk.in_(keys), *clauses]


_SORT_COLUMN = {
    "token": "code",
    "string": "value_norm",
    "number": "value",
    "quantity": "low",
    "reference": "target_id",
    "uri": "uri",
}


def sort_columns(r: FromClause, keys: list[SortKey], pk: Any = None) -> list[Any]:
    """ORDER BY terms: _id/_lastUpdated from columns of ``r``, others the min (asc) or max (desc) indexed
    value of each resource (correlated on ``pk``, default ``r.pk``, an index-only probe); resources without
    a value sort last either way (R4 3.1.1.5.3)."""
    pk = r.c.pk if pk is None else pk
    order: list[Any] = []
    for key in keys:
        code = key.param.code
        if code == "_id":
            column: Any = r.c.fhir_id
        elif code == "_lastUpdated":
            column = r.c.last_updated
        else:
            t = INDEX_TABLES[key.param.type]
            if key.param.type == "date":
                value_col = t.c.high if key.descending else t.c.low
            else:
                value_col = t.c[_SORT_COLUMN[key.param.type]]
            agg = func.max(value_col) if key.descending else func.min(value_col)
            column = select(agg).where(t.c.resource_pk == pk, t.c.param == code).scalar_subquery()
        order.append(column.desc().nulls_last() if key.descending else column.asc().nulls_last())
    return order


class SortedKeysWalk:
    """A page of matching keys in the order of one indexed sort parameter, read by walking that parameter's
    covering index in sort order and keeping the rows whose resource matches (a semi-join that stops at
    the page end), instead of computing the sort value of every match. Both planners choose the walk when
    matches are many and drive from the matches when they are few.

    Order: the min (asc) or max (desc) value of each resource, ties by resource key in the same direction,
    resources without a value last — the same total order as :func:`sort_columns` with that tie-break."""

    def __init__(self, keys: Any, resource_type: str | None, key: SortKey) -> None:
        """``keys``: the select of matching resource keys (used under IN, so duplicates do not matter and
        the planner sees the index criteria themselves rather than a DISTINCT it would hash)."""
        t = INDEX_TABLES[key.param.type]
        self.keys, self.t, self.descending = keys, t, key.descending
        if key.param.type == "date":
            column = t.c.high if key.descending else t.c.low
        else:
            column = t.c[_SORT_COLUMN[key.param.type]]
        self.scope = [t.c.param == key.param.code]
        if resource_type is not None:
            self.scope.insert(0, t.c.resource_type == resource_type)
        order = (
            [column.desc(), t.c.resource_pk.desc()]
            if key.descending
            else [column.asc(), t.c.resource_pk.asc()]
        )
        self.valued = select(t.c.resource_pk).where(*self.scope, t.c.resource_pk.in_(keys)).order_by(*order)

    def page(self, conn: Any, offset: int, limit: int) -> list[int]:
        return self._page(conn, offset, limit)

    def _page(self, conn: Any, offset: int, limit: int) -> list[int]:
        need = offset + limit
        fetch = max(2 * need, 64)
        while True:
            rows = [row[0] for row in conn.execute(self.valued.limit(inline_int(fetch)))]
            ordered = list(dict.fromkeys(rows))  # a resource's first row carries its min/max value
            exhausted = len(rows) < fetch
            if len(ordered) >= need or exhausted:
                break
            fetch *= 4
        if len(ordered) < need and exhausted:
            k = distinct_keys(self.keys).subquery("k")
            kpk = k.c.resource_pk
            unvalued = (
                select(kpk)
                .where(kpk.not_in(select(self.t.c.resource_pk).where(*self.scope)))
                .order_by(kpk.desc() if self.descending else kpk.asc())
                .limit(inline_int(need - len(ordered)))
            )
            ordered.extend(row[0] for row in conn.execute(unvalued))
        return ordered[offset:need]


def inline_int(value: int) -> Any:
    """LIMIT/OFFSET written into the SQL text: psycopg prepares a statement after a few executions, and a
    generic plan that does not know the LIMIT optimizes for all rows (hash join + sort) instead of an index
    walk that stops after the page."""
    return literal_column(str(int(value)))


def distinct_keys(keys: Any) -> Any:
    return keys.distinct() if isinstance(keys, Select) else keys  # INTERSECT is distinct already


def sorted_keys_walk(keys: Any, resource_type: str | None, key: SortKey) -> SortedKeysWalk | None:
    """The walk for a single sort key on an index parameter; None for _id/_lastUpdated (columns)."""
    if key.param.code in COLUMN_PARAMETERS:
        return None
    return SortedKeysWalk(keys, resource_type, key)
