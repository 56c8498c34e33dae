"""``install(runtime)``: the outbound side of the DICOM adapter.

* registers the ``dicom`` scheme on the ``destinations`` port (channels can C-STORE to remote AEs);
* runs the auto-forward sender in ``runtime.background``: it claims due jobs from the PACS queue, sends
  them (one association per destination and batch) and reports each result back for retry/backoff.
"""

from __future__ import annotations

import asyncio
import logging
from typing import Any

from adapters.dicom.destination import DicomDestination
from adapters.dicom.logs import log_failure
from adapters.dicom.scu import store_to
from adapters.dicom.settings import DicomSettings
from engine.runtime import Runtime

__all__ = ["install", "forward_once"]

log = logging.getLogger(__name__)

IDLE_POLL = 1.0


def forward_once(pacs: Any, settings: DicomSettings, limit: int = 20) -> int:
    """Claim and send one batch of due forward jobs; returns how many were attempted."""
    jobs = pacs.claim_forwards(limit)
    by_destination: dict[str, list[Any]] = {}
    for job in jobs:
        by_destination.setdefault(job.destination, []).append(job)
    remotes = settings.remote_table
    for destination, group in by_destination.items():
        remote = remotes.get(destination)
        if remote is None:
            for job in group:
                pacs.finish_forward(job.job_id, ok=False, error="destination not in remotes", retry=False)
            continue
        sendable = [j for j in group if j.instance is not None]
        for job in group:
            if job.instance is None:
                pacs.finish_forward(job.job_id, ok=False, error="instance no longer stored", retry=False)
        if not sendable:
            continue
        objects = []
        for job in sendable:
            try:
                objects.append(pacs.read(job.instance))
            except OSError:
                objects.append(b"")
        results = store_to(settings, remote, objects)
        for job, result in zip(sendable, results, strict=True):
            if result.ok:
                pacs.finish_forward(job.job_id, ok=True)
            else:
                code = f"0x{result.status:04X}" if result.status is not None else result.detail
                pacs.finish_forward(
                    job.job_id,
                    ok=False,
                    error=f"C-STORE {code}",
                    retry=result.status is None or result.status >> 8 == 0xA7,
                )
    return len(jobs)


def install(runtime: Runtime, settings: DicomSettings | None = None) -> None:
    settings = settings or DicomSettings()
    registry = runtime.ports.get("destinations")
    if registry is not None:
        registry.register("dicom", lambda url, options: DicomDestination(url, settings))
    pacs = runtime.ports.get("pacs")
    if pacs is None:
        return

    async def forwarder() -> None:
        while True:
            try:
                sent = await asyncio.to_thread(forward_once, pacs, settings)
            except Exception:
                log_failure(log, "auto-forward pass failed")
                sent = 0
            if not sent:
                await asyncio.sleep(IDLE_POLL)

    if pacs.settings.forward_rules:
        runtime.background.append(forwarder)
