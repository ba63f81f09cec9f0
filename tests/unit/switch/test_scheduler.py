"""Follow-the-sun decisions of the lease holder (gateway/switch/scheduler.py)."""

from __future__ import annotations

import asyncio
from dataclasses import replace
from datetime import datetime, timezone

import pytest

from gateway.config import from_dict
from gateway.routing.rules import SINGLE_PRIMARY, SWITCHING, Rule, ScheduleEntry
from gateway.switch.scheduler import Scheduler, due_entry
from tests.fakes import AdvancingSleep, FakeClock, FakeTables

CONFIG = from_dict({"gateway": {"region": "us-east-1"}, "switch": {"max_duration": 5.0}, "views": {"items": {"table": "features_items"}}})
DAY = (ScheduleEntry("00:00", "ap-southeast-1"), ScheduleEntry("08:00", "eu-west-1"), ScheduleEntry("16:00", "us-east-1"))


def at(text: str) -> datetime:
    return datetime.fromisoformat(text).replace(tzinfo=timezone.utc)


def test_the_due_entry_is_the_latest_passed_today_or_else_yesterdays_last():
    assert due_entry(DAY, at("2026-11-23T09:30:00")) == (DAY[1], at("2026-11-23T08:00:00"))
    assert due_entry(DAY, at("2026-11-23T16:00:00")) == (DAY[2], at("2026-11-23T16:00:00"))
    single = (ScheduleEntry("22:00", "eu-west-1"),)
    assert due_entry(single, at("2026-11-23T03:00:00")) == (single[0], at("2026-11-22T22:00:00"))
    assert due_entry((), at("2026-11-23T03:00:00")) is None


class Coordinator:
    def __init__(self):
        self.switched, self.aborted = [], []

    async def switch(self, scope, to, **kw):
        self.switched.append((scope, to, kw))

        class Outcome:
            committed, seconds = True, 0.1
            rule = Rule(scope, SINGLE_PRIMARY, to, 2)
        return Outcome()

    async def abort(self, scope):
        self.aborted.append(scope)


class Control:
    def __init__(self, *rules):
        self.list = list(rules)

    async def rules(self):
        return self.list, []


def scheduler(clock, *rules):
    coordinator = Coordinator()
    return Scheduler(CONFIG, store=None, control=Control(*rules), coordinator=coordinator, clock=clock, instance="i"), coordinator


async def test_a_due_entry_switches_a_rule_unchanged_since_its_time_once():
    clock = FakeClock(at("2026-11-23T09:30:00").timestamp())
    before = int(at("2026-11-23T07:00:00").timestamp() * 1000)
    ours, coordinator = scheduler(clock, Rule("view#items", SINGLE_PRIMARY, "ap-southeast-1", 1, schedule=DAY, updated_at=before))
    await ours.tick()
    assert coordinator.switched == [("view#items", "eu-west-1", {"force": True})]


async def test_a_rule_changed_after_the_entry_or_already_there_is_left_alone():
    clock = FakeClock(at("2026-11-23T09:30:00").timestamp())
    after = int(at("2026-11-23T08:30:00").timestamp() * 1000)
    ours, coordinator = scheduler(
        clock,
        Rule("view#a", SINGLE_PRIMARY, "ap-southeast-1", 1, schedule=DAY, updated_at=after),  # an operator moved it back
        Rule("view#b", SINGLE_PRIMARY, "eu-west-1", 1, schedule=DAY, updated_at=0),  # already where the entry says
        Rule("view#c", SINGLE_PRIMARY, "ap-southeast-1", 1, updated_at=0),  # no schedule
    )
    await ours.tick()
    assert coordinator.switched == []


async def test_a_switch_nobody_finishes_is_aborted():
    clock = FakeClock(at("2026-11-23T09:30:00").timestamp())
    started = clock.wall_ms() - 11_000  # more than twice max_duration ago
    stuck = Rule("view#items", SINGLE_PRIMARY, "us-east-1", 1, state=SWITCHING, next_primary="eu-west-1",
                 switch_id="s", switch_started_at=started)
    fresh = Rule("view#other", SINGLE_PRIMARY, "us-east-1", 1, state=SWITCHING, next_primary="eu-west-1",
                 switch_id="t", switch_started_at=clock.wall_ms() - 1_000)
    ours, coordinator = scheduler(clock, stuck, fresh)
    await ours.tick()
    assert coordinator.aborted == ["view#items"]


def leasing(clock: FakeClock, store: FakeTables, instance: str, **kw) -> Scheduler:
    return Scheduler(CONFIG, store=store, control=Control(), coordinator=Coordinator(), clock=clock, instance=instance, **kw)


async def test_the_lease_passes_to_another_instance_only_once_it_expired():
    clock, store = FakeClock(), FakeTables(CONFIG.routing.table)
    first, second = leasing(clock, store, "a"), leasing(clock, store, "b")
    assert await first.lease() and not await second.lease()
    clock.advance(CONFIG.switch.lease_seconds - 0.001)
    assert not await second.lease() and await first.lease()  # the holder renews: it lasts from now on
    clock.advance(CONFIG.switch.lease_seconds - 0.001)
    assert not await second.lease()
    clock.advance(0.002)  # the holder stopped renewing: expired
    assert await second.lease() and (second.holding, first.holding) == (True, True)
    assert not await first.lease() and not first.holding
    assert store.item(CONFIG.routing.table, "lease#scheduler")["holder"] == {"S": "b"}


async def test_an_instance_waits_for_the_lease_then_switches_once_per_due_entry():
    """``run()`` on the fake clock: the other holder stops renewing; ours takes over at expiry and switches."""
    clock, store = FakeClock(), FakeTables(CONFIG.routing.table)
    due = Rule("view#items", SINGLE_PRIMARY, "us-east-1", 1, schedule=(ScheduleEntry("00:00", "eu-west-1"),), updated_at=0)
    control = Control(due)
    switched_at: list[float] = []

    class Switching(Coordinator):
        async def switch(self, scope, to, **kw):
            switched_at.append(clock.now)
            control.list = [replace(control.list[0], primary=to, epoch=2, updated_at=clock.wall_ms())]
            return await super().switch(scope, to, **kw)

    advancing = AdvancingSleep(clock)

    async def sleep(delay: float) -> None:
        await advancing(delay)
        if len(advancing.delays) == 15:
            raise asyncio.CancelledError

    started = clock.now
    assert await leasing(clock, store, "other").lease()  # held elsewhere, never renewed
    ours = Scheduler(CONFIG, store=store, control=control, coordinator=Switching(), clock=clock, instance="ours", sleep=sleep)
    with pytest.raises(asyncio.CancelledError):
        await ours.run()
    assert advancing.delays == [CONFIG.switch.schedule_interval] * 15
    # The first turn after the other lease expired took it and switched; later turns found the rule moved.
    assert len(switched_at) == 1 and started + CONFIG.switch.lease_seconds < switched_at[0] <= started + CONFIG.switch.lease_seconds + 1
    assert ours.holding and control.list[0].primary == "eu-west-1"
