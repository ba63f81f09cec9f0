"""The injected clock: every timeout, window and timestamp in the gateway reads time through a ``Clock``.

Tests of timeouts use ``tests.fakes.FakeClock`` instead of sleeping.
``wall_us()`` never goes backwards within a process and never repeats, so two
writes accepted by one gateway always get distinct, ordered ``_ts`` values
even if the system clock steps back (NTP) or two writes share a microsecond.
"""

from __future__ import annotations

import time
from typing import Protocol


class Clock(Protocol):
    def monotonic(self) -> float: ...

    def wall_us(self) -> int: ...

    def wall_ms(self) -> int: ...


class SystemClock:
    __slots__ = ("_last_us",)

    def __init__(self) -> None:
        self._last_us = 0

    def monotonic(self) -> float:
        return time.monotonic()

    def wall_us(self) -> int:
        now = time.time_ns() // 1000
        # No lock: the event loop is single-threaded and this never awaits.
        self._last_us = now if now > self._last_us else self._last_us + 1
        return self._last_us

    def wall_ms(self) -> int:
        return time.time_ns() // 1_000_000
