"""Parse FHIR search parameters (R4 3.1.1) into the typed :class:`~engine.fhir.search.model.SearchQuery`.

Pure: no SQL, no HTTP. Unknown parameters are collected in ``SearchQuery.ignored`` (lenient handling; the REST
layer answers 400 under ``Prefer: handling=strict``); malformed values raise InvalidInput naming the
parameter. Escaping follows 3.1.1.6.1: ``\\,`` ``\\|`` ``\\$`` ``\\\\`` stand for the literal characters.
"""

from __future__ import annotations

import re
from collections.abc import Sequence
from decimal import Decimal, InvalidOperation

from engine.errors import InvalidInput
from engine.fhir.search.dates import date_range
from engine.fhir.search.model import (
    PREFIXES,
    Criterion,
    DateValue,
    HasCriterion,
    Include,
    NumberValue,
    Prefix,
    QuantityValue,
    ReferenceValue,
    SearchQuery,
    SortKey,
    StringValue,
    TokenValue,
    UriValue,
    Value,
)
from engine.fhir.search.registry import SearchParameterDef, SearchRegistry, default_registry

__all__ = ["parse_search", "split_unescaped", "unescape", "DEFAULT_COUNT", "MAX_COUNT"]

DEFAULT_COUNT = 50
MAX_COUNT = 1000
#: largest _offset/_count accepted (SQL integers; a client paging that deep wants another query)
MAX_OFFSET = 2**31 - 1

#: result parameters handled by the transport (format negotiation), never reported as unknown
TRANSPORT_PARAMETERS = frozenset({"_format", "_pretty"})
_SUMMARY = frozenset({"true", "text", "data", "count", "false"})
_TOTAL = frozenset({"accurate", "estimate", "none"})
_MODIFIERS = {
    "string": {"exact", "contains", "missing"},
    "token": {"not", "missing", "text"},
    "date": {"missing"},
    "number": {"missing"},
    "quantity": {"missing"},
    "reference": {"missing", "identifier"},
    "uri": {"missing", "below", "above"},
}
_ID = re.compile(r"^[A-Za-z0-9\-.]{1,64}\Z")
_TYPE = re.compile(r"^[A-Z][A-Za-z]{1,63}\Z")


def split_unescaped(value: str, sep: str) -> list[str]:
    """Split on ``sep`` where it is not escaped by a backslash; escapes are kept for the next level."""
    parts, current, i = [], [], 0
    while i < len(value):
        ch = value[i]
        if ch == "\\" and i + 1 < len(value):
            current.append(value[i : i + 2])
            i += 2
            continue
        if ch == sep:
            parts.append("".join(current))
            current = []
        else:
            current.append(ch)
        i += 1
    parts.append("".join(current))
    return parts


def unescape(value: str) -> str:
    return re.sub(r"\\([,|$\\])", r"\1", value)


def _prefixed(value: str) -> tuple[Prefix, str]:
    if len(value) > 2 and value[:2] in PREFIXES and (value[2].isdigit() or value[2] in "-."):
        return value[:2], value[2:]  # type: ignore[return-value]
    return "eq", value


def _decimal(name: str, text: str) -> tuple[Decimal, Decimal, Decimal]:
    try:
        number = Decimal(text)
    except InvalidOperation:
        raise InvalidInput(f"parameter {name}: {text!r} is not a number", location=name) from None
    if not number.is_finite():
        raise InvalidInput(f"parameter {name}: {text!r} is not a number", location=name)
    # R4 3.1.1.4.2: 100 means [99.5, 100.5) — half a unit of the last written digit either way
    half = Decimal(5).scaleb(number.as_tuple().exponent - 1)  # type: ignore[operator]
    return number, number - half, number + half


