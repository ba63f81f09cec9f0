"""A gatewayctl harness for unit tests: ``run()`` against in-memory tables (tests/fakes.py FakeTables) with a fake clock."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from gateway.ctl.main import run
from gateway.routing.rules import Rule, parse_rule
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


@dataclass
class Ctl:
    store: FakeTables
    config: Path
    clock: FakeClock

    def __call__(self, *argv: str, confirm: Callable[[str], bool] | None = None) -> int:
        async def open_store(target: Any) -> tuple[FakeTables, str]:
            return self.store, "http://fake:8000"

        return run(["--region", "us-east-1", "--config", str(self.config), *argv],
                   confirm=confirm, open_store=open_store, clock=self.clock)

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
    return item
