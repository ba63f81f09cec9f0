"""One gateway's lease keeper (gateway/lease/keeper.py): batched rounds, leases from a majority, and what a
deposed primary learns from the refusals."""

from __future__ import annotations

import asyncio

from gateway.errors import PrimaryUnreachable
from gateway.lease.book import PromiseBook
from gateway.lease.keeper import LeaseKeeper
from gateway.peer.routes import LEASE_PATH
from gateway.routing.rules import SINGLE_PRIMARY, Rule
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

    async def call(region: str, path: str, body: dict) -> dict:
        if "release" in body:
            for scope, epoch in body["release"].items():
                await fleet.books[region].release(body["region"], scope, epoch)
            return {"region": region, "released": list(body["release"])}
        return await fleet.call(region, path, body)

    k = LeaseKeeper("us-east-1", REGIONS, fleet.books["us-east-1"], call, lambda: rules, clock, 2.0, 0.2)
    await k.round(k.primary_scopes())
    assert k.valid("view#a", 3)
    await k.give_up("view#a", 3)
    assert not k.valid("view#a", 3)
    for region in REGIONS:
        assert "view#a" not in await fleet.books[region].promises()
    granted, _ = await fleet.books["ap-southeast-1"].grant("eu-west-1", {"view#a": 4}, lambda scope: None)
    assert granted == ["view#a"]
