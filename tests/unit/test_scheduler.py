"""Follow-the-sun decisions of the lease holder (gateway/scheduler.py)."""

from __future__ import annotations

from datetime import datetime, timezone

from gateway.config import from_dict
from gateway.routing import SINGLE_PRIMARY, SWITCHING, Rule, ScheduleEntry
from gateway.scheduler import Scheduler, due_entry
from tests.fakes import FakeClock

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
    s, c = scheduler(clock, Rule("view#items", SINGLE_PRIMARY, "ap-southeast-1", 1, schedule=DAY, updated_at=before))
    await s.tick()
    assert c.switched == [("view#items", "eu-west-1", {"force": True})]


async def test_a_rule_changed_after_the_entry_or_already_there_is_left_alone():
    clock = FakeClock(at("2026-11-23T09:30:00").timestamp())
    after = int(at("2026-11-23T08:30:00").timestamp() * 1000)
    s, c = scheduler(
        clock,
        Rule("view#a", SINGLE_PRIMARY, "ap-southeast-1", 1, schedule=DAY, updated_at=after),  # an operator moved it back
        Rule("view#b", SINGLE_PRIMARY, "eu-west-1", 1, schedule=DAY, updated_at=0),  # already where the entry says
        Rule("view#c", SINGLE_PRIMARY, "ap-southeast-1", 1, updated_at=0),  # no schedule
    )
    await s.tick()
    assert c.switched == []


async def test_a_switch_nobody_finishes_is_aborted():
    clock = FakeClock(at("2026-11-23T09:30:00").timestamp())
    started = clock.wall_ms() - 11_000  # more than twice max_duration ago
    stuck = Rule("view#items", SINGLE_PRIMARY, "us-east-1", 1, state=SWITCHING, next_primary="eu-west-1",
                 switch_id="s", switch_started_at=started)
    fresh = Rule("view#other", SINGLE_PRIMARY, "us-east-1", 1, state=SWITCHING, next_primary="eu-west-1",
                 switch_id="t", switch_started_at=clock.wall_ms() - 1_000)
    s, c = scheduler(clock, stuck, fresh)
    await s.tick()
    assert c.aborted == ["view#items"]
