"""The switch coordinator's decisions with a fake control plane and fake peers (gateway/switch/coordinator.py)."""

from __future__ import annotations

from dataclasses import dataclass, field

import pytest

from gateway.config import from_dict
from gateway.errors import PrimaryUnreachable
from gateway.peer.routes import BUFFER_PATH, FENCE_PATH, RULES_PATH, VERSIONS_PATH
from gateway.routing.rules import ACTIVE, ANY_REGION, SINGLE_PRIMARY, SWITCHING, Rule, rule_from_json
from gateway.switch.coordinator import SwitchCoordinator, SwitchError
from tests.fakes import AdvancingSleep, FakeClock

CONFIG = from_dict(
    {
        "gateway": {"region": "us-east-1"},
        "switch": {"min_interval": 60.0, "max_replication_lag": 2.0, "max_duration": 1.0},
        "regions": {
            r: {"downstream": f"127.0.0.1:{p}", "peer": f"127.0.0.1:{p + 1}"}
            for r, p in (("us-east-1", 8700), ("eu-west-1", 8710), ("ap-southeast-1", 8720))
        },
        "views": {"items": {"table": "features_items"}},
    }
)


@dataclass
class Member:
    region: str
    instance: str
    peer: str
    heartbeat_age: float = 0.1
    epochs: dict = field(default_factory=dict)
    replication_lag: dict = field(default_factory=dict)
    stale: bool = False


class Control:
    def __init__(self, rule, members):
        self.stored = rule
        self.members_list = members
        self.writes = []

    async def rule(self, scope):
        return self.stored if self.stored and self.stored.scope == scope else None

    async def put(self, rule, *, expect):
        assert self.stored.version == expect, "conditional on the version read"
        self.writes.append(rule)
        self.stored = rule

    async def members(self, *, now_us, expiry):
        return self.members_list


class Peers:
    """Peer answers: every push is taken; the old primary acknowledged ``acked``; the new one holds ``held``."""

    def __init__(self, acked=(), held=None, fence_fails=False, buffered=()):
        self.buffered = list(buffered)  # held + outstanding answered by successive buffer polls
        self.acked = list(acked)
        self.held = held if held is not None else {k: v for _, k, v in acked}
        self.fence_fails = fence_fails
        self.pushed = []

    async def call_address(self, address, path, body, **kw):
        if path == RULES_PATH:
            rule = rule_from_json(body["rules"][0])
            self.pushed.append((address, rule))
            return {"rules": {rule.scope: {"epoch": rule.epoch, "state": rule.state}}}
        if path == FENCE_PATH:
            if self.fence_fails:
                raise PrimaryUnreachable("down")
            return {"instance": f"i-{address}", "complete": True, "acknowledged": [list(a) for a in self.acked]}
        if path == BUFFER_PATH:
            return {"held": self.buffered.pop(0) if self.buffered else 0, "outstanding": 0}
        raise AssertionError(path)

    async def call(self, region, path, body):
        assert path == VERSIONS_PATH
        return {"versions": [self.held.get(k) for k in body["keys"]]}


def fleet(lag=0.1):
    return [
        Member("us-east-1", "i-127.0.0.1:8701", "127.0.0.1:8701"),
        Member("eu-west-1", "i-127.0.0.1:8711", "127.0.0.1:8711", replication_lag={"us-east-1": lag}),
        Member("ap-southeast-1", "i-127.0.0.1:8721", "127.0.0.1:8721", replication_lag={"us-east-1": lag}),
    ]


def rule(**kw):
    base = dict(scope="view#items", mode=SINGLE_PRIMARY, primary="us-east-1", epoch=4, version=7, updated_at=0)
    base.update(kw)
    return Rule(**base)


def coordinator(control, peers, clock=None, steps=None):
    clock = clock or FakeClock()
    return SwitchCoordinator(
        CONFIG, control, peers, clock, by="ops",
        report=lambda step, seconds, detail: steps.append(step) if steps is not None else None, sleep=AdvancingSleep(clock),
    )


async def test_a_switch_writes_switching_then_commits_at_epoch_plus_one():
    control, steps = Control(rule(), fleet()), []
    peers = Peers(acked=[("items", "k1", "4.100.us-east-1")])
    outcome = await coordinator(control, peers, steps=steps).switch("view#items", "eu-west-1")
    switching, committed = control.writes
    assert (switching.state, switching.next_primary, switching.epoch, switching.version) == (SWITCHING, "eu-west-1", 4, 8)
    assert switching.switch_id
    assert (committed.state, committed.primary, committed.epoch, committed.version) == (ACTIVE, "eu-west-1", 5, 9)
    assert committed.switch_id is None and committed.next_primary is None
    assert outcome.committed and outcome.rule == committed
    assert steps == ["preflight", "switching", "push", "fence", "verify", "commit", "push", "drain"]
    # Every live gateway was told both rules.
    assert sorted({(a, r.state) for a, r in peers.pushed}) == sorted(
        {(m.peer, s) for m in fleet() for s in (SWITCHING, ACTIVE)}
    )


