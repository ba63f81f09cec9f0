"""The switch coordinator: planned primary switches, their abort, and failover (DESIGN.md §7).

A planned switch of a scope from its primary OLD to NEW, run by
``gatewayctl switch`` or by the gateway that holds the scheduler lease:

1. **Preflight**: the rule is single_primary and active with exactly one
   primary; NEW is another known region with live gateways; OLD has live
   gateways (else it is a failover); NEW's replication lag from OLD is under
   ``switch.max_replication_lag``; the last change of the scope is at least
   ``switch.min_interval`` old (anti-flap) unless forced.
2. **Switching**: the rule becomes ``state=switching, next_primary=NEW,
   switch_id`` (conditional on its version) and is pushed to every live
   gateway, which starts buffering the scope's writes at once (the others
   learn it from their control-table replica, or from a 409 of OLD).
3. **Fence**: each of OLD's gateways learns the switching rule (new writes
   buffered, forwarded ones refused), waits for its in-flight writes, and
   lists what it acknowledged recently; the coordinator then checks each key's
   version in NEW's replica, per key (global tables order per item only),
   until every one is there at least as new.
4. **Commit**: ``primary=NEW, epoch+1, state=active`` (conditional on the
   switching rule's version, so on its ``switch_id``), pushed to every live
   gateway; buffers drain to NEW. If the fence is not verified within
   ``max_duration``, **abort**: OLD stays primary, epoch + 1, buffers drain
   there.
5. **Drain**: the switch is over for callers once every gateway has sent
   on what it held; the coordinator waits for that (bounded by
   ``max_duration``) and reports it, so the duration it prints covers every
   write the switch held.

Failover skips the fence: ``primary=NEW, epoch+1`` at once, and reports the
possible loss window: NEW's replication lag from OLD as sampled when OLD's
last heartbeat arrived, i.e. just before OLD stopped answering. Writes
routed under an older epoch are refused by every gateway that knows the new
rule (forwarded ones revalidate by epoch; see the dispatcher).

Progress: while the fence is collected and verified the coordinator reports
a ``SwitchProgress`` (step, elapsed, gateways answered, keys verified of
total) to its sink once a second, and at each step; with each report it
re-reads the rule, so a switch ended elsewhere (``switch abort`` from another
terminal) stops at once and says who ended it and what the rule is now.

Invariants: every rule write is conditional on the version read (a concurrent
edit or a second coordinator loses, it never overwrites); each step is
reported with its duration; a switch that cannot finish leaves the scope
active (aborted), never ``switching`` forever — and a coordinator that died
mid-switch is recovered by ``abort`` (or the scheduler) by ``switch_id``.
"""

from __future__ import annotations

import asyncio
import math
import uuid
from collections.abc import Awaitable, Callable, Iterable
from dataclasses import asdict, dataclass, field, replace
from typing import Any, Protocol

from gateway.clock import Clock
from gateway.config import Config
from gateway.errors import GatewayError
from gateway.features.items import Version
from gateway.peer.client import PeerClient
from gateway.peer.routes import BUFFER_PATH, FENCE_PATH, ROUTING_PATH, RULES_PATH, VERSIONS_PATH
from gateway.routing.control_table import RuleConflict
from gateway.routing.rules import ACTIVE, SINGLE_PRIMARY, SWITCHING, Rule

#: Keys per versions request (the peer API's batch read limit).
VERSIONS_BATCH = 100
#: Pause between two checks of the new primary's replica during the fence.
FENCE_POLL = 0.05
#: Seconds between two progress reports of a running switch (and checks that no one else ended it).
PROGRESS_INTERVAL = 1.0


class SwitchError(Exception):
    """The switch (or failover) is refused or failed; the message is one line for the operator."""


class Overtaken(Exception):
    """The rule no longer carries this switch: someone else (``switch abort``, a failover) ended it."""

    def __init__(self, rule: Rule | None) -> None:
        super().__init__(rule)
        self.rule = rule


