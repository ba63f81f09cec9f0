"""Every gateway's side of the switch protocol (DESIGN.md §7): buffering by the rule, and the old primary's answers.

The coordinator (gateway/switch/coordinator.py) drives a switch over the peer
API; what each gateway does in it lives here, so the dispatcher only routes:

- **Buffering follows the rule.** ``rules_changed`` is a routing-loader
  listener: a scope whose rule enters ``switching`` starts buffering in the
  ``WriteBuffer``, and one that leaves it (commit or abort) drains. Every
  scope of the rules is made known to the buffer, so its
  ``gateway_buffer_*`` series exist at zero before it first switches. Listeners
  run synchronously with the snapshot swap, so no request routes by the new
  rule before the buffer knows.
- **The fence** (``accept_fence``), answered as the old primary: learn the
  switching rule (new writes of the scope are buffered from now on, forwarded
  ones refused), wait for the scope's in-flight writes to finish, and list what
  was acknowledged, from the ``AckLog`` the dispatcher fills as it applies
  writes. The list is *complete* only if nothing was still in flight and the
  log forgot no key for space.
- **The verification** (``versions``): the versions this region's replica
  holds, read consistently, which the coordinator compares per key.
- **The drain** (``buffer_stats``): how many of a scope's writes this gateway
  still holds or is sending on.

Invariant: a fence is answered only for the switch the caller named: a
gateway that routes the scope by another rule (a later switch, an abort)
refuses with ``not_primary`` and its rule, never with a list that would prove
the wrong switch.
"""

from __future__ import annotations

from gateway.config import ViewConfig
from gateway.errors import NotPrimary
from gateway.features.items import key_of, token_of
from gateway.lease.keeper import LeaseKeeper
from gateway.routing.loader import RoutingLoader
from gateway.routing.rules import SWITCHING, Rule
from gateway.routing.snapshot import RoutingTable
from gateway.store.base import Store
from gateway.switch.fence import AckLog
from gateway.switch.write_buffer import BufferStats, WriteBuffer


class SwitchParticipant:
    __slots__ = ("_region", "_routing", "_store", "_acks", "_buffer", "_leases")

    def __init__(
        self, region: str, routing: RoutingLoader, store: Store, acks: AckLog, buffer: WriteBuffer,
        leases: LeaseKeeper | None = None,
    ) -> None:
        """``leases``: this gateway's primacy leases, handed over when a fence completes."""
        self._leases = leases
        self._region = region
        self._routing = routing
        self._store = store
        self._acks = acks
        self._buffer = buffer
        routing.on_change(self.rules_changed)
        if routing.table is not None:  # rules loaded before us: their scopes' buffer series start now
            buffer.track(routing.table.rules)

    def rules_changed(self, old: RoutingTable | None, new: RoutingTable) -> None:
        """Start or end buffering for every scope whose rule entered or left ``switching`` (a loader listener)."""
        before = old.rules if old is not None else {}
        self._buffer.track(new.rules)
        for scope, rule in new.rules.items():
            was = before.get(scope)
            if rule.state == SWITCHING and (was is None or was.state != SWITCHING):
                self._buffer.switch_started(scope)
            elif rule.state != SWITCHING and was is not None and was.state == SWITCHING:
                self._buffer.switch_ended(scope)
        for scope, was in before.items():
            if scope not in new.rules and was.state == SWITCHING:
                self._buffer.switch_ended(scope)

    def rule_of_scope(self, scope: str) -> Rule | None:
        table = self._routing.table
        return table.rules.get(scope) if table is not None else None

    async def accept_fence(self, rule: Rule, timeout: float) -> tuple[list[tuple[str, str, str]], bool]:
        """As the old primary of a switching ``rule``: stop taking its writes, let in-flight ones finish, list the acknowledged.

        Returns (view, key, version) of every write acknowledged within the fence window, and
        whether that list is complete (no write still in flight, no key forgotten for space).
        """
        if rule.state != SWITCHING or rule.primary != self._region:
            raise NotPrimary(f"{self._region} is not the old primary of the switch of {rule.scope}.", rule=rule.to_json())
        self._routing.learn([rule])
        current = self.rule_of_scope(rule.scope)
        if current is None or current.state != SWITCHING or current.switch_id != rule.switch_id:
            raise NotPrimary(f"{self._region} routes {rule.scope} by another rule now.", rule=current.to_json() if current else None)
        quiet = await self._acks.quiesce(rule.scope, timeout)
        acknowledged, complete = self._acks.acknowledged(rule.scope)
        if complete and quiet and self._leases is not None:
            # Nothing in flight and no more writes taken (switching): the lease can go now, so that the new
            # primary need not outwait this region's promises (gateway/lease/keeper.py).
            await self._leases.give_up(rule.scope, rule.epoch)
        return acknowledged, complete and quiet

    async def versions(self, view: ViewConfig, keys: list[str]) -> list[str | None]:
        """Versions of ``keys`` in this region's replica (consistent read), for a fence's verification."""
        items = await self._store.batch_get_item(view.table, [key_of(view.key_attribute, k) for k in keys], consistent=True)
        return [token_of(item) if item is not None else None for item in items]

    def buffer_stats(self, scope: str) -> BufferStats:
        return self._buffer.stats(scope)
