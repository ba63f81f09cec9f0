"""Outlier detection per peer address, after Envoy's: an address that keeps failing is ejected for a while.

``OutlierDetector`` watches the outcome of every call ``PeerClient`` makes to
one peer address and decides whether the next call may go there:

- ``HEALTHY``: calls flow. ``consecutive_failures`` failures in a row (no
  answer within the timeout, a refused connection, a 503 ``draining`` or
  ``overloaded``) **eject** the address, unless that would eject more than
  ``max_ejection_percent`` of its region's addresses (at least one address of
  a region may always be ejected, as in Envoy, so a region reached through one
  load-balancer address can still be ejected).
- ``EJECTED`` for ``base_ejection × n`` seconds, ``n`` the number of times it
  was ejected (at most ``max_ejection``): calls skip it at once, without
  touching the network. ``n`` decays by one per ``base_ejection`` seconds of
  health, so a flapping host stays out longer and a recovered one is forgiven.
- ``PROBING`` (half-open) once the ejection time passed: exactly one call, the
  probe, is let through. Its success makes the address healthy; its failure ejects
  the address again for longer. A probe that never reports (its caller was
  cancelled) is replaced after ``probe_timeout``.

Invariant: at most one probe per address is in flight; ``allow()`` is the one
decision function, and its fall-through is a bug.
"""

from __future__ import annotations

import enum
import logging
from collections.abc import Callable, Sequence

from gateway.clock import Clock

log = logging.getLogger(__name__)


class State(enum.Enum):
    HEALTHY = "healthy"
    EJECTED = "ejected"
    PROBING = "probing"


class _Host:
    __slots__ = ("state", "failures", "ejections", "until", "healthy_since")

    def __init__(self) -> None:
        self.state = State.HEALTHY
        #: Consecutive failures while HEALTHY.
        self.failures = 0
        #: Times ejected, decayed by time spent healthy (the ejection-time multiplier).
        self.ejections = 0
        #: EJECTED: when the ejection ends. PROBING: when an unreported probe is given up.
        self.until = 0.0
        self.healthy_since = 0.0


class OutlierDetector:
    def __init__(
        self,
        clock: Clock,
        *,
        consecutive_failures: int = 5,
        base_ejection: float = 5.0,
        max_ejection: float = 300.0,
        max_ejection_percent: int = 50,
        probe_timeout: float = 2.0,
        on_change: Callable[[str, State, State], None] = lambda address, old, new: None,
    ) -> None:
        self._clock = clock
        self._threshold = consecutive_failures
        self._base = base_ejection
        self._max = max_ejection
        self._percent = max_ejection_percent
        self._probe_timeout = probe_timeout
        self._on_change = on_change
        # Event-loop confined: every method runs between awaits.
        self._hosts: dict[str, _Host] = {}

    def state(self, address: str) -> State:
        host = self._hosts.get(address)
        return State.HEALTHY if host is None else host.state

    def retry_in(self, address: str) -> float:
        """Seconds until an ejected address gets its probe (0 when it may be called)."""
        host = self._hosts.get(address)
        if host is None or host.state is State.HEALTHY:
            return 0.0
        return max(0.0, host.until - self._clock.monotonic())

    def allow(self, address: str) -> bool:
        """May a call go to ``address`` now? True for the one probe of an address whose ejection ended."""
        host = self._hosts.get(address)
        if host is None:
            return True
        state = host.state
        if state is State.HEALTHY:
            return True
        now = self._clock.monotonic()
        if state is State.EJECTED or state is State.PROBING:
            if now < host.until:
                return False
            # The ejection ended (or the last probe never reported): this call is the probe.
            host.state = State.PROBING
            host.until = now + self._probe_timeout
            if state is State.EJECTED:
                self._on_change(address, State.EJECTED, State.PROBING)
            return True
        raise AssertionError(f"unhandled outlier state {state!r}")

    def success(self, address: str) -> None:
        host = self._hosts.get(address)
        if host is None:
            return
        if host.state is State.PROBING:
            host.state = State.HEALTHY
            host.healthy_since = self._clock.monotonic()
            log.warning("peer %s answered its probe; back in rotation", address)
            self._on_change(address, State.PROBING, State.HEALTHY)
        host.failures = 0

    def failure(self, address: str, pool: Sequence[str]) -> None:
        """A call to ``address`` failed; ``pool`` is every address of its region (for the ejection percentage)."""
        host = self._hosts.get(address)
        if host is None:
            host = self._hosts[address] = _Host()
        if host.state is State.EJECTED:
            return  # a call that started before the ejection ended late: already counted
        if host.state is State.PROBING:
            self._eject(address, host)
            return
        host.failures += 1
        if host.failures >= self._threshold and self._may_eject(pool):
            self._eject(address, host)

    def _may_eject(self, pool: Sequence[str]) -> bool:
        ejected = sum(1 for a in pool if self.state(a) is not State.HEALTHY)
        return ejected == 0 or (ejected + 1) * 100 <= self._percent * len(pool)

    def _eject(self, address: str, host: _Host) -> None:
        now = self._clock.monotonic()
        old = host.state
        if host.ejections and old is State.HEALTHY:
            host.ejections = max(0, host.ejections - int((now - host.healthy_since) // self._base))
        host.ejections += 1
        seconds = min(self._base * host.ejections, self._max)
        host.state, host.until, host.failures = State.EJECTED, now + seconds, 0
        log.warning("peer %s ejected for %gs after consecutive failures (ejection %d)", address, seconds, host.ejections)
        self._on_change(address, old, State.EJECTED)
