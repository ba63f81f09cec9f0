"""The lease keeper of one gateway: renews its region's primacy leases, and says whether a write may be acknowledged.

Every ``lease / 3`` (every ``lease / 20`` while a scope it is primary of has no lease, so that a new primary
takes its lease at the first instant the old promises allow; and at once when a rule makes this region a scope's
primary, ``rules_changed``: a switch's held writes wait for that first lease), the keeper asks every region, its
own included, to confirm the scopes its routing snapshot says this region is the active primary of: one request per region
per round whatever the number of scopes, its own region's answered by its own ``PromiseBook``, the others' by
``POST /internal/v1/lease`` to a gateway of that region. ``LeaseHolder`` turns a round's answers into leases.

Invariants:
- ``valid(scope, epoch)`` is true only while a majority of the regions' promises, given to this region at that
  epoch, are live (``LeaseHolder``); the dispatcher acknowledges a single-primary write only then.
- A round never outlives a third of a lease: a region that does not answer in time simply did not confirm.
- The keeper is a background task of the gateway (gateway/server.py): started with it, stopped with it.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Awaitable, Callable, Mapping
from typing import Any

from gateway.clock import Clock
from gateway.errors import GatewayError
from gateway.lease.book import PromiseBook
from gateway.lease.holder import LeaseHolder
from gateway.lease.promises import Known
from gateway.peer.routes import LEASE_PATH
from gateway.routing.rules import ACTIVE, SINGLE_PRIMARY, Rule, RuleError, rule_from_json
from gateway.routing.snapshot import RoutingTable

log = logging.getLogger(__name__)

#: Rounds per lease while the lease is held; and while it is not.
ROUNDS_PER_LEASE = 3
EAGER_ROUNDS_PER_LEASE = 20


class LeaseKeeper:
    def __init__(
        self,
        region: str,
        regions: list[str],
        book: PromiseBook,
        call: Callable[[str, str, dict[str, Any]], Awaitable[dict[str, Any]]],
        rules: Callable[[], Mapping[str, Any]],
        clock: Clock,
        lease: float,
        max_drift: float,
        sleep: Callable[[float], Awaitable[None]] = asyncio.sleep,
        learn: Callable[[list[Rule]], object] = lambda rules: None,
    ) -> None:
        """``call(region, path, body)`` reaches a gateway of ``region`` (``PeerClient.call``); ``rules()`` is the
        routing snapshot's rules by scope; ``learn(rules)`` (``RoutingLoader.learn``) takes the newer rules a
        refusing region answers with: a deposed primary that was cut off learns its successor at the first
        round after the cut heals, before its replica has caught up."""
        self.region = region
        self.regions = regions
        self.holder = LeaseHolder(region, regions, lease, max_drift)
        self._book = book
        self._call = call
        self._rules = rules
        self._clock = clock
        self._lease = lease
        self._sleep = sleep
        self._learn = learn
        #: Set after every round: writes waiting for a lease look again.
        self._round_done = asyncio.Event()
        #: The round under way, if any (a handover waits for it: its answers must not renew what it gives up).
        self._current: asyncio.Task[None] | None = None
        #: Set when a rule made this region a scope's primary since the round began: the pause ends at once.
        self._woken = asyncio.Event()

    def primary_scopes(self, rules: Mapping[str, Rule] | None = None) -> dict[str, int]:
        """The scopes this region is the active primary of, by the snapshot (or ``rules``), with their epochs."""
        return {
            scope: rule.epoch for scope, rule in (self._rules() if rules is None else rules).items()
            if rule.mode == SINGLE_PRIMARY and rule.state == ACTIVE and rule.primary == self.region
        }

    def rules_changed(self, old: RoutingTable | None, new: RoutingTable) -> None:
        """A routing loader listener: a scope this region has just become the primary of (a switch committed, a
        failover) starts a round now, not after the pause under way (up to a third of a lease)."""
        before = self.primary_scopes(old.rules) if old is not None else {}
        if any(before.get(scope) != epoch for scope, epoch in self.primary_scopes(new.rules).items()):
            self._woken.set()

    def valid(self, scope: str, epoch: int) -> bool:
        return self.holder.valid(scope, epoch, self._clock.monotonic())

    async def wait_valid(self, scope: str, epoch: int, timeout: float) -> bool:
        """Wait up to ``timeout`` seconds for a lease on ``scope`` at ``epoch``; whether there is one. It stops
        waiting, without one, as soon as the snapshot no longer makes this region that epoch's primary (a deposed
        primary learned its successor): the write should go there, not wait out its deadline here."""
        loop = asyncio.get_running_loop()
        give_up = loop.time() + timeout
        while not self.valid(scope, epoch):
            left = give_up - loop.time()
            rule = self._rules().get(scope)
            if left <= 0 or rule is None or rule.epoch != epoch or rule.primary != self.region:
                return False
            self._round_done.clear()
            try:
                await asyncio.wait_for(self._round_done.wait(), left)
            except TimeoutError:
                return self.valid(scope, epoch)
        return True

    async def run(self) -> None:
        while True:
            self._woken.clear()  # a rule that comes during this round wakes the pause after it
            scopes = self.primary_scopes()
            holding = True
            if scopes:
                self._current = asyncio.ensure_future(self.round(scopes))
                try:
                    await asyncio.shield(self._current)
                finally:
                    self._current = None
                holding = all(self.valid(scope, epoch) for scope, epoch in scopes.items())
            for scope in set(self.holder.scopes()) - set(scopes):
                self.holder.drop(scope)  # no longer the primary (demoted, or switching): no lease to keep
            rounds = ROUNDS_PER_LEASE if holding else EAGER_ROUNDS_PER_LEASE
            await self._pause(self._lease / rounds)

    async def _pause(self, seconds: float) -> None:
        """``sleep(seconds)``, cut short by ``rules_changed``; what the sleep raises is raised."""
        if self._woken.is_set():
            return
        sleeping = asyncio.ensure_future(self._sleep(seconds))
        woken = asyncio.ensure_future(self._woken.wait())
        try:
            await asyncio.wait((sleeping, woken), return_when=asyncio.FIRST_COMPLETED)
        finally:
            for task in (sleeping, woken):
                task.cancel()
            await asyncio.gather(sleeping, woken, return_exceptions=True)
        if not sleeping.cancelled() and sleeping.exception() is not None:
            raise sleeping.exception()  # type: ignore[misc]

    async def round(self, scopes: dict[str, int]) -> None:
        """One round: ask every region at once, take what answers within a third of a lease."""
        round_id = self.holder.ask(scopes, self._clock.monotonic())
        body = {"region": self.region, "scopes": scopes}

        async def ask(region: str) -> None:
            try:
                async with asyncio.timeout(self._lease / ROUNDS_PER_LEASE):
                    if region == self.region:
                        granted, refused = await self.confirm(self.region, scopes)
                    else:
                        answer = await self._call(region, LEASE_PATH, body)
                        granted, refused = list(answer.get("granted", [])), dict(answer.get("refused", {}))
                        newer = [rule_from_json(r) for r in answer.get("newer", [])]
            except (GatewayError, TimeoutError, RuleError) as exc:
                log.debug("no lease confirmation from %s: %s", region, getattr(exc, "message", exc) or "timeout")
                return
            if region != self.region and newer:
                self._learn(newer)
            if refused:
                log.debug("%s refused leases: %s", region, refused)
            self.holder.confirmed(round_id, region, granted)

        try:
            await asyncio.gather(*(ask(region) for region in self.regions))
        finally:
            self._round_done.set()

    async def give_up(self, scope: str, epoch: int) -> None:
        """A planned switch's handover (its fence): stop holding ``scope``'s lease and end every region's promise
        to this region on it now, so the new primary need not outwait them. Regions that do not answer within a
        third of a lease keep their promise until it expires: the new primary then waits that long, no more."""
        if self._current is not None:
            await asyncio.wait([self._current])  # its answers would otherwise renew the promises given up here
        self.holder.drop(scope)
        body = {"region": self.region, "release": {scope: epoch}}

        async def release(region: str) -> None:
            try:
                async with asyncio.timeout(self._lease / ROUNDS_PER_LEASE):
                    if region == self.region:
                        await self.release(self.region, scope, epoch)
                    else:
                        await self._call(region, LEASE_PATH, body)
            except (GatewayError, TimeoutError) as exc:
                log.info("%s keeps its promise on %s until it expires: %s", region, scope, getattr(exc, "message", exc))

        await asyncio.gather(*(release(region) for region in self.regions))

    async def confirm(self, asker: str, scopes: Mapping[str, int]) -> tuple[list[str], dict[str, str]]:
        """As this region's acceptor: what it confirms of ``asker``'s leases (the peer route and its own rounds)."""
        return await self._book.grant(asker, scopes, self.known)

    async def release(self, holder: str, scope: str, epoch: int) -> None:
        """As this region's acceptor: ``holder`` gives its lease on ``scope`` up (a switch's handover)."""
        await self._book.release(holder, scope, epoch)

    def newer(self, scopes: Mapping[str, int]) -> list[Rule]:
        """The rules this gateway holds of ``scopes`` at a higher epoch than asked (the asker is behind)."""
        rules = self._rules()
        return [rules[s] for s, epoch in scopes.items() if s in rules and rules[s].epoch > epoch]

    def known(self, scope: str) -> Known | None:
        """What this gateway's snapshot says of ``scope`` (for the acceptor's rule)."""
        rule = self._rules().get(scope)
        return None if rule is None else Known(rule.epoch, rule.primary)