class MemberView(Protocol):
    region: str
    instance: str
    peer: str
    heartbeat_age: float
    epochs: dict[str, int]
    replication_lag: dict[str, float]
    #: The lag measured when each region's newest heartbeat arrived (it stops moving when that region goes quiet).
    replication_lag_sampled: dict[str, float]
    stale: bool


class ControlPlane(Protocol):
    """The control and members tables in the control region (``gateway.routing.control_table.ControlTable`` is one)."""

    async def rule(self, scope: str) -> Any: ...

    async def put(self, rule: Rule, *, expect: int | None) -> Rule: ...

    def written(self) -> str: ...

    async def members(self, *, now_us: int, expiry: float) -> list[Any]: ...


@dataclass(frozen=True, slots=True)
class Outcome:
    rule: Rule
    committed: bool
    seconds: float
    detail: str = ""
    #: Someone else ended the switch while it ran (``switch abort``, a failover); ``detail`` says who.
    overtaken: bool = False


@dataclass(frozen=True, slots=True)
class Check:
    """One preflight check and its result; ``detail`` says what was found, and on failure what to do."""

    name: str
    passed: bool
    detail: str


@dataclass(slots=True)
class SwitchProgress:
    """What a running switch has done so far: reported each second and kept for ``gatewayctl switch status``.

    ``outcome`` is empty while it runs, then ``committed``, ``aborted`` or ``overtaken`` (ended by someone else).
    """

    scope: str
    from_region: str
    to_region: str
    switch_id: str
    by: str
    started_at_ms: int
    step: str = "switching"
    elapsed: float = 0.0
    gateways_answered: int = 0
    gateways_total: int = 0
    keys_verified: int = 0
    keys_total: int = 0
    outcome: str = ""
    detail: str = ""
    #: When progress was last published (the coordinator's monotonic clock); not part of the record.
    last_report: float = field(default=-math.inf, repr=False)

    def to_json(self) -> dict[str, Any]:
        body = asdict(self)
        del body["last_report"]
        body["elapsed"] = round(self.elapsed, 3)
        return body

    @classmethod
    def from_json(cls, body: dict[str, Any]) -> SwitchProgress:
        known = {k: v for k, v in body.items() if k in cls.__dataclass_fields__ and k != "last_report"}
        return cls(**known)


Report = Callable[[str, float, str], None]
#: Receives a running switch's progress: each step, and each second while it waits on the fence.
ProgressSink = Callable[[SwitchProgress], Awaitable[None]]


async def _no_progress(progress: SwitchProgress) -> None:
    return None


