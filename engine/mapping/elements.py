"""The shape of FHIR R4 elements, for checking mapping files when they load and shaping their output.

``fhir_elements.json`` was derived offline from the official R4 JSON schema (``fhir.schema.json``, FHIR
4.0.1, CC0; ``python -m engine.mapping.elements --generate SCHEMA``): for every type, each element's
cardinality (array or not), its type, the codes of a required binding, and the required elements. A
mapping that names an element R4 does not have fails at load time with its file:line, not at 3 a.m.
"""

from __future__ import annotations

import json
import sys
from functools import lru_cache
from pathlib import Path
from typing import Any

__all__ = ["Element", "element", "elements_of", "required_of", "choice_types", "is_known_type"]

_DATA = Path(__file__).with_name("fhir_elements.json")

#: (is_array, type name, allowed codes or None)
Element = tuple[bool, str, tuple[str, ...] | None]


@lru_cache(maxsize=1)
def _table() -> dict[str, Any]:
    return json.loads(_DATA.read_text())


def is_known_type(type_name: str) -> bool:
    return type_name in _table()["types"]


@lru_cache(maxsize=4096)
def element(type_name: str, name: str) -> Element | None:
    props = _table()["types"].get(type_name, {})
    found = props.get(name)
    if found is None:
        return None
    return bool(found[0]), found[1], tuple(found[2]) if found[2] else None


def elements_of(type_name: str) -> dict[str, Any]:
    return _table()["types"].get(type_name, {})


def required_of(type_name: str) -> tuple[str, ...]:
    return tuple(_table()["required"].get(type_name, ()))


@lru_cache(maxsize=1024)
def choice_types(type_name: str, base: str) -> tuple[str, ...]:
    """The type suffixes of a choice element: ``choice_types('Observation', 'value')`` → Quantity, ..."""
    props = elements_of(type_name)
    out = []
    for name in props:
        if name.startswith(base) and len(name) > len(base) and name[len(base)].isupper():
            out.append(name[len(base) :])
    return tuple(out)


_PRIMITIVES = (
    "dateTime",
    "date",
    "instant",
    "time",
    "string",
    "integer",
    "boolean",
    "decimal",
    "uri",
    "url",
    "canonical",
    "code",
    "id",
    "oid",
    "uuid",
    "base64Binary",
    "markdown",
    "positiveInt",
    "unsignedInt",
)


def _generate(schema_path: str) -> dict[str, Any]:  # pragma: no cover - offline tool
    schema = json.loads(Path(schema_path).read_text())
    types: dict[str, Any] = {}
    required: dict[str, list[str]] = {}
    for name, definition in schema["definitions"].items():
        props = definition.get("properties")
        if not props:
            continue
        out = {}
        for prop, spec in props.items():
            if prop.startswith("_") or prop in ("resourceType", "extension", "modifierExtension"):
                if prop not in ("extension",):
                    continue
            is_array = spec.get("type") == "array"
            target = spec.get("items", spec) if is_array else spec
            ref = target.get("$ref", "")
            type_name = ref.rsplit("/", 1)[-1] if ref else target.get("type", "string")
            if not ref:  # choice elements of primitive type carry an inline pattern: the name says the type
                for primitive in _PRIMITIVES:
                    if prop.endswith(primitive[0].upper() + primitive[1:]) and prop != primitive:
                        type_name = primitive
                        break
            codes = target.get("enum") or spec.get("enum")
            out[prop] = [1 if is_array else 0, type_name, codes or None]
        types[name] = out
        req = [r for r in definition.get("required", []) if r != "resourceType"]
        if req:
            required[name] = req
    # the JSON schema leaves out required primitives (status: its _status twin satisfies the schema);
    # the R4B models know them (element_required)
    from fhir.resources.R4B import get_fhir_model_class

    for name in list(types):
        try:
            cls = get_fhir_model_class(name)
        except (KeyError, ValueError, AttributeError):
            continue
        for field_name, info in cls.model_fields.items():
            extra = info.json_schema_extra if isinstance(info.json_schema_extra, dict) else {}
            json_name = info.alias or field_name
            if (extra.get("element_required") or info.is_required()) and json_name in types[name]:
                if json_name not in required.setdefault(name, []):
                    required[name].append(json_name)
    return {"types": types, "required": required}


if __name__ == "__main__" and "--generate" in sys.argv:  # pragma: no cover
    _DATA.write_text(json.dumps(_generate(sys.argv[-1]), separators=(",", ":")))
    print(f"wrote {_DATA}")
