"""One gateway's lease keeper (gateway/lease/keeper.py): batched rounds, leases from a majority, and what a
deposed primary learns from the refusals."""

from __future__ import annotations

import asyncio

import pytest

from gateway.errors import PrimaryUnreachable
from gateway.lease.book import PromiseBook
from gateway.lease.keeper import LeaseKeeper
from gateway.lease.promises import Known
from gateway.peer.routes import LEASE_PATH
from gateway.routing.rules import SINGLE_PRIMARY, Rule
from gateway.routing.snapshot import RoutingTable
from tests.fakes import FakeClock, FakeTables

REGIONS = ["us-east-1", "eu-west-1", "ap-southeast-1"]
TABLE = "routing"


class Fleet:
    """The other regions' lease routes: each answers with its own book, or is cut off."""

    def __init__(self, clock: FakeClock, rules: dict[str, Rule]) -> None:
        self.books = {r: PromiseBook(FakeTables(TABLE), TABLE, r, clock, 2.0, 0.2) for r in REGIONS}
        self.cut: set[str] = set()
        self.calls: list[tuple[str, str, dict]] = []
        self.newer: dict[str, list[dict]] = {}
        self.rules = rules

    async def call(self, region: str, path: str, body: dict) -> dict:
        self.calls.append((region, path, body))
        if region in self.cut:
            raise PrimaryUnreachable(f"{region} is cut off")
        if "release" in body:  # a handover (give_up)
            for scope, epoch in body["release"].items():
                await self.books[region].release(body["region"], scope, epoch)
            return {"region": region, "released": list(body["release"])}
        granted, refused = await self.books[region].grant(body["region"], body["scopes"], lambda scope: None)
        return {"region": region, "granted": granted, "refused": refused, "newer": self.newer.get(region, [])}


def keeper(clock: FakeClock, rules: dict[str, Rule], fleet: Fleet, learned: list | None = None) -> LeaseKeeper:
    return LeaseKeeper("us-east-1", REGIONS, fleet.books["us-east-1"], fleet.call, lambda: rules, clock, 2.0, 0.2,
                       learn=(learned.extend if learned is not None else lambda rules: None))


def rule(scope: str, epoch: int = 3, primary: str = "us-east-1") -> Rule:
    return Rule(scope, SINGLE_PRIMARY, primary, epoch, version=epoch + 1)


async def test_a_round_asks_each_other_region_once_for_every_scope_and_a_majority_makes_the_lease():
    clock = FakeClock()
    rules = {s: rule(s) for s in ("view#a", "view#b", "view#c")}
    fleet = Fleet(clock, rules)
    fleet.cut = {"ap-southeast-1"}
    k = keeper(clock, rules, fleet)
    await k.round(k.primary_scopes())
    assert sorted(region for region, _, _ in fleet.calls) == ["ap-southeast-1", "eu-west-1"]  # its own: its book
    assert all(path == LEASE_PATH and body["scopes"] == {"view#a": 3, "view#b": 3, "view#c": 3}
               for _, path, body in fleet.calls)
    assert all(k.valid(s, 3) for s in rules) and not k.valid("view#a", 2)
    clock.advance(2.0 - 0.2)  # the lease, less the drift, from when the round was asked
    assert not k.valid("view#a", 3)


async def test_without_a_majority_there_is_no_lease():
    clock = FakeClock()
    rules = {"view#a": rule("view#a")}
    fleet = Fleet(clock, rules)
    fleet.cut = {"eu-west-1", "ap-southeast-1"}
    k = keeper(clock, rules, fleet)
    await k.round(k.primary_scopes())
    assert not k.valid("view#a", 3)


async def test_a_deposed_primary_learns_the_newer_rule_a_refusing_region_answers_with():
    clock = FakeClock()
    rules = {"view#a": rule("view#a")}
    fleet = Fleet(clock, rules)
    newer = rule("view#a", epoch=4, primary="eu-west-1")
    fleet.newer["eu-west-1"] = [newer.to_json()]
    learned: list[Rule] = []
    k = keeper(clock, rules, fleet, learned)
    await k.round(k.primary_scopes())
    assert learned == [newer]


async def test_a_write_waiting_for_a_lease_stops_waiting_once_the_rule_has_moved_on():
    clock = FakeClock()
    rules = {"view#a": rule("view#a")}
    fleet = Fleet(clock, rules)
    fleet.cut = {"eu-west-1", "ap-southeast-1"}
    k = keeper(clock, rules, fleet)
    waiting = asyncio.create_task(k.wait_valid("view#a", 3, timeout=30.0))
    await asyncio.sleep(0)
    rules["view#a"] = rule("view#a", epoch=4, primary="eu-west-1")  # learned: deposed
    await k.round(k.primary_scopes())  # the next round ends, and the wait looks again
    assert await asyncio.wait_for(waiting, 1.0) is False


