"""Batch and transaction Bundles (R4 3.1.0.11 and 2.36.4): processing rules, independent of HTTP and SQL.

:func:`process_bundle` runs the entries against any :class:`~engine.fhir.repository.ResourceRepository`:

* **transaction** — all or nothing: entries run in the order DELETE, POST, PUT/PATCH, GET (responses stay
  in request order); ``fullUrl`` values (``urn:uuid:...`` or absolute) of created/updated entries are
  mapped to ``Type/id`` first and every reference — and any other string equal to a ``urn:uuid:`` fullUrl —
  is rewritten; conditional references (``Patient?identifier=sys|v``) resolve to their single match. The
  first failure raises, and the caller's unit of work rolls everything back.
* **batch** — entries are independent: each runs in its own savepoint (when the caller provides one) and a
  failure becomes that entry's response (status + OperationOutcome) without touching the others.

``request.ifNoneExist`` (conditional create), ``ifMatch`` (version check), ``ifNoneMatch`` (GET: 304) are
honoured. The response Bundle carries status, location, etag and lastModified per entry.
"""

from __future__ import annotations

import base64
import re
import uuid
from collections.abc import Callable
from contextlib import AbstractContextManager, nullcontext
from dataclasses import dataclass, field
from typing import Any
from urllib.parse import parse_qsl, urlsplit

import orjson

from engine.errors import InvalidInput, Issue, NotSupported, PreconditionFailed, ProcessingError
from engine.fhir.repository import ResourceRepository, StoredResource

__all__ = ["process_bundle", "METHOD_ORDER", "parse_etag", "rewrite_references"]

#: transaction processing order (R4 3.1.0.11.2): deletes, creates, updates/patches, reads
METHOD_ORDER = {"DELETE": 0, "POST": 1, "PUT": 2, "PATCH": 2, "GET": 3, "HEAD": 3}
_STATUS = {200: "200 OK", 201: "201 Created", 204: "204 No Content", 304: "304 Not Modified"}
_REASONS = {400: "Bad Request", 404: "Not Found", 405: "Method Not Allowed", 409: "Conflict", 410: "Gone", 412: "Precondition Failed", 422: "Unprocessable Entity"}  # fmt: skip
_TYPE = re.compile(r"^[A-Z][A-Za-z]{1,63}\Z")
_ID = re.compile(r"^[A-Za-z0-9\-.]{1,64}\Z")

Savepoint = Callable[[], AbstractContextManager[Any]]


def parse_etag(value: str | None) -> int | None:
    """``W/"3"`` or ``3`` → 3; None when absent; InvalidInput when it is no version."""
    if value is None or value == "":
        return None
    text = value.strip()
    if text.startswith("W/"):
        text = text[2:]
    text = text.strip('"')
    if not text.isdigit():
        raise InvalidInput(f'{value!r} is not a version ETag (W/"n")', location="ifMatch")
    return int(text)


@dataclass
class _Target:
    resource_type: str
    id: str | None = None
    version: int | None = None
    history: bool = False
    query: list[tuple[str, str]] | None = None  # conditional or search


@dataclass
class _Entry:
    index: int
    method: str
    url: str
    target: _Target
    resource: dict[str, Any] | None
    request: dict[str, Any]
    full_url: str | None
    assigned_id: str | None = None
    existing: StoredResource | None = None  # ifNoneExist matched
    same_as: _Entry | None = None  # an earlier POST of this Bundle with the same ifNoneExist
    stored: StoredResource | None = None
    response: dict[str, Any] = field(default_factory=dict)


