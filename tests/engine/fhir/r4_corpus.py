"""Every FHIR resource the test suite has, for the differential test of the compiled R4 validator: the
mapped output of every HL7 v2 message in tests/fixtures (and the golden inputs), the JSON files under
tests/ (golden bundles, FHIR-Converter's expected outputs), and the resource literals written in the test
modules (the FHIR REST tests' payloads among them)."""

from __future__ import annotations

import ast
import json
from collections.abc import Iterator
from functools import lru_cache
from pathlib import Path
from typing import Any

TESTS = Path(__file__).resolve().parents[2]


def _mapped() -> Iterator[tuple[str, dict[str, Any]]]:
    from engine.errors import MappingError
    from engine.hl7v2.batch import split_batch
    from engine.mapping import map_message

    for path in sorted(TESTS.rglob("*.hl7")):
        for n, raw in enumerate(split_batch(path.read_bytes())):
            try:
                bundle = map_message(raw).bundle
            except MappingError:
                continue  # messages the tests expect to fail mapping
            yield f"mapped {path.relative_to(TESTS)}#{n}", bundle


def _json_files() -> Iterator[tuple[str, dict[str, Any]]]:
    for path in sorted(TESTS.rglob("*.json")):
        data = json.loads(path.read_text())
        if isinstance(data, dict) and isinstance(data.get("resourceType"), str):
            yield str(path.relative_to(TESTS)), data


def _literals() -> Iterator[tuple[str, dict[str, Any]]]:
    for path in sorted(TESTS.rglob("*.py")):
        if path.name.startswith("test_r4_validator"):
            continue  # the validator's own tests hold the known R4/R4B differences on purpose
        tree = ast.parse(path.read_text())
        for node in ast.walk(tree):
            if not isinstance(node, ast.Dict):
                continue
            try:
                value = ast.literal_eval(node)
            except (ValueError, TypeError, SyntaxError, MemoryError, RecursionError):
                continue
            if isinstance(value, dict) and isinstance(value.get("resourceType"), str):
                yield f"{path.relative_to(TESTS)}:{node.lineno}", value


def _with_entries(items: Iterator[tuple[str, dict[str, Any]]]) -> Iterator[tuple[str, dict[str, Any]]]:
    for name, resource in items:
        yield name, resource
        if resource.get("resourceType") == "Bundle":
            entries = resource.get("entry")
            for i, entry in enumerate(entries if isinstance(entries, list) else []):
                if isinstance(entry, dict) and isinstance(entry.get("resource"), dict):
                    yield f"{name} entry[{i}]", entry["resource"]


@lru_cache(maxsize=1)
def corpus() -> tuple[tuple[str, dict[str, Any]], ...]:
    """(where it comes from, resource) for every distinct resource, bundles and their entries."""
    seen: set[str] = set()
    out = []
    for name, resource in _with_entries(iter([*_mapped(), *_json_files(), *_literals()])):
        key = json.dumps(resource, sort_keys=True, default=str)
        if key not in seen:
            seen.add(key)
            out.append((name, resource))
    return tuple(out)
