"""The typed search query: what a FHIR search asks for, independent of HTTP and SQL (R4 3.1.1).

A :class:`SearchQuery` is a conjunction of :class:`Criterion` (repeated parameters are AND); each criterion
holds one or more values (comma-separated values are OR). Values are typed by the parameter type.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import datetime
from decimal import Decimal
from typing import Literal

from engine.fhir.search.registry import SearchParameterDef

__all__ = [
    "PREFIXES",
    "Prefix",
    "TokenValue",
    "StringValue",
    "DateValue",
    "NumberValue",
    "QuantityValue",
    "ReferenceValue",
    "UriValue",
    "Value",
    "Criterion",
    "HasCriterion",
    "SortKey",
    "Include",
    "SearchQuery",
]

Prefix = Literal["eq", "ne", "gt", "lt", "ge", "le", "sa", "eb", "ap"]
PREFIXES: tuple[str, ...] = ("eq", "ne", "gt", "lt", "ge", "le", "sa", "eb", "ap")


@dataclass(frozen=True)
class TokenValue:
    """``[system]|[code]``: system None = any system; system "" = no system (``|code``); code None =
    any code of the system (``system|``)."""

    system: str | None
    code: str | None


@dataclass(frozen=True)
class StringValue:
    value: str


@dataclass(frozen=True)
class DateValue:
    prefix: Prefix
    low: datetime
    high: datetime
    """Inclusive naive-UTC range the searched value denotes at its precision."""


@dataclass(frozen=True)
class NumberValue:
    prefix: Prefix
    value: Decimal
    low: Decimal
    high: Decimal
    """[low, high) implied by the precision the value is written with (``5.4`` → [5.35, 5.45))."""


@dataclass(frozen=True)
class QuantityValue:
    prefix: Prefix
    value: Decimal
    low: Decimal
    high: Decimal
    system: str | None
    code: str | None
    """``code`` matches Quantity.code or Quantity.unit when no system is given (R4 3.1.1.4.6)."""


@dataclass(frozen=True)
class ReferenceValue:
    """``Type/id``, ``id`` (type None) or an absolute URL (``url``; type/id set too when it is local)."""

    type: str | None
    id: str | None
    url: str | None = None


@dataclass(frozen=True)
class UriValue:
    value: str


Value = TokenValue | StringValue | DateValue | NumberValue | QuantityValue | ReferenceValue | UriValue


@dataclass(frozen=True)
class Criterion:
    """One parameter occurrence: values ORed. ``modifier`` as written (``exact``, ``contains``, ``not``,
    ``missing``, ``text``, ``below``, ``above``, ``identifier`` or a resource type for references).

    A chained criterion (``subject:Patient.name=smith``) has ``chain``: the criterion to apply to the
    referenced resources of ``target_types``; its own ``values`` are then empty."""

    param: SearchParameterDef
    modifier: str | None = None
    values: tuple[Value, ...] = ()
    missing: bool | None = None
    chain: Criterion | None = None
    target_types: tuple[str, ...] = ()


@dataclass(frozen=True)
class HasCriterion:
    """``_has:Observation:subject:code=1234-5``: resources referenced via ``reference_param`` of a
    ``source_type`` resource that matches ``criterion``."""

    source_type: str
    reference_param: SearchParameterDef
    criterion: Criterion


@dataclass(frozen=True)
class SortKey:
    param: SearchParameterDef
    descending: bool = False


@dataclass(frozen=True)
class Include:
    """``_include=Observation:subject[:Patient]`` (or ``_revinclude``); ``param`` None means ``*``."""

    source_type: str
    param: SearchParameterDef | None
    target_type: str | None = None
    iterate: bool = False


@dataclass
class SearchQuery:
    resource_type: str | None
    criteria: list[Criterion | HasCriterion] = field(default_factory=list)
    sort: list[SortKey] = field(default_factory=list)
    count: int = 50
    offset: int = 0
    includes: list[Include] = field(default_factory=list)
    revincludes: list[Include] = field(default_factory=list)
    summary: str | None = None  # true | text | data | count | false
    elements: tuple[str, ...] = ()
    total: str | None = None  # accurate | estimate | none
    ignored: list[tuple[str, str]] = field(default_factory=list)