def _parse_url(url: str, where: str) -> _Target:
    parts = urlsplit(url)
    path = parts.path
    if parts.scheme:  # absolute: keep what follows the base (the last Type[/id...] segments)
        segments = [s for s in path.split("/") if s]
        for i, seg in enumerate(segments):
            if _TYPE.match(seg):
                path = "/".join(segments[i:])
                break
    segments = [s for s in path.strip("/").split("/") if s]
    query = parse_qsl(parts.query, keep_blank_values=True) if parts.query else None
    if not segments or not _TYPE.match(segments[0]):
        raise InvalidInput(f"{where}: {url!r} does not start with a resource type", location=where)
    target = _Target(segments[0], query=query)
    if len(segments) >= 2:
        if not _ID.match(segments[1]):
            raise InvalidInput(f"{where}: {segments[1]!r} is not a valid id", location=where)
        target.id = segments[1]
    if len(segments) >= 3:
        if segments[2] != "_history":
            raise InvalidInput(f"{where}: {url!r} is not a supported request URL", location=where)
        target.history = True
        if len(segments) == 4:
            if not segments[3].isdigit():
                raise InvalidInput(f"{where}: {segments[3]!r} is not a version", location=where)
            target.version = int(segments[3])
        elif len(segments) > 4:
            raise InvalidInput(f"{where}: {url!r} is not a supported request URL", location=where)
    return target


def _walk_strings(node: Any, replace: Callable[[str, bool], str | None]) -> Any:
    """Copy of ``node`` with string values replaced where ``replace(value, is_reference)`` says so."""
    if isinstance(node, dict):
        out = {}
        for key, value in node.items():
            if isinstance(value, str):
                new = replace(value, key == "reference")
                out[key] = value if new is None else new
            else:
                out[key] = _walk_strings(value, replace)
        return out
    if isinstance(node, list):
        return [(replace(v, False) or v) if isinstance(v, str) else _walk_strings(v, replace) for v in node]
    return node


def rewrite_references(
    resource: dict[str, Any], mapping: dict[str, str], resolve: Callable[[str], str] | None = None
) -> dict[str, Any]:
    """Rewrite ``Reference.reference`` values found in ``mapping`` (fullUrl → Type/id), any other string
    equal to a mapped ``urn:uuid:`` (e.g. in a uri element), and conditional references via ``resolve``."""

    def replace(value: str, is_reference: bool) -> str | None:
        if value in mapping and (is_reference or value.startswith("urn:")):
            return mapping[value]
        if is_reference and resolve is not None and "?" in value and _TYPE.match(value.split("?", 1)[0]):
            return resolve(value)
        return None

    return _walk_strings(resource, replace)


def _criteria_key(
    resource_type: str, query: list[tuple[str, str]]
) -> tuple[str, tuple[tuple[str, str], ...]]:
    return resource_type, tuple(sorted(query))


def _outcome(error: ProcessingError) -> dict[str, Any]:
    return {
        "resourceType": "OperationOutcome",
        "issue": [
            {
                "severity": i.severity,
                "code": i.code,
                "diagnostics": i.message,
                **({"expression": [i.location]} if i.location else {}),
            }
            for i in error.issues
        ],
    }


def _status_line(status: int) -> str:
    return _STATUS.get(status) or f"{status} {_REASONS.get(status, 'Error')}"


def _written(stored: StoredResource, status: int) -> dict[str, Any]:
    return {
        "status": _status_line(status),
        "location": f"{stored.resource_type}/{stored.id}/_history/{stored.version_id}",
        "etag": stored.etag,
        "lastModified": stored.last_updated.isoformat().replace("+00:00", "Z"),
    }


