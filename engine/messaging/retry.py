"""Retry policy of a destination: exponential backoff with jitter, capped, then dead-letter."""

from __future__ import annotations

import random
from dataclasses import dataclass

__all__ = ["RetryPolicy"]


@dataclass(frozen=True)
class RetryPolicy:
    attempts: int = 5
    """Total tries, the first included; after the last failure the stage goes to the dead letter."""
    initial_delay: float = 1.0
    multiplier: float = 2.0
    max_delay: float = 300.0
    jitter: float = 0.2
    """Fraction of the delay drawn at random (+/-), so many failing messages do not retry in lockstep."""

    def delay(self, attempt: int, rng: random.Random | None = None) -> float:
        """Seconds to wait after failed try number ``attempt`` (1-based)."""
        base = min(self.max_delay, self.initial_delay * self.multiplier ** max(0, attempt - 1))
        spread = base * self.jitter
        r = (rng or random).random()
        return max(0.0, min(self.max_delay, base - spread + 2 * spread * r))

    def exhausted(self, attempts: int) -> bool:
        return attempts >= self.attempts
