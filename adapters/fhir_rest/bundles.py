"""Bundles the API builds itself: searchset (R4 §3.1.1.4) and history (§3.1.0.11), with self/next/previous
links that page with ``_count`` and ``_offset``."""

from __future__ import annotations

from collections.abc import Sequence
from datetime import UTC, datetime
from typing import Any
from urllib.parse import urlencode

from engine.errors import Issue
from engine.fhir.outcome import operation_outcome
from engine.fhir.repository import HistoryEntry, SearchResult, StoredResource

__all__ = ["searchset", "history_bundle", "page_links", "instant"]


def instant(moment: datetime) -> str:
    if moment.tzinfo is None:
        moment = moment.replace(tzinfo=UTC)
    return moment.isoformat().replace("+00:00", "Z")


def _url(base: str, path: str, params: Sequence[tuple[str, str]]) -> str:
    query = urlencode(list(params))
    return (
        f"{base}/{path}" + (f"?{query}" if query else "")
        if path
        else f"{base}" + (f"?{query}" if query else "")
    )


def page_links(
    base: str, path: str, params: Sequence[tuple[str, str]], *, offset: int, count: int, has_more: bool
) -> list[dict[str, str]]:
    """self / next / previous links: the same query with ``_offset`` moved by ``count``."""
    kept = [(k, v) for k, v in params if k not in ("_offset", "_count")]

    def at(off: int) -> str:
        extra = [("_count", str(count))] + ([("_offset", str(off))] if off else [])
        return _url(base, path, kept + extra)

    links = [{"relation": "self", "url": at(offset)}]
    if has_more:
        links.append({"relation": "next", "url": at(offset + count)})
    if offset > 0:
        links.append({"relation": "previous", "url": at(max(0, offset - count))})
    return links


def _entry(base: str, stored: StoredResource, mode: str) -> dict[str, Any]:
    return {
        "fullUrl": f"{base}/{stored.resource_type}/{stored.id}",
        "resource": stored.resource,
        "search": {"mode": mode},
    }


def searchset(
    base: str,
    path: str,
    params: Sequence[tuple[str, str]],
    result: SearchResult,
    *,
    count: int,
    ignored: Sequence[tuple[str, str]] = (),
) -> dict[str, Any]:
    entries = [_entry(base, r, "match") for r in result.matches]
    entries += [_entry(base, r, "include") for r in result.included]
    if ignored:
        issues = [
            Issue(
                f"Unknown search parameter '{name[:64]}' was ignored",
                location=name[:64],
                code="not-supported",
                severity="warning",
            )
            for name, _ in ignored
        ]
        entries.append({"resource": operation_outcome(issues), "search": {"mode": "outcome"}})
    bundle: dict[str, Any] = {
        "resourceType": "Bundle",
        "type": "searchset",
        "timestamp": instant(datetime.now(UTC)),
    }
    if result.total is not None:
        bundle["total"] = result.total
    shown = [(k, v) for k, v in params if (k, v) not in set(ignored)]
    bundle["link"] = page_links(
        base, path, shown, offset=result.offset, count=count, has_more=result.has_more
    )
    if entries:  # FHIR JSON never carries an empty array: no matches means no entry element
        bundle["entry"] = entries
    return bundle


def _history_entry(base: str, h: HistoryEntry) -> dict[str, Any]:
    url = f"{h.resource_type}/{h.id}"
    entry: dict[str, Any] = {"fullUrl": f"{base}/{url}"}
    if h.resource is not None:
        entry["resource"] = h.resource
    status = {"POST": "201 Created", "PUT": "200 OK", "DELETE": "204 No Content"}.get(h.method, "200 OK")
    if h.method == "PUT" and h.version_id == 1:
        status = "201 Created"
    entry["request"] = {"method": h.method, "url": url if h.method != "POST" else h.resource_type}
    entry["response"] = {
        "status": status,
        "etag": f'W/"{h.version_id}"',
        "lastModified": instant(h.last_updated),
    }
    return entry


def history_bundle(
    base: str,
    path: str,
    params: Sequence[tuple[str, str]],
    entries: Sequence[HistoryEntry],
    *,
    offset: int,
    count: int,
    has_more: bool,
) -> dict[str, Any]:
    bundle: dict[str, Any] = {
        "resourceType": "Bundle",
        "type": "history",
        "timestamp": instant(datetime.now(UTC)),
        "link": page_links(base, path, params, offset=offset, count=count, has_more=has_more),
    }
    if entries:
        bundle["entry"] = [_history_entry(base, h) for h in entries]
    return bundle
