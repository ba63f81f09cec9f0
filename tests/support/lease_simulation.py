"""A deterministic simulation of primacy leases (gateway/lease/): one process, an injected clock and network.

Regions of one or two gateways each; every region's promises in one record per scope with compare-and-set
writes (what the control table's per-region item gives in production). A seeded schedule draws clock offsets
within ``max_drift`` and monotonic rates within ``RATE_ERROR``, message delays and losses, partitions between
sets of regions, gateway crashes and restarts, and failovers. A failover is proposed from a region chosen at
random (where its operator or scheduler runs) and decided, or not, by the majority control plane's rule
(gateway/consensus/ballots.py: prepare and accept with every region's acceptor slot, over the same lossy,
partitioned network, retried with a higher ballot); two failovers may run at once. A decided rule is learned by
each region after its own replication delay, and not at all across a partition until it heals.

Checked on every schedule:
- safety: at no instant do two regions acknowledge writes of one scope (a gateway acknowledges while its
  ``LeaseHolder`` says valid; the instant is global time, converted from the gateway's own clock);
- a decided rule never goes back: each decided change of a scope descends from the one decided before it (made
  from it, or from changes a minority accepted that were made from it), so two changes made from one rule cannot
  both take effect, and the epochs decided only rise;
- liveness: once the faults end (partitions, losses, crashes, failovers), within ``LIVENESS_LEASES`` leases the
  primary of the last decided rule holds a lease.

``run(seed)`` returns a ``Report``; the same seed replays the same schedule, event for event.
"""

from __future__ import annotations

import heapq
import itertools
import random
from collections.abc import Callable
from dataclasses import dataclass, field

from gateway.consensus.ballots import EMPTY, Slot, ballot, chosen, on_accept, on_prepare
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


@dataclass(frozen=True)
class Change:
    """A value of a scope's rule register: the rule, and which change it was made from (``base``, an id)."""

    rule: Known
    id: int
    base: int


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
        #: region -> scope -> that region's acceptor slot of the scope's rule (durable: crashes keep it).
        self.slots: dict[str, dict[str, Slot]] = {r: {} for r in self.regions}
        #: scope -> the changes decided, in the order they were; every change proposed, by id.
        self.decided: dict[str, list[Change]] = {s: [Change(self.rules[s], 0, -1)] for s in SCOPES}
        self.changes: dict[int, Change] = {0: self.decided[SCOPES[0]][0]}
        self.proposals = itertools.count(1)
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

    # -- the majority control plane -------------------------------------------------------------------

    def failover(self, scope: str, primary: str) -> None:
        """An operator (or a scheduler) in a random region fails ``scope`` over to ``primary``."""
        self.propose(scope, primary, self.rng.choice(self.regions), attempts=3, proposed=None)

    def propose(self, scope: str, primary: str, origin: str, attempts: int, proposed: Change | None) -> None:
        # Ballots from the proposer's (drifting) wall clock, ties broken by its name, as in production.
        b = ballot(max(1, self.rng.choice(self.gateways).clock.wall_ms(self.now) + 10**6), f"{origin}-{next(self.proposals)}")
        replies: dict[str, Slot | None] = {}
        state = {"accepting": False, "proposed": proposed, "accepted": set(), "done": False}

        def promised(region: str, slot: Slot | None) -> None:
            replies[region] = slot
            ok = [s for s in replies.values() if s is not None]
            if state["accepting"] or len(ok) < self.majority:
                return
            state["accepting"] = True
            current = chosen(ok) or self.decided[scope][0]
            mine = state["proposed"]
            if mine is not None and current == mine:
                new = mine  # its own change, accepted by some in an earlier round: proposed again as it is
            else:
                new = Change(Known(current.rule.epoch + 1, primary), next(self.proposals), current.id)
                self.changes[new.id] = new
            state["proposed"] = new
            for region in self.regions:
                self._to_acceptor(origin, region, lambda r=region: on_accept(self._slot(r, scope), b, new),
                                  scope, lambda r, slot: accepted(r, slot, new))

        def accepted(region: str, slot: Slot | None, new: Change) -> None:
            if slot is None or state["done"]:
                return
            state["accepted"].add(region)
            if len(state["accepted"]) >= self.majority:
                state["done"] = True
                self._decide(scope, new)

        def retry() -> None:
            if not state["done"] and attempts > 1:
                self.propose(scope, primary, origin, attempts - 1, state["proposed"])

        for region in self.regions:
            self._to_acceptor(origin, region, lambda r=region: on_prepare(self._slot(r, scope), b), scope, promised)
        # No majority within two of the longest round trips: try again with a higher ballot.
        self.at(self.now + 4 * self.delay[1] + 4 * self.store_delay + 0.01, retry)

    def _slot(self, region: str, scope: str) -> Slot:
        return self.slots[region].get(scope, EMPTY)

    def _to_acceptor(self, origin: str, region: str, change: Callable[[], Slot | None], scope: str,
                     reply: Callable[[str, Slot | None], None]) -> None:
        """A message to ``region``'s acceptor: it applies ``change`` to its slot (a conditional write in its own
        replica) and answers the slot after it, or ``None`` for no."""

        def at_acceptor() -> None:
            def written() -> None:
                after = change()
                if after is not None:
                    self.slots[region][scope] = after
                self._between(region, origin, lambda: reply(region, after))
            self.at(self.now + self.store_delay, written)

        self._between(origin, region, at_acceptor)

    def _between(self, src: str, dst: str, action: Callable[[], None]) -> None:
        """A message between two regions (any gateway of each) over the simulated network."""
        self.send(self.by_region[src][0], self.by_region[dst][0], action)

    def _ancestry(self, change: Change) -> set[int]:
        """``change`` and every change it was made from, by id."""
        found, at = set(), change.id
        while at in self.changes and at not in found:
            found.add(at)
            at = self.changes[at].base
        return found

    def _decide(self, scope: str, change: Change) -> None:
        history = self.decided[scope]
        if change.id in self._ancestry(history[-1]):
            # Decided before the last one, its proposer learning it only now (its answers were slow), or the same
            # change decided again (a proposer's retry found it current and proposed it again).
            return
        ancestor = change.base
        decided = {c.id for c in history}
        while ancestor not in decided and ancestor in self.changes:
            ancestor = self.changes[ancestor].base
        if ancestor != history[-1].id or change.rule.epoch <= history[-1].rule.epoch:
            self.violations.append(f"t={self.now:.4f}: {scope} decided {change.rule} after {history[-1].rule}, not made "
                                   "from it: a decided rule went back, or two changes of one rule both took effect")
        history.append(change)
        if change.rule.epoch > self.rules[scope].epoch:
            self.rules[scope] = change.rule
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
