"""Prometheus metrics of the message path (``prometheus_client``, default registry).

=====================================  =========  ==================================================
metric                                 labels     meaning
=====================================  =========  ==================================================
conduit_messages_received_total        channel    messages durably stored by the inbox (not duplicates)
conduit_messages_duplicate_total       channel    receives answered from the duplicate window
conduit_acks_total                     channel,   acknowledgements decided, by Table 0008 code
                                       code
conduit_messages_processed_total       channel,   messages that reached a final status
                                       status
conduit_errors_total                   channel,   failures: store, transform, delivery attempts
                                       stage
conduit_queue_depth                    channel,   open queue items (queued, retrying or claimed)
                                       queue
conduit_receive_seconds                channel    receive -> durable commit (the ACK waits for it)
conduit_process_seconds                channel    received -> final status
conduit_delivery_seconds               channel,   one delivery attempt to a destination
                                       destination
=====================================  =========  ==================================================
"""

from __future__ import annotations

from prometheus_client import Counter, Gauge, Histogram

__all__ = [
    "MESSAGES_RECEIVED",
    "MESSAGES_DUPLICATE",
    "ACKS",
    "MESSAGES_PROCESSED",
    "ERRORS",
    "QUEUE_DEPTH",
    "RECEIVE_SECONDS",
    "PROCESS_SECONDS",
    "DELIVERY_SECONDS",
]

_FAST = (0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0)
_SLOW = (0.01, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0, 60.0, 300.0, 1800.0)

MESSAGES_RECEIVED = Counter("conduit_messages_received", "Messages durably stored by the inbox", ["channel"])
MESSAGES_DUPLICATE = Counter(
    "conduit_messages_duplicate", "Receives answered from the duplicate window", ["channel"]
)
ACKS = Counter("conduit_acks", "Acknowledgement codes decided (Table 0008)", ["channel", "code"])
MESSAGES_PROCESSED = Counter(
    "conduit_messages_processed", "Messages that reached a final status", ["channel", "status"]
)
ERRORS = Counter("conduit_errors", "Failures by stage (store, transform, delivery)", ["channel", "stage"])
QUEUE_DEPTH = Gauge(
    "conduit_queue_depth", "Open queue items (queued, retrying or claimed)", ["channel", "queue"]
)
RECEIVE_SECONDS = Histogram(
    "conduit_receive_seconds", "Receive to durable commit", ["channel"], buckets=_FAST
)
PROCESS_SECONDS = Histogram("conduit_process_seconds", "Received to final status", ["channel"], buckets=_SLOW)
DELIVERY_SECONDS = Histogram(
    "conduit_delivery_seconds", "One delivery attempt", ["channel", "destination"], buckets=_SLOW
)
