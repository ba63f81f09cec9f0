"""A gatewayctl harness for unit tests: ``run()`` against in-memory tables (tests/fakes.py FakeTables) with a fake clock."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from gateway.ctl.main import run
from gateway.errors import PrimaryUnreachable
from gateway.peer.routes import BUFFER_PATH, FENCE_PATH, ROUTING_PATH, RULES_PATH, VERSIONS_PATH
from gateway.routing.rules import Rule, parse_rule, rule_from_json
from tests.fakes import FakeClock, FakeTables

RULES = "routing_t"
MEMBERS = "members_t"
REGIONS = ("us-east-1", "eu-west-1", "ap-southeast-1")
NOW = 1_763_892_000.0  # 2025-11-23T10:00:00Z

CONFIG = f"""
[gateway]
region = "us-east-1"
[routing]
table = "{RULES}"
[members]
table = "{MEMBERS}"
expiry = 5.0
heartbeat_interval = 0.1
[regions.us-east-1]
downstream = "127.0.0.1:8700"
peer = "127.0.0.1:8701"
[regions.eu-west-1]
downstream = "127.0.0.1:8710"
peer = "127.0.0.1:8711"
[regions.ap-southeast-1]
downstream = "127.0.0.1:8720"
peer = "127.0.0.1:8721"
[views.users]
table = "features_users"
[views.items]
table = "features_items"
"""


def rule(scope: str, primary: str | None = "us-east-1", **fields: Any) -> Rule:
    defaults: dict[str, Any] = {"mode": "single_primary", "epoch": 0, "version": 1, "updated_by": "ann@ops", "updated_at": 1}
    return Rule(scope=scope, primary=primary, **{**defaults, **fields})


class FleetPeers:
    """The fleet's peer APIs as gatewayctl sees them: every push is taken, fences are complete with ``acked``
    (view, key, version), the new primary holds them, each gateway holds ``held`` writes of the scope, and the
    gateways of ``down`` regions do not answer."""

    def __init__(self, acked: tuple[tuple[str, str, str], ...] = (), held: int = 0, down: tuple[str, ...] = ()) -> None:
        self.acked, self.held, self.down = list(acked), held, set(down)
        self.closed = False

    async def call_address(self, address: str, path: str, body: dict[str, Any], *, region: str, **kw: Any) -> Any:
        if region in self.down:
            raise PrimaryUnreachable(f"{region} at {address}: connection refused")
        if path == RULES_PATH:
            pushed = rule_from_json(body["rules"][0])
            return {"rules": {pushed.scope: {"epoch": pushed.epoch, "state": pushed.state}}}
        if path == FENCE_PATH:
            return {"instance": f"i-{address}", "complete": True, "acknowledged": [list(a) for a in self.acked]}
        if path == BUFFER_PATH:
            return {"held": self.held, "outstanding": 0}
        if path == ROUTING_PATH:
            return {"rules": {}}
        raise AssertionError(path)

    async def call(self, region: str, path: str, body: dict[str, Any]) -> Any:
        assert path == VERSIONS_PATH
        versions = {k: v for _, k, v in self.acked}
        return {"versions": [versions.get(k) for k in body["keys"]]}

    async def close(self) -> None:
        self.closed = True


@dataclass
class Ctl:
    store: FakeTables
    config: Path
    clock: FakeClock
    #: The peer APIs ``switch``, ``switch status`` and ``failover`` call; ``None``: the real client (needs a secret).
    peers: FleetPeers | None = None

    def __call__(self, *argv: str, confirm: Callable[[str], bool] | None = None) -> int:
        async def open_store(target: Any) -> tuple[FakeTables, str]:
            return self.store, "http://fake:8000"

        open_peers = None if self.peers is None else (lambda session: self.peers)
        return run(["--region", "us-east-1", "--config", str(self.config), *argv],
                   confirm=confirm, open_store=open_store, clock=self.clock, open_peers=open_peers)

    def seed(self, *rules: Rule) -> None:
        self.store.put(RULES, *(r.to_item(ts_us=1, region="us-east-1") for r in rules))

    def stored(self, scope: str) -> Rule | None:
        item = self.store.item(RULES, "rule#" + scope)
        return None if item is None else parse_rule(item)


def member(instance: str, region: str, *, age: float = 0.5, **extra: Any) -> dict[str, Any]:
    heartbeat_us = round((NOW - age) * 1e6)
    item: dict[str, Any] = {
        "pk": {"S": instance}, "region": {"S": region}, "downstream": {"S": "127.0.0.1:8700"},
        "peer": {"S": f"10.0.0.{len(instance)}:8701"}, "started_at": {"N": "1"},
        "heartbeat_at": {"N": str(heartbeat_us)}, "buffer_depth": {"N": str(extra.get("buffer", 0))},
    }
    if "epochs" in extra:
        item["epochs"] = {"M": {s: {"N": str(e)} for s, e in extra["epochs"].items()}}
    if "lag" in extra:
        item["replication_lag"] = {"M": {r: {"N": str(s)} for r, s in extra["lag"].items()}}
    if "sampled" in extra:
        item["replication_lag_sampled"] = {"M": {r: {"N": str(s)} for r, s in extra["sampled"].items()}}
    return item
