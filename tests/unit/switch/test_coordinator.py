"""The switch coordinator's decisions with a fake control plane and fake peers (gateway/switch/coordinator.py)."""

from __future__ import annotations

from dataclasses import dataclass, field, replace

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
    replication_lag_sampled: dict = field(default_factory=dict)


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
    assert control.writes == [] and not outcome.committed and outcome.detail == "preflight passed; nothing was written"


@pytest.mark.parametrize(
    "stored, members, to, message",
    [
        (rule(mode=ANY_REGION, primary=None), fleet(), "eu-west-1", "no primary to switch"),
        (rule(state=SWITCHING, next_primary="ap-southeast-1", switch_id="s1"), fleet(), "eu-west-1", "in progress"),
        (rule(), fleet(), "us-east-1", "already the primary"),
        (rule(), fleet(), "sa-east-1", "not a known region"),
        (rule(), [m for m in fleet() if m.region != "eu-west-1"], "eu-west-1", "no live gateway"),
        (rule(), [m for m in fleet() if m.region != "us-east-1"], "eu-west-1", "use `gatewayctl failover view#items --to eu-west-1`"),
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


async def test_failover_moves_at_once_and_reports_the_lag_sampled_before_the_primary_went_quiet():
    # The primary's region is down: eu-west-1's lag from it has grown to 40 s since its last heartbeat, but
    # when that heartbeat arrived the lag was 0.35 s: the writes at risk are those of the last 0.35 s.
    members = [replace(m, replication_lag={"us-east-1": 40.0}, replication_lag_sampled={"us-east-1": 0.35})
               for m in fleet() if m.region != "us-east-1"]
    control = Control(rule(), members)
    outcome, window = await coordinator(control, Peers()).failover("view#items", "eu-west-1")
    assert (outcome.rule.primary, outcome.rule.epoch, outcome.rule.version) == ("eu-west-1", 5, 8)
    assert window == 0.35 and len(control.writes) == 1


async def test_the_switch_ends_once_every_gateway_sent_on_what_it_held():
    control, steps = Control(rule(), fleet()), []
    peers = Peers(buffered=[3, 0, 0, 1, 0, 0])  # first poll: 4 held over the fleet; second: none
    outcome = await coordinator(control, peers, steps=steps).switch("view#items", "eu-west-1")
    assert outcome.committed and steps[-1] == "drain" and peers.buffered == []


class Replicating(Peers):
    """The new primary's replica receives each acknowledged key at its own time (fake clock, seconds from start)."""

    def __init__(self, clock, arrivals, **kw):
        super().__init__(acked=[("items", k, "4.100.us-east-1") for k in arrivals], **kw)
        self.clock, self.arrivals, self.start = clock, arrivals, clock.monotonic()

    async def call(self, region, path, body):
        now = self.clock.monotonic() - self.start
        return {"versions": ["4.100.us-east-1" if now >= self.arrivals[k] else None for k in body["keys"]]}


async def test_a_switch_reports_its_fence_progress_each_second_while_it_verifies():
    clock, reports = FakeClock(), []

    async def progress(p):
        reports.append((p.step, p.keys_verified, p.keys_total, p.elapsed, p.outcome))

    peers = Replicating(clock, {"k1": 0.5, "k2": 1.5, "k3": 2.5})
    switches = SwitchCoordinator(CONFIG, Control(rule(), fleet()), peers, clock, by="ops", progress=progress,
                                 sleep=AdvancingSleep(clock))
    outcome = await switches.switch("view#items", "eu-west-1", max_duration=5.0)
    assert outcome.committed
    start, *ticks = [r for r in reports if r[0] == "verify"]
    assert start[1:3] == (0, 3)  # the step's start already knows how many keys it verifies
    assert [(verified, total) for _, verified, total, _, _ in ticks] == [(1, 3), (2, 3)]
    times = [r[3] for r in reports if r[0] == "verify"]
    assert all(b - a >= 1.0 for a, b in zip(times, times[1:]))
    assert reports[-1][0] == "done" and reports[-1][1:3] == (3, 3) and reports[-1][4] == "committed"


async def test_a_switch_aborted_from_another_terminal_says_so_and_writes_nothing_more():
    clock, reports = FakeClock(), []
    control = Control(rule(), fleet())

    class AbortedMeanwhile(Replicating):
        async def call(self, region, path, body):
            if clock.monotonic() - self.start > 1.5 and control.stored.state == SWITCHING:
                # `gatewayctl switch abort` elsewhere: the old primary stays, epoch + 1
                control.stored = replace(control.stored, state=ACTIVE, epoch=5, version=9, next_primary=None,
                                         switch_id=None, updated_by="bob@ops")
            return await super().call(region, path, body)

    async def progress(p):
        reports.append((p.step, p.outcome, p.detail))

    peers = AbortedMeanwhile(clock, {"k1": 99.0})  # never replicates
    switches = SwitchCoordinator(CONFIG, control, peers, clock, by="ops", progress=progress, sleep=AdvancingSleep(clock))
    outcome = await switches.switch("view#items", "eu-west-1", max_duration=10.0)
    assert not outcome.committed and outcome.overtaken
    assert outcome.detail == ("aborted by bob@ops while it ran; view#items is active with us-east-1 primary at epoch 5 "
                              "(version 9); nothing more was written")
    assert [w.state for w in control.writes] == [SWITCHING]  # only its own switching write; no abort over bob's
    assert (outcome.rule.primary, outcome.rule.epoch) == ("us-east-1", 5)
    assert reports[-1][:2] == ("done", "overtaken")
    assert clock.monotonic() - peers.start < 3.0  # it noticed within a progress interval, not at its deadline
