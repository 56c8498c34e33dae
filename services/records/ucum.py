"""Canonical units for quantity search: the simple UCUM units whose conversion is a constant factor.

``mg`` and ``g`` are both mass; a search ``value-quantity=5|http://unitsofmeasure.org|g`` must find an
Observation of 5000 mg (R4 3.1.1.4.6: servers may compare in canonical units). Only prefix/factor units are
listed; anything else (temperatures, arbitrary units, counts per volume) is compared by code as written.
"""

from __future__ import annotations

__all__ = ["UCUM_SYSTEM", "canonical"]

UCUM_SYSTEM = "http://unitsofmeasure.org"

_PREFIXES = {"": 1.0, "k": 1e3, "d": 1e-1, "c": 1e-2, "m": 1e-3, "u": 1e-6, "n": 1e-9, "p": 1e-12}
_BASES = {"g": "g", "L": "L", "l": "L", "mol": "mol", "eq": "eq", "m": "m", "[IU]": "[IU]", "U": "U"}

_UNITS: dict[str, tuple[str, float]] = {}
for _base, _canon in _BASES.items():
    for _prefix, _factor in _PREFIXES.items():
        _UNITS.setdefault(_prefix + _base, (_canon, _factor))
_UNITS.update({"s": ("s", 1.0), "min": ("s", 60.0), "h": ("s", 3600.0), "d": ("s", 86400.0)})
_UNITS.update({"ms": ("s", 1e-3), "wk": ("s", 604800.0)})


def canonical(code: str | None, value: float | None) -> tuple[str, float] | tuple[None, None]:
    """(canonical unit, value in it) for a simple UCUM code, else (None, None). ``mg/dL`` style ratios
    convert when both sides are simple units."""
    if code is None or value is None:
        return None, None
    if code in _UNITS:
        unit, factor = _UNITS[code]
        return unit, value * factor
    if code.count("/") == 1:
        num, den = code.split("/")
        if num in _UNITS and den in _UNITS:
            (nu, nf), (du, df) = _UNITS[num], _UNITS[den]
            return f"{nu}/{du}", value * nf / df
    return None, None
