"""Changes decided by a majority of the regions (gateway/consensus/proposer.py).

The fleet here is three regions' acceptors over fake replicas; a region is cut off by making its store fail or
hang, and answers are lost after the acceptor acted (the write landed, the reply did not), as a network loses
them. The randomized test runs concurrent proposers over such a fleet and checks what a user of the control
plane relies on: changes are decided one after the other, each from the one before, none twice, none lost.
"""

from __future__ import annotations

import asyncio
import dataclasses
import random

import pytest

from gateway.consensus.acceptor import Acceptor, Answer
from gateway.consensus.ballots import Deleted, Value
from gateway.consensus.proposer import Decision, NotDecided, Proposer
from gateway.errors import StoreUnavailable
from gateway.routing.rules import Rule
from tests.fakes import FakeClock, FakeTables

TABLE = "routing"
REGIONS = ("us-east-1", "eu-west-1", "ap-southeast-1")
RULE = Rule(scope="default", mode="single_primary", primary="us-east-1", epoch=3, version=7, updated_by="seed")


class Region(Acceptor):
    """A region's acceptor that can be cut off (every call fails), hang, or lose its answers after acting."""

    def __init__(self, tables: FakeTables, region: str, rng: random.Random | None = None, loss: float = 0.0) -> None:
        super().__init__(tables, TABLE, region)
        self.cut = False
        self.hang = False
        self._rng = rng
        self._loss = loss

    async def _through(self, work) -> Answer:
        if self.hang:
            await asyncio.Event().wait()
        if self.cut:
            raise StoreUnavailable(f"cannot reach {self.region}")
        for _ in range(self._rng.randrange(4) if self._rng else 0):
            await asyncio.sleep(0)  # interleave with the other proposers
        answer = await work()
        if self._rng is not None and self._rng.random() < self._loss:
            raise StoreUnavailable(f"{self.region}'s answer was lost")
        return answer

    async def prepare(self, scope: str, b: str) -> Answer:
        return await self._through(lambda: Acceptor.prepare(self, scope, b))

    async def accept(self, scope: str, b: str, value: Value) -> Answer:
        return await self._through(lambda: Acceptor.accept(self, scope, b, value))


def fleet(tables: FakeTables | None = None, **kw) -> dict[str, Region]:
    tables = tables or FakeTables(TABLE)
    return {r: Region(tables, r, **kw) for r in REGIONS}


def proposer(regions: dict[str, Region], name: str = "p1", clock: FakeClock | None = None, **kw) -> Proposer:
    async def no_sleep(_: float) -> None:
        await asyncio.sleep(0)

    return Proposer(regions, clock or FakeClock(), name, timeout=kw.pop("timeout", 0.2), sleep=no_sleep, **kw)


def bump(primary: str):
    def change(current: Value | None) -> Value:
        assert isinstance(current, Rule)
        return dataclasses.replace(current, primary=primary, epoch=current.epoch + 1, version=current.version + 1)
    return change


async def test_a_change_is_decided_by_every_region_that_answers_and_built_on_the_replicas_rule():
    tables = FakeTables(TABLE)
    tables.put(TABLE, RULE.to_item(ts_us=1, region="us-east-1"))
    regions = fleet(tables)
    decision = await proposer(regions).change("default", bump("eu-west-1"))
    assert decision.value == dataclasses.replace(RULE, primary="eu-west-1", epoch=4, version=8)
    assert decision.accepted == REGIONS and not decision.unreachable
    for region in regions.values():
        assert (await region.slot("default")).value == decision.value


async def test_with_the_old_control_region_cut_off_a_majority_decides_and_the_message_names_who_did_not_answer():
    tables = FakeTables(TABLE)
    tables.put(TABLE, RULE.to_item(ts_us=1, region="us-east-1"))
    regions = fleet(tables)
    regions["us-east-1"].hang = True
    decision = await proposer(regions).change("default", bump("eu-west-1"))
    assert decision.accepted == ("eu-west-1", "ap-southeast-1")
    # The silent region gets a grace of 0.1 s once the majority answered, not the whole timeout (0.2 s here).
    assert decision.summary(3) == ("accepted by eu-west-1, ap-southeast-1 (2 of 3 regions); "
                                   "no answer from us-east-1 (no answer in 0.1s)")
    assert (await regions["us-east-1"].slot("default")).value is None


async def test_without_a_majority_nothing_is_decided_and_the_refusal_says_what_each_region_answered():
    tables = FakeTables(TABLE)
    tables.put(TABLE, RULE.to_item(ts_us=1, region="us-east-1"))
    regions = fleet(tables)
    regions["us-east-1"].cut = True
    regions["ap-southeast-1"].hang = True
    with pytest.raises(NotDecided) as refused:
        await proposer(regions).change("default", bump("eu-west-1"))
    assert str(refused.value) == (
        "no majority of the regions answered for default (1 of 3, 2 needed; promised: eu-west-1; no answer from "
        "us-east-1 (cannot reach us-east-1), ap-southeast-1 (no answer in 0.2s)): nothing was decided; run it again from "
        "a region that reaches a majority of the others, or once they are reachable")
    assert [(await r.slot("default")).value for r in regions.values()] == [None, None, None]


