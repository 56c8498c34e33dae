"""The FHIR RESTful interactions (R4 §3.1.0) as handlers: ``handler(repo, request, context) -> Answer``.

Handlers are synchronous (the repository is blocking): the app runs each in the thread pool inside one
unit of work, so a handler's writes commit together or not at all. Errors are raised as
``engine.errors.ProcessingError`` subclasses and rendered as OperationOutcomes by the app.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from dataclasses import dataclass
from datetime import datetime
from typing import Any
from urllib.parse import parse_qsl

from adapters.fhir_rest.answer import Answer
from adapters.fhir_rest.bundles import history_bundle, searchset
from adapters.fhir_rest.headers import Prefer, etag, http_date, parse_if_match
from adapters.fhir_rest.media import JSON_PATCH, body_media_type, parse_form_body, parse_json_body
from adapters.fhir_rest.request import FhirRequest
from adapters.fhir_rest.settings import FhirRestSettings
from engine.errors import InvalidInput, Issue, NotSupported, PreconditionFailed
from engine.fhir.outcome import information_outcome, operation_outcome
from engine.fhir.patch import apply_json_patch, apply_merge_patch
from engine.fhir.repository import ResourceRepository, StoredResource
from engine.fhir.validation import ensure_valid, validate_resource

__all__ = ["Context", "HANDLERS", "handle"]


@dataclass
class Context:
    """Everything about the HTTP request a handler may use, already decoded."""

    base: str
    """The service base URL, e.g. ``http://127.0.0.1:8080/fhir`` (no trailing slash)."""
    path: str
    """The path under the base (``Patient/_search``), for paging links."""
    params: list[tuple[str, str]]
    """Query parameters, ``_format`` removed."""
    headers: Mapping[str, str]
    """Request headers (case-insensitive lookup)."""
    body: bytes
    prefer: Prefer
    settings: FhirRestSettings
    capability: Callable[[], bytes]
    """The CapabilityStatement, serialized once."""


Handler = Callable[[ResourceRepository, FhirRequest, Context], Answer]


# ------------------------------------------------------------------------------------------------ helpers


def _resource_headers(base: str, stored: StoredResource, *, location: bool = False) -> dict[str, str]:
    headers = {"ETag": etag(stored.version_id), "Last-Modified": http_date(stored.last_updated)}
    if location:
        headers["Location"] = f"{base}/{stored.resource_type}/{stored.id}/_history/{stored.version_id}"
    return headers


def _etag_version(value: str | None) -> int | None:
    try:
        return parse_if_match(value)
    except InvalidInput:
        return None


def _write_answer(stored: StoredResource, status: int, ctx: Context, message: str) -> Answer:
    """The answer to create/update/patch, shaped by ``Prefer: return=`` (R4 §3.1.0.6)."""
    headers = _resource_headers(ctx.base, stored, location=True)
    if ctx.prefer.return_ == "minimal":
        return Answer(status, None, headers)
    if ctx.prefer.return_ == "OperationOutcome":
        return Answer(status, information_outcome(message), headers)
    return Answer(status, stored.resource, headers)


def _resource_body(ctx: Context) -> dict[str, Any]:
    body = parse_json_body(ctx.body, ctx.headers.get("content-type"))
    if not isinstance(body, dict):
        raise InvalidInput("The body must be a JSON object (a FHIR resource)", location="resourceType")
    return body


def _without_server_meta(resource: dict[str, Any]) -> dict[str, Any]:
    """The server owns meta.versionId and meta.lastUpdated (R4 §3.1.0.4): drop what a client sent."""
    meta = resource.get("meta")
    if isinstance(meta, dict) and ("versionId" in meta or "lastUpdated" in meta):
        resource = dict(resource)
        meta = {k: v for k, v in meta.items() if k not in ("versionId", "lastUpdated")}
        if meta:
            resource["meta"] = meta
        else:
            del resource["meta"]
    return resource


def _int_param(params: list[tuple[str, str]], name: str) -> int | None:
    values = [v for k, v in params if k == name]
    if not values:
        return None
    value = values[-1].strip()
    if not value.isdigit() or len(value) > 9:
        raise InvalidInput(f"{name} must be a non-negative integer", location=name)
    return int(value)


