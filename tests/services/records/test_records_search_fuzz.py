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
