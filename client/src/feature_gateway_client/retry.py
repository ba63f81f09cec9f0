"""When a failed attempt is tried again, and after how long: the one retry decision both clients share.

Invariant: no attempt starts after the call's deadline, and no wait ends past it.
An attempt is retried only if its error is ``retryable`` (the gateway's flag, a
503 with ``Retry-After`` from anything in between, a connection that failed or
broke before an answer), attempts remain, and the wait fits in the time left
with room for the attempt itself. The wait is full-jitter exponential backoff
(uniform in ``[0, min(cap, base · 2^(n-1))]``, AWS's "Exponential Backoff And
Jitter"), never shorter than the ``Retry-After`` the gateway asked for.

Retrying a write is safe because the client sends every attempt of one logical
write with the same idempotency key and the same event time: an attempt that
did land makes the next one answer ``applied: false, reason: duplicate``, and a
newer write by someone else in between makes it answer ``stale_event_time``
rather than be overwritten.
"""

from __future__ import annotations

import random
import time
from collections.abc import Callable
from dataclasses import dataclass, field

from feature_gateway_client.errors import GatewayError

#: The least time worth starting an attempt with: below it, the attempt could only time out.
MIN_ATTEMPT_SECONDS = 0.01
#: Of the time left, what the gateway is not told about, so that its own answer (say, a 504 naming
#: what happened) reaches the client before the client's socket gives up.
HEADER_MARGIN = 0.05


@dataclass(frozen=True, slots=True)
class RetryPolicy:
    """How many attempts a call gets and how long it waits between them."""

    max_attempts: int = 8
    base: float = 0.025
    cap: float = 1.0
    rng: Callable[[], float] = field(default=random.random, compare=False)

    def backoff(self, attempt: int) -> float:
        """Full jitter after the ``attempt``-th failed attempt (1-based)."""
        return self.rng() * min(self.cap, self.base * 2 ** (attempt - 1))

    def wait(self, error: GatewayError, attempt: int, left: float) -> float | None:
        """Seconds to wait before attempt ``attempt + 1``, or ``None``: raise ``error`` now."""
        if not error.retryable or attempt >= self.max_attempts:
            return None
        delay = self.backoff(attempt)
        if error.retry_after is not None:
            delay = max(delay, error.retry_after)
        if delay + MIN_ATTEMPT_SECONDS > left:
            return None
        return delay


class Deadline:
    """The end of one call: every attempt and every wait of the call fits before it."""

    __slots__ = ("_clock", "_end")

    def __init__(self, seconds: float, clock: Callable[[], float] = time.monotonic) -> None:
        self._clock = clock
        self._end = clock() + seconds

    def left(self) -> float:
        return self._end - self._clock()

    @staticmethod
    def header(left: float) -> str:
        """``X-Request-Timeout`` for an attempt with ``left`` seconds: a decimal > 0, slightly under ``left``."""
        seconds = max(left - min(HEADER_MARGIN, left * 0.2), 0.001)
        return f"{seconds:.3f}"
