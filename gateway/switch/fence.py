"""What a primary acknowledged, per scope: the evidence a planned switch's fence checks (DESIGN.md §7.3).

While this region is a scope's primary, every write it applies is bracketed by
``begin(scope)`` / ``end(scope, …)``. ``end`` of an acknowledged write records
(view, key) → version. When a switch starts, the coordinator asks each of the
old primary's gateways to stop taking writes for the scope (it learns the
``switching`` rule, so new writes are buffered), then ``quiesce`` waits until
no write of the scope is in flight, and ``acknowledged`` lists the newest
version of every key written within ``window`` seconds. The coordinator then
verifies each of those versions in the new primary's replica, per key, because
global tables keep per-item order only.

Invariants:
- ``in_flight[scope]`` counts writes between ``begin`` and ``end``; it is
  never negative, and ``quiesce`` returns True only when it is zero.
- A key's entry is its newest acknowledged version (later acknowledgements
  replace it); entries older than ``window`` are dropped.
- Past ``max_keys`` keys in the window the log is *incomplete*: it cannot
  prove what it forgot, so a fence built on it must not be called verified.
"""

from __future__ import annotations

import asyncio
from collections import OrderedDict

from gateway.clock import Clock


class _ScopeLog:
    __slots__ = ("in_flight", "keys", "overflowed_at", "idle")

    def __init__(self) -> None:
        self.in_flight = 0
        # (view, key) -> (version token, acknowledged at, monotonic); oldest first.
        self.keys: OrderedDict[tuple[str, str], tuple[str, float]] = OrderedDict()
        self.overflowed_at: float | None = None
        self.idle: list[asyncio.Future[None]] = []


class AckLog:
    """Per-scope in-flight counts and recently acknowledged versions; event-loop confined."""

    __slots__ = ("_clock", "_window", "_max_keys", "_scopes")

    def __init__(self, clock: Clock, window: float, max_keys: int) -> None:
        self._clock = clock
        self._window = window
        self._max_keys = max_keys
        self._scopes: dict[str, _ScopeLog] = {}

    def _log(self, scope: str) -> _ScopeLog:
        log = self._scopes.get(scope)
        if log is None:
            log = self._scopes[scope] = _ScopeLog()
        return log

    def begin(self, scope: str) -> None:
        self._log(scope).in_flight += 1

    def end(self, scope: str, view: str, key: str, version: str | None) -> None:
        """The write finished; ``version`` is its token when it was acknowledged as applied."""
        log = self._scopes[scope]
        assert log.in_flight > 0, f"end() without begin() for scope {scope}"
        log.in_flight -= 1
        now = self._clock.monotonic()
        if version is not None:
            entry = (view, key)
            log.keys[entry] = (version, now)
            log.keys.move_to_end(entry)
            self._trim(log, now)
        if log.in_flight == 0 and log.idle:
            waiters, log.idle = log.idle, []
            for waiter in waiters:
                if not waiter.done():
                    waiter.set_result(None)

    def _trim(self, log: _ScopeLog, now: float) -> None:
        keys = log.keys
        horizon = now - self._window
        while keys:
            first = next(iter(keys.values()))
            if first[1] >= horizon and len(keys) <= self._max_keys:
                break
            if len(keys) > self._max_keys:
                log.overflowed_at = now
            keys.popitem(last=False)
        if log.overflowed_at is not None and log.overflowed_at < horizon:
            log.overflowed_at = None  # what was forgotten is older than the window now

    def in_flight(self, scope: str) -> int:
        log = self._scopes.get(scope)
        return log.in_flight if log is not None else 0

    async def quiesce(self, scope: str, timeout: float) -> bool:
        """Wait (at most ``timeout`` s) until no write of ``scope`` is in flight; True if none is."""
        log = self._scopes.get(scope)
        if log is None or log.in_flight == 0:
            return True
        waiter: asyncio.Future[None] = asyncio.get_running_loop().create_future()
        log.idle.append(waiter)
        try:
            async with asyncio.timeout(timeout):
                await waiter
        except TimeoutError:
            return False
        return True

    def acknowledged(self, scope: str) -> tuple[list[tuple[str, str, str]], bool]:
        """(view, key, version) of every key acknowledged within the window, and whether the list is complete."""
        log = self._scopes.get(scope)
        if log is None:
            return [], True
        now = self._clock.monotonic()
        self._trim(log, now)
        return [(view, key, version) for (view, key), (version, _) in log.keys.items()], log.overflowed_at is None
