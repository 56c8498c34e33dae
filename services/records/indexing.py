"""Search-index extraction: resource JSON → typed index rows, per the R4 SearchParameter expressions.

For each resource type the expressions are compiled once (:class:`Extractor` caches a plan per type). Each
FHIRPath result node becomes rows of the table for the parameter's type; values of a shape that type cannot
take (a malformed date, a Reference without a target) are skipped, never guessed.
"""

from __future__ import annotations

import math
import re
import unicodedata
from dataclasses import dataclass
from datetime import datetime
from typing import Any

from engine.fhir.fhirpath import Expression, Node
from engine.fhir.search.dates import DATE_MAX, DATE_MIN, date_range
from engine.fhir.search.registry import COLUMN_PARAMETERS, SearchRegistry
from services.records.models import ID_LEN, TYPE_LEN, URL_LEN, VALUE_LEN
from services.records.ucum import canonical

__all__ = ["Extractor", "IndexRows", "normalize", "parse_reference", "CONTACT_POINT_SYSTEMS"]

#: rows per index type ("token", "string", ...), each a dict of column values without resource_pk
IndexRows = dict[str, list[dict[str, Any]]]

CONTACT_POINT_SYSTEMS = frozenset({"phone", "fax", "email", "pager", "url", "sms", "other"})
_NAME_PARTS = ("text", "family", "given", "prefix", "suffix")
_ADDRESS_PARTS = ("text", "line", "city", "district", "state", "postalCode", "country")


# letters that carry their "accent" in the letter itself, so NFKD does not separate it
_FOLD = str.maketrans({"ø": "o", "æ": "ae", "œ": "oe", "ł": "l", "đ": "d", "ð": "d", "þ": "th", "ı": "i"})


def normalize(text: str) -> str:
    """Case- and accent-insensitive form (R4 3.1.1.4.1): NFKD, combining marks dropped, casefolded, and the
    few Latin letters without a decomposition folded to their base letters."""
    decomposed = unicodedata.normalize("NFKD", text)
    bare = "".join(ch for ch in decomposed if not unicodedata.combining(ch)).casefold()
    return bare.translate(_FOLD).replace("\x00", "")[:VALUE_LEN]


def _clip(value: Any, length: int = VALUE_LEN) -> str | None:
    if value is None:
        return None
    return str(value).replace("\x00", "")[:length]  # PostgreSQL text cannot hold NUL


def parse_reference(ref: str, base_url: str | None = None) -> tuple[str | None, str | None, str | None]:
    """(target_type, target_id, url) of a Reference.reference string: local ``Type/id[/_history/v]`` gives
    type and id; an absolute URL under ``base_url`` is local too; other absolute URLs and URNs give url."""
    url = None
    ref = ref.replace("\x00", "")
    if base_url and ref.startswith(base_url):
        ref = ref[len(base_url) :].lstrip("/")
    elif "://" in ref or ref.startswith("urn:"):
        url = ref
        if ref.startswith("urn:"):
            return None, None, ref[:URL_LEN]
    parts = ref.split("?", 1)[0].rstrip("/").split("/")
    if len(parts) >= 4 and parts[-2] == "_history":
        parts = parts[:-2]
    if len(parts) >= 2 and parts[-2][:1].isupper() and parts[-2].isalpha():
        return parts[-2][:TYPE_LEN], parts[-1][:ID_LEN], url[:URL_LEN] if url else None
    return None, None, url[:URL_LEN] if url else None


@dataclass(frozen=True)
class _Plan:
    code: str
    type: str
    expression: Expression
    heads: frozenset[str] | None
    """First element names the expression can start from (``Observation.code`` → code); None: unknown."""


_HEAD = re.compile(r"^\(*\s*[A-Z][A-Za-z]*\.([a-z][A-Za-z0-9]*)")


def _heads(expression: str) -> frozenset[str] | None:
    """The top-level elements each ``|`` branch starts with, so a resource without any of them skips the
    evaluation (most of a type's parameters find nothing in a given resource)."""
    if any(word in expression for word in ("exists(", "empty(", "not(", " and ", " or ", "=")):
        return None  # the expression can yield a value (false) without the element: always evaluate
    heads = set()
    depth, start, branches = 0, 0, []
    for i, ch in enumerate(expression):
        depth += ch == "("
        depth -= ch == ")"
        if ch == "|" and depth == 0:
            branches.append(expression[start:i])
            start = i + 1
    branches.append(expression[start:])
    for branch in branches:
        m = _HEAD.match(branch.strip())
        if not m:
            return None
        heads.add(m.group(1))
    return frozenset(heads)


