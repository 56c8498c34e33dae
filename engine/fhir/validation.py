"""Validation of FHIR R4 JSON resources.

:func:`validate_resource` and :func:`ensure_valid` (the REST API, ``conduit fhir validate``) use
:mod:`engine.fhir.r4_validator`, compiled from the official R4 4.0.1 JSON schema: ~15x faster than the
models and R4 where R4B differs. Its differential test (tests/engine/fhir/test_r4_validator_differential.py)
shows the same verdicts as the model validation below on every resource of the test suite and 1,600
mutations of them, except the documented R4-vs-R4B differences (R4 is stricter on ids, uris, urls,
base64Binary, nulls and some required bindings; it accepts R4-only elements and types, and any UUID version).

:func:`validate_resource_models` is the former validator, kept to compare: the fhir.resources R4B models,
which accept R4 content for the resource types Conduit serves. Two passes find every problem:

1. the pydantic models: unknown elements, wrong shapes, primitive formats (dates, ids, decimals), missing
   required elements;
2. a walk of the raw JSON beside the model's field table, for the rules of FHIR's JSON format the models
   let through: primitives of the wrong JSON type (``"active": "true"``), empty strings, arrays and
   objects (R4 §2.6.2 "no empty values"), codes outside a required binding (``Patient.gender``), and
   several values of one choice element (``value[x]``).

Each problem becomes an :class:`engine.errors.Issue` whose ``location`` is the element path
(``Patient.name[0].given[1]``). Messages name the element and the rule, never the value: they are logged.
"""

from __future__ import annotations

import datetime
import decimal
import typing
from dataclasses import dataclass
from functools import lru_cache
from typing import Any

from fhir.resources.R4B import get_fhir_model_class
from pydantic import ValidationError

from engine.errors import InvalidInput, Issue
from engine.fhir.r4_validator import UNKNOWN_KEY, is_element_name

__all__ = [
    "validate_resource",
    "validate_resource_models",
    "ensure_valid",
    "is_resource_type",
    "resource_class",
]

_MAX_ISSUES = 100


@lru_cache(maxsize=512)
def resource_class(resource_type: str) -> type[Any] | None:
    """The R4B model class of ``resource_type``, or None when it is not a FHIR resource type."""
    if not isinstance(resource_type, str) or not resource_type.isalpha() or not resource_type[0].isupper():
        return None
    try:
        cls = get_fhir_model_class(resource_type)
    except (KeyError, ValueError, AttributeError, ImportError):
        return None
    # get_fhir_model_class also knows datatypes (HumanName); only resources have resourceType
    if resource_type in ("Resource", "DomainResource"):
        return None  # abstract bases
    return cls if getattr(cls, "get_resource_type", None) and _is_resource(cls) else None


def _is_resource(cls: type[Any]) -> bool:
    return any(base.__name__ == "Resource" for base in cls.__mro__)


def is_resource_type(name: str) -> bool:
    return resource_class(name) is not None


# --------------------------------------------------------------------------------------------------- pass 1


def _path(resource_type: str, loc: tuple[Any, ...]) -> str:
    parts = [resource_type]
    for item in loc:
        if isinstance(item, int):
            parts[-1] += f"[{item}]"
        elif isinstance(item, str) and is_element_name(item):
            # primitive extensions travel as `_birthDate` in JSON; FHIRPath names the element itself
            parts.append(item[1:] if item.startswith("_") and len(item) > 1 else item)
        # other entries are pydantic's union/validator tags (``function-after[...]``): not elements
    return ".".join(parts)


_MESSAGES = {
    "extra_forbidden": "Unknown element",
    "missing": "Required element is missing",
    "model_field_validation.missing": "Required element is missing",
    "string_type": "Must be a JSON string",
    "list_type": "Must be a JSON array",
    "dict_type": "Must be a JSON object",
    "model_type": "Must be a JSON object",
    "model_attributes_type": "Must be a JSON object",
    "json_invalid": "Must be a JSON object",
    "bool_type": "Must be a JSON boolean (true or false)",
    "bool_parsing": "Must be a JSON boolean (true or false)",
    "int_type": "Must be a JSON integer",
    "int_parsing": "Must be a JSON integer",
    "int_from_float": "Must be a JSON integer",
    "decimal_type": "Must be a JSON number",
    "decimal_parsing": "Must be a JSON number",
}


def _pydantic_message(err: dict[str, Any]) -> str:
    kind = err.get("type", "")
    if kind in _MESSAGES:
        return _MESSAGES[kind]
    msg = str(err.get("msg", "Invalid value"))
    if msg.startswith("Value error, "):
        msg = msg[len("Value error, ") :]
    # fhir.resources wraps some messages over several indented lines
    return " ".join(msg.split())


