"""Date and quantity search against a plain-Python oracle of R4 3.1.1.4 over random data, so that SQL on both
databases (string-stored datetimes on SQLite, timestamps on PostgreSQL) agrees with the ranges the spec
defines — including precisions, time zones and Period/Range values."""

from __future__ import annotations

import random
from datetime import datetime, timedelta

from engine.fhir.search.dates import DATE_MAX, DATE_MIN, date_range

PREFIXES = ("eq", "ne", "gt", "lt", "ge", "le", "sa", "eb")


def _random_date(rng: random.Random) -> str:
    moment = datetime(2023, 1, 1) + timedelta(seconds=rng.randrange(0, 2 * 365 * 86400))
    precision = rng.choice(["year", "month", "day", "second", "second", "ms"])
    if precision == "year":
        return f"{moment:%Y}"
    if precision == "month":
        return f"{moment:%Y-%m}"
    if precision == "day":
        return f"{moment:%Y-%m-%d}"
    zone = rng.choice(["Z", "+02:00", "-05:30"])
    if precision == "second":
        return f"{moment:%Y-%m-%dT%H:%M:%S}{zone}"
    return f"{moment:%Y-%m-%dT%H:%M:%S}.{rng.randrange(1000):03d}{zone}"


def _matches(prefix: str, low: datetime, high: datetime, sl: datetime, sh: datetime) -> bool:
    """R4 3.1.1.4.3 for a target range [low, high] and search range [sl, sh]."""
    return {
        "eq": low >= sl and high <= sh,
        "ne": not (low >= sl and high <= sh),
        "gt": high > sh,
        "lt": low < sl,
        "ge": high >= sl,
        "le": low <= sh,
        "sa": low > sh,
        "eb": high < sl,
    }[prefix]


def test_date_search_agrees_with_the_spec_ranges(records) -> None:  # type: ignore[no-untyped-def]
    rng = random.Random(20241121)
    stored: dict[str, tuple[datetime, datetime]] = {}
    with records() as repo:
        for i in range(60):
            rid = f"o{i}"
            if i % 5 == 0:  # a Period, sometimes open-ended
                start = _random_date(rng) if i % 10 else None
                end = _random_date(rng)
                if start and date_range(start)[0] > date_range(end)[1]:
                    start, end = end, start
                period = {k: v for k, v in (("start", start), ("end", end)) if v}
                low = date_range(start)[0] if start else DATE_MIN
                stored[rid] = (low, date_range(end)[1])
                effective = {"effectivePeriod": period}
            else:
                value = _random_date(rng)
                stored[rid] = date_range(value)
                effective = {"effectiveDateTime": value}
            repo.update(
                "Observation",
                rid,
                {"resourceType": "Observation", "status": "final", "code": {"text": "x"}, **effective},
            )
    with records() as repo:
        for _ in range(80):
            prefix, value = rng.choice(PREFIXES), _random_date(rng)
            sl, sh = date_range(value)
            expected = sorted(rid for rid, (lo, hi) in stored.items() if _matches(prefix, lo, hi, sl, sh))
            result = repo.search("Observation", [("date", f"{prefix}{value}"), ("_count", "1000")])
            assert sorted(m.id for m in result.matches) == expected, f"date={prefix}{value}"
    assert DATE_MAX > max(hi for _, hi in stored.values())


def _number_matches(prefix: str, v: float, number: float, half: float) -> bool:
    """R4 3.1.1.4.2: eq/ne against the precision range [number - half, number + half)."""
    inside = number - half <= v < number + half
    return {
        "eq": inside,
        "ne": not inside,
        "gt": v > number,
        "lt": v < number,
        "ge": v >= number,
        "le": v <= number,
    }[prefix]


def test_quantity_search_agrees_with_precision_ranges(records) -> None:  # type: ignore[no-untyped-def]
    rng = random.Random(7)
    values: dict[str, float] = {}
    with records() as repo:
        for i in range(50):
            value = round(rng.uniform(0, 20), rng.choice([0, 1, 2]))
            values[f"q{i}"] = value
            repo.update(
                "Observation",
                f"q{i}",
                {
                    "resourceType": "Observation",
                    "status": "final",
                    "code": {"text": "x"},
                    "valueQuantity": {
                        "value": value,
                        "system": "http://unitsofmeasure.org",
                        "code": "mmol/L",
                    },
                },
            )
    with records() as repo:
        for _ in range(60):
            prefix = rng.choice(("eq", "ne", "gt", "lt", "ge", "le"))
            decimals = rng.choice([0, 1, 2])
            number = round(rng.uniform(0, 20), decimals)
            text = f"{number:.{decimals}f}"
            half = 0.5 * 10**-decimals
            expected = sorted(rid for rid, v in values.items() if _number_matches(prefix, v, number, half))
            # with and without the UCUM system: both compare in the canonical unit (mol/L); values within
            # float rounding of a boundary are left out of the comparison
            for query in (f"{prefix}{text}|http://unitsofmeasure.org|mmol/L", f"{prefix}{text}||mmol/L"):
                result = repo.search("Observation", [("value-quantity", query), ("_count", "1000")])
                found = sorted(m.id for m in result.matches)
                borderline = [
                    rid
                    for rid, v in values.items()
                    if abs(v - number) < 1e-9 or abs(abs(v - number) - half) < 1e-9
                ]
                assert [r for r in found if r not in borderline] == [
                    r for r in expected if r not in borderline
                ], query


def test_sorted_pages_are_the_same_by_index_walk_and_by_per_match_values(records) -> None:  # type: ignore[no-untyped-def]
    """A single-key sort over index criteria walks the sort index; with an extra column criterion the
    same search computes each match's sort value. Both must give the same order, page by page: multi-valued
    resources sort by their min (asc) / max (desc), ties by key in the sort direction, no value last."""
    rng = random.Random(99)
    with records() as repo:
        for i in range(40):
            codes = [{"system": "urn:c", "code": f"c{rng.randrange(6)}"} for _ in range(rng.randrange(0, 3))]
            resource: dict[str, object] = {
                "resourceType": "Observation",
                "status": "final",
                "code": {"coding": codes, "text": "t"},
            }
            if rng.random() < 0.8:
                resource["effectiveDateTime"] = _random_date(rng) if rng.random() < 0.7 else "2024-03"
            repo.update("Observation", f"s{i:02d}", {**resource, "id": f"s{i:02d}"})
    with records() as repo:
        for sort in ("date", "-date", "code", "-code"):
            walked, computed = [], []
            for offset in range(0, 45, 7):
                base = [("status", "final"), ("_sort", sort), ("_count", "7"), ("_offset", str(offset))]
                walked += [m.id for m in repo.search("Observation", base).matches]
                computed += [m.id for m in repo.search("Observation", [*base, ("_id:not", "none")]).matches]
            assert walked == computed, sort
            assert sorted(walked) == [f"s{i:02d}" for i in range(40)], sort
