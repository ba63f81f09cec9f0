"""A deterministic simulation of primacy leases (gateway/lease/): one process, an injected clock and network.

Regions of one or two gateways each; every region's promises in one record per scope with compare-and-set
writes (what the control table's per-region item gives in production). A seeded schedule draws clock offsets
within ``max_drift`` and monotonic rates within ``RATE_ERROR``, message delays and losses, partitions between
sets of regions, gateway crashes and restarts, and failovers (a new epoch and primary, learned by each region
after its own replication delay, and not at all across a partition until it heals).

Checked on every schedule:
- safety: at no instant do two regions acknowledge writes of one scope (a gateway acknowledges while its
  ``LeaseHolder`` says valid; the instant is global time, converted from the gateway's own clock);
- liveness: once the faults end (partitions, losses, crashes, failovers), within ``LIVENESS_LEASES`` leases the
  primary of the last rule holds a lease.

``run(seed)`` returns a ``Report``; the same seed replays the same schedule, event for event.
"""

from __future__ import annotations

import heapq
import itertools
import random
from collections.abc import Callable
from dataclasses import dataclass, field

from gateway.lease.holder import LeaseHolder
from gateway.lease.promises import Known, Promise, grant

LEASE = 1.0
MAX_DRIFT = 0.1
#: Rounds per lease: a renewal every third of a lease.
INTERVAL = LEASE / 3
#: Seconds between the rounds of a primary that holds no lease.
EAGER = LEASE / 20
#: Monotonic clocks run at most this fraction fast or slow (a quartz clock: 1e-5 to 1e-4).
RATE_ERROR = 1e-4
#: Time after the last fault within which the last primary must hold a lease, in leases.
LIVENESS_LEASES = 3
SCOPES = ("view#a", "view#b")


@dataclass
class Clock:
    """One gateway's clocks: wall = t + offset; monotonic = origin + t * rate (t is global time)."""

    offset: float
    rate: float
    origin: float

    def wall_ms(self, t: float) -> int:
        return int((t + self.offset) * 1000)

    def mono(self, t: float) -> float:
        return self.origin + t * self.rate

    def to_global(self, mono: float) -> float:
        return (mono - self.origin) / self.rate


@dataclass
class Gateway:
    name: str
    region: str
    clock: Clock
    holder: LeaseHolder
    #: Seconds between this gateway's lease rounds (eager ones ask again soon, as a refused challenger would).
    interval: float = INTERVAL
    alive: bool = True
    renewing: bool = False
    #: scope -> global time up to which this gateway may acknowledge (the ends of its leases, as they stand).
    ack_end: dict[str, float] = field(default_factory=dict)
    incarnation: int = 0


@dataclass
class Report:
    seed: int
    violations: list[str]
    events: int
    acknowledged_time: float


