"""The HTTP application: FHIR R4 under ``/fhir``, ``/health``, ``/ready``, ``/metrics`` and extra routers.

Every FHIR request goes through one dispatcher: negotiate (JSON only), route to an interaction, read the
body within the size limit, run the handler in the thread pool inside one unit of work, render the
:class:`Answer`. Every error, including an unexpected one, leaves as an OperationOutcome. The one exception
is the plain read by id, the hottest request: :class:`ReadFastPath` answers it on the event loop from the
record store's driver-level reader, with the same headers, 304/404/410 and auth.
"""

from __future__ import annotations

import hmac
import importlib
import importlib.util
import logging
import time
import traceback
from collections.abc import Awaitable, Callable
from functools import lru_cache
from typing import Any
from urllib.parse import parse_qsl

import orjson
from fastapi import FastAPI
from prometheus_client import CONTENT_TYPE_LATEST, Counter, Histogram, generate_latest
from sqlalchemy.exc import IntegrityError, InterfaceError, OperationalError
from starlette.concurrency import run_in_threadpool
from starlette.exceptions import HTTPException as StarletteHTTPException
from starlette.requests import Request
from starlette.responses import Response
from starlette.types import ASGIApp, Receive, Scope, Send

from adapters.fhir_rest.answer import Answer
from adapters.fhir_rest.headers import etag, http_date, parse_if_match, parse_prefer
from adapters.fhir_rest.interactions import NO_STORE, Context, handle
from adapters.fhir_rest.media import FHIR_JSON, check_accept, check_format
from adapters.fhir_rest.readpath import READ_ONLY, ReadUnits
from adapters.fhir_rest.request import ID_PATTERN, FhirRequest, MethodNotAllowed, route
from adapters.fhir_rest.settings import FhirRestSettings
from engine.db import migrate
from engine.errors import InvalidInput, Issue, ProcessingError, StoreUnavailable
from engine.fhir.outcome import operation_outcome
from engine.fhir.validation import is_resource_type

__all__ = ["build_app", "EXTRA_ROUTERS", "BASE_PATH", "render"]

log = logging.getLogger(__name__)

BASE_PATH = "/fhir"

#: mount point -> "module:factory" building a fastapi.APIRouter from the runtime; mounted when importable
EXTRA_ROUTERS: dict[str, str] = {
    "/admin": "adapters.admin_http.router:build_router",
}

#: paths answered without the bearer token: liveness, readiness and the CapabilityStatement (clients read
#: it to discover how to authenticate)
PUBLIC_PATHS = frozenset({"/health", "/ready", f"{BASE_PATH}/metadata"})

_METHODS = ["GET", "POST", "PUT", "PATCH", "DELETE", "HEAD", "OPTIONS"]

REQUESTS = Counter("conduit_fhir_requests_total", "FHIR REST requests", ["interaction", "status"])
LATENCY = Histogram(
    "conduit_fhir_request_seconds",
    "FHIR REST request latency",
    ["interaction"],
    buckets=(0.002, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 10),
)


# ---------------------------------------------------------------------------------------------- rendering


def render(answer: Answer) -> Response:
    if answer.body is None:
        content = b""
    elif isinstance(answer.body, bytes):
        content = answer.body
    else:
        content = orjson.dumps(answer.body)
    headers = dict(answer.headers)
    if answer.body is not None:
        headers["Content-Type"] = FHIR_JSON
    return Response(content, status_code=answer.status, headers=headers)


def error_answer(error: ProcessingError) -> Answer:
    headers = {}
    if isinstance(error, MethodNotAllowed):
        headers["Allow"] = ", ".join(error.allowed)
    return Answer(error.status, operation_outcome(error.issues), headers)


def _status_answer(status: int, message: str, code: str) -> Answer:
    severity = "error" if status >= 400 else "information"
    return Answer(status, operation_outcome([Issue(message, code=code, severity=severity)]))


