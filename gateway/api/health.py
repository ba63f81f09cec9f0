"""Liveness and readiness.

``/healthz`` answers while the process runs. ``/readyz`` is true only while
the routing rules are loaded, the local DynamoDB answered the last probe of
every view's table, and the process is not draining. The probe runs in one owned background task (``run()``,
entered with ``gateway.background``), so a readiness check never waits on DynamoDB.
"""

from __future__ import annotations

import asyncio
import logging

from gateway.clock import Clock
from gateway.config import Config
from gateway.errors import GatewayError
from gateway.routing.loader import RoutingLoader
from gateway.store.base import Store

log = logging.getLogger(__name__)

#: A key no entity uses; reading it proves the table exists and answers.
PROBE_KEY = "__feature_gateway_probe__"


class Health:
    def __init__(
        self, config: Config, store: Store, clock: Clock, routing: RoutingLoader | None = None, interval: float = 2.0
    ) -> None:
        self._config = config
        self._routing = routing
        self._store = store
        self._clock = clock
        self._interval = interval
        self.store_ok = False
        self.store_problem = "not probed yet"
        self.draining = False

    @property
    def ready(self) -> bool:
        return self.store_ok and not self.draining and (self._routing is None or self._routing.table is not None)

    def reasons(self) -> list[str]:
        reasons = []
        if not self.store_ok:
            reasons.append(f"local DynamoDB: {self.store_problem}")
        if self._routing is not None and self._routing.table is None:
            reasons.append(f"routing: {self._routing.problem}")
        if self.draining:
            reasons.append("draining")
        return reasons

    async def probe(self) -> None:
        try:
            for view in self._config.views.values():
                await self._store.get_item(view.table, {view.key_attribute: {"S": PROBE_KEY}})
        except GatewayError as exc:
            if self.store_ok:
                log.warning("readiness probe failed: %s", exc.message)
            self.store_ok, self.store_problem = False, exc.message
        else:
            self.store_ok, self.store_problem = True, ""

    async def run(self) -> None:
        while True:
            await asyncio.sleep(self._interval)
            await self.probe()