async def test_with_no_region_answering_the_refusal_says_none_promised():
    regions = fleet()
    for region in regions.values():
        region.cut = True
    with pytest.raises(NotDecided, match=r"^no majority of the regions answered for default \(0 of 3, 2 needed; "
                                         r"promised: none; no answer from us-east-1 \(cannot reach us-east-1\), "):
        await proposer(regions).change("default", bump("eu-west-1"))


async def test_a_change_that_refuses_its_current_value_accepts_nothing():
    regions = fleet()

    def refuse(current: Value | None) -> Value:
        raise LookupError("not the version the edit was planned from")

    with pytest.raises(LookupError):
        await proposer(regions).change("default", refuse)
    assert [(await r.slot("default")).value for r in regions.values()] == [None, None, None]


async def test_what_a_minority_accepted_is_found_by_the_next_proposer_and_built_on_not_lost():
    tables = FakeTables(TABLE)
    tables.put(TABLE, RULE.to_item(ts_us=1, region="us-east-1"))
    regions = fleet(tables)
    first = proposer(regions, "p1")
    real_accept = Region.accept
    only = "us-east-1"

    async def accept_at_one(self, scope, b, value):  # the proposer dies after one region accepted
        if self.region != only:
            raise StoreUnavailable("the proposer stopped")
        return await real_accept(self, scope, b, value)

    Region.accept = accept_at_one
    try:
        with pytest.raises(NotDecided) as refused:
            await first.change("default", bump("eu-west-1"))
        assert str(refused.value).endswith(
            "or once they are reachable; what us-east-1 accepted may still take effect if a later change finds it, "
            "so read the rule before editing again")
    finally:
        Region.accept = real_accept
    seen: list[Value | None] = []

    def record(current: Value | None) -> Value:
        seen.append(current)
        return bump("ap-southeast-1")(current)

    decision = await proposer(regions, "p2").change("default", record)
    assert seen == [dataclasses.replace(RULE, primary="eu-west-1", epoch=4, version=8)]
    assert (decision.value.primary, decision.value.version) == ("ap-southeast-1", 9)


async def test_a_delete_is_a_value_and_the_next_change_sees_it():
    regions = fleet()
    decided = await proposer(regions).change("default", lambda current: RULE)
    assert decided.value == RULE
    gone = await proposer(regions, "p2").change("default", lambda current: Deleted("default", current.version))
    seen = []
    await proposer(regions, "p3").change("default", lambda current: seen.append(current) or RULE)
    assert gone.value == Deleted("default", 7) and seen == [Deleted("default", 7)]


@pytest.mark.parametrize("seed", range(40))
async def test_concurrent_proposers_over_a_lossy_fleet_decide_one_chain_of_changes(seed):
    """Every decided change was made from the change decided before it: no version decided twice, none lost."""
    rng = random.Random(seed)
    tables = FakeTables(TABLE)
    tables.put(TABLE, dataclasses.replace(RULE, version=0).to_item(ts_us=1, region="us-east-1"))
    regions = fleet(tables, rng=rng, loss=0.2)
    clock = FakeClock()
    decided: list[Decision] = []

    async def operator(name: str) -> None:
        p = proposer(regions, name, clock, attempts=6)
        for _ in range(5):
            def increment(current: Value | None) -> Value:
                assert isinstance(current, Rule)
                return dataclasses.replace(current, version=current.version + 1, updated_by=name)
            try:
                decided.append(await p.change("default", increment))
            except NotDecided:
                pass  # a round that did not reach a majority; what it did get accepted may still be built on
            if rng.random() < 0.3:  # a minority is cut off: one region, or none
                cut = rng.choice((*REGIONS, None))
                for region in regions.values():
                    region.cut = region.region == cut

    await asyncio.gather(*(operator(f"op{i}") for i in range(4)))
    versions = [d.value.version for d in decided]
    assert len(versions) == len(set(versions)), f"seed {seed}: a version was decided twice: {sorted(versions)}"
    for region in regions.values():
        region.cut, region._loss = False, 0.0  # the partitions heal: read what holds
    final = await proposer(regions, "reader", clock).change("default", lambda current: current)
    # Each change adds one to the version it was made from: two changes decided from one value would share a
    # version (a lost update), and a decided change that a later one did not build on would leave the final
    # value below it.
    assert decided and final.value.version >= max(versions), f"seed {seed}: a decided change was lost"