async def test_a_fence_that_cannot_be_verified_aborts_with_the_old_primary_at_epoch_plus_one():
    control = Control(rule(), fleet())
    peers = Peers(acked=[("items", "k1", "4.100.us-east-1")], held={"k1": "4.99.us-east-1"})  # older than acked
    outcome = await coordinator(control, peers).switch("view#items", "eu-west-1", max_duration=0.2)
    aborted = control.writes[-1]
    assert not outcome.committed and "not yet in eu-west-1" in outcome.detail
    assert (aborted.primary, aborted.epoch, aborted.state, aborted.version) == ("us-east-1", 5, ACTIVE, 9)


async def test_an_unreachable_old_primary_aborts_the_switch():
    control = Control(rule(), fleet())
    outcome = await coordinator(control, Peers(fence_fails=True)).switch("view#items", "eu-west-1", max_duration=0.2)
    assert not outcome.committed and "fence timed out" in outcome.detail and control.stored.primary == "us-east-1"


async def test_a_dry_run_writes_nothing():
    control = Control(rule(), fleet())
    outcome = await coordinator(control, Peers()).switch("view#items", "eu-west-1", dry_run=True)
    assert control.writes == [] and not outcome.committed and "dry run" in outcome.detail


@pytest.mark.parametrize(
    "stored, members, to, message",
    [
        (rule(mode=ANY_REGION, primary=None), fleet(), "eu-west-1", "no primary to switch"),
        (rule(state=SWITCHING, next_primary="ap-southeast-1", switch_id="s1"), fleet(), "eu-west-1", "in progress"),
        (rule(), fleet(), "us-east-1", "already the primary"),
        (rule(), fleet(), "sa-east-1", "not a known region"),
        (rule(), [m for m in fleet() if m.region != "eu-west-1"], "eu-west-1", "no live gateway"),
        (rule(), [m for m in fleet() if m.region != "us-east-1"], "eu-west-1", "use `gatewayctl failover`"),
        (rule(), fleet(lag=3.0), "eu-west-1", "lags 3.00s"),
    ],
)
async def test_preflight_refusals_name_the_reason_and_write_nothing(stored, members, to, message):
    control = Control(stored, members)
    with pytest.raises(SwitchError, match=message):
        await coordinator(control, Peers()).switch("view#items", to)
    assert control.writes == []


async def test_switches_of_a_scope_are_spaced_unless_forced():
    clock = FakeClock()
    control = Control(rule(updated_at=clock.wall_ms() - 10_000), fleet())
    with pytest.raises(SwitchError, match="last changed 10s ago"):
        await coordinator(control, Peers(), clock).switch("view#items", "eu-west-1")
    outcome = await coordinator(control, Peers(), clock).switch("view#items", "eu-west-1", force=True)
    assert outcome.committed


async def test_abort_ends_a_switch_in_progress():
    control = Control(rule(state=SWITCHING, next_primary="eu-west-1", switch_id="s1"), fleet())
    outcome = await coordinator(control, Peers()).abort("view#items")
    assert (outcome.rule.primary, outcome.rule.epoch, outcome.rule.state) == ("us-east-1", 5, ACTIVE)
    with pytest.raises(SwitchError, match="not switching"):
        await coordinator(control, Peers()).abort("view#items")


async def test_failover_moves_at_once_and_reports_the_loss_window():
    members = [m for m in fleet(lag=0.35) if m.region != "us-east-1"]  # the primary's region is down
    control = Control(rule(), members)
    outcome, window = await coordinator(control, Peers()).failover("view#items", "eu-west-1")
    assert (outcome.rule.primary, outcome.rule.epoch, outcome.rule.version) == ("eu-west-1", 5, 8)
    assert window == 0.35 and len(control.writes) == 1


async def test_the_switch_ends_once_every_gateway_sent_on_what_it_held():
    control, steps = Control(rule(), fleet()), []
    peers = Peers(buffered=[3, 0, 0, 1, 0, 0])  # first poll: 4 held over the fleet; second: none
    outcome = await coordinator(control, peers, steps=steps).switch("view#items", "eu-west-1")
    assert outcome.committed and steps[-1] == "drain" and peers.buffered == []


# -- the fence with several gateways per region ------------------------------------------------------


class Instance:
    """One gateway process of the old primary: what it acknowledged, and how many fence answers are incomplete."""

    def __init__(self, name, acked, incomplete=0):
        self.name, self.acked, self.incomplete = name, list(acked), incomplete
        self.fenced = 0