def unexpected_answer(exc: BaseException, where: str) -> Answer:
    # the exception's message may quote request content (patient data): log its type and stack only
    frames = "".join(traceback.format_tb(exc.__traceback__))
    log.error("unexpected %s in %s\n%s", exc.__class__.__name__, where, frames)
    return _status_answer(500, "Internal error; it has been logged for the administrators", "exception")


# ------------------------------------------------------------------------------------------------- auth


class BearerAuth:
    """Pure ASGI middleware: ``Authorization: Bearer <token>`` on every path but PUBLIC_PATHS."""

    def __init__(self, app: ASGIApp, token: str) -> None:
        self.app = app
        self.expected = f"Bearer {token}".encode()

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http" or scope.get("path", "").rstrip("/") in PUBLIC_PATHS:
            await self.app(scope, receive, send)
            return
        given = b""
        for name, value in scope.get("headers", ()):
            if name == b"authorization":
                given = value
                break
        if hmac.compare_digest(given, self.expected):
            await self.app(scope, receive, send)
            return
        answer = _status_answer(401, "Authentication required: send Authorization: Bearer <token>", "login")
        answer.headers["WWW-Authenticate"] = 'Bearer realm="conduit"'
        REQUESTS.labels("unauthenticated", "401").inc()
        await render(answer)(scope, receive, send)


# ---------------------------------------------------------------------------------------------- fast read


class ReadFastPath:
    """Pure ASGI middleware answering the plain read (``GET|HEAD /fhir/T/id``, no query string) straight from
    the record store's driver-level reader (the ``records_raw_reads`` port), on the event loop: no routing,
    no Request object, no thread hop, no unit of work. Anything else — and any read the general dispatcher
    would answer with an error before the database (unknown type, bad id, unacceptable Accept) — goes on
    to the application, so behaviour is the general path's (docs/benchmarks.md, FHIR REST)."""

    def __init__(self, app: ASGIApp, reads: Any) -> None:
        self.app = app
        self.reads = reads
        self.prefix = BASE_PATH + "/"
        self.ok = REQUESTS.labels("read", "200")
        self.latency = LATENCY.labels("read")
        self.content_type = FHIR_JSON.encode()

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http" or scope.get("query_string") or scope["method"] not in ("GET", "HEAD"):
            await self.app(scope, receive, send)
            return
        path: str = scope["path"]
        parts = path[len(self.prefix) :].split("/") if path.startswith(self.prefix) else ()
        if len(parts) != 2 or not ID_PATTERN.match(parts[1]) or not is_resource_type(parts[0]):
            await self.app(scope, receive, send)
            return
        accept = if_none_match = None
        for name, value in scope["headers"]:
            if name == b"accept":
                accept = value.decode("latin-1")
            elif name == b"if-none-match":
                if_none_match = value.decode("latin-1")
        try:
            check_accept(accept)
        except ProcessingError:
            await self.app(scope, receive, send)  # the general path renders the 406
            return
        started = time.perf_counter()
        try:
            raw, version_id, last_updated = await self.reads.read(parts[0], parts[1])
        except Exception as exc:  # noqa: BLE001 - every failure leaves as an OperationOutcome
            answer = _read_failure(exc)
        else:
            tag = etag(version_id)
            modified = http_date(last_updated)
            if if_none_match is None or _version_of(if_none_match) != version_id:
                await send(
                    {
                        "type": "http.response.start",
                        "status": 200,
                        "headers": [
                            (b"content-length", str(len(raw)).encode()),
                            (b"etag", tag.encode()),
                            (b"last-modified", modified.encode()),
                            (b"content-type", self.content_type),
                        ],
                    }
                )
                await send({"type": "http.response.body", "body": raw})
                self.ok.inc()
                self.latency.observe(time.perf_counter() - started)
                return
            answer = Answer(304, None, {"ETag": tag, "Last-Modified": modified})
        REQUESTS.labels("read", str(answer.status)).inc()
        self.latency.observe(time.perf_counter() - started)
        await render(answer)(scope, receive, send)