async def test_giving_the_lease_up_ends_every_regions_promise_so_another_primary_need_not_outwait_it():
    clock = FakeClock()
    rules = {"view#a": rule("view#a")}
    fleet = Fleet(clock, rules)

    k = LeaseKeeper("us-east-1", REGIONS, fleet.books["us-east-1"], fleet.call, lambda: rules, clock, 2.0, 0.2)
    await k.round(k.primary_scopes())
    assert k.valid("view#a", 3)
    await k.give_up("view#a", 3)
    assert not k.valid("view#a", 3)
    for region in REGIONS:
        assert "view#a" not in await fleet.books[region].promises()
    granted, _ = await fleet.books["ap-southeast-1"].grant("eu-west-1", {"view#a": 4}, lambda scope: None)
    assert granted == ["view#a"]


def test_only_active_single_primary_scopes_of_its_own_region_are_kept():
    from gateway.routing.rules import ANY_REGION, SWITCHING

    rules = {
        "view#mine": rule("view#mine", epoch=3),
        "view#theirs": rule("view#theirs", epoch=3, primary="eu-west-1"),
        "view#moving": Rule("view#moving", SINGLE_PRIMARY, "us-east-1", 3, state=SWITCHING, next_primary="eu-west-1",
                            switch_id="s1"),
        "view#anywhere": Rule("view#anywhere", ANY_REGION, "us-east-1", 3),
    }
    clock = FakeClock()
    assert keeper(clock, rules, Fleet(clock, rules)).primary_scopes() == {"view#mine": 3}


async def test_a_wait_for_a_lease_held_already_returns_at_once_and_one_that_a_round_brings_returns_then():
    clock = FakeClock()
    rules = {"view#a": rule("view#a")}
    fleet = Fleet(clock, rules)
    k = keeper(clock, rules, fleet)
    waiting = asyncio.create_task(k.wait_valid("view#a", 3, timeout=0.5))
    await asyncio.sleep(0)
    assert not waiting.done()
    await k.round(k.primary_scopes())  # a majority confirms
    assert await asyncio.wait_for(waiting, 1.0) is True
    assert await k.wait_valid("view#a", 3, timeout=0.5) is True


async def test_a_wait_for_a_lease_ends_without_one_at_its_timeout_or_when_the_scope_is_gone_or_moved():
    clock = FakeClock()
    rules = {"view#a": rule("view#a")}
    fleet = Fleet(clock, rules)
    k = keeper(clock, rules, fleet)
    loop = asyncio.get_running_loop()
    started = loop.time()
    assert await asyncio.wait_for(k.wait_valid("view#a", 3, timeout=0.05), 1.0) is False  # no round came
    assert loop.time() - started < 0.5
    for moved in ({}, {"view#a": rule("view#a", epoch=4)}):  # deleted; this region re-elected at a later epoch
        waiting = asyncio.create_task(k.wait_valid("view#a", 3, timeout=30.0))
        await asyncio.sleep(0)
        rules.clear()
        rules.update(moved)
        await k.round(k.primary_scopes())
        assert await asyncio.wait_for(waiting, 1.0) is False
        rules["view#a"] = rule("view#a")


async def test_a_lease_confirmed_as_the_wait_times_out_is_taken():
    clock = FakeClock()
    rules = {"view#a": rule("view#a")}
    k = keeper(clock, rules, Fleet(clock, rules))
    waiting = asyncio.create_task(k.wait_valid("view#a", 3, timeout=0.05))
    await asyncio.sleep(0)
    round_id = k.holder.ask({"view#a": 3}, clock.monotonic())  # confirmations that set no round's end
    for region in ("us-east-1", "eu-west-1"):
        k.holder.confirmed(round_id, region, ["view#a"])
    assert await asyncio.wait_for(waiting, 1.0) is True


class Stop(Exception):
    """Ends the keeper's loop from its sleep."""