def _paging(ctx: Context, params: list[tuple[str, str]]) -> tuple[int, int]:
    count = _int_param(params, "_count")
    count = ctx.settings.default_count if count is None else min(count, ctx.settings.max_count)
    offset = _int_param(params, "_offset") or 0
    return count, offset


#: resource-level search parameters that may select resources in conditional criteria (the other ``_``
#: parameters control results: _count, _sort, _pretty...)
_CRITERIA_PARAMS = frozenset({"_id", "_lastUpdated", "_tag", "_profile", "_security", "_source"})


def _selecting(params: list[tuple[str, str]]) -> list[tuple[str, str]]:
    return [(k, v) for k, v in params if not k.startswith("_") or k.split(":", 1)[0] in _CRITERIA_PARAMS]


def _criteria(params: list[tuple[str, str]], what: str) -> list[tuple[str, str]]:
    criteria = _selecting(params)
    if not criteria:
        raise InvalidInput(f"{what} needs search criteria in the URL (e.g. ?identifier=system|value)")
    return criteria


# ------------------------------------------------------------------------------------------- instance level


def read(repo: ResourceRepository, req: FhirRequest, ctx: Context) -> Answer:
    assert req.resource_type and req.id
    read_raw = getattr(repo, "read_raw", None)
    if read_raw is not None:
        # the stored JSON bytes go out as stored: no parse and re-serialize on the hottest path
        raw, version_id, last_updated = read_raw(req.resource_type, req.id)
        headers = {"ETag": etag(version_id), "Last-Modified": http_date(last_updated)}
        body: dict[str, Any] | bytes = raw
    else:
        stored = repo.read(req.resource_type, req.id)
        headers = _resource_headers(ctx.base, stored)
        version_id, body = stored.version_id, stored.resource
    if _etag_version(ctx.headers.get("if-none-match")) == version_id:
        return Answer(304, None, headers)
    return Answer(200, body, headers)


def vread(repo: ResourceRepository, req: FhirRequest, ctx: Context) -> Answer:
    assert req.resource_type and req.id and req.version_id is not None
    stored = repo.vread(req.resource_type, req.id, req.version_id)
    return Answer(200, stored.resource, _resource_headers(ctx.base, stored))


def update(repo: ResourceRepository, req: FhirRequest, ctx: Context) -> Answer:
    assert req.resource_type and req.id
    resource = _resource_body(ctx)
    if "id" not in resource:
        raise InvalidInput("The resource in a PUT must carry its id (R4 §3.1.0.4)", location="id")
    if resource["id"] != req.id:
        raise InvalidInput("The id in the body does not match the id in the URL", location="id")
    resource = _without_server_meta(resource)
    ensure_valid(resource, resource_type=req.resource_type)
    if_match = parse_if_match(ctx.headers.get("if-match"))
    stored, created = repo.update(req.resource_type, req.id, resource, if_match=if_match)
    return _write_answer(
        stored, 201 if created else 200, ctx, f"{'Created' if created else 'Updated'} {stored.reference}"
    )


def patch(repo: ResourceRepository, req: FhirRequest, ctx: Context) -> Answer:
    assert req.resource_type and req.id
    operations = parse_json_body(ctx.body, ctx.headers.get("content-type"), patch=True)
    current = repo.read(req.resource_type, req.id)
    if_match = parse_if_match(ctx.headers.get("if-match"))
    if if_match is not None and if_match != current.version_id:
        raise PreconditionFailed(f"Version {if_match} is not current for {current.reference}")
    media = body_media_type(ctx.headers.get("content-type"))
    if media == JSON_PATCH or isinstance(operations, list):
        patched = apply_json_patch(current.resource, operations)
    else:  # an object: JSON Merge Patch (RFC 7386)
        patched = apply_merge_patch(current.resource, operations)
    patched = _without_server_meta(patched)
    ensure_valid(patched, resource_type=req.resource_type)
    # guard against a concurrent writer between our read and this update
    stored, _ = repo.update(req.resource_type, req.id, patched, if_match=current.version_id)
    return _write_answer(stored, 200, ctx, f"Patched {stored.reference}")


def delete(repo: ResourceRepository, req: FhirRequest, ctx: Context) -> Answer:
    assert req.resource_type and req.id
    deleted = repo.delete(req.resource_type, req.id)
    if ctx.prefer.return_ == "minimal":
        return Answer(204)
    what = f"{req.resource_type}/{req.id}"
    return Answer(200, information_outcome(f"Deleted {what}" if deleted else f"{what} was already absent"))


