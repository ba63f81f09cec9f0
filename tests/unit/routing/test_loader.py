"""The routing loader: snapshots from the control table, malformed rules, refresh sharing (gateway/routing/loader.py)."""

from __future__ import annotations

import asyncio

import pytest
from prometheus_client import generate_latest

from gateway.errors import StoreUnavailable
from gateway.obs.metrics import Metrics
from gateway.routing.loader import RoutingLoader
from gateway.routing.rules import SINGLE_PRIMARY, Rule
from tests.fakes import FakeClock


class ControlTable:
    def __init__(self, *items):
        self.items = list(items)
        self.scans = 0
        self.fail: Exception | None = None
        self.gate: asyncio.Event | None = None

    async def scan(self, table, *, consistent=False, page_size=None):
        self.scans += 1
        if self.gate is not None:
            await self.gate.wait()
        if self.fail is not None:
            raise self.fail
        return [dict(i) for i in self.items]


def item(scope, primary="us-east-1", epoch=0, **over):
    it = Rule(scope, SINGLE_PRIMARY, primary, epoch, version=1).to_item(ts_us=1, region="us-east-1")
    it.update(over)
    return it


def loader(store, clock=None, metrics=None):
    return RoutingLoader("routing", store, clock or FakeClock(), metrics or Metrics(), poll_interval=1.0)


async def test_nothing_is_loaded_until_the_first_read_succeeds():
    store = ControlTable(item("default"))
    store.fail = StoreUnavailable("down.")
    rl = loader(store)
    assert rl.table is None
    with pytest.raises(StoreUnavailable):
        await rl.refresh()
    assert rl.table is None
    store.fail = None
    await rl.refresh()
    assert rl.table is not None and rl.table.rule_for("v", "k").primary == "us-east-1"


async def test_lease_and_fence_items_are_not_rules():
    store = ControlTable(item("default"), {"pk": {"S": "lease#coordinator"}, "holder": {"S": "x"}})
    rl = loader(store)
    await rl.refresh()
    assert list(rl.table.rules) == ["default"]


async def test_a_malformed_rule_keeps_the_last_good_one_and_is_counted_once():
    metrics = Metrics()
    store = ControlTable(item("view#users", "eu-west-1", epoch=2))
    rl = loader(store, metrics=metrics)
    await rl.refresh()
    store.items = [item("view#users", "eu-west-1", epoch=2, mode={"S": "round_robin"})]
    await rl.refresh()
    await rl.refresh()
    rule = rl.table.rules["view#users"]
    assert (rule.primary, rule.epoch, rule.mode) == ("eu-west-1", 2, SINGLE_PRIMARY)
    assert metrics.routing_rules_rejected_total._value.get() == 1
    # A scope that never had a good rule stays absent.
    store.items.append(item("view#items", "mars-1"))
    await rl.refresh()
    assert "view#items" not in rl.table.rules
    assert metrics.routing_rules_rejected_total._value.get() == 2


async def test_deleted_rules_disappear_and_epochs_are_exported():
    metrics = Metrics()
    store = ControlTable(item("default", epoch=4), item("view#users", epoch=9))
    rl = loader(store, metrics=metrics)
    await rl.refresh()
    text = generate_latest(metrics.registry).decode()
    assert 'gateway_routing_epoch{scope="view#users"} 9.0' in text
    store.items = [item("default", epoch=5)]
    await rl.refresh()
    text = generate_latest(metrics.registry).decode()
    assert "view#users" not in text and 'gateway_routing_epoch{scope="default"} 5.0' in text
    assert list(rl.table.rules) == ["default"]


async def test_snapshot_age_follows_the_clock():
    clock = FakeClock()
    rl = loader(ControlTable(item("default")), clock=clock)
    assert rl.age() == float("inf")
    await rl.refresh()
    clock.advance(2.5)
    assert rl.age() == 2.5


async def test_concurrent_refreshes_share_one_read():
    store = ControlTable(item("default"))
    store.gate = asyncio.Event()
    rl = loader(store)
    waiters = [asyncio.create_task(rl.refresh()) for _ in range(5)]
    await asyncio.sleep(0)
    store.gate.set()
    await asyncio.gather(*waiters)
    assert store.scans == 1
    await rl.refresh()
    assert store.scans == 2
