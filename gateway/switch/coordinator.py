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
possible loss window (NEW's replication lag from OLD at that moment). Writes
routed under an older epoch are refused by every gateway that knows the new
rule (forwarded ones revalidate by epoch; see the dispatcher).

Invariants: every rule write is conditional on the version read (a concurrent
edit or a second coordinator loses, it never overwrites); each step is
reported with its duration; a switch that cannot finish leaves the scope
active (aborted), never ``switching`` forever — and a coordinator that died
mid-switch is recovered by ``abort`` (or the scheduler) by ``switch_id``.
"""

from __future__ import annotations

import asyncio
import uuid
from collections.abc import Awaitable, Callable, Iterable
from dataclasses import dataclass, replace
from typing import Any, Protocol

from gateway.clock import Clock
from gateway.config import Config
from gateway.errors import GatewayError
from gateway.features.items import Version
from gateway.peer.client import PeerClient
from gateway.peer.routes import BUFFER_PATH, FENCE_PATH, RULES_PATH, VERSIONS_PATH
from gateway.routing.rules import ACTIVE, SINGLE_PRIMARY, SWITCHING, Rule

#: Keys per versions request (the peer API's batch read limit).
VERSIONS_BATCH = 100
#: Pause between two checks of the new primary's replica during the fence.
FENCE_POLL = 0.05


class SwitchError(Exception):
    """The switch (or failover) is refused or failed; the message is one line for the operator."""


class MemberView(Protocol):
    region: str
    instance: str
    peer: str
    heartbeat_age: float
    epochs: dict[str, int]
    replication_lag: dict[str, float]
    stale: bool


class ControlPlane(Protocol):
    """The control and members tables in the control region (``gateway.routing.control_table.ControlTable`` is one)."""

    async def rule(self, scope: str) -> Any: ...

    async def put(self, rule: Rule, *, expect: int | None) -> None: ...

    async def members(self, *, now_us: int, expiry: float) -> list[Any]: ...


@dataclass(frozen=True, slots=True)
class Outcome:
    rule: Rule
    committed: bool
    seconds: float
    detail: str = ""


Report = Callable[[str, float, str], None]


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

    # -- reading ---------------------------------------------------------------------------------

    async def current(self, scope: str) -> Rule:
        rule = await self._control.rule(scope)
        if rule is None:
            raise SwitchError(f"there is no rule for {scope}; create one with `gatewayctl rules set`")
        if not isinstance(rule, Rule):
            raise SwitchError(f"the rule item of {scope} is malformed ({rule}); fix it with `gatewayctl rules set`")
        return rule

    async def live(self) -> list[MemberView]:
        expiry = self._config.members.expiry
        return [m for m in await self._control.members(now_us=self._clock.wall_us(), expiry=expiry) if not m.stale]

    # -- planned switch --------------------------------------------------------------------------

    async def preflight(self, rule: Rule, to: str, *, force: bool) -> list[MemberView]:
        scope = rule.scope
        if rule.mode != SINGLE_PRIMARY:
            raise SwitchError(f"{scope} is {rule.mode}: every region already takes its writes; there is no primary to switch")
        if rule.state == SWITCHING:
            raise SwitchError(
                f"a switch of {scope} to {rule.next_primary} is in progress (switch_id {rule.switch_id}); "
                f"wait for it or run `gatewayctl switch abort {scope}`"
            )
        if rule.primary is None:
            raise SwitchError(f"{scope} has no primary; set one with `gatewayctl rules set`")
        if to == rule.primary:
            raise SwitchError(f"{to} is already the primary of {scope}")
        if to not in self._config.regions:
            raise SwitchError(f"{to} is not a known region ({', '.join(self._config.regions)})")
        members = await self.live()
        if not any(m.region == to for m in members):
            raise SwitchError(f"{to} has no live gateway (members table); a switch needs gateways there to take the writes")
        if not any(m.region == rule.primary for m in members):
            raise SwitchError(
                f"{rule.primary} (the primary) has no live gateway to fence; if it is down, use `gatewayctl failover`"
            )
        lags = [m.replication_lag[rule.primary] for m in members if m.region == to and rule.primary in m.replication_lag]
        if not lags:
            raise SwitchError(f"{to} reports no replication lag from {rule.primary} yet; retry in a few seconds")
        limit = self._config.switch.max_replication_lag
        if max(lags) > limit:
            raise SwitchError(
                f"replication from {rule.primary} to {to} lags {max(lags):.2f}s (limit {limit:g}s); "
                "a fence would likely time out"
            )
        since = (self._clock.wall_ms() - rule.updated_at) / 1000
        if not force and since < self._config.switch.min_interval:
            raise SwitchError(
                f"{scope} last changed {since:.0f}s ago; switches of a scope are at least "
                f"{self._config.switch.min_interval:g}s apart (--force to switch anyway)"
            )
        return members

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
            return Outcome(rule, False, self._clock.monotonic() - started, "dry run: nothing was written")
        switching = self._edit(
            rule, state=SWITCHING, next_primary=to, switch_id=uuid.uuid4().hex[:12],
            switch_started_at=self._clock.wall_ms(),
        )
        await self.step("switching", self._control.put(switching, expect=rule.version),
                        lambda _: f"switch_id {switching.switch_id}")
        await self.step("push", self.push(switching, members), lambda n: f"{n}/{len(members)} gateways buffering")
        try:
            acknowledged = await self.step(
                "fence", self.collect_fence(switching, members, deadline),
                lambda acked: f"{len(acked)} key(s) acknowledged by {rule.primary}",
            )
            await self.step(
                "verify", self.verify_fence(switching, to, acknowledged, deadline),
                lambda _: f"every acknowledged write is in {to}",
            )
        except SwitchError as why:
            return await self._abort(switching, members, started, str(why))
        committed = self._edit(
            switching, primary=to, epoch=switching.epoch + 1, state=ACTIVE, next_primary=None, switch_id=None,
            switch_started_at=None,
        )
        await self.step("commit", self._control.put(committed, expect=switching.version),
                        lambda _: f"{to} is primary at epoch {committed.epoch}")
        await self.step("push", self.push(committed, members), lambda n: f"{n}/{len(members)} gateways routing to {to}")
        await self.step("drain", self.drained(scope, members), lambda left: (
            "every held write sent on" if not left else f"{left} write(s) still held after {self._drain_wait:g}s"
        ))
        return Outcome(committed, True, self._clock.monotonic() - started)

    async def abort(self, scope: str) -> Outcome:
        """``gatewayctl switch abort``: end a switch in progress; the old primary stays, epoch + 1."""
        started = self._clock.monotonic()
        rule = await self.current(scope)
        if rule.state != SWITCHING:
            raise SwitchError(f"{scope} is not switching (state {rule.state})")
        members = await self.live()
        return await self._abort(rule, members, started, "aborted by the operator")

    async def _abort(self, switching: Rule, members: list[MemberView], started: float, why: str) -> Outcome:
        aborted = self._edit(
            switching, epoch=switching.epoch + 1, state=ACTIVE, next_primary=None, switch_id=None, switch_started_at=None,
        )
        await self.step("abort", self._control.put(aborted, expect=switching.version),
                        lambda _: f"{why}; {aborted.primary} stays primary at epoch {aborted.epoch}")
        await self.step("push", self.push(aborted, members), lambda n: f"{n}/{len(members)} gateways routing to {aborted.primary}")
        await self.step("drain", self.drained(switching.scope, members), lambda left: (
            "every held write sent on" if not left else f"{left} write(s) still held after {self._drain_wait:g}s"
        ))
        return Outcome(aborted, False, self._clock.monotonic() - started, why)

    # -- failover --------------------------------------------------------------------------------

    async def failover(self, scope: str, to: str) -> tuple[Outcome, float | None]:
        """No fence: ``to`` becomes primary at epoch + 1 at once. Returns the possible loss window (seconds)."""
        started = self._clock.monotonic()
        rule = await self.current(scope)
        if rule.mode != SINGLE_PRIMARY or rule.primary is None:
            raise SwitchError(f"{scope} is {rule.mode}: there is no primary to fail over")
        if to == rule.primary and rule.state == ACTIVE:
            raise SwitchError(f"{to} is already the primary of {scope}")
        if to not in self._config.regions:
            raise SwitchError(f"{to} is not a known region ({', '.join(self._config.regions)})")
        members = await self.live()
        lags = [m.replication_lag[rule.primary] for m in members if m.region == to and rule.primary in m.replication_lag]
        loss_window = max(lags) if lags else None
        moved = self._edit(
            rule, primary=to, epoch=rule.epoch + 1, state=ACTIVE, next_primary=None, switch_id=None, switch_started_at=None,
        )
        await self.step("failover", self._control.put(moved, expect=rule.version),
                        lambda _: f"{to} is primary at epoch {moved.epoch} (no fence)")
        await self.step("push", self.push(moved, members), lambda n: f"{n}/{len(members)} gateways routing to {to}")
        return Outcome(moved, True, self._clock.monotonic() - started), loss_window

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

    async def collect_fence(self, switching: Rule, members: list[MemberView], deadline: float) -> list[tuple[str, str, str]]:
        """Every write OLD's gateways acknowledged recently, once none of them has one in flight."""
        old = switching.primary
        expected = {m.instance: m.peer for m in members if m.region == old}
        answered: dict[str, list[tuple[str, str, str]]] = {}
        problems: list[str] = []
        while len(answered) < len(expected):
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
        newest: dict[tuple[str, str], str] = {}
        for acked in answered.values():
            for view, key, token in acked:
                held = newest.get((view, key))
                if held is None or Version.parse(token) > Version.parse(held):
                    newest[(view, key)] = token
        return [(view, key, token) for (view, key), token in newest.items()]

    async def verify_fence(self, switching: Rule, to: str, acknowledged: list[tuple[str, str, str]], deadline: float) -> None:
        """Until NEW's replica holds every acknowledged write at least as new (per key); else ``SwitchError``."""
        pending: dict[str, dict[str, Version]] = {}
        for view, key, token in acknowledged:
            pending.setdefault(view, {})[key] = Version.parse(token)
        while True:
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
                return
            if self._clock.monotonic() >= deadline:
                count = sum(len(k) for k in pending.values())
                raise SwitchError(f"the fence timed out: {count} acknowledged write(s) not yet in {to}")
            await self._sleep(FENCE_POLL)


def members_of(members: Iterable[MemberView], region: str) -> list[MemberView]:
    return [m for m in members if m.region == region]
