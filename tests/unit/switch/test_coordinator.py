"""The switch coordinator's decisions with a fake control plane and fake peers (gateway/switch/coordinator.py)."""

from __future__ import annotations

from dataclasses import dataclass, field, replace

import pytest

from gateway.config import from_dict
from gateway.errors import PrimaryUnreachable
from gateway.peer.routes import BUFFER_PATH, FENCE_PATH, ROUTING_PATH, RULES_PATH, VERSIONS_PATH
from gateway.routing.control_table import Malformed, RuleConflict
from gateway.routing.rules import ACTIVE, ANY_REGION, SINGLE_PRIMARY, SWITCHING, Rule, rule_from_json
from gateway.switch.coordinator import SwitchCoordinator, SwitchError, SwitchProgress
from tests.fakes import AdvancingSleep, FakeClock

SETTINGS = {
    "gateway": {"region": "us-east-1"},
    "switch": {"min_interval": 60.0, "max_replication_lag": 2.0, "max_duration": 1.0},
    "regions": {
        r: {"downstream": f"127.0.0.1:{p}", "peer": f"127.0.0.1:{p + 1}"}
        for r, p in (("us-east-1", 8700), ("eu-west-1", 8710), ("ap-southeast-1", 8720))
    },
    "views": {"items": {"table": "features_items"}},
}
CONFIG = from_dict(SETTINGS)


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


DECIDED = "decided by a majority of the regions, accepted by us-east-1, eu-west-1, ap-southeast-1 (3 of 3 regions)"


class Control:
    def __init__(self, rule, members, clock=None):
        self.stored = rule
        self.members_list = members
        self.writes = []
        self.clock = clock  # when set, members() checks it is asked with that clock's time

    async def rule(self, scope):
        return self.stored if self.stored and self.stored.scope == scope else None

    async def put(self, rule, *, expect):
        assert self.stored.version == expect, "conditional on the version read"
        self.writes.append(rule)
        self.stored = rule
        return rule

    def written(self):
        return DECIDED

    async def members(self, *, now_us, expiry):
        assert expiry == CONFIG.members.expiry
        assert self.clock is None or now_us == self.clock.wall_us()
        return self.members_list


#: The region of each peer address of ``fleet()``.
REGION_OF = {f"127.0.0.1:{p + 1}": r for r, p in (("us-east-1", 8700), ("eu-west-1", 8710), ("ap-southeast-1", 8720))}


class Peers:
    """Peer answers: every push is taken; the old primary acknowledged ``acked``; the new one holds ``held``.

    Each request is checked the way the peer API reads it (path, body, the region it is signed for), and
    ``latency`` seconds pass on ``clock`` per call, so the durations a switch reports are known.
    """

    def __init__(self, acked=(), held=None, fence_fails=False, buffered=(), clock=None, latency=0.0):
        self.buffered = list(buffered)  # held + outstanding answered by successive buffer polls
        self.acked = list(acked)
        self.held = held if held is not None else {k: v for _, k, v in acked}
        self.fence_fails = fence_fails
        self.pushed = []
        self.fenced = []  # (address, body, keyword arguments) of every fence request
        self.version_calls = []
        self.clock, self.latency = clock, latency

    def _pass_time(self):
        if self.clock is not None:
            self.clock.advance(self.latency)

    async def call_address(self, address, path, body, *, region, timeout=None, new_connection=False):
        self._pass_time()
        assert region == REGION_OF.get(address, region), f"{address} is in {REGION_OF[address]}, not {region}"
        if path == RULES_PATH:
            assert set(body) == {"rules"} and timeout == 1.0
            rule = rule_from_json(body["rules"][0])
            self.pushed.append((address, rule))
            return {"rules": {rule.scope: {"epoch": rule.epoch, "state": rule.state}}}
        if path == FENCE_PATH:
            assert set(body) == {"rule", "timeout"} and 0.1 <= body["timeout"] <= 2.0 and new_connection
            assert rule_from_json(body["rule"]).state == SWITCHING and timeout >= body["timeout"]
            self.fenced.append((address, body, {"region": region, "timeout": timeout}))
            if self.fence_fails:
                raise PrimaryUnreachable("down")
            return {"instance": f"i-{address}", "complete": True, "acknowledged": [list(a) for a in self.acked]}
        if path == BUFFER_PATH:
            assert set(body) == {"scope"} and isinstance(body["scope"], str) and timeout == 1.0
            return {"held": self.buffered.pop(0) if self.buffered else 0, "outstanding": 0}
        raise AssertionError(path)

    async def call(self, region, path, body):
        self._pass_time()
        assert path == VERSIONS_PATH and set(body) == {"view", "keys"} and len(body["keys"]) <= 100
        self.version_calls.append((region, body["view"], list(body["keys"])))
        return {"versions": [self.held.get(k) for k in body["keys"]]}


