"""Checking mapped output: full FHIR R4 validation (``map test``, and the message path unless
``mapping.full_validation`` is turned off) and the list of message fields a mapping did not read."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from engine.errors import Issue
from engine.hl7v2.message import Message

__all__ = ["validate_bundle", "validate_bundle_models", "unused_fields"]


def validate_bundle(bundle: dict[str, Any]) -> list[Issue]:
    """Every entry's resource against FHIR R4 (engine.fhir.r4_validator, compiled from the R4 JSON schema);
    issues located by entry."""
    from engine.fhir.r4_validator import validate_resource

    return _validate_entries(bundle, validate_resource)


def validate_bundle_models(bundle: dict[str, Any]) -> list[Issue]:
    """The same with the fhir.resources R4B models (engine.fhir.validation): ~15x slower, kept to compare."""
    from engine.fhir.validation import validate_resource_models

    return _validate_entries(bundle, validate_resource_models)


def _validate_entries(bundle: dict[str, Any], validate_resource: Callable[[Any], list[Issue]]) -> list[Issue]:
    issues: list[Issue] = []
    for n, entry in enumerate(bundle.get("entry", [])):
        resource = entry.get("resource") or {}
        for issue in validate_resource(_without_local_refs(resource)):
            if issue.severity != "error":
                continue
            issues.append(
                Issue(
                    issue.message,
                    location=f"Bundle.entry[{n}] {issue.location or resource.get('resourceType')}",
                    code=issue.code,
                )
            )
    return issues


def _without_local_refs(resource: dict[str, Any]) -> dict[str, Any]:
    return resource


def unused_fields(message: Message, used: set[tuple[int, int]]) -> list[str]:
    """``PV1-19``, ``ZZ1`` …: valued fields that no part of the mapping read (MSH and batch headers aside)."""
    out: list[str] = []
    used_segments = {i for i, _ in used}
    for seg in message.segments:
        if seg.name in ("MSH",):
            continue
        if seg.index not in used_segments:
            out.append(f"{seg.location} (whole segment)")
            continue
        for n in range(1, len(seg.fields)):
            if seg.fields[n] and (seg.index, n) not in used:
                out.append(f"{seg.location}-{n}")
    return out
