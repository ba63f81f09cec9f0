"""Continuous writers through the gateways of several regions: the load of the switch tests and benchmark.

Open loop: each region gets ``rate / len(regions)`` writes per second on a fixed
schedule, each write its own task, so a slow gateway (a held, buffered write)
does not slow the schedule down — exactly what callers of a real service do.
The writes take ``keys`` in turn, round and round (an endless iterator is
just followed). Every write has its own idempotency key and a value naming it, and every
outcome is kept: when it started, how long it took, what was answered.
Only 127.0.0.1 is contacted; ``max_in_flight`` bounds the writes outstanding.
"""

from __future__ import annotations

import asyncio
import itertools
import time
import uuid
from collections.abc import Iterable
from dataclasses import dataclass
from typing import Any

import aiohttp
import orjson


@dataclass(frozen=True, slots=True)
class Outcome:
    region: str
    key: str
    value: dict[str, Any]
    started: float  # time.monotonic()
    seconds: float
    status: int
    body: dict[str, Any]

    @property
    def ok(self) -> bool:
        return self.status == 200

    @property
    def applied(self) -> bool:
        return self.status == 200 and bool(self.body.get("applied"))


class Writers:
    def __init__(
        self, urls: dict[str, str], *, view: str, keys: Iterable[str], rate: float, max_in_flight: int = 400,
        timeout: float = 30.0,
    ) -> None:
        self._urls = urls
        self._view = view
        self._keys = keys
        self._rate = rate
        self._limit = asyncio.Semaphore(max_in_flight)
        self._timeout = timeout
        self._run = uuid.uuid4().hex[:6]
        self.outcomes: list[Outcome] = []

    async def run(self, stop: asyncio.Event) -> None:
        """Write until ``stop`` is set, then wait for every write in flight."""
        connector = aiohttp.TCPConnector(limit=0)
        timeout = aiohttp.ClientTimeout(total=self._timeout)
        async with aiohttp.ClientSession(connector=connector, timeout=timeout) as session:
            tasks: set[asyncio.Task[None]] = set()
            regions = list(self._urls)
            keys = itertools.cycle(self._keys)
            started = time.monotonic()
            for n in itertools.count():
                if stop.is_set():
                    break
                delay = started + n / self._rate - time.monotonic()
                if delay > 0:
                    try:
                        await asyncio.wait_for(stop.wait(), delay)
                        break
                    except TimeoutError:
                        pass
                region = regions[n % len(regions)]
                await self._limit.acquire()
                task = asyncio.create_task(self._write(session, region, next(keys), n))
                tasks.add(task)
                task.add_done_callback(tasks.discard)
            await asyncio.gather(*tasks)

    async def _write(self, session: aiohttp.ClientSession, region: str, key: str, n: int) -> None:
        value = {"writer": f"{self._run}-{region}", "n": n}
        started = time.monotonic()
        try:
            async with session.put(
                f"{self._urls[region]}/v1/features/{self._view}/{key}",
                data=orjson.dumps({"features": value}),
                headers={"Idempotency-Key": f"{self._run}-{n}", "Content-Type": "application/json"},
            ) as resp:
                status, body = resp.status, await resp.json(content_type=None)
        except (aiohttp.ClientError, TimeoutError, ValueError) as exc:
            status, body = 0, {"error": {"code": "client", "message": repr(exc)}}
        finally:
            self._limit.release()
        self.outcomes.append(Outcome(region, key, value, started, time.monotonic() - started, status, body))

    def errors(self) -> list[Outcome]:
        return [o for o in self.outcomes if not o.ok]

    def acknowledged(self) -> list[tuple[str, dict[str, Any], str]]:
        """(key, value, version) of every applied write."""
        return [(o.key, o.value, o.body["version"]) for o in self.outcomes if o.applied]


async def warm_up(urls: dict[str, str], rate: float, seconds: float, emulator: Any) -> None:
    """Write ``rate``/s to 50 warm-up keys for ``seconds``, then wait for replication to settle: a cold DynamoDB Local
    answers in hundreds of milliseconds, and the first forward of each region opens its peer connections."""
    warm = Writers(urls, view="items", keys=[f"warm-{i}" for i in range(50)], rate=rate)
    warmed = asyncio.Event()
    warming = asyncio.create_task(warm.run(warmed))
    await asyncio.sleep(seconds)
    warmed.set()
    await warming
    await emulator.wait_idle(60)