def history_instance(repo: ResourceRepository, req: FhirRequest, ctx: Context) -> Answer:
    return _history(repo, req, ctx)


# ----------------------------------------------------------------------------------------------- type level


def create(repo: ResourceRepository, req: FhirRequest, ctx: Context) -> Answer:
    assert req.resource_type
    resource = _without_server_meta(_resource_body(ctx))
    resource.pop("id", None)  # the server assigns ids on create (R4 §3.1.0.5)
    ensure_valid(resource, resource_type=req.resource_type)
    condition = ctx.headers.get("if-none-exist")
    criteria: list[tuple[str, str]] = []
    if condition is not None:
        query = condition.split("?", 1)[1] if "?" in condition else condition
        criteria = parse_qsl(query.strip(), keep_blank_values=True)
        if not criteria:
            raise InvalidInput("If-None-Exist needs search criteria such as identifier=system|value")
    else:
        # POST [type]?criteria: the conditional create some clients (fhirpy) send instead of If-None-Exist
        criteria = _selecting(ctx.params)
    if criteria:
        stored, created = repo.conditional_create(req.resource_type, criteria, resource)
    else:
        stored, created = repo.create(resource), True
    return _write_answer(
        stored, 201 if created else 200, ctx, f"{'Created' if created else 'Found'} {stored.reference}"
    )


def conditional_update(repo: ResourceRepository, req: FhirRequest, ctx: Context) -> Answer:
    assert req.resource_type
    criteria = _criteria(ctx.params, "A conditional update")
    resource = _without_server_meta(_resource_body(ctx))
    ensure_valid(resource, resource_type=req.resource_type)
    stored, created = repo.conditional_update(req.resource_type, criteria, resource)
    return _write_answer(
        stored, 201 if created else 200, ctx, f"{'Created' if created else 'Updated'} {stored.reference}"
    )


def conditional_delete(repo: ResourceRepository, req: FhirRequest, ctx: Context) -> Answer:
    assert req.resource_type
    criteria = _criteria(ctx.params, "A conditional delete")
    found = repo.search(req.resource_type, [*criteria, ("_count", "2")])
    if found.ignored:
        # an ignored criterion would widen the match: never delete on a guess
        names = ", ".join(sorted({name[:64] for name, _ in found.ignored}))
        raise InvalidInput(f"Unknown search parameter(s) in the conditional delete: {names}")
    if len(found.matches) > 1:
        raise PreconditionFailed("Several resources match the criteria of this conditional delete")
    if found.matches:
        target = found.matches[0]
        repo.delete(target.resource_type, target.id)
        message = f"Deleted {target.reference}"
    else:
        message = "No resource matched; nothing was deleted"
    if ctx.prefer.return_ == "minimal":
        return Answer(204)
    return Answer(200, information_outcome(message))


def search(repo: ResourceRepository, req: FhirRequest, ctx: Context) -> Answer:
    params = list(ctx.params)
    if ctx.path.endswith("_search"):
        params += parse_form_body(ctx.body, ctx.headers.get("content-type"))
    count, offset = _paging(ctx, params)
    query = [(k, v) for k, v in params if k not in ("_count", "_offset")]
    query += [("_count", str(count))] + ([("_offset", str(offset))] if offset else [])
    if req.compartment is not None:
        result = repo.search(req.resource_type, query, compartment=req.compartment)
    else:
        result = repo.search(req.resource_type, query)
    if result.ignored and ctx.prefer.strict:
        names = ", ".join(sorted({name[:64] for name, _ in result.ignored}))
        raise InvalidInput(
            f"Unknown search parameter(s): {names} (Prefer: handling=strict)",
            [
                Issue(f"Unknown search parameter '{n[:64]}'", location=n[:64], code="not-supported")
                for n, _ in result.ignored
            ],
        )
    path = req.resource_type or ""
    if req.compartment is not None:
        path = f"{req.compartment[0]}/{req.compartment[1]}/{path}"
    result.offset = result.offset or offset
    bundle = searchset(ctx.base, path, query, result, count=count, ignored=result.ignored)
    return Answer(200, bundle)


