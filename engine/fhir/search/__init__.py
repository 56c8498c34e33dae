"""FHIR search semantics without SQL: the parameter registry (from the official R4 definitions), date
precision ranges, and the parser that turns query parameters into a typed :class:`SearchQuery`."""

from engine.fhir.search.model import SearchQuery
from engine.fhir.search.parse import parse_search
from engine.fhir.search.registry import (
    SearchParameterDef,
    SearchRegistry,
    default_registry,
    supported_search_parameters,
)

__all__ = [
    "SearchQuery",
    "parse_search",
    "SearchParameterDef",
    "SearchRegistry",
    "default_registry",
    "supported_search_parameters",
]
