"""Request deadlines enforced by one sweeper task instead of a timer per request.

``asyncio.timeout()`` schedules and cancels a timer handle for every request,
which cost about a tenth of the gateway's CPU per proxied read. Deadlines of
seconds do not need microsecond timers: requests register ``(task, deadline)``
in a dict (one insert, one delete), and a single owned task wakes every
``resolution`` seconds and cancels the tasks whose deadline passed. A request
therefore times out between ``deadline`` and ``deadline + resolution``.

Invariant: a task is cancelled by the sweeper only while it is registered, and
``expired(token)`` tells the request's own code that the cancellation was a
deadline (answer 504), not a shutdown or a disconnect (re-raise).
"""

from __future__ import annotations

import asyncio
import itertools

from gateway.clock import Clock


class Deadlines:
    __slots__ = ("_clock", "_resolution", "_tracked", "_expired", "_ids")

    def __init__(self, clock: Clock, resolution: float = 0.05) -> None:
        self._clock = clock
        self._resolution = resolution
        # Guarded by the event loop: touched only between awaits.
        self._tracked: dict[int, tuple[asyncio.Task[object], float]] = {}
        self._expired: set[int] = set()
        self._ids = itertools.count()

    def track(self, task: asyncio.Task[object], timeout: float) -> int:
        token = next(self._ids)
        self._tracked[token] = (task, self._clock.monotonic() + timeout)
        return token

    def untrack(self, token: int) -> bool:
        """Stop watching; True if the sweeper cancelled the task for its deadline."""
        self._tracked.pop(token, None)
        if self._expired:
            try:
                self._expired.remove(token)
            except KeyError:
                return False
            return True
        return False

    def sweep(self) -> None:
        now = self._clock.monotonic()
        late = [token for token, (_, deadline) in self._tracked.items() if deadline <= now]
        for token in late:
            task, _ = self._tracked.pop(token)
            self._expired.add(token)
            task.cancel()

    async def run(self) -> None:
        while True:
            await asyncio.sleep(self._resolution)
            self.sweep()
