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
    assert store.item(CONFIG.routing.table, "lease#scheduler#" + CONFIG.region)["holder"] == {"S": "b"}


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


# -- automatic failover -------------------------------------------------------------------------------

REGIONS3 = ("us-east-1", "eu-west-1", "ap-southeast-1")
FLEET = from_dict({
    "gateway": {"region": "eu-west-1"}, "switch": {"min_interval": 60.0},
    "routing": {"lease": 2.0, "max_drift": 0.2},
    "regions": {r: {"downstream": f"127.0.0.1:{8700 + 10 * i}", "peer": f"127.0.0.1:{8701 + 10 * i}"}
                for i, r in enumerate(REGIONS3)},
    "views": {"items": {"table": "features_items"}},
})


class Failing:
    """A coordinator that records failovers; ``live`` regions have gateways with fresh heartbeats."""

    def __init__(self, live=REGIONS3):
        self.failed_over, self.live_regions = [], live

    async def failover(self, scope, to):
        self.failed_over.append((scope, to))

        class Outcome:
            rule = Rule(scope, SINGLE_PRIMARY, to, 8)
        return Outcome(), 0.1

    async def live(self):
        class Member:
            def __init__(self, region):
                self.region = region
        return [Member(r) for r in self.live_regions]


class Unreachable(FakeTables):
    async def get_item(self, *a, **kw):
        from gateway.errors import StoreUnavailable
        raise StoreUnavailable("cut off")


async def fleet_scheduler(clock, rule, *, cut=("us-east-1",), live=REGIONS3):
    """eu-west-1's scheduler; each region's book in its own replica; the regions in ``cut`` cannot be read."""
    from gateway.lease.book import PromiseBook
    tables = {r: (Unreachable if r in cut else FakeTables)(FLEET.routing.table) for r in REGIONS3}
    books = {r: PromiseBook(tables[r], FLEET.routing.table, r, clock, 2.0, 0.2) for r in REGIONS3}
    for region in REGIONS3:
        if region not in cut:  # every region promised the primary its lease, at epoch 7
            await books[region].grant("us-east-1", {rule.scope: 7}, lambda scope: None)
    coordinator = Failing(live)
    lease_store = FakeTables(FLEET.routing.table)
    return Scheduler(FLEET, lease_store, Control(rule), coordinator, clock, "i", books=books), coordinator, books


def auto(clock, **kw):
    return Rule("view#items", SINGLE_PRIMARY, "us-east-1", 7, version=3, failover_order=("eu-west-1", "ap-southeast-1"),
                failover_after=5.0, updated_at=clock.wall_ms() - 3_600_000, **kw)


async def test_a_primary_silent_to_a_majority_for_failover_after_is_failed_over_once_to_the_first_of_the_order():
    clock = FakeClock()
    rule = auto(clock)
    sched, coordinator, _ = await fleet_scheduler(clock, rule)
    clock.advance(2.0 + 4.9)  # the promises ended (a lease after they were given) 4.9 s ago: not yet failover_after
    await sched.tick()
    assert coordinator.failed_over == []
    clock.advance(0.1)
    await sched.tick()
    await sched.tick()  # once per epoch, whatever the next ticks see
    assert coordinator.failed_over == [("view#items", "eu-west-1")] and sched.failovers == 1


async def test_a_primary_that_still_renews_with_one_other_region_is_not_failed_over():
    clock = FakeClock()
    rule = auto(clock)
    sched, coordinator, books = await fleet_scheduler(clock, rule)
    clock.advance(7.5)
    await books["ap-southeast-1"].grant("us-east-1", {rule.scope: 7}, lambda scope: None)  # ap still hears it
    await sched.tick()
    assert coordinator.failed_over == []


async def test_the_order_skips_a_region_without_live_gateways_and_the_anti_flap_interval_holds_it_back():
    clock = FakeClock()
    sched, coordinator, _ = await fleet_scheduler(clock, auto(clock), live=("ap-southeast-1",))
    clock.advance(7.5)
    await sched.tick()
    assert coordinator.failed_over == [("view#items", "ap-southeast-1")]
    clock = FakeClock()
    recent = replace(auto(clock), updated_at=clock.wall_ms() - 30_000)  # changed 30 s ago; min_interval 60 s
    sched, coordinator, _ = await fleet_scheduler(clock, recent)
    clock.advance(7.5)
    await sched.tick()
    assert coordinator.failed_over == []
    clock.advance(30.0)
    await sched.tick()
    assert coordinator.failed_over == [("view#items", "eu-west-1")]


async def test_a_region_that_never_promised_counts_as_silent_only_from_when_the_scheduler_first_saw_it():
    clock = FakeClock()
    rule = auto(clock)
    sched, coordinator, _ = await fleet_scheduler(clock, rule, cut=("us-east-1", "eu-west-1", "ap-southeast-1"))
    for region, book in sched._books.items():  # readable, but nobody promised anything yet (a new scope)
        book._store = FakeTables(FLEET.routing.table)
    await sched.tick()
    clock.advance(4.9)
    await sched.tick()
    assert coordinator.failed_over == []  # the rule is an hour old, but the silence is 4.9 s
    clock.advance(0.1)
    await sched.tick()
    assert coordinator.failed_over == [("view#items", "eu-west-1")]