async def test_the_keeper_renews_every_third_of_a_lease_while_it_holds_and_twenty_times_a_lease_while_it_does_not():
    clock = FakeClock()
    rules = {"view#a": rule("view#a")}
    fleet = Fleet(clock, rules)
    delays: list[float] = []

    async def sleep(delay: float) -> None:
        delays.append(delay)
        if len(delays) == 1:
            fleet.cut = {"eu-west-1", "ap-southeast-1"}  # the next round gets no majority
            clock.advance(2.0)  # and the lease ran out
        elif len(delays) == 2:
            rules["view#a"] = rule("view#a", epoch=4, primary="eu-west-1")  # deposed: no scope to keep
        else:
            raise Stop

    k = LeaseKeeper("us-east-1", REGIONS, fleet.books["us-east-1"], fleet.call, lambda: rules, clock, 2.0, 0.2,
                    sleep=sleep)
    with pytest.raises(Stop):
        await k.run()
    assert delays == [pytest.approx(2.0 / 3), pytest.approx(2.0 / 20), pytest.approx(2.0 / 3)]
    assert k.holder.scopes() == []  # no longer the primary: the lease it held is dropped
    assert [region for region, _, _ in fleet.calls].count("eu-west-1") == 2  # no round once it keeps no scope


async def settle() -> None:
    """Let every task that can run, run (a round against the fakes never waits on anything else)."""
    for _ in range(20):
        await asyncio.sleep(0)


async def test_a_rule_that_makes_the_region_a_primary_ends_the_pause_and_a_round_takes_the_lease_at_once():
    clock = FakeClock()
    rules: dict[str, Rule] = {"view#a": rule("view#a", primary="eu-west-1")}
    fleet = Fleet(clock, rules)
    delays: list[float] = []

    async def sleep(delay: float) -> None:
        delays.append(delay)
        await asyncio.Event().wait()  # a pause that only a wake ends

    k = LeaseKeeper("us-east-1", REGIONS, fleet.books["us-east-1"], fleet.call, lambda: rules, clock, 2.0, 0.2,
                    sleep=sleep)
    running = asyncio.create_task(k.run())
    try:
        await settle()
        assert delays == [pytest.approx(2.0 / 3)] and fleet.calls == []  # primary of nothing: a long pause
        before = RoutingTable.build(rules.values(), 0.0)
        k.rules_changed(before, RoutingTable.build([rule("view#a", epoch=4, primary="ap-southeast-1")], 0.0))
        k.rules_changed(before, before)
        await settle()
        assert len(delays) == 1  # another region's primacy, or nothing new: the pause goes on

        rules["view#a"] = rule("view#a", epoch=4)  # a switch to this region committed
        k.rules_changed(before, RoutingTable.build(rules.values(), 0.0))
        await settle()
        assert k.valid("view#a", 4)  # taken at once, not after a third of a lease
        assert delays == [pytest.approx(2.0 / 3)] * 2

        now = RoutingTable.build(rules.values(), 0.0)
        k.rules_changed(now, now)
        await settle()
        assert len(delays) == 2  # already its primary at that epoch: the renewal keeps its cadence

        rules["view#a"] = rule("view#a", epoch=5)  # an aborted switch: still the primary, at a new epoch
        k.rules_changed(now, RoutingTable.build(rules.values(), 0.0))
        await settle()
        assert k.valid("view#a", 5) and len(delays) == 3
    finally:
        running.cancel()
        with pytest.raises(asyncio.CancelledError):
            await running


async def test_a_region_that_does_not_answer_holds_a_round_up_a_third_of_a_lease_at_most():
    clock = FakeClock()
    rules = {"view#a": rule("view#a")}
    fleet = Fleet(clock, rules)

    async def hanging(region: str, path: str, body: dict) -> dict:
        if region == "ap-southeast-1":
            await asyncio.sleep(30)
        return await fleet.call(region, path, body)

    k = LeaseKeeper("us-east-1", REGIONS, fleet.books["us-east-1"], hanging, lambda: rules, clock, 0.3, 0.02)
    loop = asyncio.get_running_loop()
    started = loop.time()
    await asyncio.wait_for(k.round(k.primary_scopes()), 5.0)
    # A round waits at most a third of the 0.3 s lease (0.1 s) for a silent region, not three leases (0.9 s).
    assert loop.time() - started < 0.6 and k.valid("view#a", 3)  # its own region and eu-west-1 confirmed
    started = loop.time()
    await asyncio.wait_for(k.give_up("view#a", 3), 5.0)
    assert loop.time() - started < 0.6 and not k.valid("view#a", 3)


def test_the_rules_a_behind_asker_is_told_and_what_the_region_knows_come_from_the_snapshot():
    clock = FakeClock()
    rules = {"view#a": rule("view#a", epoch=4, primary="eu-west-1"), "view#b": rule("view#b", epoch=3)}
    k = keeper(clock, rules, Fleet(clock, rules))
    assert k.newer({"view#a": 3, "view#b": 3, "view#c": 1}) == [rules["view#a"]]
    assert k.newer({"view#a": 4}) == []
    assert k.known("view#a") == Known(4, "eu-west-1") and k.known("view#c") is None
