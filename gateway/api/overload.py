"""Overload protection: a bound on the requests one worker serves at once.

Past ``gateway.max_concurrent_requests`` a request is refused at once with 503
``overloaded`` and ``Retry-After`` (never queued: a queue would only turn
overload into timeouts for everyone). Both listeners of a worker share one
``ConcurrencyLimit``; the operational routes (``/healthz``, ``/readyz``,
``/metrics``) are not counted, so a busy gateway is not reported dead and can
still be observed.

Invariant: ``in_flight`` is the number of ``acquire()`` calls that returned
True and have not been ``release()``d; it never exceeds ``limit``.
"""

from __future__ import annotations


class ConcurrencyLimit:
    __slots__ = ("limit", "in_flight")

    def __init__(self, limit: int) -> None:
        if limit < 1:
            raise ValueError("limit must be at least 1")
        self.limit = limit
        # Event-loop confined: changed only between awaits.
        self.in_flight = 0

    def acquire(self) -> bool:
        if self.in_flight >= self.limit:
            return False
        self.in_flight += 1
        return True

    def release(self) -> None:
        self.in_flight -= 1