class FleetPeers(Peers):
    """Several instances behind one peer address, answering in turn (workers sharing the port, like SO_REUSEPORT)."""

    def __init__(self, instances, held):
        super().__init__(held=held)
        self.instances = list(instances)
        self.turn = 0

    async def call_address(self, address, path, body, **kw):
        if path != FENCE_PATH:
            return await super().call_address(address, path, body, **kw)
        instance = self.instances[self.turn % len(self.instances)]
        self.turn += 1
        instance.fenced += 1
        complete = instance.fenced > instance.incomplete
        acked = instance.acked if complete else instance.acked[:1]  # an incomplete list may miss writes
        return {"instance": instance.name, "complete": complete, "acknowledged": [list(a) for a in acked]}


def two_instance_fleet():
    # Both gateways of the old primary answer on one address: the members table lists both instances.
    return [
        Member("us-east-1", "i-a", "127.0.0.1:8701"),
        Member("us-east-1", "i-b", "127.0.0.1:8701"),
        Member("eu-west-1", "i-127.0.0.1:8711", "127.0.0.1:8711", replication_lag={"us-east-1": 0.1}),
    ]


async def test_the_fence_waits_for_every_instance_of_the_old_primary_and_checks_each_ones_writes():
    a = Instance("i-a", [("items", "k1", "4.100.us-east-1")])
    b = Instance("i-b", [("items", "k2", "4.90.us-east-1")])
    # k2 (acknowledged by the second instance only) has not reached eu-west-1.
    peers = FleetPeers([a, b], held={"k1": "4.100.us-east-1"})
    control = Control(rule(), two_instance_fleet())
    outcome = await coordinator(control, peers).switch("view#items", "eu-west-1", max_duration=0.3)
    assert not outcome.committed and "1 acknowledged write(s) not yet in eu-west-1" in outcome.detail
    assert a.fenced >= 1 and b.fenced >= 1
    peers = FleetPeers([Instance("i-a", a.acked), Instance("i-b", b.acked)], held={"k1": "4.100.us-east-1", "k2": "4.90.us-east-1"})
    control = Control(rule(), two_instance_fleet())
    assert (await coordinator(control, peers).switch("view#items", "eu-west-1")).committed


async def test_an_incomplete_fence_answer_is_asked_again_and_never_verified_on_its_own():
    # The first answer lists k1 only and says it is incomplete (a write was still in flight): the coordinator
    # must ask again and check k2 too, which eu-west-1 does not hold yet.
    a = Instance("i-a", [("items", "k1", "4.100.us-east-1"), ("items", "k2", "4.101.us-east-1")], incomplete=1)
    peers = FleetPeers([a], held={"k1": "4.100.us-east-1"})
    control = Control(rule(), fleet())
    control.members_list[0] = Member("us-east-1", "i-a", "127.0.0.1:8701")
    outcome = await coordinator(control, peers).switch("view#items", "eu-west-1", max_duration=0.3)
    assert a.fenced == 2 and not outcome.committed and "not yet in eu-west-1" in outcome.detail


async def test_an_old_primary_that_never_answers_complete_aborts_the_switch():
    a = Instance("i-a", [], incomplete=10**6)
    control = Control(rule(), fleet())
    control.members_list[0] = Member("us-east-1", "i-a", "127.0.0.1:8701")
    outcome = await coordinator(control, FleetPeers([a], held={})).switch("view#items", "eu-west-1", max_duration=0.3)
    assert not outcome.committed and "no complete answer from i-a" in outcome.detail
    assert control.stored.primary == "us-east-1" and control.stored.state == ACTIVE


async def test_the_newest_version_a_key_was_acknowledged_at_is_the_one_checked():
    # Two instances acknowledged k1; their clocks differ, so the versions are far apart. eu-west-1 holds the
    # older one: the newer acknowledged write has not replicated, and the switch must not commit.
    a = Instance("i-a", [("items", "k1", "4.100.us-east-1")])
    b = Instance("i-b", [("items", "k1", "4.5000.us-east-1")])
    for order in ([a, b], [b, a]):
        peers = FleetPeers(order, held={"k1": "4.100.us-east-1"})
        control = Control(rule(), two_instance_fleet())
        outcome = await coordinator(control, peers).switch("view#items", "eu-west-1", max_duration=0.3)
        assert not outcome.committed, order


async def test_a_write_acknowledged_under_a_later_epoch_outranks_a_later_clock():
    # Versions order by (epoch, ts): a skewed clock cannot make an older epoch's write look newer.
    a = Instance("i-a", [("items", "k1", "5.100.us-east-1")])
    b = Instance("i-b", [("items", "k1", "4.9000.us-east-1")])
    peers = FleetPeers([a, b], held={"k1": "4.9000.us-east-1"})
    control = Control(rule(), two_instance_fleet())
    assert not (await coordinator(control, peers).switch("view#items", "eu-west-1", max_duration=0.3)).committed
    peers = FleetPeers([Instance("i-a", a.acked), Instance("i-b", b.acked)], held={"k1": "5.100.us-east-1"})
    control = Control(rule(), two_instance_fleet())
    assert (await coordinator(control, peers).switch("view#items", "eu-west-1")).committed
