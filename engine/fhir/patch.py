"""JSON Patch (RFC 6902) on a FHIR resource, for the ``PATCH`` interaction (R4 §3.1.0.8).

JSON Merge Patch (RFC 7386) is accepted too, as clients such as fhirpy send it: an object whose members
replace, and whose nulls remove, the resource's members.

A patch that cannot apply (bad operation, missing path, failed ``test``) is the client's error: it is
raised as :class:`InvalidInput` and never half-applied (the document is copied first). The caller
validates the result like any update; a patch may not change ``resourceType`` or ``id``.
"""

from __future__ import annotations

import copy
from typing import Any

import jsonpatch
import jsonpointer

from engine.errors import InvalidInput

__all__ = ["apply_json_patch", "apply_merge_patch"]

_OPS = frozenset({"add", "remove", "replace", "move", "copy", "test"})


def _check_operations(patch: Any) -> list[dict[str, Any]]:
    if not isinstance(patch, list):
        raise InvalidInput("A JSON Patch document must be a JSON array of operations")
    if not patch:
        raise InvalidInput("The JSON Patch document has no operations")
    for i, op in enumerate(patch):
        where = f"JSONPatch[{i}]"
        if not isinstance(op, dict):
            raise InvalidInput("Each JSON Patch operation must be a JSON object", location=where)
        if op.get("op") not in _OPS:
            raise InvalidInput(
                f"Unknown JSON Patch operation; expected one of {', '.join(sorted(_OPS))}", location=where
            )
        if not isinstance(op.get("path"), str):
            raise InvalidInput("A JSON Patch operation needs a string 'path'", location=where)
        if op["op"] in ("add", "replace", "test") and "value" not in op:
            raise InvalidInput(f"A JSON Patch '{op['op']}' operation needs a 'value'", location=where)
        if op["op"] in ("move", "copy") and not isinstance(op.get("from"), str):
            raise InvalidInput(f"A JSON Patch '{op['op']}' operation needs a string 'from'", location=where)
    return patch


def apply_json_patch(resource: dict[str, Any], patch: Any) -> dict[str, Any]:
    """The patched copy of ``resource``; InvalidInput when the patch is malformed or does not apply."""
    operations = _check_operations(patch)
    patched: Any = copy.deepcopy(resource)
    # one operation at a time so the error names the failing operation; messages carry the operation
    # and its path only, because the library's own messages quote the document (patient data)
    for i, op in enumerate(operations):
        where = f"JSONPatch[{i}]"
        try:
            patched = jsonpatch.JsonPatch([op]).apply(patched, in_place=True)
        except jsonpatch.JsonPatchTestFailed as exc:
            raise InvalidInput(f"JSON Patch 'test' at {op['path']!r} failed", location=where) from exc
        except (jsonpatch.JsonPatchException, jsonpointer.JsonPointerException) as exc:
            raise InvalidInput(
                f"JSON Patch '{op['op']}' cannot apply at {op['path']!r}: the path does not exist or is invalid",
                location=where,
            ) from exc
        except (TypeError, ValueError, KeyError, IndexError, AttributeError) as exc:
            raise InvalidInput(
                f"JSON Patch '{op['op']}' cannot apply at {op['path']!r}", location=where
            ) from exc
    if not isinstance(patched, dict):
        raise InvalidInput("The JSON Patch must leave a JSON object")
    for element in ("resourceType", "id"):
        if patched.get(element) != resource.get(element):
            raise InvalidInput(f"A patch may not change '{element}'", location=element)
    return patched


def _merge(target: Any, patch: Any) -> Any:
    if not isinstance(patch, dict):
        return copy.deepcopy(patch)
    merged = dict(target) if isinstance(target, dict) else {}
    for key, value in patch.items():
        if value is None:
            merged.pop(key, None)
        else:
            merged[key] = _merge(merged.get(key), value)
    return merged


def apply_merge_patch(resource: dict[str, Any], patch: Any) -> dict[str, Any]:
    """The copy of ``resource`` with the JSON Merge Patch ``patch`` (RFC 7386) applied."""
    if not isinstance(patch, dict):
        raise InvalidInput("A JSON Merge Patch must be a JSON object")
    patched = _merge(resource, patch)
    for element in ("resourceType", "id"):
        if element in patch and patched.get(element) != resource.get(element):
            raise InvalidInput(f"A patch may not change '{element}'", location=element)
    return patched
