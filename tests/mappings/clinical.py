"""Clinical content of a FHIR bundle, independent of ids, references and converter style, so Conduit's
output can be compared with another converter's (FHIR-Converter's expected outputs in the corpus)."""

from __future__ import annotations

from typing import Any

__all__ = ["facts", "compare"]


def _codes(concept: dict[str, Any] | None) -> set[str]:
    if not concept:
        return set()
    return {c.get("code", "") for c in concept.get("coding", []) if c.get("code")}


def _value(obs: dict[str, Any]) -> Any:
    if "valueQuantity" in obs:
        q = obs["valueQuantity"]
        return (
            "Q",
            q.get("comparator", ""),
            float(q["value"]) if "value" in q else None,
            (q.get("unit") or q.get("code") or "").lower(),
        )
    if "valueString" in obs:
        return ("S", obs["valueString"].strip())
    if "valueCodeableConcept" in obs:
        return ("C", frozenset(_codes(obs["valueCodeableConcept"])))
    if "valueDateTime" in obs:
        return ("D", obs["valueDateTime"][:10])
    if "valueRange" in obs:
        r = obs["valueRange"]
        return ("R", r.get("low", {}).get("value"), r.get("high", {}).get("value"))
    return None


def _range(obs: dict[str, Any]) -> tuple[Any, Any] | None:
    rr = (obs.get("referenceRange") or [None])[0]
    if not rr:
        return None
    low, high = rr.get("low", {}).get("value"), rr.get("high", {}).get("value")
    return (float(low) if low is not None else None, float(high) if high is not None else None)


def facts(bundle: dict[str, Any]) -> dict[str, Any]:
    out: dict[str, Any] = {
        "identifiers": set(),
        "families": set(),
        "birthDates": set(),
        "genders": set(),
        "obs": [],
    }
    for entry in bundle.get("entry", []):
        r = entry.get("resource", {})
        if r.get("resourceType") == "Patient":
            out["identifiers"] |= {i.get("value") for i in r.get("identifier", []) if i.get("value")}
            out["families"] |= {n.get("family", "").upper() for n in r.get("name", []) if n.get("family")}
            if r.get("birthDate"):
                out["birthDates"].add(r["birthDate"])
            if r.get("gender"):
                out["genders"].add(r["gender"])
        elif r.get("resourceType") == "Observation":
            out["obs"].append(
                {
                    "codes": _codes(r.get("code")),
                    "value": _value(r),
                    "status": r.get("status"),
                    "interpretation": set().union(*[_codes(c) for c in r.get("interpretation", [])])
                    if r.get("interpretation")
                    else set(),
                    "range": _range(r),
                }
            )
    return out


def _same_value(ours: Any, theirs: Any) -> bool:
    if ours == theirs:
        return True
    if ours is None or theirs is None:
        return False
    if ours[0] == "Q" and theirs[0] == "Q":
        return ours[1] == theirs[1] and ours[2] == theirs[2]
    if ours[0] == "Q" and theirs[0] == "S":  # "<1" as a string there, a quantity with comparator here
        text = theirs[1].replace(" ", "")
        number = ours[2]
        return text in (f"{ours[1]}{number:g}", f"{ours[1]}{number}")
    return False


def compare(ours: dict[str, Any], theirs: dict[str, Any]) -> list[str]:
    """Differences in clinical content, as readable lines (empty when the content matches)."""
    diffs: list[str] = []
    for key in ("identifiers", "families", "birthDates", "genders"):
        missing = theirs[key] - ours[key]
        if missing:
            diffs.append(f"{key}: missing {sorted(missing)}")
    pool = list(ours["obs"])
    for exp in theirs["obs"]:
        candidates = [o for o in pool if o["codes"] & exp["codes"]]
        if not candidates:
            diffs.append(f"observation {sorted(exp['codes'])}: not produced")
            continue
        match = next((o for o in candidates if _same_value(o["value"], exp["value"])), candidates[0])
        pool.remove(match)
        if exp["value"] is not None and not _same_value(match["value"], exp["value"]):
            diffs.append(f"observation {sorted(exp['codes'])}: value {match['value']} != {exp['value']}")
        if (
            exp["value"] is not None
            and exp["value"][0] == "Q"
            and match["value"]
            and match["value"][0] == "Q"
        ):
            if exp["value"][3] and match["value"][3] != exp["value"][3]:
                diffs.append(
                    f"observation {sorted(exp['codes'])}: unit {match['value'][3]} != {exp['value'][3]}"
                )
        if exp["interpretation"] - match["interpretation"]:
            diffs.append(
                f"observation {sorted(exp['codes'])}: interpretation {match['interpretation']} != {exp['interpretation']}"
            )
        if exp["range"] and exp["range"] != (None, None) and match["range"] != exp["range"]:
            diffs.append(f"observation {sorted(exp['codes'])}: range {match['range']} != {exp['range']}")
        if exp["status"] and exp["status"] != "unknown" and match["status"] != exp["status"]:
            diffs.append(f"observation {sorted(exp['codes'])}: status {match['status']} != {exp['status']}")
    return diffs
