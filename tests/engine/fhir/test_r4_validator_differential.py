"""The compiled R4 validator (engine.fhir.r4_validator) against the two-pass validator (engine.fhir.validation,
fhir.resources R4B models + a JSON walk): the same valid/invalid verdict on every resource the test suite has
and on systematic mutations of them, and the fault located where it was made.

Where FHIR R4 (what Conduit serves; the official JSON schema) and the R4B models truly differ, the cases are
listed in ``R4_STRICTER`` with the reason, and tested for exactly that difference.
"""

from __future__ import annotations

import copy
import json
from collections.abc import Iterator
from functools import lru_cache
from typing import Any

import pytest

from engine.fhir import r4_validator, validation
from tests.engine.fhir.r4_corpus import corpus

# --------------------------------------------------------------------------------------------- the corpus

#: corpus resources on which the verdicts differ, each a documented R4-vs-R4B difference
CORPUS_DIFFERENCES = {
    "engine/fhir/test_bundle.py:303": "Binary.data '!!' is not base64: R4's base64Binary regex rejects it, "
    "the R4B models do not check it",
}


def _verdicts(resource: Any) -> tuple[bool, bool]:
    return bool(validation.validate_resource_models(resource)), bool(r4_validator.validate_resource(resource))


def test_corpus_is_large_and_mostly_valid() -> None:
    resources = corpus()
    assert len(resources) > 1000
    kinds = {name.split()[0].split(":")[0] for name, _ in resources}
    assert any(k == "mapped" for k in kinds) and any(k.endswith(".json") for k in kinds)
    assert any("fhir_rest" in k for k in kinds)


def test_same_verdict_on_every_corpus_resource() -> None:
    mismatched = {}
    for name, resource in corpus():
        old, new = _verdicts(resource)
        if old != new:
            mismatched[name.split()[0]] = (old, new)
    assert set(mismatched) == set(CORPUS_DIFFERENCES), mismatched
    assert all(new and not old for old, new in mismatched.values()), "R4 may only be stricter"


# -------------------------------------------------------------------------------------------- mutations

_SAMPLES: dict[str, Any] = {
    "boolean": True,
    "string": "x",
    "code": "x",
    "integer": 1,
    "positiveInt": 1,
    "unsignedInt": 1,
    "decimal": 1.5,
    "dateTime": "2020-01-02",
    "date": "2020-01-02",
    "instant": "2020-01-02T03:04:05Z",
    "time": "10:11:12",
    "uri": "urn:x",
    "url": "http://x",
    "canonical": "http://x",
    "markdown": "x",
    "id": "x",
    "Quantity": {"value": 1},
    "CodeableConcept": {"text": "x"},
    "Period": {"start": "2020"},
    "Reference": {"reference": "Patient/1"},
    "Range": {"low": {"value": 1}},
    "Ratio": {"numerator": {"value": 1}},
    "Age": {"value": 1},
    "Duration": {"value": 1},
    "Timing": {"event": ["2020"]},
    "Attachment": {"title": "x"},
    "Identifier": {"value": "x"},
    "Coding": {"code": "x"},
    "string[]": ["x"],
}

#: wrong JSON types per primitive kind
_WRONG_TYPE = {"string": 12345, "boolean": "true", "integer": "1", "number": "1.5"}

#: malformed values per primitive type (each is malformed in R4 and in R4B)
_BAD_FORMATS = {
    "date": ["2023-13-01", "2023-02-30", "20230101", "2023-1-5", "2023-01-01T10:00:00Z"],
    "dateTime": ["2023-02-30", "2020-01-01T10:00", "2020-01-01T10:00:00", "2020-01-01 10:00:00Z", "0000"],
    "instant": ["2020-01-01", "2020-01-01T10:00:00", "2020-02-31T10:00:00Z"],
    "time": ["25:00:00", "10:00", "10:00:00Z"],
    "id": ["a b", "a/b", "a_b"],
    "code": [" x", "x ", "a  b"],
    "oid": ["1.2.3", "urn:oid:x"],
    "positiveInt": [0, -1],
    "unsignedInt": [-1],
    "integer": [2**31, 1.5],
}

Site = tuple[tuple[Any, ...], str, str, bool, list[str] | None]  # path, property, type, is array, codes


