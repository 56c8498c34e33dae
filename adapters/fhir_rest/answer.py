"""What a handler returns: status, body and headers, rendered to HTTP by the app (``render``)."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

__all__ = ["Answer"]


@dataclass
class Answer:
    status: int = 200
    body: dict[str, Any] | bytes | None = None
    """A JSON resource, already-serialized JSON bytes (stored resources are served as stored), or nothing."""
    headers: dict[str, str] = field(default_factory=dict)