def _version_of(if_none_match: str) -> int | None:
    try:
        return parse_if_match(if_none_match)
    except InvalidInput:
        return None


def _read_failure(exc: BaseException) -> Answer:
    if isinstance(exc, ProcessingError):
        return error_answer(exc)
    if isinstance(exc, StoreUnavailable):
        log.warning("database unavailable during read: %s", exc.__class__.__name__)
        answer = _status_answer(503, "The record store is unavailable; try again later", "transient")
        answer.headers["Retry-After"] = "5"
        return answer
    return unexpected_answer(exc, "read")


# ------------------------------------------------------------------------------------------------- bodies


class BodyTooLarge(ProcessingError):
    def __init__(self, limit: int) -> None:
        super().__init__(f"The request body is larger than {limit} bytes", [], 413, "too-costly")


async def read_body(request: Request, limit: int) -> bytes:
    declared = request.headers.get("content-length")
    if declared is not None:
        if not declared.strip().isdigit():
            raise InvalidInput("Content-Length must be a number")
        if int(declared) > limit:
            raise BodyTooLarge(limit)
    chunks: list[bytes] = []
    size = 0
    async for chunk in request.stream():
        size += len(chunk)
        if size > limit:
            raise BodyTooLarge(limit)
        chunks.append(chunk)
    return b"".join(chunks)


# --------------------------------------------------------------------------------------------------- app


def _base_url(request: Request, settings: FhirRestSettings) -> str:
    if settings.public_base_url:
        return settings.public_base_url.rstrip("/")
    host = request.headers.get("host") or f"{request.url.hostname}:{request.url.port}"
    return f"{request.url.scheme}://{host}{BASE_PATH}"


def _query(request: Request) -> list[tuple[str, str]]:
    raw = request.url.query
    if not raw:
        return []
    params = parse_qsl(raw, keep_blank_values=True, max_num_fields=1000)
    for name, value in params:
        if "\x00" in name or "\x00" in value:
            raise InvalidInput("Search parameters may not contain NUL characters")
    return params