def history_type(repo: ResourceRepository, req: FhirRequest, ctx: Context) -> Answer:
    return _history(repo, req, ctx)


def _since(params: list[tuple[str, str]]) -> datetime | None:
    values = [v for k, v in params if k == "_since"]
    if not values:
        return None
    try:
        moment = datetime.fromisoformat(values[-1].strip())
    except ValueError:
        raise InvalidInput(
            "_since must be an instant such as 2026-01-01T00:00:00Z", location="_since"
        ) from None
    if moment.tzinfo is None:
        raise InvalidInput("_since must carry a time zone (Z or +hh:mm)", location="_since")
    return moment


def _history(repo: ResourceRepository, req: FhirRequest, ctx: Context) -> Answer:
    count, offset = _paging(ctx, ctx.params)
    since = _since(ctx.params)
    entries = repo.history(req.resource_type, req.id, since=since, count=count + 1, offset=offset)
    if req.id is not None and not entries and offset == 0 and since is None:
        assert req.resource_type
        repo.read(req.resource_type, req.id)  # NotFound for a resource that never existed
    has_more = len(entries) > count
    path = "/".join(p for p in (req.resource_type, req.id, "_history") if p)
    kept = [(k, v) for k, v in ctx.params if k not in ("_count", "_offset")]
    bundle = history_bundle(
        ctx.base, path, kept, entries[:count], offset=offset, count=count, has_more=has_more
    )
    return Answer(200, bundle)


# ----------------------------------------------------------------------------------------------- $validate


def _validate_target(req: FhirRequest, ctx: Context, repo: ResourceRepository) -> tuple[Any, str]:
    """The resource to validate and the mode, from the query and a Resource or Parameters body."""
    params = dict(ctx.params)
    mode = params.get("mode", "")
    resource: Any = None
    if ctx.body.strip():
        body = parse_json_body(ctx.body, ctx.headers.get("content-type"))
        if isinstance(body, dict) and body.get("resourceType") == "Parameters":
            for p in body.get("parameter") or []:
                if not isinstance(p, dict):
                    continue
                if p.get("name") == "resource":
                    resource = p.get("resource")
                elif p.get("name") == "mode":
                    mode = str(p.get("valueCode") or p.get("valueString") or mode)
        else:
            resource = body
    elif req.id is not None and mode != "delete":
        assert req.resource_type
        resource = repo.read(req.resource_type, req.id).resource
    if mode not in ("", "create", "update", "delete"):
        raise InvalidInput("mode must be create, update or delete", location="mode")
    return resource, mode


def validate(repo: ResourceRepository, req: FhirRequest, ctx: Context) -> Answer:
    """``$validate`` (R4 §6.1.0.x, OperationDefinition Resource-validate): always 200 with an
    OperationOutcome naming every problem; the same checks guard create and update."""
    resource, mode = _validate_target(req, ctx, repo)
    issues: list[Issue] = []
    if mode == "delete":
        if req.id is None:
            raise InvalidInput("mode=delete needs the instance-level $validate (Type/id/$validate)")
        assert req.resource_type
        repo.read(req.resource_type, req.id)  # NotFound / Gone are the answer
        return Answer(200, information_outcome(f"{req.resource_type}/{req.id} can be deleted"))
    if resource is None:
        raise InvalidInput("Nothing to validate: send a resource, or Parameters with a 'resource' parameter")
    issues = validate_resource(resource, resource_type=req.resource_type)
    if mode == "update" and isinstance(resource, dict):
        if "id" not in resource:
            issues.append(
                Issue("An update needs the resource id", location=f"{req.resource_type}.id", code="required")
            )
        elif req.id is not None and resource.get("id") != req.id:
            issues.append(Issue("The id does not match the URL", location=f"{req.resource_type}.id"))
    if not issues:
        return Answer(200, information_outcome("Validation successful: no issues"))
    return Answer(200, operation_outcome(issues))


# ---------------------------------------------------------------------------------------------- system level


def _relocate(issues: list[Issue], prefix: str, resource_type: str) -> list[Issue]:
    moved = []
    for issue in issues:
        loc = issue.location or ""
        if loc == resource_type or loc.startswith(resource_type + ".") or loc.startswith(resource_type + "["):
            loc = prefix + loc[len(resource_type) :]
        elif loc:
            loc = f"{prefix}.{loc}"
        else:
            loc = prefix
        moved.append(Issue(issue.message, location=loc, code=issue.code, severity=issue.severity))
    return moved