def _present(resource: dict[str, Any]) -> set[str]:
    """Top-level element names of ``resource``, choice elements also under their base (valueQuantity →
    value)."""
    names = set(resource)
    for key in resource:
        for i, ch in enumerate(key):
            if ch.isupper():
                names.add(key[:i])
                break
    return names


class Extractor:
    """Turns resources into index rows; one per repository configuration (plans are cached per type)."""

    def __init__(self, registry: SearchRegistry, base_url: str | None = None) -> None:
        self.registry = registry
        self.base_url = base_url.rstrip("/") + "/" if base_url else None
        self._plans: dict[str, list[_Plan]] = {}

    def plan(self, resource_type: str) -> list[_Plan]:
        plan = self._plans.get(resource_type)
        if plan is None:
            plan = [
                _Plan(p.code, p.type, p.compiled(), _heads(p.expression))
                for p in self.registry.params(resource_type).values()
                if p.code not in COLUMN_PARAMETERS
            ]
            self._plans[resource_type] = plan
        return plan

    def extract(self, resource: dict[str, Any]) -> IndexRows:
        resource_type = resource["resourceType"]
        rows: IndexRows = {}
        present = _present(resource)
        for plan in self.plan(resource_type):
            if plan.heads is not None and plan.heads.isdisjoint(present):
                continue
            nodes = plan.expression.evaluate(resource)
            if not nodes:
                continue
            convert = _CONVERTERS[plan.type]
            seen: set[tuple[Any, ...]] = set()
            for node in nodes:
                for table, row in convert(self, node, plan.code):
                    key = (table, *row.values())
                    if key in seen:
                        continue
                    seen.add(key)
                    row["resource_type"] = resource_type
                    row["param"] = row.pop("_param", plan.code)
                    rows.setdefault(table, []).append(row)
        return rows

    # -- converters: (table, row) pairs for one FHIRPath node ----------------------------------------
    def _token(self, node: Node, code: str) -> list[tuple[str, dict[str, Any]]]:
        value = node.value
        out: list[tuple[str, dict[str, Any]]] = []
        if isinstance(value, bool):
            return [("token", {"system": None, "code": "true" if value else "false"})]
        if isinstance(value, str | int | float):
            return [("token", {"system": None, "code": _clip(value)})]
        if not isinstance(value, dict):
            return []
        texts: list[str] = []
        if "coding" in value or ("text" in value and "value" not in value and "code" not in value):
            for coding in value.get("coding") or []:
                if isinstance(coding, dict) and (coding.get("code") or coding.get("system")):
                    out.append(
                        ("token", {"system": _clip(coding.get("system")), "code": _clip(coding.get("code"))})
                    )
                if isinstance(coding, dict) and isinstance(coding.get("display"), str):
                    texts.append(coding["display"])
            if isinstance(value.get("text"), str):
                texts.append(value["text"])
        elif "code" in value or ("system" in value and "value" not in value):  # Coding
            out.append(("token", {"system": _clip(value.get("system")), "code": _clip(value.get("code"))}))
            if isinstance(value.get("display"), str):
                texts.append(value["display"])
        elif "value" in value:
            if value.get("system") in CONTACT_POINT_SYSTEMS and node.type != "Identifier":
                out.append(("token", {"system": None, "code": _clip(value["value"])}))  # ContactPoint
            else:  # Identifier
                out.append(("token", {"system": _clip(value.get("system")), "code": _clip(value["value"])}))
                type_text = (
                    (value.get("type") or {}).get("text") if isinstance(value.get("type"), dict) else None
                )
                if isinstance(type_text, str):
                    texts.append(type_text)
        for text in texts:
            out.append(
                ("string", {"value_norm": normalize(text), "value": _clip(text), "_param": f"{code}:text"})
            )
        return out

    def _string(self, node: Node, code: str) -> list[tuple[str, dict[str, Any]]]:
        value = node.value
        texts: list[str] = []
        if isinstance(value, str):
            texts.append(value)
        elif isinstance(value, dict):
            parts = _NAME_PARTS if ("family" in value or "given" in value) else _ADDRESS_PARTS
            for part in parts if any(p in value for p in parts) else tuple(value):
                item = value.get(part)
                for text in item if isinstance(item, list) else [item]:
                    if isinstance(text, str):
                        texts.append(text)
        return [("string", {"value_norm": normalize(t), "value": _clip(t)}) for t in texts if t]

    def _date(self, node: Node, code: str) -> list[tuple[str, dict[str, Any]]]:
        value = node.value
        ranges: list[tuple[datetime, datetime]] = []
        try:
            if isinstance(value, str):
                ranges.append(date_range(value))
            elif isinstance(value, dict) and ("start" in value or "end" in value):  # Period
                low = date_range(value["start"])[0] if isinstance(value.get("start"), str) else DATE_MIN
                high = date_range(value["end"])[1] if isinstance(value.get("end"), str) else DATE_MAX
                ranges.append((low, high))
            elif isinstance(value, dict) and "event" in value:  # Timing
                ranges.extend(date_range(e) for e in value["event"] if isinstance(e, str))
        except ValueError:
            return []  # not a valid FHIR date: nothing to index rather than a wrong range
        return [("date", {"low": low, "high": high}) for low, high in ranges]

    def _number(self, node: Node, code: str) -> list[tuple[str, dict[str, Any]]]:
        number = _float(node.value)
        return [] if number is None else [("number", {"value": number})]

    def _quantity(self, node: Node, code: str) -> list[tuple[str, dict[str, Any]]]:
        value = node.value
        if not isinstance(value, dict):
            return []
        if "low" in value or "high" in value:  # Range
            low_q = value.get("low") if isinstance(value.get("low"), dict) else {}
            high_q = value.get("high") if isinstance(value.get("high"), dict) else {}
            unit_q = low_q or high_q
            low, high = _float(low_q.get("value")), _float(high_q.get("value"))
        elif "value" in value:
            unit_q = value
            low = high = _float(value.get("value"))
            if low is None:
                return []
        else:
            return []
        unit_code = unit_q.get("code") or unit_q.get("unit") or unit_q.get("currency")
        canon_code, canon_low = canonical(unit_code, low)
        _, canon_high = canonical(unit_code, high)
        return [
            (
                "quantity",
                {
                    "low": low,
                    "high": high,
                    "system": _clip(unit_q.get("system")),
                    "code": _clip(unit_code),
                    "canon_code": canon_code,
                    "canon_low": canon_low,
                    "canon_high": canon_high,
                },
            )
        ]

    def _reference(self, node: Node, code: str) -> list[tuple[str, dict[str, Any]]]:
        value = node.value
        row: dict[str, Any] = {"target_type": None, "target_id": None, "url": None}
        row.update(ident_system=None, ident_value=None)
        if isinstance(value, str):  # canonical / uri
            row["url"] = _clip(value.split("|", 1)[0], URL_LEN)
            return [("reference", row)]
        if not isinstance(value, dict):
            return []
        ref = value.get("reference")
        if isinstance(ref, str) and not ref.startswith("#"):
            row["target_type"], row["target_id"], row["url"] = parse_reference(ref, self.base_url)
            if row["target_type"] is None and isinstance(value.get("type"), str) and row["url"] is None:
                return []
        identifier = value.get("identifier")
        if isinstance(identifier, dict) and identifier.get("value"):
            row["ident_system"] = _clip(identifier.get("system"))
            row["ident_value"] = _clip(identifier["value"])
        if row["target_id"] is None and row["url"] is None and row["ident_value"] is None:
            return []
        return [("reference", row)]

    def _uri(self, node: Node, code: str) -> list[tuple[str, dict[str, Any]]]:
        if isinstance(node.value, str):
            return [("uri", {"uri": _clip(node.value, URL_LEN)})]
        return []


def _float(value: Any) -> float | None:
    if isinstance(value, int | float) and not isinstance(value, bool):
        try:
            number = float(value)
        except OverflowError:  # an integer beyond double range cannot be compared; not indexed
            return None
        return number if math.isfinite(number) else None
    return None


_CONVERTERS = {
    "token": Extractor._token,
    "string": Extractor._string,
    "date": Extractor._date,
    "number": Extractor._number,
    "quantity": Extractor._quantity,
    "reference": Extractor._reference,
    "uri": Extractor._uri,
}