def _sites(
    node: dict[str, Any], type_name: str, path: tuple[Any, ...]
) -> Iterator[tuple[str, tuple[Any, ...], dict[str, Any]]]:
    """Every object in a resource with its type: (type, path of keys/indices, the object)."""
    table = r4_validator.type_table(type_name)
    if table is None:
        return
    yield type_name, path, node
    for key, value in node.items():
        spec = table["e"].get(key)
        if spec is None:
            continue
        child_type = spec[0]
        items = list(enumerate(value)) if spec[1] and isinstance(value, list) else [(None, value)]
        for index, item in items:
            if not isinstance(item, dict):
                continue
            where = (*path, key) if index is None else (*path, key, index)
            if child_type == "Resource":
                inner = item.get("resourceType")
                if isinstance(inner, str) and r4_validator.is_resource_type(inner):
                    yield from _sites(item, inner, where)
            else:
                yield from _sites(item, child_type, where)


def _location(root: str, path: tuple[Any, ...]) -> str:
    text = root
    for part in path:
        text += f"[{part}]" if isinstance(part, int) else "." + part.lstrip("_")
    return text


def _at(resource: dict[str, Any], path: tuple[Any, ...]) -> Any:
    for part in path:
        resource = resource[part]
    return resource


Mutant = tuple[str, dict[str, Any], str]  # what was done, the mutated resource, where the fault is


def _mutants(resource: dict[str, Any], seen: set[tuple[str, str]]) -> Iterator[Mutant]:
    root = resource["resourceType"]
    primitives = r4_validator.primitive_types()
    for type_name, path, node in list(_sites(resource, root, ())):
        if root == "Bundle" and "resource" in path:
            continue
        table = r4_validator.type_table(type_name)
        assert table is not None
        here = _location(root, path)

        def mutate(
            change: Any, what: str, where: str, type_name: str = type_name, path: Any = path, here: str = here
        ) -> Iterator[Mutant]:
            if (type_name, what) in seen:
                return
            seen.add((type_name, what))
            copied = copy.deepcopy(resource)
            target = _at(copied, path)
            change(target)
            yield what, copied, where if target or not path else here  # emptied: the object itself

        for required in table.get("r", ()):
            if required in node:
                yield from mutate(
                    lambda n, r=required: (n.pop(r), n.pop(f"_{r}", None)),
                    f"drop required {type_name}.{required}",
                    f"{here}.{required}",
                )
        yield from mutate(
            lambda n: n.__setitem__("fooBar", 1), f"unknown element in {type_name}", f"{here}.fooBar"
        )
        if path:
            yield from mutate(lambda n: n.clear(), f"empty object {type_name}", here)
        for key, value in node.items():
            spec = table["e"].get(key)
            if spec is None or value is None:
                continue
            elem_type, many, codes = spec[0], bool(spec[1]), spec[2] if len(spec) > 2 else None
            where = f"{here}.{key}"
            if many:
                yield from mutate(
                    lambda n, k=key: n.__setitem__(k, []), f"empty array {type_name}.{key}", where
                )
                if not isinstance(value, list) or not value:
                    continue
                target: tuple[Any, ...] = (key, 0)
                where += "[0]"
                value = value[0]
            else:
                target = (key,)
            if elem_type not in primitives:
                if elem_type not in ("Resource",) and not many:
                    yield from mutate(
                        lambda n, k=key: n.__setitem__(k, [n[k]]),
                        f"array for single {type_name}.{key}",
                        where,
                    )
                continue

            def put(new: Any, t: tuple[Any, ...] = target) -> Any:
                def change(n: dict[str, Any]) -> None:
                    if len(t) == 1:
                        n[t[0]] = new
                    else:
                        n[t[0]][t[1]] = new

                return change

            kind = json.dumps(value)[0]
            json_kind = {"t": "boolean", "f": "boolean", '"': "string"}.get(kind, "number")
            if elem_type in ("integer", "positiveInt", "unsignedInt"):
                json_kind = "integer"
            yield from mutate(put(_WRONG_TYPE[json_kind]), f"wrong JSON type {type_name}.{key}", where)
            if isinstance(value, str):
                yield from mutate(put(""), f"empty string {type_name}.{key}", where)
                yield from mutate(put("   "), f"blank string {type_name}.{key}", where)
            if codes is not None:
                yield from mutate(put("not-a-code"), f"code outside binding {type_name}.{key}", where)
            for bad in _BAD_FORMATS.get(elem_type, ()):
                yield from mutate(put(bad), f"bad {elem_type} {type_name}.{key} {bad!r}", where)
        for group, members in table.get("c", {}).items():
            present = [m for m in members if m in node]
            if not present:
                continue
            others = [m for m in members if m not in node and table["e"][m][0] in _SAMPLES]
            if others:
                other = others[0]
                sample = _SAMPLES[table["e"][other][0]]
                yield from mutate(
                    lambda n, o=other, s=sample: n.__setitem__(o, copy.deepcopy(s)),
                    f"two values of {type_name}.{group}[x]",
                    f"{here}.{group}[x]",
                )
            if group in table.get("rc", ()):
                yield from mutate(
                    lambda n, p=present: [n.pop(m) for m in p],
                    f"drop required choice {type_name}.{group}[x]",
                    f"{here}.{group}[x]",
                )