class _Parser:
    def __init__(self, registry: SearchRegistry, base_url: str | None) -> None:
        self.registry = registry
        self.base_url = base_url.rstrip("/") + "/" if base_url else None

    # -- values ---------------------------------------------------------------------------------------
    def value(self, spd: SearchParameterDef, modifier: str | None, name: str, raw: str) -> Value:
        kind = spd.type
        if kind == "token" and modifier == "text":
            return StringValue(unescape(raw))
        if kind == "reference" and modifier == "identifier":
            kind = "token"
        if kind == "token":
            pieces = split_unescaped(raw, "|")
            if len(pieces) == 1:
                return TokenValue(None, unescape(pieces[0]))
            if len(pieces) != 2:
                raise InvalidInput(
                    f"parameter {name}: {raw!r} has more than one unescaped '|'", location=name
                )
            system, code = unescape(pieces[0]), unescape(pieces[1])
            return TokenValue(system, code or None)
        if kind == "string":
            return StringValue(unescape(raw))
        if kind == "uri":
            return UriValue(unescape(raw))
        if kind == "date":
            prefix, text = _prefixed(raw)
            try:
                low, high = date_range(text)
            except ValueError:
                raise InvalidInput(
                    f"parameter {name}: {raw!r} is not a date (YYYY[-MM[-DD[Thh:mm[:ss][Z|+hh:mm]]]])",
                    location=name,
                ) from None
            return DateValue(prefix, low, high)
        if kind == "number":
            prefix, text = _prefixed(raw)
            number, low, high = _decimal(name, text)
            return NumberValue(prefix, number, low, high)
        if kind == "quantity":
            prefix, text = _prefixed(raw)
            pieces = [unescape(p) for p in split_unescaped(text, "|")]
            if len(pieces) not in (1, 3):
                raise InvalidInput(
                    f"parameter {name}: {raw!r} is not [prefix]number[|system|code]", location=name
                )
            number, low, high = _decimal(name, pieces[0])
            system = pieces[1] or None if len(pieces) == 3 else None
            code = pieces[2] or None if len(pieces) == 3 else None
            return QuantityValue(prefix, number, low, high, system, code)
        if kind == "reference":
            return self.reference(spd, modifier, name, unescape(raw))
        raise InvalidInput(f"parameter {name}: type {kind} is not searchable", location=name)

    def reference(self, spd: SearchParameterDef, modifier: str | None, name: str, raw: str) -> ReferenceValue:
        type_hint = modifier if modifier and _TYPE.match(modifier) else None
        if "://" in raw or raw.startswith("urn:"):
            if self.base_url and raw.startswith(self.base_url):
                raw = raw[len(self.base_url) :]
            else:
                return ReferenceValue(None, None, raw)
        parts = raw.split("/")
        if len(parts) >= 4 and parts[-2] == "_history":
            parts = parts[:-2]
        if len(parts) == 1:
            ref_type, ref_id = type_hint, parts[0]
        elif len(parts) == 2 and _TYPE.match(parts[0]):
            ref_type, ref_id = parts
            if type_hint and type_hint != ref_type:
                raise InvalidInput(f"parameter {name}: {raw!r} is not a {type_hint}", location=name)
        else:
            raise InvalidInput(f"parameter {name}: {raw!r} is not Type/id, id or a URL", location=name)
        if not _ID.match(ref_id):
            raise InvalidInput(f"parameter {name}: {ref_id!r} is not a valid resource id", location=name)
        return ReferenceValue(ref_type, ref_id)

    # -- criteria -------------------------------------------------------------------------------------
    def criterion(
        self, resource_type: str | None, name: str, raw: str, *, chained: bool = False
    ) -> Criterion | None:
        head, dot, rest = name.partition(".")
        code, _, modifier = head.partition(":")
        spd = self.registry.get(resource_type, code)
        if spd is None:
            return None
        mod = modifier or None
        if dot:
            if chained:
                raise InvalidInput(
                    f"parameter {name}: chains deeper than one level are not supported", location=name
                )
            if spd.type != "reference":
                raise InvalidInput(
                    f"parameter {name}: only reference parameters can be chained", location=name
                )
            targets = [mod] if mod else list(spd.targets)
            found: list[tuple[str, Criterion]] = []
            for target in targets:
                if self.registry.supports(target):
                    inner = self.criterion(target, rest, raw, chained=True)
                    if inner is not None:
                        found.append((target, inner))
            if not found:
                raise InvalidInput(
                    f"parameter {name}: {rest!r} is not a search parameter of {'/'.join(targets)}",
                    location=name,
                )
            return Criterion(spd, mod, chain=found[0][1], target_types=tuple(t for t, _ in found))
        if (
            mod is not None
            and mod not in _MODIFIERS.get(spd.type, set())
            and not (spd.type == "reference" and _TYPE.match(mod))
        ):
            raise InvalidInput(
                f"parameter {name}: modifier :{mod} is not supported for {spd.type} parameters", location=name
            )
        if mod == "missing":
            if raw not in ("true", "false"):
                raise InvalidInput(f"parameter {name}: :missing takes true or false", location=name)
            return Criterion(spd, mod, missing=raw == "true")
        values = tuple(self.value(spd, mod, name, part) for part in split_unescaped(raw, ",") if part != "")
        if not values:
            raise InvalidInput(f"parameter {name}: empty value", location=name)
        return Criterion(spd, mod, values)

    def has(self, resource_type: str | None, name: str, raw: str) -> HasCriterion:
        parts = name.split(":", 3)
        if len(parts) != 4 or not all(parts[1:]):
            raise InvalidInput(f"parameter {name}: expected _has:Type:reference-param:param", location=name)
        _, source_type, ref_code, rest = parts
        if rest.startswith("_has"):
            raise InvalidInput(f"parameter {name}: nested _has is not supported", location=name)
        ref = self.registry.get(source_type, ref_code)
        if ref is None or ref.type != "reference":
            raise InvalidInput(
                f"parameter {name}: {source_type}.{ref_code} is not a reference parameter", location=name
            )
        if resource_type and ref.targets and resource_type not in ref.targets:
            raise InvalidInput(
                f"parameter {name}: {source_type}.{ref_code} cannot refer to {resource_type}", location=name
            )
        inner = self.criterion(source_type, rest, raw)
        if inner is None:
            raise InvalidInput(
                f"parameter {name}: {rest!r} is not a search parameter of {source_type}", location=name
            )
        return HasCriterion(source_type, ref, inner)

    def include(self, name: str, raw: str, resource_type: str | None, rev: bool) -> Include:
        iterate = name.endswith((":iterate", ":recurse"))
        pieces = raw.split(":")
        if raw == "*" or (len(pieces) >= 2 and pieces[1] == "*"):
            source = resource_type if raw == "*" else pieces[0]
            if not source or not self.registry.supports(source):
                raise InvalidInput(
                    f"parameter {name}: {raw!r} names no supported resource type", location=name
                )
            return Include(source, None, None, iterate)
        if len(pieces) not in (2, 3) or not self.registry.supports(pieces[0]):
            raise InvalidInput(
                f"parameter {name}: expected SourceType:param[:TargetType], got {raw!r}", location=name
            )
        spd = self.registry.get(pieces[0], pieces[1])
        if spd is None or spd.type != "reference":
            raise InvalidInput(
                f"parameter {name}: {pieces[0]}.{pieces[1]} is not a reference parameter", location=name
            )
        target = pieces[2] if len(pieces) == 3 else None
        return Include(pieces[0], spd, target, iterate)

    def sort(self, resource_type: str | None, raw: str) -> list[SortKey]:
        keys = []
        for item in raw.split(","):
            item = item.strip()
            if not item:
                continue
            descending = item.startswith("-")
            code = item.lstrip("-")
            spd = self.registry.get(resource_type, code)
            if spd is None:
                raise InvalidInput(
                    f"parameter _sort: {code!r} is not a search parameter of {resource_type or 'Resource'}",
                    location="_sort",
                )
            keys.append(SortKey(spd, descending))
        return keys


