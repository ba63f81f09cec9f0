"""A gateway's side of a switch (gateway/switch/participant.py): buffering by the rule, the fence, the versions."""

from __future__ import annotations

import asyncio

import pytest

from gateway.config import BufferConfig, from_dict
from gateway.errors import NotPrimary
from gateway.obs.metrics import Metrics
from gateway.routing.rules import DEFAULT_SCOPE, SINGLE_PRIMARY, SWITCHING, Rule
from gateway.switch.fence import AckLog
from gateway.switch.participant import SwitchParticipant
from gateway.switch.write_buffer import ScopeState, WriteBuffer
from tests.fakes import FakeClock, StaticRouting
from tests.unit.test_dispatcher import ConditionalStore

CONFIG = from_dict({"gateway": {"region": "us-east-1"}, "views": {"items": {"table": "features_items"}}})
VIEW = CONFIG.views["items"]
ACTIVE_HERE = Rule(DEFAULT_SCOPE, SINGLE_PRIMARY, "us-east-1", 3, version=5)
SWITCHING_AWAY = Rule(DEFAULT_SCOPE, SINGLE_PRIMARY, "us-east-1", 3, state=SWITCHING, next_primary="eu-west-1",
                      switch_id="s1", version=6)


def participant(
    *rules: Rule, max_keys: int = 100
) -> tuple[SwitchParticipant, StaticRouting, AckLog, WriteBuffer, ConditionalStore]:
    clock = FakeClock()
    routing = StaticRouting(*(rules or (ACTIVE_HERE,)))
    acks = AckLog(clock, window=300.0, max_keys=max_keys)
    buffer = WriteBuffer(BufferConfig(), clock)
    store = ConditionalStore()
    return SwitchParticipant("us-east-1", routing, store, acks, buffer), routing, acks, buffer, store


def test_buffering_starts_when_the_rule_switches_and_drains_when_it_leaves_switching() -> None:
    _, routing, _, buffer, _ = participant()
    routing.set(SWITCHING_AWAY)
    assert buffer.stats(DEFAULT_SCOPE).state is ScopeState.BUFFERING
    routing.set(Rule(DEFAULT_SCOPE, SINGLE_PRIMARY, "eu-west-1", 4, version=7))
    assert buffer.stats(DEFAULT_SCOPE).state is ScopeState.IDLE  # nothing was held: drained at once
    routing.set(SWITCHING_AWAY)
    routing.set()  # the scope was deleted mid-switch: nothing may wait for it forever
    assert buffer.stats(DEFAULT_SCOPE).state is ScopeState.IDLE


def test_every_scope_of_the_rules_has_its_buffer_series_at_zero_before_it_switches() -> None:
    clock, metrics = FakeClock(), Metrics()
    routing = StaticRouting(ACTIVE_HERE)  # loaded before the participant exists, as in the server
    buffer = WriteBuffer(BufferConfig(), clock, metrics)
    SwitchParticipant("us-east-1", routing, ConditionalStore(), AckLog(clock, window=300.0, max_keys=100), buffer)
    routing.set(ACTIVE_HERE, Rule("view#items", SINGLE_PRIMARY, "us-east-1", 0, version=1))  # a scope added later
    for scope in (DEFAULT_SCOPE, "view#items"):
        assert metrics.registry.get_sample_value("gateway_buffer_entries", {"scope": scope}) == 0.0
        for reason in ("drained", "expired", "evicted", "refused"):
            assert metrics.registry.get_sample_value(
                "gateway_buffer_released_total", {"scope": scope, "reason": reason}) == 0.0, (scope, reason)


async def test_the_old_primary_lists_what_it_acknowledged_once_nothing_is_in_flight() -> None:
    part, routing, acks, _, _ = participant()
    acks.begin(DEFAULT_SCOPE)
    acks.end(DEFAULT_SCOPE, "items", "k1", "3.100.us-east-1")
    acks.begin(DEFAULT_SCOPE)  # one write still in flight when the fence arrives
    fence = asyncio.create_task(part.accept_fence(SWITCHING_AWAY, timeout=5.0))
    await asyncio.sleep(0)
    assert not fence.done() and routing.table.rules[DEFAULT_SCOPE] == SWITCHING_AWAY  # learned: new writes buffer
    acks.end(DEFAULT_SCOPE, "items", "k2", "3.101.us-east-1")
    acknowledged, complete = await fence
    assert sorted(acknowledged) == [("items", "k1", "3.100.us-east-1"), ("items", "k2", "3.101.us-east-1")]
    assert complete


async def test_a_fence_with_a_write_still_in_flight_at_its_timeout_is_not_complete() -> None:
    part, _, acks, _, _ = participant()
    acks.begin(DEFAULT_SCOPE)
    acknowledged, complete = await part.accept_fence(SWITCHING_AWAY, timeout=0.01)
    assert acknowledged == [] and not complete


async def test_a_fence_whose_log_forgot_keys_for_space_is_not_complete() -> None:
    part, _, acks, _, _ = participant(max_keys=1)
    for key in ("k1", "k2"):
        acks.begin(DEFAULT_SCOPE)
        acks.end(DEFAULT_SCOPE, "items", key, f"3.1{key[1]}.us-east-1")
    acknowledged, complete = await part.accept_fence(SWITCHING_AWAY, timeout=1.0)
    assert acknowledged == [("items", "k2", "3.12.us-east-1")] and not complete  # nothing in flight, yet unproven


@pytest.mark.parametrize(
    "current, fenced",
    [
        # Not this region's switch to fence: another region is the old primary.
        (ACTIVE_HERE, Rule(DEFAULT_SCOPE, SINGLE_PRIMARY, "eu-west-1", 3, state=SWITCHING, next_primary="us-east-1",
                           switch_id="s1", version=6)),
        # A rule that is not switching proves nothing.
        (ACTIVE_HERE, ACTIVE_HERE),
        # This gateway already routes by a later rule (the switch was aborted or committed since).
        (Rule(DEFAULT_SCOPE, SINGLE_PRIMARY, "us-east-1", 4, version=7), SWITCHING_AWAY),
    ],
)
async def test_a_fence_of_another_switch_is_refused_with_this_gateways_rule(current: Rule, fenced: Rule) -> None:
    part, _, acks, _, _ = participant(current)
    acks.begin(DEFAULT_SCOPE)
    acks.end(DEFAULT_SCOPE, "items", "k1", "3.100.us-east-1")
    with pytest.raises(NotPrimary):
        await part.accept_fence(fenced, timeout=1.0)


async def test_versions_are_read_consistently_from_this_regions_replica() -> None:
    part, _, _, _, store = participant()
    store.items["k1"] = {"pk": {"S": "k1"}, "_ts": {"N": "100"}, "_epoch": {"N": "3"}, "_region": {"S": "us-east-1"}}
    assert await part.versions(VIEW, ["k1", "missing"]) == ["3.100.us-east-1", None]
    assert store.reads == [True]
