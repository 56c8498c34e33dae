"""Prometheus metrics of the MLLP transport (default registry, beside engine/metrics.py's message metrics).

=====================================  =========  ==================================================
metric                                 labels     meaning
=====================================  =========  ==================================================
conduit_mllp_connections               channel    open MLLP connections
conduit_mllp_frames_total              channel    complete frames received
conduit_mllp_junk_bytes_total          channel    bytes outside any frame, discarded
conduit_mllp_abandoned_frames_total    channel    frames without an end byte, dropped unanswered
conduit_mllp_oversize_total            channel    frames over max_frame_bytes (answered AR, closed)
conduit_mllp_idle_closed_total         channel    connections closed after idle_timeout
conduit_mllp_processes                            processes receiving MLLP (``--mllp-processes``)
=====================================  =========  ==================================================

Per process: with ``conduit serve --mllp-processes N`` above 1, the main process's /metrics counts the
connections, frames and messages it received itself, about 1/N of them (its ingest children keep their
own counts, not exported); ``conduit_mllp_processes`` says so.
"""

from __future__ import annotations

from prometheus_client import Counter, Gauge

__all__ = ["CONNECTIONS", "FRAMES", "JUNK_BYTES", "ABANDONED_FRAMES", "OVERSIZE", "IDLE_CLOSED", "PROCESSES"]

CONNECTIONS = Gauge("conduit_mllp_connections", "Open MLLP connections", ["channel"])
FRAMES = Counter("conduit_mllp_frames", "MLLP frames received", ["channel"])
JUNK_BYTES = Counter("conduit_mllp_junk_bytes", "Bytes outside MLLP frames, discarded", ["channel"])
ABANDONED_FRAMES = Counter(
    "conduit_mllp_abandoned_frames", "MLLP frames without an end byte, dropped unanswered", ["channel"]
)
OVERSIZE = Counter("conduit_mllp_oversize", "MLLP frames over max_frame_bytes", ["channel"])
IDLE_CLOSED = Counter("conduit_mllp_idle_closed", "MLLP connections closed when idle", ["channel"])
PROCESSES = Gauge(
    "conduit_mllp_processes", "Processes receiving MLLP; this process's MLLP and inbox counts are its share"
)
