"""Fleet membership and the replication canary (DESIGN.md §3, members table).

Each gateway worker heartbeats one member item in its region's replica of the
members global table: region, instance id, addresses, start time, heartbeat
time, the epochs it has observed per scope and its buffer depth. Global tables
replicate those items everywhere, so every gateway's local replica is a view
of the whole fleet, and the heartbeats double as a replication canary:

    lag(R) = now − heartbeat_at of the newest heartbeat from region R,
             measured when this gateway first sees that heartbeat locally.

First sight happens at the next observation, so a sample is late by at most
``observe_interval``. When no newer heartbeat from R arrives, the lag keeps
growing as ``now − newest − heartbeat_interval``: paused replication shows as
a rising gauge, not a frozen one. Wall clocks of two regions differ; the
figure includes that skew (NTP keeps it to milliseconds on AWS).

Invariants: members whose heartbeat is older than ``expiry`` are gone (also
set as the item's TTL ``expires_at``); the member item carries ``_ts`` and
``_region`` like every gateway write, so replication orders it like any other.
"""

from __future__ import annotations

import asyncio
import logging
import os
import socket
import uuid
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from typing import Any

from gateway.clock import Clock
from gateway.config import Config
from gateway.errors import GatewayError
from gateway.obs.metrics import Metrics
from gateway.store.base import Item, Store

log = logging.getLogger(__name__)

#: Seconds a leaving gateway waits for its member item's removal.
LEAVE_TIMEOUT = 2.0


@dataclass(frozen=True, slots=True)
class Member:
    instance: str
    region: str
    downstream: str
    peer: str
    started_at_ms: int
    heartbeat_at_us: int
    epochs: dict[str, int] = field(default_factory=dict)
    buffer_depth: int = 0
    #: Replication lag from each other region as this member measures it.
    replication_lag: dict[str, float] = field(default_factory=dict)
    #: The lag from each other region measured when its newest heartbeat arrived: it stops moving when that
    #: region goes quiet, so it is the lag just before it stopped (a failover's loss window).
    replication_lag_sampled: dict[str, float] = field(default_factory=dict)

    @classmethod
    def from_item(cls, item: Item) -> Member:
        return cls(
            instance=item["pk"]["S"],
            region=item["region"]["S"],
            downstream=item.get("downstream", {}).get("S", ""),
            peer=item.get("peer", {}).get("S", ""),
            started_at_ms=int(item["started_at"]["N"]),
            heartbeat_at_us=int(item["heartbeat_at"]["N"]),
            epochs={scope: int(v["N"]) for scope, v in item.get("epochs", {}).get("M", {}).items()},
            buffer_depth=int(item.get("buffer_depth", {}).get("N", "0")),
            replication_lag=_seconds(item, "replication_lag"),
            replication_lag_sampled=_seconds(item, "replication_lag_sampled"),
        )


def _seconds(item: Item, name: str) -> dict[str, float]:
    return {r: float(v["N"]) for r, v in item.get(name, {}).get("M", {}).items() if "N" in v}


@dataclass(frozen=True, slots=True)
class MemberRow:
    """One gateway instance as one region's replica of the members table shows it (``gatewayctl members``)."""

    region: str
    instance: str
    downstream: str
    peer: str
    started_at_ms: int
    heartbeat_age: float
    epochs: dict[str, int] = field(default_factory=dict)
    replication_lag: dict[str, float] = field(default_factory=dict)
    buffer_depth: int = 0
    stale: bool = False
    replication_lag_sampled: dict[str, float] = field(default_factory=dict)


def instance_id(region: str) -> str:
    """Unique per worker process and start: host, pid and a random suffix (pids are reused)."""
    return f"{region}/{socket.gethostname()}/{os.getpid()}/{uuid.uuid4().hex[:6]}"


