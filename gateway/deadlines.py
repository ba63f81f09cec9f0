"""Request deadlines enforced by one sweeper task instead of a timer per request.

``asyncio.timeout()`` schedules and cancels a timer handle for every request,
which cost about a tenth of the gateway's CPU per proxied read. Deadlines of
seconds do not need microsecond timers: requests register a ``Deadline`` in a
set (one insert, one delete), and a single owned task wakes every
``resolution`` seconds and cancels the tasks whose deadline passed. A request
therefore times out between ``deadline`` and ``deadline + resolution``.

The request's ``Deadline`` is also the context variable ``current`` while it
is served, so code below the handler (``LeanStore``'s retries, the peer hop)
can ask how much time is left without being handed it: a retry whose backoff
would outlive the deadline is not started, and a forwarded request carries the
remaining time to the peer (``X-Request-Timeout``). Tasks spawned by the
request inherit it; background tasks have none.

Invariant: a task is cancelled here only while it is tracked, and its
``Deadline.cancelled`` says why (``EXPIRED``: answer 504; ``RELEASED``: the
worker is shutting down past its grace, answer 503 draining); ``None`` means
the cancellation came from elsewhere (client gone, shutdown) and must be
re-raised.
"""

from __future__ import annotations

import asyncio
import contextvars

from gateway.clock import Clock

EXPIRED = "expired"
RELEASED = "released"
#: The caller's (or the forwarding peer's) timeout in seconds, a decimal number > 0.
TIMEOUT_HEADER = "X-Request-Timeout"
#: Its value: decimal seconds greater than 0, in ASCII digits (float() would also read "1_0", "inf" or
#: full-width digits); at most 9 digits either side of the point.
TIMEOUT_PATTERN = r"^(?=[0-9.]*[1-9])(?:[0-9]{1,9}(?:\.[0-9]{0,9})?|\.[0-9]{1,9})$(?!\n)"


class Deadline:
    __slots__ = ("at", "task", "cancelled", "_clock")

    def __init__(self, task: asyncio.Task[object] | None, at: float, clock: Clock) -> None:
        self.at = at
        self.task = task
        #: Why this module cancelled the task (EXPIRED or RELEASED), or None.
        self.cancelled: str | None = None
        self._clock = clock

    def remaining(self) -> float:
        """Seconds left (negative once passed)."""
        return self.at - self._clock.monotonic()


#: The deadline of the request being served in this context, if any.
current: contextvars.ContextVar[Deadline | None] = contextvars.ContextVar("gateway_deadline", default=None)


def remaining() -> float | None:
    """Seconds left of the current request's deadline; ``None`` outside a request."""
    deadline = current.get()
    return None if deadline is None else deadline.remaining()


class Deadlines:
    __slots__ = ("_clock", "_resolution", "_tracked")

    def __init__(self, clock: Clock, resolution: float = 0.05) -> None:
        self._clock = clock
        self._resolution = resolution
        # Guarded by the event loop: touched only between awaits.
        self._tracked: set[Deadline] = set()

    @property
    def in_flight(self) -> int:
        """Requests being served (tracked) right now."""
        return len(self._tracked)

    def track(self, task: asyncio.Task[object], timeout: float) -> Deadline:
        deadline = Deadline(task, self._clock.monotonic() + timeout, self._clock)
        self._tracked.add(deadline)
        return deadline

    def untrack(self, deadline: Deadline) -> str | None:
        """Stop watching; returns why this module cancelled the task (``EXPIRED``/``RELEASED``), else None."""
        self._tracked.discard(deadline)
        return deadline.cancelled

    def sweep(self) -> None:
        now = self._clock.monotonic()
        late = [d for d in self._tracked if d.at <= now]
        for deadline in late:
            self._cancel(deadline, EXPIRED)

    def release_all(self) -> int:
        """Cancel every tracked request (shutdown past its grace); they answer 503 ``draining``."""
        released = list(self._tracked)
        for deadline in released:
            self._cancel(deadline, RELEASED)
        return len(released)

    def _cancel(self, deadline: Deadline, reason: str) -> None:
        self._tracked.discard(deadline)
        deadline.cancelled = reason
        if deadline.task is not None:
            deadline.task.cancel()

    async def run(self) -> None:
        while True:
            await asyncio.sleep(self._resolution)
            self.sweep()