@lru_cache(maxsize=1)
def _mutations() -> tuple[Mutant, ...]:
    """Each kind of fault once per (type, element) over the valid corpus: a Bundle's entries are in the
    corpus by themselves, so inside a Bundle only its own elements are mutated."""
    seen: set[tuple[str, str]] = set()
    out = []
    for _name, resource in corpus():
        if validation.validate_resource_models(resource) or r4_validator.validate_resource(resource):
            continue
        for what, mutated, where in _mutants(resource, seen):
            out.append((what, mutated, where))
    return tuple(out)


def test_mutations_same_verdict_and_located() -> None:
    mutations = _mutations()
    assert len(mutations) > 1000
    kinds = {what.split(".")[0].rsplit(" ", 1)[0] for what, _, _ in mutations}
    for expected in (
        "drop required",
        "unknown element in",
        "wrong JSON type",
        "empty string",
        "empty array",
        "code outside binding",
        "two values of",
        "bad dateTime",
        "bad instant",
    ):
        assert any(k.startswith(expected) for k in kinds), expected
    disagree, unlocated = [], []
    for what, mutated, where in mutations:
        old, new = _verdicts(mutated)
        if old != new and not (new and _documented(what)):
            disagree.append((what, old, new))
        if new:
            locations = [i.location or "" for i in r4_validator.validate_resource(mutated)]
            if not any(
                loc == where or loc.startswith(where + ".") or loc.startswith(where + "[")
                for loc in locations
            ):
                unlocated.append((what, where, locations))
    assert not disagree, disagree[:20]
    assert not unlocated, unlocated[:20]
    assert all(r4_validator.validate_resource(m) for _, m, _ in mutations), "every mutation is a fault"


#: mutations on which the R4B models accept what R4 rejects: (what was done, starting so) -> why
MUTATION_DIFFERENCES = {
    "code outside binding Encounter.status": "R4 required binding; the models' code list ends with '+' (open)",
    "code outside binding Observation.status": "idem",
    "code outside binding DiagnosticReport.status": "idem",
    "code outside binding Quantity.comparator": "R4 required binding (QuantityComparator); no codes in the models",
    "code outside binding Timing_Repeat.when": "R4 required binding (EventTiming); no codes in the models",
    **{
        f"{kind} {element}": "R4 url is a JSON string, never empty; the models type url as AnyUrl | str, which "
        "the two-pass walk cannot classify, and accept any value"
        for kind in ("wrong JSON type", "empty string", "blank string")
        for element in (
            "MessageHeader_Source.endpoint",
            "MessageHeader_Destination.endpoint",
            "Attachment.url",
            "Endpoint.address",
            "Subscription_Channel.endpoint",
        )
    },
}


def _documented(what: str) -> bool:
    return any(what == known or what.startswith(known + " ") for known in MUTATION_DIFFERENCES)


def test_contained_resource_faults_are_found_and_located() -> None:
    done = 0
    for what, mutated, where in _mutations()[::7]:
        wrapper = {"resourceType": "Patient", "contained": [mutated]}
        old, new = _verdicts(wrapper)
        assert old == new or (new and _documented(what)), what
        inner = where.split(".", 1)[1] if "." in where else ""
        expected = "Patient.contained[0]" + (f".{inner}" if inner else "")
        locations = [i.location or "" for i in r4_validator.validate_resource(wrapper)]
        assert any(loc.startswith(expected) for loc in locations), (what, expected, locations)
        done += 1
    assert done > 100