class Membership:
    def __init__(
        self,
        config: Config,
        store: Store,
        clock: Clock,
        metrics: Metrics,
        *,
        instance: str | None = None,
        epochs: Callable[[], Mapping[str, int]] = dict,
        buffer_depth: Callable[[], int] = lambda: 0,
    ) -> None:
        self._config = config
        #: The epoch this gateway routes each scope by (its routing snapshot's).
        self._epochs = epochs
        self._buffer_depth = buffer_depth
        self._store = store
        self._clock = clock
        self._metrics = metrics
        self._table = config.members.table
        self.instance = instance or instance_id(config.region)
        self._started_at_ms = clock.wall_ms()
        # Touched only from the event loop, never across an await.
        self._members: dict[str, Member] = {}
        self._newest: dict[str, int] = {}  # region -> newest heartbeat_at seen (µs)
        self._lag: dict[str, float] = {}
        self._sampled: dict[str, float] = {}  # region -> lag when its newest heartbeat was first seen
        self._gauges = {r: metrics.replication_lag(r) for r in config.regions if r != config.region}

    # -- heartbeat -------------------------------------------------------------------------------

    def item(self) -> Item:
        now_us = self._clock.wall_us()
        config = self._config
        item: Item = {
            "pk": {"S": self.instance},
            "region": {"S": config.region},
            "downstream": {"S": str(config.listen)},
            "peer": {"S": config.peer.advertise or str(config.peer_listen)},
            "started_at": {"N": str(self._started_at_ms)},
            "heartbeat_at": {"N": str(now_us)},
            "expires_at": {"N": str(now_us // 1_000_000 + int(config.members.expiry))},
            "buffer_depth": {"N": str(self._buffer_depth())},
            "_ts": {"N": str(now_us)},
            "_region": {"S": config.region},
        }
        # Empty maps are left out: DynamoDB Local's stream images render them as values without a type.
        epochs = self._epochs()
        if epochs:
            item["epochs"] = {"M": {scope: {"N": str(epoch)} for scope, epoch in epochs.items()}}
        if self._lag:
            item["replication_lag"] = {"M": {r: {"N": f"{lag:.3f}"} for r, lag in self._lag.items()}}
        if self._sampled:
            item["replication_lag_sampled"] = {"M": {r: {"N": f"{lag:.3f}"} for r, lag in self._sampled.items()}}
        return item

    async def heartbeat(self) -> None:
        await self._store.put_item(self._table, self.item())

    async def leave(self, timeout: float = LEAVE_TIMEOUT) -> None:
        """Remove this instance's item, so the fleet view drops it at once rather than after expiry.

        Bounded: at shutdown a DynamoDB that hangs must not hold the process (the item expires anyway).
        """
        try:
            async with asyncio.timeout(timeout):
                await self._store.delete_item(self._table, {"pk": {"S": self.instance}})
        except GatewayError as exc:
            log.warning("could not remove member item: %s", exc.message)
        except TimeoutError:
            log.warning("member item not removed within %gs; it expires on its own", timeout)

    # -- observation -----------------------------------------------------------------------------

    async def observe(self) -> None:
        items = await self._store.scan(self._table)
        self.update([Member.from_item(i) for i in items if "heartbeat_at" in i and "region" in i])

    def update(self, members: list[Member]) -> None:
        """Fold one read of the local replica into the fleet view and the lag per region."""
        now_us = self._clock.wall_us()
        expiry_us = int(self._config.members.expiry * 1e6)
        live = {m.instance: m for m in members if now_us - m.heartbeat_at_us <= expiry_us}
        self._members = live
        newest: dict[str, int] = {}
        for m in live.values():
            if m.region != self._config.region and m.heartbeat_at_us > newest.get(m.region, 0):
                newest[m.region] = m.heartbeat_at_us
        interval_us = int(self._config.members.heartbeat_interval * 1e6)
        for region in set(newest) | set(self._newest):
            latest = newest.get(region, 0)
            if latest > self._newest.get(region, 0):
                self._newest[region] = latest
                lag_us = now_us - latest
                self._sampled[region] = max(0, lag_us) / 1e6
            else:
                # Nothing newer: the lag grows by the time beyond the heartbeat period.
                lag_us = max(int(self._lag.get(region, 0.0) * 1e6), now_us - self._newest[region] - interval_us)
            self._lag[region] = max(0, lag_us) / 1e6
            gauge = self._gauges.get(region) or self._gauges.setdefault(region, self._metrics.replication_lag(region))
            gauge.set(self._lag[region])

    def peers(self, region: str) -> list[str]:
        """Peer addresses live members of ``region`` advertise (for forwarding to another instance)."""
        return [m.peer for m in self._members.values() if m.region == region and m.peer]

    def members(self) -> list[Member]:
        return sorted(self._members.values(), key=lambda m: (m.region, m.instance))

    def lag(self) -> dict[str, float]:
        return dict(self._lag)

    def describe(self) -> dict[str, Any]:
        """The body of ``GET /v1/members``."""
        now_us = self._clock.wall_us()
        return {
            "region": self._config.region,
            "instance": self.instance,
            "replication_lag_seconds": self.lag(),
            "members": [
                {
                    "instance": m.instance,
                    "region": m.region,
                    "downstream": m.downstream,
                    "peer": m.peer,
                    "started_at_ms": m.started_at_ms,
                    "heartbeat_age_seconds": round((now_us - m.heartbeat_at_us) / 1e6, 3),
                    "epochs": m.epochs,
                    "buffer_depth": m.buffer_depth,
                    "replication_lag_seconds": m.replication_lag,
                }
                for m in self.members()
            ],
        }

    # -- loop ------------------------------------------------------------------------------------

    async def run(self) -> None:
        """Heartbeat and observe on their own intervals until cancelled; failures are logged, never fatal."""
        heartbeat_every = self._config.members.heartbeat_interval
        observe_every = self._config.members.observe_interval
        next_heartbeat = next_observe = self._clock.monotonic()
        while True:
            now = self._clock.monotonic()
            try:
                if now >= next_heartbeat:
                    next_heartbeat = now + heartbeat_every
                    await self.heartbeat()
                if now >= next_observe:
                    next_observe = now + observe_every
                    await self.observe()
            except GatewayError as exc:
                log.warning("membership: %s", exc.message)
            await asyncio.sleep(max(0.0, min(next_heartbeat, next_observe) - self._clock.monotonic()))
