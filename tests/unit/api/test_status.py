"""A gateway's status report: its rules, the switch progress item of a switching scope, the fleet and its lags,
forwards per outcome, held writes (gateway/api/status.py)."""

from __future__ import annotations

import orjson

from gateway.api.health import Health
from gateway.api.status import StatusReport
from gateway.config import BufferConfig, Config, from_dict
from gateway.members import Member, Membership
from gateway.obs.metrics import Metrics
from gateway.routing.control_table import SWITCH_PREFIX, ControlTable
from gateway.routing.rules import SINGLE_PRIMARY, SWITCHING, Rule
from gateway.switch.write_buffer import WriteBuffer
from tests.fakes import FakeClock, FakeTables, StaticRouting

CONFIG = from_dict({
    "gateway": {"region": "eu-west-1"},
    "regions": {r: {"downstream": f"127.0.0.1:{p}", "peer": f"127.0.0.1:{p + 1}"}
                for r, p in (("us-east-1", 9100), ("eu-west-1", 9110))},
    "views": {"items": {"table": "features_items"}},
})
NOW = 1_700_000_000.0


def status_report(config: Config = CONFIG, *rules: Rule) -> tuple[StatusReport, dict]:
    """A report over in-memory tables; ``parts`` lets a test reach the store, clock, metrics and membership."""
    clock = FakeClock(NOW)
    store = FakeTables(config.routing.table, config.members.table, "features_items")
    routing = StaticRouting(*(rules or (Rule("view#items", SINGLE_PRIMARY, "us-east-1", epoch=0),)))
    metrics = Metrics()
    metrics.prime(config.region, config.regions)
    membership = Membership(config, store, clock, metrics, instance="eu-west-1/me")
    buffer = WriteBuffer(BufferConfig(), clock, metrics)
    health = Health(config, store, clock, routing, interval=3600)
    control = ControlTable(store, config.region, "memory", config, clock)
    report = StatusReport(config, health, routing, membership, buffer, metrics, control, clock)
    return report, {"store": store, "clock": clock, "metrics": metrics, "membership": membership, "health": health}


async def test_a_switching_scope_shows_its_coordinators_step_and_fence_progress():
    switching = Rule("view#items", SINGLE_PRIMARY, "us-east-1", epoch=2, state=SWITCHING, next_primary="eu-west-1",
                     switch_id="sw1", switch_started_at=int(NOW * 1000) - 1500, updated_by="ann@devbox")
    report, parts = status_report(CONFIG, switching)
    progress = {"scope": "view#items", "from_region": "us-east-1", "to_region": "eu-west-1", "switch_id": "sw1",
                "by": "ann@devbox", "started_at_ms": 0, "step": "verify", "elapsed": 1.2, "gateways_answered": 1,
                "gateways_total": 1, "keys_verified": 62, "keys_total": 80}
    parts["store"].put(CONFIG.routing.table, {"pk": {"S": SWITCH_PREFIX + "view#items"},
                                              "progress": {"S": orjson.dumps(progress).decode()}})
    body = await report.report()
    assert body["switches"] == [{
        "scope": "view#items", "from": "us-east-1", "to": "eu-west-1", "switch_id": "sw1", "by": "ann@devbox",
        "elapsed_seconds": 1.5, "step": "verify", "reported_at_seconds": 1.2, "gateways_answered": 1,
        "gateways_total": 1, "keys_verified": 62, "keys_total": 80,
    }]
    # A progress item of an earlier switch says nothing of this one.
    progress["switch_id"] = "older"
    parts["store"].put(CONFIG.routing.table, {"pk": {"S": SWITCH_PREFIX + "view#items"},
                                              "progress": {"S": orjson.dumps(progress).decode()}})
    assert (await report.report())["switches"][0]["step"] is None


async def test_the_fleet_its_lags_and_the_forwards_by_outcome():
    report, parts = status_report()
    parts["membership"].update([
        Member("us-east-1/a", "us-east-1", "d1", "p1", 0, int((NOW - 0.2) * 1e6), buffer_depth=2,
               replication_lag={"eu-west-1": 0.3}),
    ])
    parts["metrics"].forwarded("us-east-1", "ok")
    parts["metrics"].forwarded("us-east-1", "unreachable")
    body = await report.report()
    assert body["region"] == "eu-west-1" and body["instance"] == "eu-west-1/me"
    [member] = body["members"]
    assert (member["region"], member["heartbeat_age_seconds"], member["buffer_depth"]) == ("us-east-1", 0.2, 2)
    assert member["replication_lag_seconds"] == {"eu-west-1": 0.3}
    assert body["forwards"] == {"us-east-1": {"ok": 1, "not_primary": 0, "unreachable": 1, "error": 0}}
    assert body["rules"][0]["scope"] == "view#items" and body["switches"] == []
    assert body["gateway"]["ready"] is False  # never probed: the report says why
    assert body["gateway"]["reasons"] == ["local DynamoDB: not probed yet"]