def build_app(runtime: Any, settings: FhirRestSettings | None = None) -> FastAPI:
    """The ASGI application for ``runtime`` (``engine.runtime.Runtime``)."""
    settings = settings or FhirRestSettings()
    app = FastAPI(
        title="Conduit FHIR R4",
        docs_url=None,
        redoc_url=None,
        openapi_url=None,
    )

    @lru_cache(maxsize=1)
    def capability() -> bytes:
        from engine.fhir.capability import capability_statement

        return orjson.dumps(capability_statement(software_version=_version()))

    reads = ReadUnits(runtime, threads=settings.worker_threads)
    app.state.read_units = reads

    def run_in_uow(req: FhirRequest, ctx: Context) -> Answer:
        if req.interaction in READ_ONLY:
            return reads.run(lambda uow: handle(runtime.records(uow), req, ctx))
        with runtime.db.unit_of_work() as uow:
            return handle(runtime.records(uow), req, ctx)

    async def fhir(request: Request) -> Response:
        started = time.perf_counter()
        interaction = "unknown"
        try:
            params = _query(request)
            formats = [v for k, v in params if k == "_format"]
            check_format(formats[-1] if formats else None)
            check_accept(request.headers.get("accept"))
            path = request.path_params.get("path", "")
            # HEAD is GET without a body (uvicorn leaves the body out of HEAD responses)
            req = route("GET" if request.method == "HEAD" else request.method, path)
            interaction = req.interaction
            body = b""
            if request.method in ("POST", "PUT", "PATCH"):
                body = await read_body(request, settings.max_body_bytes)
            ctx = Context(
                base=_base_url(request, settings),
                path=path.strip("/"),
                params=[(k, v) for k, v in params if k != "_format"],
                headers=request.headers,
                body=body,
                prefer=parse_prefer(request.headers.get("prefer")),
                settings=settings,
                capability=capability,
            )
            if interaction in NO_STORE:
                answer = handle(None, req, ctx)  # type: ignore[arg-type]
            else:
                answer = await run_in_threadpool(run_in_uow, req, ctx)
        except ProcessingError as exc:
            answer = error_answer(exc)
        except IntegrityError:
            # two writers raced for the same key (e.g. PUT creating one id twice): the loser may retry
            answer = _status_answer(409, "A concurrent write conflicted with this one; retry", "conflict")
        except (StoreUnavailable, OperationalError, InterfaceError) as exc:
            log.warning("database unavailable during %s: %s", interaction, exc.__class__.__name__)
            answer = _status_answer(503, "The record store is unavailable; try again later", "transient")
            answer.headers["Retry-After"] = "5"
        except Exception as exc:  # noqa: BLE001 - the client still gets an OperationOutcome
            answer = unexpected_answer(exc, interaction)
        REQUESTS.labels(interaction, str(answer.status)).inc()
        LATENCY.labels(interaction).observe(time.perf_counter() - started)
        return render(answer)

    app.add_route(BASE_PATH, fhir, methods=_METHODS)
    app.add_route(BASE_PATH + "/{path:path}", fhir, methods=_METHODS)

    async def health(request: Request) -> Response:
        return Response(orjson.dumps({"status": "ok"}), media_type="application/json")

    async def ready(request: Request) -> Response:
        def check() -> dict[str, bool]:
            reachable = runtime.db.ping()
            current = reachable and migrate.is_current(runtime.db.engine)
            return {"database": reachable, "migrations": current}

        checks = await run_in_threadpool(check)
        ok = all(checks.values())
        body = {"status": "ready" if ok else "not ready", **checks}
        return Response(orjson.dumps(body), status_code=200 if ok else 503, media_type="application/json")

    async def metrics(request: Request) -> Response:
        return Response(generate_latest(), media_type=CONTENT_TYPE_LATEST)

    app.add_route("/health", health, methods=["GET"])
    app.add_route("/ready", ready, methods=["GET"])
    app.add_route("/metrics", metrics, methods=["GET"])

    for prefix, target in EXTRA_ROUTERS.items():
        _mount(app, prefix, target, runtime)

    async def http_error(request: Request, exc: Exception) -> Response:
        status = exc.status_code if isinstance(exc, StarletteHTTPException) else 500
        code = {404: "not-found", 405: "not-supported"}.get(status, "processing")
        message = {404: "No such endpoint", 405: "Method not allowed"}.get(status, "Request failed")
        return render(_status_answer(status, message, code))

    async def internal_error(request: Request, exc: Exception) -> Response:
        return render(unexpected_answer(exc, request.url.path))

    app.add_exception_handler(StarletteHTTPException, http_error)
    app.add_exception_handler(Exception, internal_error)
    raw_reads = runtime.ports.get("records_raw_reads")
    if raw_reads is not None:
        app.state.raw_reads = raw_reads()
        app.add_middleware(ReadFastPath, reads=app.state.raw_reads)  # inside BearerAuth (added last)
    if runtime.settings.auth_token:
        app.add_middleware(BearerAuth, token=runtime.settings.auth_token)
    return app


def _mount(app: FastAPI, prefix: str, target: str, runtime: Any) -> None:
    module_name, _, factory_name = target.partition(":")
    try:
        if importlib.util.find_spec(module_name) is None:
            return
    except ModuleNotFoundError:
        return
    factory: Callable[[Any], Any] = getattr(importlib.import_module(module_name), factory_name)
    app.include_router(factory(runtime), prefix=prefix)


def _version() -> str:
    try:
        from importlib.metadata import version

        return version("conduit-engine")
    except Exception:  # noqa: BLE001 - running from a source tree without an install
        return "0.1.0"


Endpoint = Callable[[Request], Awaitable[Response]]