# ------------------------------------------------------------------------- R4 and R4B: the real differences

#: (resource, why): valid for the R4B models, invalid in R4 (what Conduit serves)
R4_STRICTER: list[tuple[dict[str, Any], str]] = [
    ({"resourceType": "Patient", "id": "a" * 65}, "R4 id: at most 64 characters (fhir.resources allows 255)"),
    (
        {"resourceType": "Patient", "identifier": [{"system": "urn:a b"}]},
        "R4 uri: no whitespace (^\\S*$); the models' pattern search matches anything",
    ),
    (
        {"resourceType": "Patient", "photo": [{"data": "!!"}]},
        "R4 base64Binary regex; the models accept any string",
    ),
    ({"resourceType": "Patient", "active": None}, "R4 JSON: null is never a value (the models drop it)"),
    (
        {"resourceType": "Patient", "name": [{"given": ["a", None]}]},
        "R4 JSON: a null in a primitive array only pads it against its _given twin",
    ),
    (
        {"resourceType": "Patient", "name": [{"_given": [None]}]},
        "R4 JSON: likewise in the _given twin without given",
    ),
    (
        {"resourceType": "Patient", "_birthDate": None},
        "R4 JSON: null is never a value",
    ),
    (
        {"resourceType": "Patient", "name": [{"text": "a\x0bb"}]},
        "R4 string regex [ \\r\\n\\t\\S]+ (XML Schema \\s): vertical tab and form feed are not allowed",
    ),
    (
        {"resourceType": "Patient", "meta": {"project": "x"}},
        "not a difference of R4: Medplum's additions to Meta are dropped, as the models never had them",
    ),
]


#: (resource, why): invalid for the R4B models, valid R4 — where the models do not describe R4
R4_LOOSER: list[tuple[dict[str, Any], str]] = [
    (
        {
            "resourceType": "Patient",
            "extension": [{"url": "urn:x", "valueUuid": "urn:uuid:c757873d-ec9a-1326-a141-556f43239520"}],
        },
        "R4 uuid is any UUID as urn:uuid: in lower case; the models take only version 4 (pydantic UUID4)",
    ),
    (
        {"resourceType": "Patient", "extension": [{"url": "urn:x", "valueMeta": {"versionId": "1"}}]},
        "Extension.valueMeta is R4 (open type Meta); R4B dropped it",
    ),
    (
        {
            "resourceType": "EffectEvidenceSynthesis",
            "status": "draft",
            "population": {"reference": "Group/1"},
            "exposure": {"reference": "EvidenceVariable/1"},
            "exposureAlternative": {"reference": "EvidenceVariable/2"},
            "outcome": {"reference": "EvidenceVariable/3"},
        },
        "an R4 resource type that R4B removed",
    ),
    (
        {"resourceType": "Patient", "extension": [{"url": "urn:x", "valueCode": "a\u00a0\u00a0b"}]},
        "R4 code regex in XML Schema terms (\\s is ASCII whitespace); the models read \\s as Unicode",
    ),
]

#: (resource, why): R4B content that is not R4
R4B_ONLY: list[tuple[dict[str, Any], str]] = [
    (
        {
            "resourceType": "Patient",
            "extension": [{"url": "urn:x", "valueCodeableReference": {"concept": {"text": "x"}}}],
        },
        "CodeableReference is R4B",
    ),
    ({"resourceType": "Citation", "status": "draft"}, "Citation is an R4B resource type"),
]


@pytest.mark.parametrize("resource,why", R4_LOOSER + R4B_ONLY, ids=[w[:40] for _, w in R4_LOOSER + R4B_ONLY])
def test_documented_r4_r4b_differences(resource: dict[str, Any], why: str) -> None:
    old, new = _verdicts(resource)
    if (resource, why) in R4B_ONLY:
        assert new and not old, why
    else:
        assert old and not new, why


@pytest.mark.parametrize("resource,why", R4_STRICTER, ids=[w[:40] for _, w in R4_STRICTER])
def test_documented_r4_differences(resource: dict[str, Any], why: str) -> None:
    new = r4_validator.validate_resource(resource)
    assert new, why
    old = validation.validate_resource_models(resource)
    if why.startswith("not a difference"):
        assert old
    else:
        assert not old, f"no longer a difference: {why}"
