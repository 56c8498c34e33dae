"""``build_router(runtime) -> APIRouter``: the admin API over the ``messages`` port.

=======  =================================  ==========================================================
method   path (under /admin)                answer
=======  =================================  ==========================================================
GET      /messages?channel=&status=         JSON array of message summaries, newest first
         &control_id=&since=&limit=&offset=
GET      /messages/{id}                     one message with its raw text and every stage
POST     /messages/{id}/reprocess           202, re-queued from raw (409 while a stage is in flight)
POST     /messages/reprocess?status=error   202, every message in that status (optionally &channel=)
GET      /channels                          channels in force, message counts by status, queue depths
POST     /channels/reload                   re-read the channel files (422 with every problem: kept)
=======  =================================  ==========================================================

Errors are JSON ``{"error": text, "issues": [...]}`` with 400/404/409/422/503 — never a 500 for a
request the server understood.
"""

from __future__ import annotations

from datetime import datetime
from typing import Any

from fastapi import APIRouter, Query
from fastapi.responses import JSONResponse
from sqlalchemy.exc import SQLAlchemyError

from engine.errors import ProcessingError, StoreUnavailable

__all__ = ["build_router"]

_STATUSES = ("received", "rejected", "filtered", "processing", "done", "error", "dead")


def _error(status: int, text: str, issues: list[Any] | None = None) -> JSONResponse:
    return JSONResponse({"error": text, "issues": issues or []}, status_code=status)


def _guard(call: Any) -> Any:
    """Run ``call``; map the engine's errors to their HTTP status (a database outage is a 503)."""
    try:
        return call()
    except ProcessingError as exc:
        issues = [{"location": i.location, "message": i.message, "code": i.code} for i in exc.issues]
        return _error(exc.status, exc.message, issues)
    except (StoreUnavailable, SQLAlchemyError):
        return _error(503, "the message store is unavailable; try again shortly")


def _since(value: str | None) -> datetime | None:
    from engine.messaging.durations import parse_since

    return parse_since(value) if value else None  # ValueError -> 400 in the caller


def build_router(runtime: Any) -> APIRouter:
    router = APIRouter(tags=["admin"])

    def service() -> Any:
        return runtime.port("messages")

    @router.get("/messages")
    def list_messages(
        channel: str | None = None,
        status: str | None = None,
        control_id: str | None = None,
        since: str | None = Query(None, description="2h, 7d or an ISO 8601 date-time"),
        limit: int = Query(50, ge=1, le=10000),
        offset: int = Query(0, ge=0),
    ) -> Any:
        if status is not None and status not in _STATUSES:
            return _error(400, f"unknown status {status!r}; one of {', '.join(_STATUSES)}")
        try:
            moment = _since(since)
        except ValueError:
            return _error(400, f"since={since!r}: use 2h, 7d or an ISO 8601 date-time")
        return _guard(
            lambda: [
                m.as_dict()
                for m in service().store.list(
                    channel=channel,
                    status=status,
                    control_id=control_id,
                    since=moment,
                    limit=limit,
                    offset=offset,
                )
            ]
        )

    @router.get("/messages/{message_id}")
    def show_message(message_id: int) -> Any:
        return _guard(lambda: service().store.get(message_id).as_dict())

    @router.post("/messages/reprocess", status_code=202)
    def reprocess_status(status: str = Query(...), channel: str | None = None) -> Any:
        if status not in _STATUSES:
            return _error(400, f"unknown status {status!r}; one of {', '.join(_STATUSES)}")

        def run() -> Any:
            ids, skipped = [], []
            for message_id in service().store.ids_with_status(status, channel):
                try:
                    service().reprocess(message_id)
                    ids.append(message_id)
                except ProcessingError as exc:
                    skipped.append({"id": message_id, "error": exc.message})
            return {"reprocessed": ids, "skipped": skipped}

        return _guard(run)

    @router.post("/messages/{message_id}/reprocess", status_code=202)
    def reprocess_one(message_id: int) -> Any:
        def run() -> Any:
            service().reprocess(message_id)
            return {"id": message_id, "status": "received"}

        return _guard(run)

    @router.get("/channels")
    def channels() -> Any:
        def run() -> Any:
            from engine.messaging.queue import queue_depths

            svc = service()
            counts = svc.store.counts()
            depths = queue_depths(runtime.db)
            answer = []
            for ch in sorted(svc.registry.all(), key=lambda c: c.name):
                answer.append(
                    {
                        "name": ch.name,
                        "description": ch.description,
                        "file": ch.file,
                        "source": f"mllp://{ch.source.host}:{ch.source.port}" if ch.source else None,
                        "transform": ch.transform,
                        "ordered": ch.ordered,
                        "destinations": [
                            {
                                "name": d.name,
                                "url": d.url,
                                "queue_depth": depths.get(f"dest:{ch.name}:{d.name}", 0),
                            }
                            for d in ch.destinations
                        ],
                        "pipeline_queue_depth": depths.get(f"pipeline:{ch.name}", 0),
                        "messages": counts.get(ch.name, {}),
                    }
                )
            return answer

        return _guard(run)

    @router.post("/channels/reload")
    async def reload() -> Any:
        # async: runs on the server's event loop, like the SIGHUP handler, so listeners re-open safely
        problem = service().reload()
        if problem:
            return _error(
                422, "channel files are invalid; the channels in force were kept", problem.splitlines()[1:]
            )
        return {"reloaded": True, "channels": sorted(c.name for c in service().registry.all())}

    return router