def _model_issues(cls: type[Any], resource: dict[str, Any], resource_type: str) -> list[Issue]:
    try:
        cls.model_validate(resource)
    except ValidationError as exc:
        issues = []
        for err in exc.errors(include_input=False, include_url=False):
            loc = tuple(err.get("loc", ()))
            if loc and loc[0] == "resource_type":
                continue  # reported by validate_resource with a clearer message
            if not loc and (
                "but got multiple" in str(err.get("msg")) or "Expect any of" in str(err.get("msg"))
            ):
                continue  # choice element with several or no value: the walk names it (value[x])
            message = _pydantic_message(err)
            if err.get("type") == "extra_forbidden" and loc and not is_element_name(str(loc[-1])):
                message = UNKNOWN_KEY  # the key may be data: reported at its parent, not echoed
            issues.append(Issue(message, location=_path(resource_type, loc), code=_code(err)))
        return issues
    except Exception:  # noqa: BLE001 - the models raise KeyError on unknown contained types; the walk names it
        return []
    return []


def _code(err: dict[str, Any]) -> str:
    kind = str(err.get("type", ""))
    if "missing" in kind:
        return "required"
    if kind == "extra_forbidden":
        return "structure"
    return "value"


# --------------------------------------------------------------------------------------------------- pass 2


@dataclass(frozen=True)
class _Field:
    kind: str  # boolean | integer | decimal | string | complex | resource | other
    many: bool
    klass: type[Any] | None
    enum: frozenset[str] | None
    choice: str | None
    required: bool


def _unwrap(annotation: Any) -> tuple[Any, bool]:
    many = False
    while True:
        origin = typing.get_origin(annotation)
        args = typing.get_args(annotation)
        if origin is typing.Union or (origin is not None and str(origin) == "<class 'types.UnionType'>"):
            non_none = [a for a in args if a is not type(None)]
            if len(non_none) != 1:
                return None, many
            annotation = non_none[0]
        elif origin in (list, typing.List):  # noqa: UP006 - fhir.resources annotates with typing.List
            many = True
            annotation = args[0]
        elif origin is typing.Annotated:
            annotation = args[0]
        else:
            return annotation, many


def _classify(annotation: Any) -> tuple[str, bool, type[Any] | None]:
    base, many = _unwrap(annotation)
    if base is bool:
        return "boolean", many, None
    if base is int:
        return "integer", many, None
    if base in (decimal.Decimal, float):
        return "decimal", many, None
    if base in (str, bytes, datetime.date, datetime.datetime, datetime.time):
        return "string", many, None
    get_klass = getattr(base, "get_model_klass", None)
    if get_klass is not None:
        klass = get_klass()
        if klass.__name__ == "Resource":
            return "resource", many, None
        return "complex", many, klass
    return "other", many, None


#: elements whose enum_values in the models are a summary, not the binding: CapabilityStatement.format
#: takes "json", "xml" or any MIME type (R4 binding MimeType)
_OPEN_CODES = frozenset({("CapabilityStatement", "format")})


@lru_cache(maxsize=2048)
def _fields(cls: type[Any]) -> dict[str, _Field]:
    table: dict[str, _Field] = {}
    for name, info in cls.model_fields.items():
        extra = info.json_schema_extra if isinstance(info.json_schema_extra, dict) else {}
        if name == "fhir_comments" or name == "resource_type":
            continue
        kind, many, klass = _classify(info.annotation)
        enum_values = extra.get("enum_values")
        enum = (
            frozenset(str(v) for v in enum_values)
            if isinstance(enum_values, list)
            and "+" not in enum_values
            and (cls.__name__, name) not in _OPEN_CODES
            else None
        )
        choice = extra.get("one_of_many")
        table[info.alias or name] = _Field(
            kind=kind,
            many=many,
            klass=klass,
            enum=enum,
            choice=str(choice) if choice else None,
            required=bool(extra.get("one_of_many_required")),
        )
    return table


_JSON_TYPE_CHECKS: dict[str, tuple[typing.Callable[[Any], bool], str]] = {
    "boolean": (lambda v: isinstance(v, bool), "Must be a JSON boolean (true or false)"),
    "integer": (lambda v: isinstance(v, int) and not isinstance(v, bool), "Must be a JSON integer"),
    "decimal": (
        lambda v: isinstance(v, int | float) and not isinstance(v, bool),
        "Must be a JSON number",
    ),
    "string": (lambda v: isinstance(v, str), "Must be a JSON string"),
}