def fleet(lag=0.1):
    return [
        Member("us-east-1", "i-127.0.0.1:8701", "127.0.0.1:8701"),
        Member("eu-west-1", "i-127.0.0.1:8711", "127.0.0.1:8711", replication_lag={"us-east-1": lag},
               replication_lag_sampled={"us-east-1": lag}),
        Member("ap-southeast-1", "i-127.0.0.1:8721", "127.0.0.1:8721", replication_lag={"us-east-1": lag},
               replication_lag_sampled={"us-east-1": lag}),
    ]


def rule(**kw):
    base = dict(scope="view#items", mode=SINGLE_PRIMARY, primary="us-east-1", epoch=4, version=7, updated_at=0)
    base.update(kw)
    return Rule(**base)


def coordinator(control, peers, clock=None, steps=None, lines=None):
    clock = clock or FakeClock()

    def report(step, seconds, detail):
        if steps is not None:
            steps.append(step)
        if lines is not None:
            lines.append((step, round(seconds, 6), detail))

    return SwitchCoordinator(CONFIG, control, peers, clock, by="ops", report=report, sleep=AdvancingSleep(clock))


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
    assert not outcome.committed and control.stored.primary == "us-east-1"
    # The last problems seen are in the operator's message.
    assert outcome.detail == "the fence timed out: no complete answer from i-127.0.0.1:8701 (down; down; down)"


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
    assert all(0 <= t < 5.0 for t in times)  # seconds since the switch started
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


# -- what the operator reads, step by step -----------------------------------------------------------


async def test_a_switch_reports_every_step_with_its_duration_as_the_readme_shows():
    clock, lines = FakeClock(), []
    control = Control(rule(), fleet(), clock)
    peers = Peers(acked=[("items", "k1", "4.100.us-east-1")], clock=clock, latency=0.1)  # every peer call: 100 ms
    outcome = await coordinator(control, peers, clock, lines=lines).switch("view#items", "eu-west-1")
    switching, committed = control.writes
    assert lines == [
        ("preflight", 0.0, "us-east-1 -> eu-west-1, epoch 4 -> 5, 1 gateway(s) in eu-west-1"),
        ("switching", 0.0, f"switch_id {switching.switch_id}, {DECIDED}"),
        ("push", 0.3, "3/3 gateways buffering"),
        ("fence", 0.1, "1 key(s) acknowledged by us-east-1"),
        ("verify", 0.1, "every acknowledged write is in eu-west-1"),
        ("commit", 0.0, f"eu-west-1 is primary at epoch 5, {DECIDED}"),
        ("push", 0.3, "3/3 gateways routing to eu-west-1"),
        ("drain", 0.3, "every held write sent on"),
    ]
    assert outcome.seconds == pytest.approx(1.1) and outcome.detail == ""
    started_ms = 1_700_000_000_000
    assert len(switching.switch_id) == 12 and switching.switch_started_at == started_ms
    assert (switching.updated_by, committed.updated_by, committed.updated_at) == ("ops", "ops", started_ms + 500)
    assert committed.switch_started_at is None
    # The fence went to the old primary's gateway, signed for its region, with the time left of max_duration (1 s).
    ((address, body, kw),) = peers.fenced
    assert (address, kw["region"]) == ("127.0.0.1:8701", "us-east-1")
    assert (body["timeout"], kw["timeout"]) == (pytest.approx(0.7), pytest.approx(1.2))


async def test_an_aborted_switch_reports_why_and_where_the_writes_go():
    clock, lines = FakeClock(), []
    control = Control(rule(), fleet(), clock)
    peers = Peers(acked=[("items", "k1", "4.100.us-east-1")], held={}, clock=clock, latency=0.1)
    outcome = await coordinator(control, peers, clock, lines=lines).switch("view#items", "eu-west-1", max_duration=0.45)
    why = "the fence timed out: 1 acknowledged write(s) not yet in eu-west-1"
    assert lines[-3:] == [
        ("abort", 0.0, f"{why}; us-east-1 stays primary at epoch 5"),
        ("push", 0.3, "3/3 gateways routing to us-east-1"),
        ("drain", 0.3, "every held write sent on"),
    ]
    assert (outcome.committed, outcome.detail, outcome.rule) == (False, why, control.stored)
    assert outcome.seconds == pytest.approx(clock.now - 1_700_000_000.0)
    aborted = control.stored
    assert (aborted.next_primary, aborted.switch_id, aborted.switch_started_at, aborted.updated_by) == (None, None, None, "ops")