class Simulation:
    def __init__(self, seed: int, *, check: bool = True) -> None:
        self.seed = seed
        self.rng = random.Random(seed)
        rng = self.rng
        self.regions = [f"r{i}" for i in range(rng.choice((3, 3, 3, 5)))]
        self.majority = len(self.regions) // 2 + 1
        self.queue: list[tuple[float, int, Callable[[], None]]] = []
        self.seq = itertools.count()
        self.now = 0.0
        self.events = 0
        self.violations: list[str] = []
        # One-way delays up to a quarter of a lease: a lease is held without a gap while a renewal's round trip
        # plus the time between renewals (a third) fits in the lease less the drift, which the production lease
        # (3 s, renewed every second, against WAN round trips of 0.1-0.3 s) leaves room for.
        self.delay = (rng.uniform(0.001, 0.01), rng.choice((0.05, 0.15, 0.25)) * LEASE)
        self.extremes = rng.random() < 0.5
        self.loss = rng.choice((0.0, 0.0, 0.05, 0.2))
        self.store_delay = rng.uniform(0.001, 0.02)
        #: region -> scope -> promise (the region's strongly consistent record).
        self.promises: dict[str, dict[str, Promise]] = {r: {} for r in self.regions}
        #: region -> scope -> the rule that region's replica holds (epoch, primary).
        self.known: dict[str, dict[str, Known]] = {r: {s: Known(0, self.regions[0]) for s in SCOPES} for r in self.regions}
        self.rules: dict[str, Known] = {s: Known(0, self.regions[0]) for s in SCOPES}
        #: Unordered region pairs that cannot talk.
        self.cut: set[frozenset[str]] = set()
        self.gateways: list[Gateway] = []
        for region in self.regions:
            for i in range(rng.choice((1, 2))):
                interval = rng.choice((INTERVAL, rng.uniform(0.1, 1 / 3) * LEASE))
                self.gateways.append(Gateway(f"{region}/g{i}", region, self._clock(), self._holder(region), interval))
        self.by_region = {r: [g for g in self.gateways if g.region == r] for r in self.regions}
        self.acknowledged = 0.0
        self.faults_end = 0.0

    # -- the schedule --------------------------------------------------------------------------------

    def _clock(self) -> Clock:
        rng = self.rng
        # Half the clocks at the edges of the allowed disagreement, where a wrong margin shows first.
        offset = rng.choice((-MAX_DRIFT / 2, MAX_DRIFT / 2, rng.uniform(-MAX_DRIFT / 2, MAX_DRIFT / 2)))
        rate = 1 + rng.choice((-RATE_ERROR, RATE_ERROR, rng.uniform(-RATE_ERROR, RATE_ERROR)))
        return Clock(offset, rate, rng.uniform(0, 1e4))

    def _holder(self, region: str) -> LeaseHolder:
        return LeaseHolder(region, self.regions, LEASE, MAX_DRIFT)

    def at(self, t: float, action: Callable[[], None]) -> None:
        heapq.heappush(self.queue, (t, next(self.seq), action))

    def schedule(self) -> None:
        rng = self.rng
        horizon = rng.uniform(3, 6) * LEASE
        for g in self.gateways:
            self._start_renewing(g)
        if rng.random() < 0.5:  # the scenario that matters most: the primary cut off, and failed over at once
            start = rng.uniform(0.5, horizon / 2)
            old = self.rules[SCOPES[0]].primary
            pairs = {frozenset((old, other)) for other in self.regions if other != old}
            end = start + rng.uniform(1, 4) * LEASE
            self.at(start, lambda: self.cut.update(pairs))
            self.at(start + rng.uniform(0, 0.3) * LEASE,
                    lambda: self.failover(SCOPES[0], rng.choice([r for r in self.regions if r != old])))
            self.at(end, lambda: self._heal(pairs))
            self.faults_end = max(self.faults_end, end)
        for _ in range(rng.randint(0, 3)):  # partitions: a minority or a majority cut off from the rest
            start = rng.uniform(0, horizon)
            side = set(rng.sample(self.regions, rng.randint(1, len(self.regions) - 1)))
            pairs = {frozenset((a, b)) for a in side for b in self.regions if b not in side}
            end = start + rng.uniform(0.2, 4) * LEASE
            self.at(start, lambda pairs=pairs: self.cut.update(pairs))
            self.at(end, lambda pairs=pairs: self._heal(pairs))
            self.faults_end = max(self.faults_end, end)
        for _ in range(rng.randint(0, 2)):  # crash and restart
            g = rng.choice(self.gateways)
            start = rng.uniform(0, horizon)
            end = start + rng.uniform(0.05, 2) * LEASE
            self.at(start, lambda g=g: self.crash(g))
            self.at(end, lambda g=g: self.restart(g))
            self.faults_end = max(self.faults_end, end)
        for _ in range(rng.randint(0, 3)):  # failovers
            t = rng.uniform(0, horizon)
            scope = rng.choice(SCOPES)
            self.at(t, lambda scope=scope: self.failover(scope, rng.choice(self.regions)))
            self.faults_end = max(self.faults_end, t)
        self.end = max(horizon, self.faults_end) + (LIVENESS_LEASES + 1) * LEASE + self.delay[1] * 4
        self.at(self.end, self.check_liveness)

    def _heal(self, pairs: set[frozenset[str]]) -> None:
        self.cut -= pairs
        for region in self.regions:  # a region cut off from the rules' source catches up once it can
            self._replicate(region)

    def failover(self, scope: str, primary: str) -> None:
        rule = Known(self.rules[scope].epoch + 1, primary)
        self.rules[scope] = rule
        for region in self.regions:
            self.at(self.now + self.rng.uniform(0.01, 0.5), lambda region=region: self._replicate(region))

    def _replicate(self, region: str) -> None:
        """The region's replica learns the latest rules, unless it is cut off from every other region."""
        if len(self.regions) > 1 and all(frozenset((region, o)) in self.cut for o in self.regions if o != region):
            return
        for scope, rule in self.rules.items():
            if rule.epoch > self.known[region][scope].epoch:
                self.known[region][scope] = rule
                for g in self.by_region[region]:
                    if rule.primary != region:
                        self._stop_acknowledging(g, scope)
                    else:
                        self._start_renewing(g)

    def crash(self, g: Gateway) -> None:
        if not g.alive:
            return
        g.alive = False
        g.renewing = False
        g.incarnation += 1
        for scope in SCOPES:
            self._stop_acknowledging(g, scope)

    def restart(self, g: Gateway) -> None:
        if g.alive:
            return
        g.alive = True
        g.clock = self._clock()
        g.holder = self._holder(g.region)  # a new process: no lease
        g.renewing = False
        self._start_renewing(g)

    # -- the protocol ------------------------------------------------------------------------------------

    def send(self, src: Gateway, dst: Gateway, action: Callable[[], None]) -> None:
        lost = self.now < self.faults_end and self.rng.random() < self.loss  # loss is a fault: it ends with them
        if src.region != dst.region and (frozenset((src.region, dst.region)) in self.cut or lost):
            return
        if src.region == dst.region:
            delay = 0.0005
        elif self.extremes:  # only the shortest and the longest delay: where a margin too small shows first
            delay = self.rng.choice(self.delay)
        else:
            delay = self.rng.uniform(*self.delay)

        def deliver() -> None:
            if src.region != dst.region and frozenset((src.region, dst.region)) in self.cut:
                return  # the partition began while the packet was on its way
            action()

        self.at(self.now + delay, deliver)

    def _start_renewing(self, g: Gateway) -> None:
        """A gateway renews while its region is the primary of some scope (a keeper that sleeps otherwise)."""
        if g.alive and not g.renewing and any(k.primary == g.region for k in self.known[g.region].values()):
            g.renewing = True
            self.at(self.now + self.rng.uniform(0, g.interval), lambda: self.renew(g, g.incarnation))

    def renew(self, g: Gateway, incarnation: int) -> None:
        if not g.alive or g.incarnation != incarnation:
            return
        mine = {s: k.epoch for s, k in self.known[g.region].items() if k.primary == g.region}
        if not mine:
            g.renewing = False
            return
        now = g.clock.mono(self.now)
        round_id = g.holder.ask(mine, now)
        for region in self.regions:
            acceptor = self.rng.choice(self.by_region[region])
            self.send(g, acceptor, lambda a=acceptor, r=round_id: self.accept(a, g, incarnation, r, mine))
        # A primary without its lease asks again soon (as the keeper does): a new primary then takes the lease
        # at the first instant the old promises allow, where a wrong margin would show.
        holding = all(g.holder.valid(scope, epoch, now) for scope, epoch in mine.items())
        self.at(self.now + (g.interval if holding else EAGER), lambda: self.renew(g, incarnation))

    def accept(self, a: Gateway, asker: Gateway, incarnation: int, round_id: int, scopes: dict[str, int]) -> None:
        if not a.alive:
            return
        record = self.promises[a.region]
        read = {s: record.get(s) for s in scopes}
        wanted = {}
        for scope, epoch in scopes.items():
            answer = grant(read[scope], asker.region, epoch, self.known[a.region][scope], a.clock.wall_ms(self.now),
                           int(LEASE * 1000), int(MAX_DRIFT * 1000))
            if isinstance(answer, Promise):
                wanted[scope] = answer

        def written() -> None:  # compare-and-set: only scopes whose record did not change since it was read
            if not a.alive:
                return
            granted = [s for s, p in wanted.items() if record.get(s) == read[s]]
            for scope in granted:
                record[scope] = wanted[scope]
            if granted:
                self.send(a, asker, lambda: self.confirmed(asker, incarnation, round_id, a.region, granted))

        self.at(self.now + self.store_delay, written)

    def confirmed(self, g: Gateway, incarnation: int, round_id: int, region: str, scopes: list[str]) -> None:
        if not g.alive or g.incarnation != incarnation:
            return
        g.holder.confirmed(round_id, region, scopes)
        for scope in scopes:
            held = g.holder.until(scope)
            if held is None:
                continue
            epoch, until = held
            known = self.known[g.region][scope]
            if known.epoch != epoch or known.primary != g.region or not g.holder.valid(scope, epoch, g.clock.mono(self.now)):
                continue
            self._acknowledge_until(g, scope, g.clock.to_global(until))

    def _acknowledge_until(self, g: Gateway, scope: str, end: float) -> None:
        if end <= self.now:
            return
        if self.now >= g.ack_end.get(scope, 0.0):  # a new stretch of acknowledging starts now
            for other in self.gateways:
                if other.region != g.region and other.ack_end.get(scope, 0.0) > self.now:
                    self.violations.append(
                        f"t={self.now:.4f}: {g.name} acknowledges {scope} while {other.name} may until "
                        f"{other.ack_end[scope]:.4f}"
                    )
        self.acknowledged += end - max(self.now, g.ack_end.get(scope, self.now))
        g.ack_end[scope] = max(g.ack_end.get(scope, 0.0), end)

    def _stop_acknowledging(self, g: Gateway, scope: str) -> None:
        if g.ack_end.get(scope, 0.0) > self.now:
            g.ack_end[scope] = self.now
        g.holder.drop(scope)

    def check_liveness(self) -> None:
        for scope, rule in self.rules.items():
            holders = [g for g in self.by_region[rule.primary] if g.alive and g.ack_end.get(scope, 0.0) > self.now]
            if not holders:
                self.violations.append(
                    f"t={self.now:.2f}: no lease on {scope} (epoch {rule.epoch}, primary {rule.primary}) "
                    f"{self.now - self.faults_end:.2f}s after the last fault"
                )

    def run(self) -> Report:
        self.schedule()
        while self.queue:
            t, _, action = heapq.heappop(self.queue)
            if t > self.end:
                break
            self.now = t
            self.events += 1
            action()
        return Report(self.seed, self.violations, self.events, self.acknowledged)


def run(seed: int) -> Report:
    return Simulation(seed).run()