def _int(name: str, raw: str) -> int:
    try:
        number = int(raw)
    except ValueError:
        raise InvalidInput(f"parameter {name}: {raw!r} is not a whole number", location=name) from None
    if number < 0:
        raise InvalidInput(f"parameter {name}: must not be negative", location=name)
    if number > MAX_OFFSET:
        raise InvalidInput(f"parameter {name}: must not exceed {MAX_OFFSET}", location=name)
    return number


def parse_search(
    resource_type: str | None,
    params: Sequence[tuple[str, str]],
    *,
    registry: SearchRegistry | None = None,
    base_url: str | None = None,
    default_count: int = DEFAULT_COUNT,
    max_count: int = MAX_COUNT,
) -> SearchQuery:
    """Parse ``params`` (ordered name/value pairs) for a search of ``resource_type`` (None: all types).

    ``base_url`` is this server's FHIR base: absolute references under it are treated as local."""
    registry = registry or default_registry()
    parser = _Parser(registry, base_url)
    query = SearchQuery(resource_type, count=default_count)
    for name, raw in params:
        # NUL never reaches an index (PostgreSQL text cannot hold it): searched values drop it the same way
        name, raw = name.replace("\x00", ""), raw.replace("\x00", "")
        if name in TRANSPORT_PARAMETERS:
            continue
        if name == "_count":
            query.count = min(_int(name, raw), max_count)
        elif name in ("_offset", "_getpagesoffset"):
            query.offset = _int(name, raw)
        elif name == "_sort":
            query.sort.extend(parser.sort(resource_type, raw))
        elif name.split(":")[0] in ("_include", "_revinclude"):
            target = query.revincludes if name.startswith("_revinclude") else query.includes
            for item in raw.split(","):
                target.append(parser.include(name, item, resource_type, name.startswith("_revinclude")))
        elif name == "_summary":
            if raw not in _SUMMARY:
                raise InvalidInput(
                    f"parameter _summary: {raw!r} is not one of {', '.join(sorted(_SUMMARY))}", location=name
                )
            query.summary = raw
        elif name == "_elements":
            query.elements = tuple(e.strip() for e in raw.split(",") if e.strip())
        elif name == "_total":
            if raw not in _TOTAL:
                raise InvalidInput(
                    f"parameter _total: {raw!r} is not one of accurate, estimate, none", location=name
                )
            query.total = raw
        elif name.startswith("_has:"):
            query.criteria.append(parser.has(resource_type, name, raw))
        else:
            criterion = parser.criterion(resource_type, name, raw)
            if criterion is None:
                query.ignored.append((name, raw))
            else:
                query.criteria.append(criterion)
    return query
