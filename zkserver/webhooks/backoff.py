"""When to try a failed webhook delivery again, and when to give up.

Exponential: ``retry_min * 2**(attempt-1)`` seconds, capped at ``retry_max``, stretched by
up to ``jitter`` (20 %) at random so many failing subscriptions do not retry in step;
never below ``retry_min`` nor above ``retry_max``. A delivery still failing
``give_up`` seconds after its first attempt is ``failed``.
"""

from __future__ import annotations

import random
from collections.abc import Callable

from attrs import frozen

__all__ = ["RetryPolicy"]


@frozen
class RetryPolicy:
    retry_min: float = 5.0
    retry_max: float = 3600.0
    give_up: float = 86400.0
    timeout: float = 10.0
    jitter: float = 0.2

    def delay(self, attempt: int, rand: Callable[[], float] = random.random) -> float:
        """Seconds to wait after failed attempt number ``attempt`` (1, 2, ...)."""
        exponent = min(max(attempt, 1) - 1, 62)
        base = min(self.retry_max, self.retry_min * (2.0**exponent))
        stretched = base * (1.0 + self.jitter * rand())
        return max(self.retry_min, min(self.retry_max, stretched))

    def exhausted(self, first_attempt: float, now: float) -> bool:
        """True when retrying longer would pass ``give_up`` seconds since the first try."""
        return now - first_attempt >= self.give_up