class SwitchCoordinator:
    def __init__(
        self,
        config: Config,
        control: ControlPlane,
        peers: PeerClient,
        clock: Clock,
        *,
        by: str,
        report: Report = lambda step, seconds, detail: None,
        progress: ProgressSink = _no_progress,
        sleep: Callable[[float], Awaitable[None]] = asyncio.sleep,
    ) -> None:
        self._config = config
        self._control = control
        self._peers = peers
        #: Every deadline and duration of a switch reads this clock's ``monotonic()`` and waits with ``sleep``.
        self._clock = clock
        self._sleep = sleep
        self._by = by
        self._report = report
        self._progress = progress

    # -- reading ---------------------------------------------------------------------------------

    async def current(self, scope: str) -> Rule:
        rule = await self._control.rule(scope)
        if rule is None:
            raise SwitchError(f"there is no rule for {scope}; create one with `gatewayctl rules set {scope} --primary REGION`")
        if not isinstance(rule, Rule):
            raise SwitchError(f"the rule item of {scope} is malformed ({getattr(rule, 'reason', rule)}); delete it with "
                              f"`gatewayctl rules delete {scope}` and set it again with `gatewayctl rules set`")
        return rule

    async def live(self) -> list[MemberView]:
        expiry = self._config.members.expiry
        return [m for m in await self._control.members(now_us=self._clock.wall_us(), expiry=expiry) if not m.stale]

    # -- planned switch --------------------------------------------------------------------------

    async def checks(self, rule: Rule, to: str, *, force: bool) -> tuple[list[Check], list[MemberView]]:
        """Every preflight check, each with its result (a dry run prints them all), and the live members read."""
        scope, old = rule.scope, rule.primary
        members = await self.live()
        found: list[Check] = []

        def check(name: str, passed: bool, ok: str, refused: str) -> None:
            found.append(Check(name, passed, ok if passed else refused))

        check("mode", rule.mode == SINGLE_PRIMARY, f"{scope} is single_primary",
              f"{scope} is {rule.mode}: every region already takes its writes; there is no primary to switch")
        check("state", rule.state != SWITCHING, f"{scope} is {rule.state}",
              f"a switch of {scope} to {rule.next_primary} is in progress (switch_id {rule.switch_id}); "
              f"wait for it (`gatewayctl switch status {scope} --watch`) or run `gatewayctl switch abort {scope}`")
        check("primary", old is not None, f"{old} is the primary at epoch {rule.epoch}",
              f"{scope} has no primary; set one with `gatewayctl rules set {scope} --primary REGION`")
        known = ", ".join(self._config.regions)
        if to not in self._config.regions:
            found.append(Check("target", False, f"{to} is not a known region ({known}); pick one of them with --to"))
        elif to not in self._config.primary_regions:
            found.append(Check("target", False, f"{to} is a witness region: it takes no feature traffic, so it cannot "
                                                 "be a primary; pick another with --to"))
        else:
            check("target", to != old, f"{to} is another known region",
                  f"{to} is already the primary of {scope}; nothing to switch (pick another region with --to)")
        there = sum(1 for m in members if m.region == to)
        check("target gateways", there > 0, f"{there} live gateway(s) in {to}",
              f"{to} has no live gateway (members table); a switch needs gateways there to take the writes: "
              f"start them, or pick another --to (`gatewayctl members` shows the fleet)")
        if old is not None:
            here = sum(1 for m in members if m.region == old)
            check("primary gateways", here > 0, f"{here} live gateway(s) in {old} to fence",
                  f"{old} (the primary) has no live gateway to fence; if it is down, use "
                  f"`gatewayctl failover {scope} --to {to}`")
            lags = [m.replication_lag[old] for m in members if m.region == to and old in m.replication_lag]
            limit = self._config.switch.max_replication_lag
            if not lags:
                found.append(Check("replication lag", False,
                                   f"{to} reports no replication lag from {old} yet; retry in a few seconds"))
            else:
                check("replication lag", max(lags) <= limit,
                      f"{old} -> {to} lags {max(lags):.2f}s (limit {limit:g}s)",
                      f"replication from {old} to {to} lags {max(lags):.2f}s (limit {limit:g}s); "
                      "a fence would likely time out: retry when it has caught up (`gatewayctl members` shows the lag)")
        since = (self._clock.wall_ms() - rule.updated_at) / 1000
        interval = self._config.switch.min_interval
        if force:
            found.append(Check("min interval", True, f"last changed {since:.0f}s ago; --force skips the anti-flap check"))
        else:
            wait = max(1, math.ceil(interval - since))
            check("min interval", since >= interval, f"last changed {since:.0f}s ago (at least {interval:g}s apart)",
                  f"{scope} last changed {since:.0f}s ago; switches of a scope are at least {interval:g}s apart: "
                  f"retry in {wait} s (or pass --force to switch anyway)")
        return found, members

    async def preflight(self, rule: Rule, to: str, *, force: bool) -> list[MemberView]:
        """The live members if every check passes; else ``SwitchError`` with the first failed check's message."""
        found, members = await self.checks(rule, to, force=force)
        for failed in (c for c in found if not c.passed):
            raise SwitchError(failed.detail)
        return members

    async def dry_run(self, scope: str, to: str, *, force: bool = False) -> list[Check]:
        """Every preflight check of a switch of ``scope`` to ``to``, run and reported; nothing is written."""
        return (await self.checks(await self.current(scope), to, force=force))[0]

    async def switch(self, scope: str, to: str, *, dry_run: bool = False, max_duration: float | None = None,
                     force: bool = False) -> Outcome:
        started = self._clock.monotonic()
        deadline = started + (max_duration or self._config.switch.max_duration)
        rule = await self.current(scope)
        members = await self.step("preflight", self.preflight(rule, to, force=force), lambda _: (
            f"{rule.primary} -> {to}, epoch {rule.epoch} -> {rule.epoch + 1}, "
            f"{sum(1 for m in members_of(_, to))} gateway(s) in {to}"
        ))
        if dry_run:
            return Outcome(rule, False, self._clock.monotonic() - started, "preflight passed; nothing was written")
        switching = self._edit(
            rule, state=SWITCHING, next_primary=to, switch_id=uuid.uuid4().hex[:12],
            switch_started_at=self._clock.wall_ms(),
        )
        progress = SwitchProgress(scope, rule.primary or "", to, switching.switch_id or "", self._by,
                                  switching.switch_started_at or 0)
        await self.step("switching", self._control.put(switching, expect=rule.version),
                        lambda _: f"switch_id {switching.switch_id}, {self._control.written()}")
        await self._publish(progress, started, "push")
        await self.step("push", self.push(switching, members), lambda n: f"{n}/{len(members)} gateways buffering")
        try:
            await self._publish(progress, started, "fence")
            acknowledged = await self.step(
                "fence", self.collect_fence(switching, members, deadline, progress, started),
                lambda acked: f"{len(acked)} key(s) acknowledged by {rule.primary}",
            )
            progress.keys_total = len(acknowledged)
            await self._publish(progress, started, "verify")
            await self.step(
                "verify", self.verify_fence(switching, to, acknowledged, deadline, progress, started),
                lambda _: f"every acknowledged write is in {to}",
            )
        except Overtaken as ended:
            return await self._overtaken(switching, ended.rule, progress, started)
        except SwitchError as why:
            return await self._abort(switching, members, started, str(why), progress)
        committed = self._edit(
            switching, primary=to, epoch=switching.epoch + 1, state=ACTIVE, next_primary=None, switch_id=None,
            switch_started_at=None,
        )
        await self._publish(progress, started, "commit")
        try:
            await self.step("commit", self._control.put(committed, expect=switching.version),
                            lambda _: f"{to} is primary at epoch {committed.epoch}, {self._control.written()}")
        except RuleConflict:
            return await self._overtaken(switching, await self._stored(scope), progress, started)
        await self._publish(progress, started, "push")
        await self.step("push", self.push(committed, members), lambda n: f"{n}/{len(members)} gateways routing to {to}")
        await self._publish(progress, started, "drain")
        await self.step("drain", self.drained(scope, members), lambda left: (
            "every held write sent on" if not left else f"{left} write(s) still held after {self._drain_wait:g}s"
        ))
        outcome = Outcome(committed, True, self._clock.monotonic() - started)
        await self._publish(progress, started, "done", outcome="committed",
                            detail=f"{to} is primary at epoch {committed.epoch}")
        return outcome

    async def abort(self, scope: str) -> Outcome:
        """``gatewayctl switch abort``: end a switch in progress; the old primary stays, epoch + 1."""
        started = self._clock.monotonic()
        rule = await self.current(scope)
        if rule.state != SWITCHING:
            raise SwitchError(f"{scope} is not switching (state {rule.state}, primary {rule.primary}); nothing to abort")
        members = await self.live()
        progress = SwitchProgress(scope, rule.primary or "", rule.next_primary or "", rule.switch_id or "", self._by,
                                  rule.switch_started_at or 0)
        return await self._abort(rule, members, started, f"aborted by {self._by}", progress)

    async def _abort(self, switching: Rule, members: list[MemberView], started: float, why: str,
                     progress: SwitchProgress) -> Outcome:
        aborted = self._edit(
            switching, epoch=switching.epoch + 1, state=ACTIVE, next_primary=None, switch_id=None, switch_started_at=None,
        )
        await self._publish(progress, started, "abort")
        try:
            await self.step("abort", self._control.put(aborted, expect=switching.version),
                            lambda _: f"{why}; {aborted.primary} stays primary at epoch {aborted.epoch}")
        except RuleConflict:
            return await self._overtaken(switching, await self._stored(switching.scope), progress, started)
        await self.step("push", self.push(aborted, members), lambda n: f"{n}/{len(members)} gateways routing to {aborted.primary}")
        await self.step("drain", self.drained(switching.scope, members), lambda left: (
            "every held write sent on" if not left else f"{left} write(s) still held after {self._drain_wait:g}s"
        ))
        await self._publish(progress, started, "done", outcome="aborted",
                            detail=f"{why}; {aborted.primary} stays primary at epoch {aborted.epoch}")
        return Outcome(aborted, False, self._clock.monotonic() - started, why)

    async def _stored(self, scope: str) -> Rule | None:
        rule = await self._control.rule(scope)
        return rule if isinstance(rule, Rule) else None

    async def _overtaken(self, switching: Rule, now: Rule | None, progress: SwitchProgress, started: float) -> Outcome:
        """Someone else ended this switch: say who, and what the rule says now; write nothing more."""
        if now is None:
            detail = f"the rule of {switching.scope} was removed while it switched; nothing more was written"
            rule = switching
        else:
            how = "aborted" if now.primary == switching.primary else f"ended ({now.primary} made primary)"
            detail = (f"{how} by {now.updated_by or 'unknown'} while it ran; {now.scope} is {now.state} with "
                      f"{now.primary} primary at epoch {now.epoch} (version {now.version}); nothing more was written")
            rule = now
        await self._publish(progress, started, "done", outcome="overtaken", detail=detail)
        return Outcome(rule, False, self._clock.monotonic() - started, detail, overtaken=True)

    async def _publish(self, progress: SwitchProgress, started: float, step: str | None = None, **done: str) -> None:
        """Report the switch's progress now (a new step, or its end): to the sink, best effort."""
        if step is not None:
            progress.step = step
        for name, value in done.items():
            setattr(progress, name, value)
        progress.elapsed = self._clock.monotonic() - started
        progress.last_report = self._clock.monotonic()
        await self._progress(progress)

    async def _tick(self, switching: Rule, progress: SwitchProgress | None, started: float) -> None:
        """Once a second while the fence waits: report progress, and stop if the rule no longer carries this switch."""
        if progress is None or self._clock.monotonic() - progress.last_report < PROGRESS_INTERVAL:
            return
        await self._publish(progress, started)
        now = await self._control.rule(switching.scope)
        if not isinstance(now, Rule) or now.switch_id != switching.switch_id:
            raise Overtaken(now if isinstance(now, Rule) else None)

    # -- failover --------------------------------------------------------------------------------

    async def failover(self, scope: str, to: str) -> tuple[Outcome, float | None]:
        """No fence: ``to`` becomes primary at epoch + 1 at once. Returns the possible loss window (seconds).

        The loss window is the replication lag from the old primary to ``to`` as ``to``'s gateways last
        measured it, when the old primary's newest heartbeat arrived: the lag just before it went quiet,
        which stays put however long the failover waits (its heartbeat age would grow instead).
        """
        started = self._clock.monotonic()
        rule = await self.current(scope)
        if rule.mode != SINGLE_PRIMARY or rule.primary is None:
            raise SwitchError(f"{scope} is {rule.mode}: there is no primary to fail over; every region takes its writes")
        if to == rule.primary and rule.state == ACTIVE:
            raise SwitchError(f"{to} is already the primary of {scope}; nothing to fail over")
        if to not in self._config.regions:
            raise SwitchError(f"{to} is not a known region ({', '.join(self._config.regions)}); pick one of them with --to")
        if to not in self._config.primary_regions:
            raise SwitchError(f"{to} is a witness region: it takes no feature traffic, so it cannot be a primary; pick "
                              "another with --to")
        members = await self.live()
        loss_window = self.loss_window(rule, to, members)
        moved = self._edit(
            rule, primary=to, epoch=rule.epoch + 1, state=ACTIVE, next_primary=None, switch_id=None, switch_started_at=None,
        )
        await self.step("failover", self._control.put(moved, expect=rule.version),
                        lambda _: f"{to} is primary at epoch {moved.epoch} (no fence), {self._control.written()}")
        await self.step("push", self.push(moved, members), lambda n: f"{n}/{len(members)} gateways routing to {to}")
        # The old primary's gateways may hold a lease the regions promised before they knew of the new epoch: it
        # ends within a lease (and the clocks' drift) of now, and only then can the new primary take its own.
        routing = self._config.routing
        wait = routing.lease + routing.max_drift
        await self.step("lease", self._sleep(wait), lambda _: (
            f"waited out {rule.primary}'s lease ({routing.lease:g} s + {routing.max_drift:g} s drift): it acknowledges "
            f"no more writes of {scope}, and {to} takes them"))
        return Outcome(moved, True, self._clock.monotonic() - started), loss_window

    @staticmethod
    def loss_window(rule: Rule, to: str, members: Iterable[MemberView]) -> float | None:
        """The largest lag from the primary that ``to``'s gateways sampled at its last heartbeat; None if none did."""
        old = rule.primary or ""
        lags = [m.replication_lag_sampled[old] for m in members if m.region == to and old in m.replication_lag_sampled]
        return max(lags) if lags else None

    async def primary_answers(self, rule: Rule) -> tuple[int, int]:
        """(answered, asked): how many live gateways of the primary's region answer their peer API now."""
        addresses = {m.peer for m in await self.live() if m.region == rule.primary and m.peer}

        async def one(address: str) -> bool:
            try:
                await self._peers.call_address(address, ROUTING_PATH, {}, region=rule.primary or "", timeout=1.0)
            except GatewayError:
                return False
            return True

        answers = await asyncio.gather(*(one(a) for a in sorted(addresses)))
        return sum(answers), len(addresses)

    # -- steps -----------------------------------------------------------------------------------

    async def step(self, name: str, work: Any, describe: Callable[[Any], str]) -> Any:
        started = self._clock.monotonic()
        result = await work
        self._report(name, self._clock.monotonic() - started, describe(result))
        return result

    def _edit(self, rule: Rule, **changes: Any) -> Rule:
        return replace(rule, **changes, version=rule.version + 1, updated_by=self._by, updated_at=self._clock.wall_ms())

    async def push(self, rule: Rule, members: Iterable[MemberView]) -> int:
        """Tell every live gateway the rule now (best effort): how many took it. The rest learn it from their replica."""
        addresses = {(m.peer, m.region) for m in members if m.peer}

        async def one(address: str, region: str) -> bool:
            try:
                answer = await self._peers.call_address(address, RULES_PATH, {"rules": [rule.to_json()]}, region=region, timeout=1.0)
            except GatewayError:
                return False
            seen = answer.get("rules", {}).get(rule.scope, {})
            return seen.get("epoch") == rule.epoch and seen.get("state") == rule.state

        results = await asyncio.gather(*(one(a, r) for a, r in addresses))
        return sum(results)

    @property
    def _drain_wait(self) -> float:
        return self._config.switch.max_duration

    async def drained(self, scope: str, members: Iterable[MemberView]) -> int:
        """Wait until no live gateway holds or sends on a write of ``scope``; how many are left (0: all drained)."""
        addresses = {(m.peer, m.region) for m in members if m.peer}
        give_up = self._clock.monotonic() + self._drain_wait

        async def pending(address: str, region: str) -> int:
            try:
                answer = await self._peers.call_address(address, BUFFER_PATH, {"scope": scope}, region=region, timeout=1.0)
            except GatewayError:
                return 0  # unreachable: nothing we can wait for there
            return int(answer.get("held", 0)) + int(answer.get("outstanding", 0))

        while True:
            left = sum(await asyncio.gather(*(pending(a, r) for a, r in addresses)))
            if left == 0 or self._clock.monotonic() >= give_up:
                return left
            await self._sleep(FENCE_POLL)

    async def collect_fence(self, switching: Rule, members: list[MemberView], deadline: float,
                            progress: SwitchProgress | None = None, started: float = 0.0) -> list[tuple[str, str, str]]:
        """Every write OLD's gateways acknowledged recently, once none of them has one in flight."""
        old = switching.primary
        expected = {m.instance: m.peer for m in members if m.region == old}
        answered: dict[str, list[tuple[str, str, str]]] = {}
        problems: list[str] = []
        while len(answered) < len(expected):
            if progress is not None:
                progress.gateways_answered, progress.gateways_total = len(answered), len(expected)
            await self._tick(switching, progress, started)
            remaining = deadline - self._clock.monotonic()
            if remaining <= 0:
                missing = sorted(set(expected) - set(answered))
                raise SwitchError(f"the fence timed out: no complete answer from {', '.join(missing)} ({'; '.join(problems[-3:])})")
            for address in sorted({p for i, p in expected.items() if i not in answered}):
                try:
                    # A new connection per call: workers of one address share the port, and each must answer.
                    answer = await self._peers.call_address(
                        address, FENCE_PATH, {"rule": switching.to_json(), "timeout": max(0.1, min(2.0, remaining))},
                        region=old or "", timeout=remaining + 0.5, new_connection=True,
                    )
                except GatewayError as exc:
                    problems.append(str(exc))
                    await self._sleep(FENCE_POLL)
                    continue
                if answer.get("complete"):
                    answered[answer["instance"]] = [tuple(a) for a in answer.get("acknowledged", [])]  # type: ignore[misc]
                else:
                    problems.append(f"{answer.get('instance')}: writes still in flight or too many keys to prove")
                    # An overflowed log answers at once: without a pause this would ask again in a busy loop.
                    await self._sleep(FENCE_POLL)
        if progress is not None:
            progress.gateways_answered, progress.gateways_total = len(answered), len(expected)
        newest: dict[tuple[str, str], str] = {}
        for acked in answered.values():
            for view, key, token in acked:
                held = newest.get((view, key))
                if held is None or Version.parse(token) > Version.parse(held):
                    newest[(view, key)] = token
        return [(view, key, token) for (view, key), token in newest.items()]

    async def verify_fence(self, switching: Rule, to: str, acknowledged: list[tuple[str, str, str]], deadline: float,
                           progress: SwitchProgress | None = None, started: float = 0.0) -> None:
        """Until NEW's replica holds every acknowledged write at least as new (per key); else ``SwitchError``."""
        pending: dict[str, dict[str, Version]] = {}
        for view, key, token in acknowledged:
            pending.setdefault(view, {})[key] = Version.parse(token)
        while True:
            if progress is not None:
                progress.keys_total = len(acknowledged)
                progress.keys_verified = len(acknowledged) - sum(len(k) for k in pending.values())
            await self._tick(switching, progress, started)
            for view, keys in list(pending.items()):
                names = list(keys)
                for i in range(0, len(names), VERSIONS_BATCH):
                    batch = names[i:i + VERSIONS_BATCH]
                    try:
                        answer = await self._peers.call(to, VERSIONS_PATH, {"view": view, "keys": batch})
                    except GatewayError:
                        continue
                    for key, token in zip(batch, answer.get("versions", [])):
                        if token is not None and Version.parse(token) >= keys[key]:
                            del keys[key]
                if not keys:
                    del pending[view]
            if not pending:
                if progress is not None:
                    progress.keys_verified = progress.keys_total = len(acknowledged)
                return
            if self._clock.monotonic() >= deadline:
                count = sum(len(k) for k in pending.values())
                raise SwitchError(f"the fence timed out: {count} acknowledged write(s) not yet in {to}")
            await self._sleep(FENCE_POLL)


def members_of(members: Iterable[MemberView], region: str) -> list[MemberView]:
    return [m for m in members if m.region == region]
