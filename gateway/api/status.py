"""The status report of one gateway, and the admin listener's ``GET /status`` (HTML) and ``GET /status.json``.

The report is what this gateway knows, read from its own state and its region's
replicas, never from another gateway: its readiness; the rules of its routing
snapshot (the epochs and states it routes by); the progress of every switch in
progress, from the ``switch#SCOPE`` items the coordinator keeps in the control
table (``gatewayctl switch status`` reads the same items); the writes its buffer
holds; its forwards per region and outcome (``gateway_forward_total``, merged
over the workers); and the fleet as its members replica shows it, each member
with its heartbeat age, buffer depth and the replication lag it measures from
every other region. Since global tables replicate the members table, the last
alone gives the whole lag matrix.

The page (gateway/obs/status_page.py) renders this report; the local cluster
renders the reports of every region's gateway on one page. Read-only: nothing
here writes, and a failure to read switch progress leaves the switch shown
without its step rather than failing the page.
"""

from __future__ import annotations

import asyncio
from typing import Any

from aiohttp import web

from gateway.api.frontend import json_response
from gateway.api.health import Health
from gateway.clock import Clock
from gateway.config import Config
from gateway.members import Membership
from gateway.obs.metrics import Metrics
from gateway.obs.status_page import render
from gateway.routing.control_table import ControlTable, ControlTableError
from gateway.routing.loader import RoutingLoader
from gateway.routing.rules import SWITCHING
from gateway.switch.coordinator import SwitchProgress
from gateway.switch.write_buffer import WriteBuffer

#: Seconds the page waits for the switch progress items before it is rendered without them.
PROGRESS_TIMEOUT = 1.0


class StatusReport:
    def __init__(
        self,
        config: Config,
        health: Health,
        routing: RoutingLoader,
        membership: Membership,
        buffer: WriteBuffer,
        metrics: Metrics,
        control: ControlTable,
        clock: Clock,
    ) -> None:
        self._config = config
        self._health = health
        self._routing = routing
        self._membership = membership
        self._buffer = buffer
        self._metrics = metrics
        self._control = control
        self._clock = clock

    async def report(self) -> dict[str, Any]:
        """The body of ``GET /status.json``."""
        table = self._routing.table
        rules = [] if table is None else table.describe()
        switching = [r for r in rules if r["state"] == SWITCHING]
        progress = await self._progress([r["scope"] for r in switching])
        now_ms = self._clock.wall_ms()
        now_us = self._clock.wall_us()
        late_after = 3 * self._config.members.heartbeat_interval + self._config.members.observe_interval
        return {
            "region": self._config.region,
            "instance": self._membership.instance,
            "generated_at_ms": now_ms,
            "gateway": {
                "ready": self._health.ready,
                "reasons": self._health.reasons(),
                "snapshot_age_seconds": None if table is None else round(self._routing.age(), 3),
                "buffer_depth": self._buffer.depth(),
            },
            "rules": rules,
            "switches": [_switch(rule, progress.get(rule["scope"]), now_ms) for rule in switching],
            "buffer": {r["scope"]: self._buffer.stats(r["scope"]).held for r in rules if self._buffer.stats(r["scope"]).held},
            "forwards": await self._metrics.forward_counts(),
            "members": [
                {
                    "region": m.region,
                    "instance": m.instance,
                    "downstream": m.downstream,
                    "peer": m.peer,
                    "heartbeat_age_seconds": round(max(0, now_us - m.heartbeat_at_us) / 1e6, 3),
                    "late_after_seconds": late_after,
                    "buffer_depth": m.buffer_depth,
                    "replication_lag_seconds": m.replication_lag,
                    "epochs": m.epochs,
                }
                for m in self._membership.members()
            ],
        }

    async def _progress(self, scopes: list[str]) -> dict[str, dict[str, Any]]:
        async def one(scope: str) -> tuple[str, dict[str, Any] | None]:
            try:
                async with asyncio.timeout(PROGRESS_TIMEOUT):
                    return scope, await self._control.switch_progress(scope)
            except (ControlTableError, TimeoutError):
                return scope, None  # shown without its step: the page must not fail on advice

        found = await asyncio.gather(*(one(s) for s in scopes))
        return {scope: p for scope, p in found if p is not None}

    # -- handlers of the admin listener ----------------------------------------------------------

    async def json(self, request: web.BaseRequest) -> web.Response:
        return json_response(await self.report())

    async def page(self, request: web.BaseRequest) -> web.Response:
        report = await self.report()
        body = render({self._config.region: report}, title=f"Feature Gateway {self._config.region}",
                      now_ms=report["generated_at_ms"])
        return web.Response(text=body, content_type="text/html", charset="utf-8")


def _switch(rule: dict[str, Any], progress: dict[str, Any] | None, now_ms: int) -> dict[str, Any]:
    """A switch in progress: the rule's view of it, and its coordinator's last report if it is this switch's."""
    started = rule.get("switch_started_at") or now_ms
    view: dict[str, Any] = {
        "scope": rule["scope"],
        "from": rule.get("primary"),
        "to": rule.get("next_primary"),
        "switch_id": rule.get("switch_id"),
        "by": rule.get("updated_by"),
        "elapsed_seconds": round(max(0, now_ms - started) / 1000, 3),
        "step": None,
    }
    if progress is not None and progress.get("switch_id") == rule.get("switch_id"):
        p = SwitchProgress.from_json(progress)
        view.update(step=p.step, reported_at_seconds=p.elapsed, gateways_answered=p.gateways_answered,
                    gateways_total=p.gateways_total, keys_verified=p.keys_verified, keys_total=p.keys_total,
                    by=p.by)
    return view