def batch(repo: ResourceRepository, req: FhirRequest, ctx: Context) -> Answer:
    """``POST [base]`` with a batch or transaction Bundle (R4 §3.1.0.11)."""
    bundle = _resource_body(ctx)
    if bundle.get("resourceType") != "Bundle":
        raise InvalidInput(
            "POST to the base takes a Bundle of type batch or transaction", location="resourceType"
        )
    kind = bundle.get("type")
    if kind not in ("batch", "transaction"):
        raise InvalidInput("Bundle.type must be batch or transaction", location="Bundle.type")
    entries = bundle.get("entry") or []
    if not isinstance(entries, list):
        raise InvalidInput("Bundle.entry must be an array", location="Bundle.entry")
    # the Bundle's own structure first, with entry resources set aside and checked one by one so each
    # problem is located at Bundle.entry[i].resource...
    shell = {
        **bundle,
        "entry": [
            {k: v for k, v in e.items() if k != "resource"} if isinstance(e, dict) else e for e in entries
        ],
    }
    if not shell["entry"]:
        shell.pop("entry")
    issues = validate_resource(shell, resource_type="Bundle")
    per_entry: dict[int, list[Issue]] = {}
    for i, entry in enumerate(entries):
        if isinstance(entry, dict) and "resource" in entry:
            resource = entry["resource"]
            method = (
                (entry.get("request") or {}).get("method") if isinstance(entry.get("request"), dict) else None
            )
            if isinstance(resource, dict) and method in ("POST", "PUT"):
                resource = _without_server_meta(resource)
                entry["resource"] = resource
            found = validate_resource(resource)
            if found:
                rtype = resource.get("resourceType", "") if isinstance(resource, dict) else ""
                per_entry[i] = _relocate(found, f"Bundle.entry[{i}].resource", str(rtype))
    if issues:
        raise InvalidInput("The Bundle is not valid", issues)
    if kind == "transaction" or not per_entry:
        if per_entry:
            found_all = [issue for i in sorted(per_entry) for issue in per_entry[i]]
            raise InvalidInput("The transaction has invalid entries; nothing was processed", found_all)
        return Answer(200, repo.transaction(bundle))
    # batch: entries are independent (R4 §3.1.0.11.1): process the valid ones, answer the others with 400
    valid = [e for i, e in enumerate(entries) if i not in per_entry]
    response = (
        repo.transaction({**bundle, "entry": valid})
        if valid
        else {"resourceType": "Bundle", "type": "batch-response", "entry": []}
    )
    answered = iter(response.get("entry") or [])
    merged = []
    for i in range(len(entries)):
        if i in per_entry:
            merged.append(
                {"response": {"status": "400 Bad Request", "outcome": operation_outcome(per_entry[i])}}
            )
        else:
            merged.append(next(answered, {"response": {"status": "500 Internal Server Error"}}))
    return Answer(200, {**response, "entry": merged})


def search_system(repo: ResourceRepository, req: FhirRequest, ctx: Context) -> Answer:
    return search(repo, req, ctx)


def history_system(repo: ResourceRepository, req: FhirRequest, ctx: Context) -> Answer:
    return _history(repo, req, ctx)


def capabilities(repo: ResourceRepository, req: FhirRequest, ctx: Context) -> Answer:
    return Answer(200, ctx.capability())


HANDLERS: dict[str, Handler] = {
    "read": read,
    "vread": vread,
    "update": update,
    "patch": patch,
    "delete": delete,
    "history-instance": history_instance,
    "create": create,
    "conditional-update": conditional_update,
    "conditional-delete": conditional_delete,
    "search-type": search,
    "search-compartment": search,
    "history-type": history_type,
    "validate": validate,
    "batch": batch,
    "search-system": search_system,
    "history-system": history_system,
    "capabilities": capabilities,
}

#: interactions that need no database (answered without opening a unit of work)
NO_STORE = frozenset({"capabilities"})


def handle(repo: ResourceRepository, req: FhirRequest, ctx: Context) -> Answer:
    handler = HANDLERS.get(req.interaction)
    if handler is None:
        raise NotSupported(f"Interaction {req.interaction} is not supported", 405)
    return handler(repo, req, ctx)