class _Walker:
    def __init__(self) -> None:
        self.issues: list[Issue] = []

    def add(self, message: str, path: str, code: str = "value") -> None:
        if len(self.issues) < _MAX_ISSUES:
            self.issues.append(Issue(message, location=path, code=code))

    def resource(self, data: Any, path: str) -> None:
        if not isinstance(data, dict):
            return
        cls = resource_class(str(data.get("resourceType", "")))
        if cls is None:
            self.add("Unknown or missing resourceType", path, "structure")
            return
        self.complex(cls, data, path)

    def complex(self, cls: type[Any], data: dict[str, Any], path: str) -> None:
        if not data:
            self.add("Empty object: an element must have a value or children", path)
            return
        table = _fields(cls)
        chosen: dict[str, list[str]] = {}
        for key, value in data.items():
            if key == "resourceType":
                continue
            spec = table.get(key)
            if spec is None:
                continue  # unknown elements are reported by the models
            child = f"{path}.{key[1:] if key.startswith('_') and len(key) > 1 else key}"
            if spec.choice and value is not None:
                chosen.setdefault(spec.choice, []).append(key)
            if spec.many:
                if not isinstance(value, list):
                    continue  # reported by the models
                if not value:
                    self.add("Empty array: omit the element instead", child)
                for i, item in enumerate(value):
                    if item is not None or not key.startswith("_"):
                        self.value(spec, item, f"{child}[{i}]", key.startswith("_"))
            else:
                self.value(spec, value, child, False)
        for choice, keys in chosen.items():
            if len(keys) > 1:
                self.add(f"Only one of {', '.join(sorted(keys))} may be present", f"{path}.{choice}[x]")
        for spec in table.values():
            if spec.required and spec.choice and spec.choice not in chosen:
                self.add("Required element is missing", f"{path}.{spec.choice}[x]", "required")
                chosen[spec.choice] = []

    def value(self, spec: _Field, value: Any, path: str, in_extension_array: bool) -> None:
        if value is None:
            return  # nulls are reported by the models (or allowed inside `_x` arrays)
        if spec.kind in _JSON_TYPE_CHECKS:
            check, message = _JSON_TYPE_CHECKS[spec.kind]
            if not check(value):
                self.add(message, path)
            elif isinstance(value, str) and not value.strip():
                self.add("Empty string: omit the element instead", path)
            elif spec.enum is not None and isinstance(value, str) and value not in spec.enum:
                self.add(
                    f"Code is not in the required value set ({', '.join(sorted(spec.enum))})",
                    path,
                    "code-invalid",
                )
        elif spec.kind == "complex" and spec.klass is not None and isinstance(value, dict):
            self.complex(spec.klass, value, path)
        elif spec.kind == "resource":
            self.resource(value, path)


# --------------------------------------------------------------------------------------------------- API


def validate_resource(resource: Any, *, resource_type: str | None = None) -> list[Issue]:
    """Every problem of ``resource`` (a parsed JSON value) against FHIR R4 as Issues; empty means valid.

    ``resource_type``, when given, is the type the caller expects (the URL's type on create/update).
    """
    from engine.fhir import r4_validator

    return r4_validator.validate_resource(resource, resource_type=resource_type)


def validate_resource_models(resource: Any, *, resource_type: str | None = None) -> list[Issue]:
    """Every problem of ``resource`` by the fhir.resources R4B models and the JSON walk (the former
    validator, ~15x slower than :func:`validate_resource`; kept to compare)."""
    from engine.fhir.r4_validator import header_issues

    problem = header_issues(resource, resource_type, is_resource_type)
    if problem:
        return problem
    declared = resource["resourceType"]
    cls = resource_class(declared)
    issues = _model_issues(cls, resource, declared)
    walker = _Walker()
    try:
        walker.complex(cls, resource, declared)
    except RecursionError:
        walker.add("Resource is nested too deeply", declared, "too-costly")
    seen = {(i.location, i.message) for i in issues}
    located = {i.location for i in issues}
    for issue in walker.issues:
        # the models and the walk may see the same fault (a string given for a boolean): say it once
        if (issue.location, issue.message) not in seen and issue.location not in located:
            issues.append(issue)
            seen.add((issue.location, issue.message))
    return issues[:_MAX_ISSUES]


def ensure_valid(resource: Any, *, resource_type: str | None = None) -> None:
    """Raise :class:`InvalidInput` naming every problem when ``resource`` is not valid."""
    issues = validate_resource(resource, resource_type=resource_type)
    if issues:
        first = issues[0]
        summary = f"{first.location}: {first.message}" if first.location else first.message
        more = f" (and {len(issues) - 1} more)" if len(issues) > 1 else ""
        raise InvalidInput(f"Invalid resource: {summary}{more}", issues)