class _Processor:
    def __init__(self, repo: ResourceRepository, bundle: dict[str, Any], savepoint: Savepoint | None) -> None:
        if not isinstance(bundle, dict) or bundle.get("resourceType") != "Bundle":
            raise InvalidInput("the request body is not a Bundle", location="Bundle")
        self.kind = bundle.get("type")
        if self.kind not in ("transaction", "batch"):
            raise InvalidInput(
                f"Bundle.type must be transaction or batch, not {self.kind!r}", location="Bundle.type"
            )
        self.repo = repo
        self.savepoint = savepoint or nullcontext
        self.mapping: dict[str, str] = {}
        self.conditional_entries: dict[tuple[str, tuple[tuple[str, str], ...]], _Entry] = {}
        self.raw_entries = bundle.get("entry") or []
        if not isinstance(self.raw_entries, list):
            raise InvalidInput("Bundle.entry must be a list", location="Bundle.entry")

    def parse_entry(self, index: int, raw: Any) -> _Entry:
        where = f"Bundle.entry[{index}]"
        if not isinstance(raw, dict) or not isinstance(raw.get("request"), dict):
            raise InvalidInput(f"{where}: request is missing", location=f"{where}.request")
        request = raw["request"]
        method = str(request.get("method", "")).upper()
        if method not in METHOD_ORDER:
            raise InvalidInput(
                f"{where}: request.method {method!r} is not supported", location=f"{where}.request.method"
            )
        url = request.get("url")
        if not isinstance(url, str) or not url:
            raise InvalidInput(f"{where}: request.url is missing", location=f"{where}.request.url")
        target = _parse_url(url, f"{where}.request.url")
        resource = raw.get("resource")
        if method in ("POST", "PUT", "PATCH"):
            if not isinstance(resource, dict):
                raise InvalidInput(f"{where}: {method} needs a resource", location=f"{where}.resource")
        if method in ("POST", "PUT") and resource.get("resourceType") != target.resource_type:  # type: ignore[union-attr]
            raise InvalidInput(
                f"{where}: resourceType {resource.get('resourceType')!r} does not match {url!r}",  # type: ignore[union-attr]
                location=f"{where}.resource.resourceType",
            )
        full_url = raw.get("fullUrl") if isinstance(raw.get("fullUrl"), str) else None
        return _Entry(index, method, url, target, resource, request, full_url)

    # -- identity: fullUrl -> Type/id, before any write --------------------------------------------------
    def _single(
        self, resource_type: str, query: list[tuple[str, str]], what: str, *, write: bool = False
    ) -> StoredResource | None:
        lock = getattr(self.repo, "lock_criteria", None) if write else None
        if lock is not None:  # a store may serialize conditional writes on the same criteria
            lock(resource_type, query)
        result = self.repo.search(resource_type, [*query, ("_count", "2")])
        if result.ignored:
            names = ", ".join(n for n, _ in result.ignored)
            raise InvalidInput(f"{what}: unknown search parameter(s) {names}")
        if len(result.matches) > 1:
            raise PreconditionFailed(f"{what}: several {resource_type} resources match")
        return result.matches[0] if result.matches else None

    def assign(self, entry: _Entry) -> None:
        """Decide the Type/id each POST/PUT entry writes, before anything is written, so fullUrls and
        conditional references can be rewritten. Entries of this Bundle with the same conditional criteria
        (``ifNoneExist`` or a conditional PUT URL) name the same resource."""
        t = entry.target
        where = f"Bundle.entry[{entry.index}]"
        if entry.method == "POST":
            if_none_exist = entry.request.get("ifNoneExist")
            key = None
            if if_none_exist:
                query = parse_qsl(str(if_none_exist).lstrip("?").split("?", 1)[-1], keep_blank_values=True)
                key = _criteria_key(t.resource_type, query)
                first = self.conditional_entries.get(key)
                if first is not None:
                    entry.same_as = first
                    entry.assigned_id = first.assigned_id
                else:
                    entry.existing = self._single(
                        t.resource_type, query, f"{where}.request.ifNoneExist", write=True
                    )
            if entry.same_as is None:
                new_id = getattr(self.repo, "new_id", None)  # a store may hand out ids it knows are fresh
                entry.assigned_id = (
                    entry.existing.id if entry.existing else (new_id() if new_id else str(uuid.uuid4()))
                )
                if key is not None:
                    self.conditional_entries[key] = entry
        elif entry.method == "PUT":
            if t.id is None:
                if not t.query:
                    raise InvalidInput(
                        f"{where}: PUT needs Type/id or Type?criteria", location=f"{where}.request.url"
                    )
                key = _criteria_key(t.resource_type, t.query)
                first = self.conditional_entries.get(key)
                if first is not None:
                    entry.assigned_id = first.assigned_id  # a later update of the same resource
                else:
                    match = self._single(t.resource_type, t.query, f"{where}.request.url", write=True)
                    given = entry.resource.get("id") if entry.resource else None
                    entry.assigned_id = match.id if match else (str(given) if given else str(uuid.uuid4()))
                    self.conditional_entries[key] = entry
            else:
                entry.assigned_id = t.id
        else:
            return
        if entry.full_url:
            self.mapping[entry.full_url] = f"{t.resource_type}/{entry.assigned_id}"

    def resolve_conditional(self, reference: str) -> str:
        """``Type?criteria`` → the single matching ``Type/id``: a resource this Bundle creates or updates
        under the same criteria, else the one stored resource that matches."""
        resource_type, _, query = reference.partition("?")
        pairs = parse_qsl(query, keep_blank_values=True)
        in_bundle = self.conditional_entries.get(_criteria_key(resource_type, pairs))
        if in_bundle is not None:
            return f"{resource_type}/{in_bundle.assigned_id}"
        # name the parameters, not their values: criteria are often patient identifiers
        names = sorted({name for name, _ in pairs})
        shown = f"conditional reference {resource_type}?{'&'.join(f'{n}=...' for n in names)}"
        match = self._single(resource_type, pairs, shown)
        if match is None:
            raise PreconditionFailed(f"{shown}: no {resource_type} matches")
        return match.reference

    # -- execution -----------------------------------------------------------------------------------------
    def execute(self, entry: _Entry) -> dict[str, Any]:
        repo, t = self.repo, entry.target
        where = f"Bundle.entry[{entry.index}]"
        if entry.method == "POST":
            if entry.existing is not None:
                return {"response": _written(entry.existing, 200)}
            if entry.same_as is not None and entry.same_as.stored is not None:
                return {
                    "fullUrl": entry.same_as.stored.reference,
                    "response": _written(entry.same_as.stored, 200),
                }
            assert entry.resource is not None
            resource = {k: v for k, v in entry.resource.items() if k != "id"}
            stored = repo.create(resource, id=entry.assigned_id)
            entry.stored = stored
            return {"fullUrl": stored.reference, "response": _written(stored, 201)}
        if entry.method == "PUT":
            assert entry.resource is not None and entry.assigned_id is not None
            if_match = parse_etag(entry.request.get("ifMatch"))
            resource = dict(entry.resource)
            if t.id is None:
                resource.pop("id", None)
            stored, created = repo.update(t.resource_type, entry.assigned_id, resource, if_match=if_match)
            return {"fullUrl": stored.reference, "response": _written(stored, 201 if created else 200)}
        if entry.method == "PATCH":
            return self._patch(entry, where)
        if entry.method == "DELETE":
            if t.id is None:
                if not t.query:
                    raise InvalidInput(
                        f"{where}: DELETE needs Type/id or Type?criteria", location=f"{where}.request.url"
                    )
                match = self._single(t.resource_type, t.query, f"{where}.request.url")
                if match is not None:
                    repo.delete(t.resource_type, match.id)
            else:
                repo.delete(t.resource_type, t.id)
            return {"response": {"status": _status_line(204)}}
        return self._get(entry)

    def _patch(self, entry: _Entry, where: str) -> dict[str, Any]:
        t = entry.target
        if t.id is None:
            raise InvalidInput(f"{where}: PATCH needs Type/id", location=f"{where}.request.url")
        resource = entry.resource or {}
        if resource.get("resourceType") != "Binary" or "json-patch" not in str(
            resource.get("contentType", "")
        ):
            raise NotSupported(
                f"{where}: only JSON Patch (a Binary with contentType application/json-patch+json)"
            )
        try:
            operations = orjson.loads(base64.b64decode(resource.get("data", ""), validate=True))
        except (ValueError, orjson.JSONDecodeError):
            raise InvalidInput(
                f"{where}: Binary.data is not base64 JSON", location=f"{where}.resource.data"
            ) from None
        try:
            from engine.fhir.patch import apply_json_patch
        except ImportError:  # pragma: no cover - patch support ships with the REST adapter's engine module
            raise NotSupported(f"{where}: PATCH is not available") from None
        current = self.repo.read(t.resource_type, t.id)
        if_match = parse_etag(entry.request.get("ifMatch"))
        if if_match is not None and if_match != current.version_id:
            raise PreconditionFailed(f"{where}: version {if_match} is not current ({current.version_id})")
        patched = apply_json_patch(current.resource, operations)
        stored, _ = self.repo.update(t.resource_type, t.id, patched, if_match=current.version_id)
        return {"fullUrl": stored.reference, "response": _written(stored, 200)}

    def _get(self, entry: _Entry) -> dict[str, Any]:
        t = entry.target
        if t.id is None:
            result = self.repo.search(t.resource_type, t.query or [])
            searchset: dict[str, Any] = {"resourceType": "Bundle", "type": "searchset"}
            if result.total is not None:
                searchset["total"] = result.total
            searchset["entry"] = [
                {"fullUrl": m.reference, "resource": m.resource, "search": {"mode": "match"}}
                for m in result.matches
            ] + [
                {"fullUrl": i.reference, "resource": i.resource, "search": {"mode": "include"}}
                for i in result.included
            ]
            return {"resource": searchset, "response": {"status": _status_line(200)}}
        if t.history and t.version is None:
            raise NotSupported("instance history inside a Bundle is not supported")
        stored = (
            self.repo.vread(t.resource_type, t.id, t.version)
            if t.version
            else self.repo.read(t.resource_type, t.id)
        )
        if_none_match = entry.request.get("ifNoneMatch")
        if if_none_match and parse_etag(if_none_match) == stored.version_id:
            return {"response": {"status": _status_line(304), "etag": stored.etag}}
        response = _written(stored, 200)
        response.pop("location")
        return {"fullUrl": stored.reference, "resource": stored.resource, "response": response}

    def run(self) -> dict[str, Any]:
        if self.kind == "transaction":
            return self.run_transaction()
        return self.run_batch()

    def run_transaction(self) -> dict[str, Any]:
        entries = [self.parse_entry(i, raw) for i, raw in enumerate(self.raw_entries)]
        seen_full_urls: set[str] = set()
        for entry in entries:
            if entry.full_url and entry.method in ("POST", "PUT"):
                if entry.full_url in seen_full_urls:
                    raise InvalidInput(f"Bundle.entry[{entry.index}]: fullUrl {entry.full_url} appears twice")
                seen_full_urls.add(entry.full_url)
        for entry in entries:
            with _located(entry.index):
                self.assign(entry)
        for entry in entries:
            if entry.resource is not None and entry.method in ("POST", "PUT"):
                with _located(entry.index):
                    entry.resource = rewrite_references(
                        entry.resource, self.mapping, self.resolve_conditional
                    )
        responses: dict[int, dict[str, Any]] = {}
        for entry in sorted(entries, key=lambda e: METHOD_ORDER[e.method]):
            with _located(entry.index):
                responses[entry.index] = self.execute(entry)
        return {
            "resourceType": "Bundle",
            "type": "transaction-response",
            "entry": [responses[e.index] for e in entries],
        }

    def run_batch(self) -> dict[str, Any]:
        out: list[dict[str, Any]] = []
        for index, raw in enumerate(self.raw_entries):
            self.conditional_entries.clear()  # batch entries are independent of one another
            try:
                with self.savepoint():
                    entry = self.parse_entry(index, raw)
                    self.assign(entry)
                    if entry.resource is not None and entry.method in ("POST", "PUT"):
                        entry.resource = rewrite_references(entry.resource, {}, self.resolve_conditional)
                    out.append(self.execute(entry))
            except ProcessingError as error:
                out.append({"response": {"status": _status_line(error.status), "outcome": _outcome(error)}})
        return {"resourceType": "Bundle", "type": "batch-response", "entry": out}


class _located:
    """Prefix a failure's issues with the entry it came from (Bundle.entry[i])."""

    def __init__(self, index: int) -> None:
        self.index = index

    def __enter__(self) -> None:
        return None

    def __exit__(self, exc_type: Any, exc: Any, tb: Any) -> bool:
        if isinstance(exc, ProcessingError) and not getattr(exc, "_bundle_located", False):
            prefix = f"Bundle.entry[{self.index}]"
            exc.issues = [
                Issue(
                    i.message,
                    i.location if (i.location or "").startswith("Bundle") else prefix,
                    i.code,
                    i.severity,
                )
                for i in exc.issues
            ]
            exc._bundle_located = True  # type: ignore[attr-defined]
        return False


def process_bundle(
    repo: ResourceRepository, bundle: dict[str, Any], *, savepoint: Savepoint | None = None
) -> dict[str, Any]:
    """Process a batch or transaction Bundle; returns the batch-response/transaction-response Bundle.

    A transaction raises the first entry's failure (the caller's unit of work must roll back); a batch
    reports failures per entry. ``savepoint()`` isolates each batch entry's writes when given."""
    return _Processor(repo, bundle, savepoint).run()
