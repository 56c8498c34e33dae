"""Any query string a client can send gets results or InvalidInput — never a database error (both
databases): random parameter names, modifiers, prefixes and values full of separators and escapes."""

from __future__ import annotations

import random

from engine.errors import InvalidInput
from engine.fhir.search.registry import default_registry

PIECES = [
    "",
    "a",
    "Ø",
    "%",
    "_",
    "\\",
    ",",
    "|",
    "$",
    ":",
    ".",
    "/",
    "?",
    "=",
    "'",
    '"',
    "--",
    "\x00",
    " ",
    "9" * 30,
]
PREFIXES = ["", "eq", "ne", "gt", "lt", "ge", "le", "sa", "eb", "ap", "zz"]
VALUES = ["2024", "2024-13-01", "2024-05-01T10:00:00+14:00", "9999-12-31", "0000", "1e999", "-0", "1.5e-300", "NaN",
          "Patient/1", "http://x/fhir/Patient/1", "urn:uuid:1", "sys|code", "|code", "sys|", "1|http://unitsofmeasure.org|mg",
          "true", "false", "x" * 600]  # fmt: skip


def _random_value(rng: random.Random) -> str:
    if rng.random() < 0.5:
        return rng.choice(PREFIXES) + rng.choice(VALUES)
    return "".join(rng.choice(PIECES) for _ in range(rng.randrange(1, 6)))


def test_random_queries_answer_or_refuse_cleanly(records) -> None:  # type: ignore[no-untyped-def]
    rng = random.Random(4242)
    registry = default_registry()
    with records() as repo:
        repo.create({"resourceType": "Patient", "name": [{"family": "Fuzz"}], "birthDate": "1990"})
        repo.create(
            {
                "resourceType": "Observation",
                "status": "final",
                "code": {"text": "x"},
                "valueQuantity": {"value": 1},
            }
        )
    with records() as repo:
        refused = 0
        for _ in range(250):
            rtype = rng.choice(["Patient", "Observation", "Encounter", None])
            codes = [p.code for p in registry.params(rtype).values()] + [
                "_has:Observation:subject:code",
                "_sort",
                "_count",
                "_include",
                "_revinclude",
                "_elements",
                "_summary",
                "_total",
                "_offset",
                "bogus",
            ]
            name = rng.choice(codes)
            if rng.random() < 0.4:
                name += ":" + rng.choice(
                    [
                        "exact",
                        "contains",
                        "not",
                        "missing",
                        "text",
                        "below",
                        "above",
                        "identifier",
                        "Patient",
                        "iterate",
                        "zz",
                    ]
                )
            if rng.random() < 0.2:
                name += "." + rng.choice(["name", "identifier", "birthdate", "nope"])
            try:
                repo.search(rtype, [(name, _random_value(rng))])
            except InvalidInput:
                refused += 1
        assert 0 < refused < 250


NASTY = ["", "\x00", "Ø" * 300, "x" * 2000, 5, -1.5e308, 10**18, True, None, [], {}, {"value": "5"}, ["a", None],
         {"reference": "#contained"}, {"reference": "urn:uuid:x"}, {"reference": "Patient/" + "9" * 100},
         {"reference": "http://x/Patient/1/_history/2"}, {"coding": {"code": "x"}}, {"start": "2024", "end": "bad"},
         {"low": {"value": "1"}, "high": {"value": 2}}, "2024-02-30", "2024-05-01T25:00:00Z", "9999-12-31T23:59:59-12:00"]  # fmt: skip
PATHS = ["name", "birthDate", "identifier", "telecom", "gender", "subject", "effectiveDateTime", "effectivePeriod",
         "valueQuantity", "valueRange", "code", "category", "meta", "performer", "issued", "address", "active"]  # fmt: skip


def test_random_resources_are_stored_or_refused_cleanly(records) -> None:  # type: ignore[no-untyped-def]
    """Element values of the wrong shape never break indexing: the resource is stored (values that cannot be
    indexed are skipped) or refused as InvalidInput; searches over them still answer."""
    rng = random.Random(77)
    stored = 0
    with records() as repo:
        for _ in range(120):
            rtype = rng.choice(["Patient", "Observation"])
            resource: dict[str, object] = {"resourceType": rtype}
            for path in rng.sample(PATHS, 4):
                value = rng.choice(NASTY)
                resource[path] = [value] if rng.random() < 0.3 else value
            if isinstance(resource.get("meta"), dict | list | str | int | float | bool) and not isinstance(
                resource.get("meta"), dict
            ):
                resource.pop("meta")
            try:
                repo.create(resource)
                stored += 1
            except InvalidInput:
                pass
    assert stored > 60
    with records() as repo:
        for rtype, param, value in [
            ("Patient", "name", "x"),
            ("Patient", "birthdate", "ge2000"),
            ("Observation", "date", "le2024"),
            ("Observation", "value-quantity", "gt0"),
            ("Observation", "subject", "Patient/1"),
            ("Patient", "identifier", "5"),
        ]:
            repo.search(rtype, [(param, value), ("_sort", f"-{param}")])