async def test_an_operators_abort_is_reported_as_such():
    lines = []
    control = Control(rule(state=SWITCHING, next_primary="eu-west-1", switch_id="s1", switch_started_at=5), fleet())
    outcome = await coordinator(control, Peers(), lines=lines).abort("view#items")
    assert outcome.detail == "aborted by ops" and not outcome.committed  # the coordinator's `by`: who aborted
    assert lines[0] == ("abort", 0.0, "aborted by ops; us-east-1 stays primary at epoch 5")
    assert control.stored.switch_started_at is None and control.stored.next_primary is None


async def test_a_drain_that_does_not_finish_is_reported_with_what_is_still_held():
    lines = []
    control = Control(rule(), fleet())
    peers = Peers(buffered=[2, 1, 0] * 1000)  # us-east-1 keeps holding two and eu-west-1 one, poll after poll
    outcome = await coordinator(control, peers, lines=lines).switch("view#items", "eu-west-1")
    assert outcome.committed and lines[-1] == ("drain", pytest.approx(1.0, abs=0.06), "3 write(s) still held after 1s")


async def test_the_drain_counts_held_and_outstanding_writes_and_skips_unreachable_gateways():
    class Draining(Peers):
        def __init__(self):
            super().__init__()
            self.polls = 0

        async def call_address(self, address, path, body, **kw):
            if path != BUFFER_PATH:
                return await super().call_address(address, path, body, **kw)
            assert body == {"scope": "view#items"}
            self.polls += 1
            if address.endswith("8721"):
                raise PrimaryUnreachable("down")  # nothing to wait for there
            rounds = [{"held": 1, "outstanding": 2}, {"held": 0, "outstanding": 1}, {"held": 1, "outstanding": 1}]
            return rounds[(self.polls - 1) // 3] if self.polls <= 9 else {"held": 0, "outstanding": 0}

    lines, peers = [], Draining()
    outcome = await coordinator(Control(rule(), fleet()), peers, lines=lines).switch("view#items", "eu-west-1")
    # Writes still being sent on (outstanding) keep the drain going as held ones do: four rounds of polls.
    assert outcome.committed and lines[-1][2] == "every held write sent on" and peers.polls == 12


async def test_pushes_count_only_the_gateways_that_took_the_rule():
    class Mixed(Peers):
        async def call_address(self, address, path, body, **kw):
            if path == RULES_PATH and address.endswith("8711"):
                raise PrimaryUnreachable("down")
            answer = await super().call_address(address, path, body, **kw)
            if path == RULES_PATH and address.endswith("8721"):
                scope, seen = next(iter(answer["rules"].items()))
                answer["rules"][scope] = {**seen, "epoch": seen["epoch"] - 1}  # still routes by an older rule
            return answer

    lines = []
    await coordinator(Control(rule(), fleet()), Mixed(), lines=lines).switch("view#items", "eu-west-1")
    assert [detail for step, _, detail in lines if step == "push"] == [
        "1/3 gateways buffering", "1/3 gateways routing to eu-west-1",
    ]


async def test_a_push_answer_must_show_the_pushed_epoch_and_state():
    class Stale(Peers):
        def __init__(self, seen):
            super().__init__()
            self.seen = seen

        async def call_address(self, address, path, body, **kw):
            answer = await super().call_address(address, path, body, **kw)
            if path == RULES_PATH:
                return self.seen(rule_from_json(body["rules"][0]))
            return answer

    control = Control(rule(), fleet())
    coord = coordinator(control, Stale(lambda r: {"rules": {r.scope: {"epoch": r.epoch, "state": "other"}}}))
    assert await coord.push(rule(), fleet()) == 0
    coord = coordinator(control, Stale(lambda r: {"rules": {"view#other": {"epoch": r.epoch, "state": r.state}}}))
    assert await coord.push(rule(), fleet()) == 0
    coord = coordinator(control, Stale(lambda r: {}))
    assert await coord.push(rule(), fleet()) == 0
    coord = coordinator(control, Stale(lambda r: {"rules": {r.scope: {"epoch": r.epoch, "state": r.state}}}))
    assert await coord.push(rule(), fleet() + [Member("eu-west-1", "i-x", "")]) == 3  # no peer address: not asked


# -- preflight edges ---------------------------------------------------------------------------------


async def test_preflight_takes_the_lag_of_the_target_only_and_its_limit_inclusively():
    members = fleet(lag=2.0)  # exactly the limit
    members[2] = Member("ap-southeast-1", "i-ap", "127.0.0.1:8721", replication_lag={"us-east-1": 9.0})  # not the target
    assert (await coordinator(Control(rule(), members), Peers()).switch("view#items", "eu-west-1")).committed
    members = [m for m in fleet() if m.region != "eu-west-1"] + [
        Member("eu-west-1", "i-eu", "127.0.0.1:8711", replication_lag={"ap-southeast-1": 0.1})
    ]
    with pytest.raises(SwitchError, match="eu-west-1 reports no replication lag from us-east-1 yet"):
        await coordinator(Control(rule(), members), Peers()).switch("view#items", "eu-west-1")


async def test_preflight_spacing_is_measured_in_seconds_and_ends_at_the_interval():
    clock = FakeClock()
    control = Control(rule(updated_at=clock.wall_ms() - 60_000), fleet())  # exactly min_interval ago
    assert (await coordinator(control, Peers(), clock).switch("view#items", "eu-west-1")).committed
    control = Control(rule(updated_at=clock.wall_ms() - 59_950), fleet())
    with pytest.raises(SwitchError, match=r"last changed 60s ago; switches of a scope are at least 60s apart"):
        await coordinator(control, Peers(), clock).switch("view#items", "eu-west-1")


async def test_stale_members_are_not_live_and_the_rule_must_exist_and_parse():
    members = fleet()
    members[1] = Member("eu-west-1", "i-eu", "127.0.0.1:8711", replication_lag={"us-east-1": 0.1}, stale=True)
    clock = FakeClock()
    with pytest.raises(SwitchError, match="eu-west-1 has no live gateway"):
        await coordinator(Control(rule(), members, clock), Peers(), clock).switch("view#items", "eu-west-1")
    with pytest.raises(SwitchError, match="there is no rule for view#nope; create one with `gatewayctl rules set view#nope --primary REGION`"):
        await coordinator(Control(rule(), fleet()), Peers()).switch("view#nope", "eu-west-1")
    control = Control(rule(), fleet())
    control.stored = Malformed("view#items", "bad epoch")
    with pytest.raises(SwitchError, match=r"^the rule item of view#items is malformed \(bad epoch\); delete it with `gatewayctl rules delete view#items`"):
        await coordinator(control, Peers()).switch("view#items", "eu-west-1")


async def test_a_rule_without_a_primary_or_to_an_unknown_region_is_refused_by_name():
    with pytest.raises(SwitchError, match="view#items has no primary; set one with `gatewayctl rules set view#items --primary REGION`"):
        await coordinator(Control(rule(primary=None), fleet()), Peers()).switch("view#items", "eu-west-1")
    with pytest.raises(SwitchError, match=r"sa-east-1 is not a known region \(us-east-1, eu-west-1, ap-southeast-1\)"):
        await coordinator(Control(rule(), fleet()), Peers()).switch("view#items", "sa-east-1")


async def test_a_dry_run_reports_the_rule_it_read_and_how_long_preflight_took():
    clock = FakeClock()
    control = Control(rule(), fleet(), clock)
    outcome = await coordinator(control, Peers(), clock).switch("view#items", "eu-west-1", dry_run=True)
    assert outcome == type(outcome)(rule(), False, 0.0, "preflight passed; nothing was written")


# -- failover ----------------------------------------------------------------------------------------


async def test_failover_reports_its_steps_and_clears_a_switch_in_progress():
    lines = []
    members = [m for m in fleet(lag=0.35) if m.region != "us-east-1"]
    control = Control(rule(state=SWITCHING, next_primary="ap-southeast-1", switch_id="s1", switch_started_at=5), members)
    outcome, window = await coordinator(control, Peers(), lines=lines).failover("view#items", "eu-west-1")
    # The old primary's lease (3 s + 0.5 s drift in CONFIG) is waited out before the failover says it is done.
    assert lines == [
        ("failover", 0.0, f"eu-west-1 is primary at epoch 5 (no fence), {DECIDED}"),
        ("push", 0.0, "2/2 gateways routing to eu-west-1"),
        ("lease", 3.5, "waited out us-east-1's lease (3 s + 0.5 s drift): it acknowledges no more writes of view#items, "
                       "and eu-west-1 takes them"),
    ]
    moved = control.stored
    assert (moved.state, moved.next_primary, moved.switch_id, moved.switch_started_at) == (ACTIVE, None, None, None)
    assert outcome.committed is True and outcome.seconds == 3.5 and window == 0.35


async def test_failover_back_to_the_old_primary_ends_a_stuck_switch_and_a_missing_lag_is_no_window():
    members = [Member("us-east-1", "i-us", "127.0.0.1:8701")]
    control = Control(rule(state=SWITCHING, next_primary="eu-west-1", switch_id="s1"), members)
    outcome, window = await coordinator(control, Peers()).failover("view#items", "us-east-1")
    assert (outcome.rule.primary, outcome.rule.epoch, outcome.rule.state) == ("us-east-1", 5, ACTIVE) and window is None


@pytest.mark.parametrize(
    "stored, to, message",
    [
        (rule(mode=ANY_REGION, primary=None), "eu-west-1", "view#items is any_region: there is no primary to fail over"),
        (rule(mode=ANY_REGION), "eu-west-1", "there is no primary to fail over"),
        (rule(), "us-east-1", "us-east-1 is already the primary of view#items"),
        (rule(), "sa-east-1", r"sa-east-1 is not a known region \(us-east-1, eu-west-1, ap-southeast-1\)"),
    ],
)
async def test_failover_refusals_name_the_reason_and_write_nothing(stored, to, message):
    control = Control(stored, fleet())
    with pytest.raises(SwitchError, match=message):
        await coordinator(control, Peers()).failover("view#items", to)
    assert control.writes == []


# -- the fence's verification ------------------------------------------------------------------------


async def test_verification_asks_in_batches_of_100_per_view_until_every_key_is_there():
    acked = [("items", f"k{i}", "4.100.us-east-1") for i in range(150)] + [("users", "u1", "4.7.us-east-1")]

    class Catching(Peers):
        def __init__(self):
            super().__init__(acked=acked, held={})

        async def call(self, region, path, body):
            answer = await super().call(region, path, body)
            if len(self.version_calls) == 1:
                raise PrimaryUnreachable("a hiccup")  # that batch is asked again, the others are not held up
            if len(self.version_calls) <= 4:
                return answer
            return {"versions": ["4.100.us-east-1" if k.startswith("k") else "4.7.us-east-1" for k in body["keys"]]}

    peers = Catching()
    outcome = await coordinator(Control(rule(), fleet()), peers).switch("view#items", "eu-west-1")
    assert outcome.committed
    first_round = peers.version_calls[:3]
    assert [(r, v, len(k)) for r, v, k in first_round] == [("eu-west-1", "items", 100), ("eu-west-1", "items", 50), ("eu-west-1", "users", 1)]
    assert {k for _, _, keys in peers.version_calls for k in keys} == {f"k{i}" for i in range(150)} | {"u1"}


async def test_a_key_held_at_exactly_the_acknowledged_version_is_verified():
    peers = Peers(acked=[("items", "k1", "4.100.us-east-1")], held={"k1": "4.100.us-east-1"})
    assert (await coordinator(Control(rule(), fleet()), peers).switch("view#items", "eu-west-1")).committed


async def test_an_aborted_switch_whose_drain_does_not_finish_says_so():
    lines = []
    control = Control(rule(), fleet())
    peers = Peers(acked=[("items", "k1", "4.100.us-east-1")], held={}, buffered=[1, 0, 0] * 1000)
    outcome = await coordinator(control, peers, lines=lines).switch("view#items", "eu-west-1", max_duration=0.3)
    assert not outcome.committed and lines[-1][2] == "1 write(s) still held after 1s"


async def test_the_loss_window_of_a_failover_is_the_new_primarys_lag():
    members = [
        Member("eu-west-1", "i-eu", "127.0.0.1:8711", replication_lag_sampled={"us-east-1": 0.2}),
        Member("ap-southeast-1", "i-ap", "127.0.0.1:8721", replication_lag_sampled={"us-east-1": 4.0}),
    ]
    _, window = await coordinator(Control(rule(), members), Peers()).failover("view#items", "eu-west-1")
    assert window == 0.2


async def test_a_fence_request_waits_at_most_two_seconds_for_in_flight_writes():
    peers = Peers(acked=[("items", "k1", "4.100.us-east-1")])
    await coordinator(Control(rule(), fleet()), peers).switch("view#items", "eu-west-1", max_duration=5.0)
    ((_, body, kw),) = peers.fenced
    assert (body["timeout"], kw["timeout"]) == (2.0, 5.5)


# -- what a switch publishes (``gatewayctl switch status`` reads it) ---------------------------------


def recording(clock, control, peers):
    """A coordinator whose progress sink keeps a copy of every record it was given."""
    published = []

    async def progress(p):
        published.append(SwitchProgress.from_json(p.to_json()))

    return SwitchCoordinator(CONFIG, control, peers, clock, by="ops", progress=progress, sleep=AdvancingSleep(clock)), published


async def test_a_committed_switch_publishes_every_step_naming_the_switch_and_ends_committed():
    clock = FakeClock()
    control = Control(rule(), fleet())
    switches, published = recording(clock, control, Peers(acked=[("items", "k1", "4.100.us-east-1")], clock=clock,
                                                           latency=0.0004))
    started_ms = clock.wall_ms()
    outcome = await switches.switch("view#items", "eu-west-1")
    switching = control.writes[0]
    assert [p.step for p in published] == ["push", "fence", "verify", "commit", "push", "drain", "done"]
    assert {(p.scope, p.from_region, p.to_region, p.switch_id, p.by, p.started_at_ms) for p in published} == {
        ("view#items", "us-east-1", "eu-west-1", switching.switch_id, "ops", switching.switch_started_at)}
    assert len(switching.switch_id) == 12 and switching.switch_started_at == started_ms
    assert [p.outcome for p in published[:-1]] == [""] * 6 and published[-1].outcome == "committed"
    assert published[-1].detail == "eu-west-1 is primary at epoch 5"
    assert (published[-1].keys_verified, published[-1].keys_total) == (1, 1)
    elapsed = [p.elapsed for p in published]
    assert elapsed == sorted(elapsed) and elapsed[-1] == round(outcome.seconds, 3) and elapsed[-1] > 0


def test_a_progress_record_carries_its_elapsed_time_in_milliseconds_and_never_its_publication_time():
    from gateway.switch.coordinator import SwitchProgress

    progress = SwitchProgress("s", "a", "b", "id", "ops", 5, elapsed=1.23456, last_report=9.0)
    body = progress.to_json()
    assert body["elapsed"] == 1.235 and "last_report" not in body
    # A record from a newer coordinator, with fields this one does not know (or its publication time), still reads.
    read = SwitchProgress.from_json({**body, "last_report": 9.0, "added_later": True})
    assert read.elapsed == 1.235 and read.last_report == float("-inf") and read.switch_id == "id"


async def test_an_abort_publishes_the_switch_it_ends_and_ends_aborted():
    clock = FakeClock()
    stored = rule(state=SWITCHING, next_primary="eu-west-1", switch_id="s1", switch_started_at=1234)
    switches, published = recording(clock, Control(stored, fleet()), Peers())
    outcome = await switches.abort("view#items")
    assert [p.step for p in published] == ["abort", "done"]
    assert {(p.from_region, p.to_region, p.switch_id, p.by, p.started_at_ms) for p in published} == {
        ("us-east-1", "eu-west-1", "s1", "ops", 1234)}
    assert (published[-1].outcome, published[-1].detail) == ("aborted", "aborted by ops; us-east-1 stays primary at epoch 5")
    assert outcome.detail == "aborted by ops" and not outcome.committed


class ChangedUnderneath(Control):
    """The n-th put finds the rule changed by someone else (``then``; ``None``: the rule was deleted)."""

    def __init__(self, stored, members, conflict_at, then):
        super().__init__(stored, members)
        self.conflict_at, self.then, self.puts = conflict_at, then, 0

    async def put(self, rule, *, expect):
        self.puts += 1
        if self.puts == self.conflict_at:
            self.stored = self.then
            raise RuleConflict("changed")
        return await super().put(rule, expect=expect)

    async def rule(self, scope):
        return self.stored if self.stored is not None and self.stored.scope == scope else None


@pytest.mark.parametrize(("then", "how", "ended_rule"), [
    (rule(epoch=5, version=9, updated_by="bob@ops"), "aborted by bob@ops while it ran; view#items is active with "
     "us-east-1 primary at epoch 5 (version 9); nothing more was written", "then"),
    (rule(primary="ap-southeast-1", epoch=5, version=9), "ended (ap-southeast-1 made primary) by unknown while it ran; "
     "view#items is active with ap-southeast-1 primary at epoch 5 (version 9); nothing more was written", "then"),
    (None, "the rule of view#items was removed while it switched; nothing more was written", "switching"),
    (Malformed("view#items", "bad epoch"), "the rule of view#items was removed while it switched; nothing more was "
     "written", "switching"),  # an item that is no rule any more ends the switch as a removal does
])
async def test_a_commit_that_finds_the_rule_changed_says_who_ended_the_switch_and_writes_nothing_more(then, how, ended_rule):
    clock = FakeClock()
    control = ChangedUnderneath(rule(), fleet(), conflict_at=2, then=then)
    switches, published = recording(clock, control, Peers(clock=clock, latency=0.25))
    began = clock.monotonic()
    outcome = await switches.switch("view#items", "eu-west-1")
    assert (outcome.committed, outcome.overtaken, outcome.detail) == (False, True, how)
    assert outcome.rule == (then if ended_rule == "then" else control.writes[0]) and len(control.writes) == 1
    assert (published[-1].step, published[-1].outcome, published[-1].detail) == ("done", "overtaken", how)
    assert outcome.seconds == pytest.approx(clock.monotonic() - began) and outcome.seconds > 0  # each peer call took 0.25 s


async def test_an_abort_that_finds_the_rule_changed_says_so_and_writes_nothing():
    clock = FakeClock()
    stored = rule(state=SWITCHING, next_primary="eu-west-1", switch_id="s1")
    then = rule(primary="eu-west-1", epoch=5, version=9, updated_by="alice@ops")  # the switch committed meanwhile
    control = ChangedUnderneath(stored, fleet(), conflict_at=1, then=then)
    switches, published = recording(clock, control, Peers())
    outcome = await switches.abort("view#items")
    assert outcome.overtaken and outcome.rule == then and control.writes == []
    assert outcome.detail == ("ended (eu-west-1 made primary) by alice@ops while it ran; view#items is active with "
                              "eu-west-1 primary at epoch 5 (version 9); nothing more was written")
    assert [p.step for p in published] == ["abort", "done"] and published[-1].outcome == "overtaken"


def named(checks):
    return [(c.name, c.passed, c.detail) for c in checks]


async def test_a_dry_run_lists_every_check_it_passed_with_what_it_found():
    clock = FakeClock()
    control = Control(rule(updated_at=clock.wall_ms() - 120_000), fleet())
    checks = await coordinator(control, Peers(), clock).dry_run("view#items", "eu-west-1")
    assert named(checks) == [
        ("mode", True, "view#items is single_primary"),
        ("state", True, "view#items is active"),
        ("primary", True, "us-east-1 is the primary at epoch 4"),
        ("target", True, "eu-west-1 is another known region"),
        ("target gateways", True, "1 live gateway(s) in eu-west-1"),
        ("primary gateways", True, "1 live gateway(s) in us-east-1 to fence"),
        ("replication lag", True, "us-east-1 -> eu-west-1 lags 0.10s (limit 2s)"),
        ("min interval", True, "last changed 120s ago (at least 60s apart)"),
    ]
    assert control.writes == []


#: CONFIG and a witness region.
WITNESSED = from_dict({**SETTINGS, "regions": {
    **SETTINGS["regions"], "sa-east-1": {"downstream": "127.0.0.1:8730", "peer": "127.0.0.1:8731", "witness": True},
}})


@pytest.mark.parametrize(("to", "members", "updated_s_ago", "force", "failed"), [
    ("mars-1", fleet(), 120, False,
     ("target", False, "mars-1 is not a known region (us-east-1, eu-west-1, ap-southeast-1, sa-east-1); pick one of "
                       "them with --to")),
    ("sa-east-1", fleet(), 120, False,
     ("target", False, "sa-east-1 is a witness region: it takes no feature traffic, so it cannot be a primary; pick "
                       "another with --to")),
    ("eu-west-1", [replace(m, replication_lag={}) for m in fleet()], 120, False,
     ("replication lag", False, "eu-west-1 reports no replication lag from us-east-1 yet; retry in a few seconds")),
    ("eu-west-1", fleet(), 59.5, False,
     ("min interval", False, "view#items last changed 60s ago; switches of a scope are at least 60s apart: retry in "
                             "1 s (or pass --force to switch anyway)")),
    ("eu-west-1", fleet(), 10, True, ("min interval", True, "last changed 10s ago; --force skips the anti-flap check")),
])
async def test_each_preflight_check_says_what_it_found_and_what_to_do(to, members, updated_s_ago, force, failed):
    clock = FakeClock()
    control = Control(rule(updated_at=round(clock.wall_ms() - updated_s_ago * 1000)), members)
    switches = SwitchCoordinator(WITNESSED, control, Peers(), clock, by="ops", sleep=AdvancingSleep(clock))
    found = named((await switches.checks(control.stored, to, force=force))[0])
    assert failed in found and sum(1 for name, _, _ in found if name == failed[0]) == 1
    if not failed[1]:
        with pytest.raises(SwitchError) as refused:
            await switches.switch("view#items", to, force=force)
        assert str(refused.value) == failed[2]


async def test_a_failover_to_a_witness_region_is_refused_saying_why():
    control = Control(rule(), fleet())
    switches = SwitchCoordinator(WITNESSED, control, Peers(), FakeClock(), by="ops")
    with pytest.raises(SwitchError) as refused:
        await switches.failover("view#items", "sa-east-1")
    assert str(refused.value) == ("sa-east-1 is a witness region: it takes no feature traffic, so it cannot be a primary; "
                                  "pick another with --to")
    assert control.writes == []


async def test_the_primarys_gateways_are_asked_once_each_on_their_peer_address_whether_they_answer():
    members = [*fleet(), Member("us-east-1", "i-127.0.0.1:8703", "127.0.0.1:8703")]
    asked = []

    class Answering(Peers):
        async def call_address(self, address, path, body, *, region, timeout=None, new_connection=False):
            asked.append((address, path, body, region, timeout))
            if address == "127.0.0.1:8703":
                raise PrimaryUnreachable("down")
            return {"region": region}

    answers = await coordinator(Control(rule(), members), Answering()).primary_answers(rule())
    assert answers == (1, 2)
    assert sorted(asked) == [(a, ROUTING_PATH, {}, "us-east-1", 1.0) for a in ("127.0.0.1:8701", "127.0.0.1:8703")]


async def test_a_fence_that_times_out_names_every_gateway_missing_and_what_each_last_said():
    a, b = Instance("i-a", [], incomplete=10**6), Instance("i-b", [], incomplete=10**6)  # always in flight
    control = Control(rule(), two_instance_fleet())
    outcome = await coordinator(control, FleetPeers([a, b], held={})).switch("view#items", "eu-west-1", max_duration=0.2)
    assert not outcome.committed
    in_flight = "writes still in flight or too many keys to prove"
    # The last three problems seen, the two gateways answering in turn.
    assert outcome.detail == (f"the fence timed out: no complete answer from i-a, i-b (i-a: {in_flight}; i-b: {in_flight}; "
                              f"i-a: {in_flight})")


async def test_a_fence_that_waits_reports_the_gateways_answered_each_second_with_the_switchs_elapsed_time():
    clock = FakeClock()
    a, b = Instance("i-a", [("items", "k1", "4.100.us-east-1")]), Instance("i-b", [], incomplete=30)
    control = Control(rule(), two_instance_fleet())
    published = []

    async def progress(p):
        published.append((p.step, p.gateways_answered, p.gateways_total, p.elapsed))

    switches = SwitchCoordinator(CONFIG, control, FleetPeers([a, b], held={"k1": "4.100.us-east-1"}), clock, by="ops",
                                 progress=progress, sleep=AdvancingSleep(clock))
    outcome = await switches.switch("view#items", "eu-west-1", max_duration=5.0)
    assert outcome.committed
    fence = [p for p in published if p[0] == "fence"]
    assert len(fence) >= 2 and fence[-1][1:3] == (1, 2)  # ticks while i-b still has writes in flight
    assert all(0 <= elapsed < 5.0 for _, _, _, elapsed in fence)  # measured from the switch's start
    assert [p[1:3] for p in published if p[0] in ("verify", "done")] == [(2, 2)] * 2


async def test_a_rule_item_that_turns_malformed_while_the_fence_waits_ends_the_switch_as_removed():
    clock = FakeClock()
    control = Control(rule(), fleet())

    class MalformedMeanwhile(Replicating):
        async def call(self, region, path, body):
            if clock.monotonic() - self.start > 1.5:
                control.stored = Malformed("view#items", "bad epoch")  # someone wrote the item by hand
            return await super().call(region, path, body)

    switches, published = recording(clock, control, MalformedMeanwhile(clock, {"k1": 99.0}))
    outcome = await switches.switch("view#items", "eu-west-1", max_duration=10.0)
    assert outcome.overtaken and outcome.detail == (
        "the rule of view#items was removed while it switched; nothing more was written")
    assert [w.state for w in control.writes] == [SWITCHING] and published[-1].outcome == "overtaken"
