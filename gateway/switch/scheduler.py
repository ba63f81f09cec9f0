"""Follow-the-sun and automatic failover, run by the gateway that holds its region's scheduler lease (DESIGN.md §7.6).

Every gateway runs a ``Scheduler``; at most one per region acts at a time. The lease is one item of the
control table per region, ``lease#scheduler#REGION`` (holder, expires_at), taken and renewed with a
conditional write ("absent, expired, or mine") in that region's own replica, so the gateways of a region
contend on one copy, and a region cut off from the others keeps its scheduler, as the others keep theirs.
Several regions' schedulers may act on one scope at once: every rule change they make is decided by a
majority of the regions, conditional on the version read (gateway/consensus/), so of two schedulers starting
the same switch one is refused; a scheduler cut off with a minority decides nothing.

The holder, every ``switch.schedule_interval`` seconds, looks at each rule:

- **Schedules**: the *due* entry is the latest one whose time (HH:MM UTC) has passed, today or else
  yesterday. A rule whose primary differs from the due entry's, and that has not changed since that entry's
  time, is switched by the ordinary planned-switch protocol (gateway/switch/coordinator.py). That condition is
  what makes a scheduled switch happen once per entry: the switch itself changes the rule after the entry's
  time (a failed, aborted switch too; it is not retried until the next entry).
- **Automatic failover** (``failover_order``, ``failover_after``): the primary is *unreachable from a
  majority* when a majority of the regions' promise books (gateway/lease/book.py, read in each region's
  replica) have held no live promise to it for the scope for ``failover_after`` seconds: since their last
  promise to it ended, or, for a region that holds none (a new scope, a region that restarted empty), since
  this scheduler first saw that. It has not renewed its lease with them for that long. Then the scope fails over, without a fence, to the
  first region of the order that answers and has live gateways, once per epoch, and only if the rule changed at
  least ``switch.min_interval`` ago (the anti-flap rule of switches).

Recovery: a rule left ``switching`` for more than twice ``max_duration`` (its coordinator died, or lost the
lease mid-switch) is aborted by ``switch_id``: the old primary stays, epoch + 1, buffers drain there.

Invariant: only a lease holder writes rules here, and every rule write is decided by a majority and
conditional on the version it read, so even two holders cannot both start a switch or a failover of one scope.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Awaitable, Callable, Mapping
from datetime import datetime, timedelta, timezone

from gateway.clock import Clock
from gateway.config import Config
from gateway.consensus.proposer import gather_until
from gateway.errors import ConditionFailed, GatewayError
from gateway.lease.book import PromiseBook
from gateway.lease.promises import Promise
from gateway.routing.control_table import ControlTable, ControlTableError
from gateway.routing.rules import ACTIVE, SWITCHING, Rule, ScheduleEntry
from gateway.store.base import Condition, Store
from gateway.switch.coordinator import SwitchCoordinator, SwitchError

log = logging.getLogger(__name__)

LEASE_PREFIX = "lease#scheduler#"
#: Seconds a tick waits for the regions' promise books; a region that has not answered by then did not.
BOOK_TIMEOUT = 1.0


def due_entry(schedule: tuple[ScheduleEntry, ...], now: datetime) -> tuple[ScheduleEntry, datetime] | None:
    """The schedule entry in force at ``now`` (UTC) and the moment it took effect."""
    if not schedule:
        return None
    today = now.replace(second=0, microsecond=0)
    best: tuple[ScheduleEntry, datetime] | None = None
    for entry in schedule:
        hours, minutes = map(int, entry.at.split(":"))
        at = today.replace(hour=hours, minute=minutes)
        if at > now:
            at -= timedelta(days=1)
        if best is None or at > best[1]:
            best = (entry, at)
    return best


class Scheduler:
    def __init__(
        self,
        config: Config,
        store: Store,
        control: ControlTable,
        coordinator: SwitchCoordinator,
        clock: Clock,
        instance: str,
        *,
        books: Mapping[str, PromiseBook] | None = None,
        sleep: Callable[[float], Awaitable[None]] = asyncio.sleep,
    ) -> None:
        """``store``: this region's replica (the lease); ``books``: every region's promise book, in its own
        replica (automatic failover reads them; without them, no scope fails over by itself)."""
        self._config = config
        self._store = store
        self._control = control
        self._books = dict(books or {})
        #: (scope, epoch) failed over by this scheduler: once per epoch, whatever the next ticks see.
        self._failed_over: set[tuple[str, int]] = set()
        #: (scope, epoch, region) -> wall ms this scheduler first saw the region hold no promise to the primary.
        self._unpromised: dict[tuple[str, int, str], int] = {}
        self._coordinator = coordinator
        self._clock = clock
        self._sleep = sleep
        self.instance = instance
        self.holding = False
        self.switches = 0
        self.failovers = 0

    async def lease(self) -> bool:
        """Take or renew the lease; True while this instance holds it."""
        now_ms = self._clock.wall_ms()
        item = {
            "pk": {"S": LEASE_PREFIX + self._config.region},
            "kind": {"S": "lease"},
            "holder": {"S": self.instance},
            "expires_at": {"N": str(now_ms + int(self._config.switch.lease_seconds * 1000))},
            "_ts": {"N": str(self._clock.wall_us())},
            "_region": {"S": self._config.region},
        }
        condition = Condition(
            "attribute_not_exists(pk) OR expires_at < :now OR holder = :me",
            values={":now": {"N": str(now_ms)}, ":me": {"S": self.instance}},
        )
        try:
            await self._store.put_item(self._config.routing.table, item, condition=condition)
        except ConditionFailed:
            if self.holding:
                log.info("scheduler lease lost", extra={"instance": self.instance})
            self.holding = False
            return False
        if not self.holding:
            log.info("scheduler lease taken", extra={"instance": self.instance})
        self.holding = True
        return True

    async def tick(self) -> None:
        """As the holder: run every due scheduled switch, and abort switches whose coordinator is gone."""
        rules, _ = await self._control.rules()
        now = datetime.fromtimestamp(self._clock.wall_ms() / 1000, tz=timezone.utc)
        for rule in rules:
            await self._tend(rule, now)

    async def _tend(self, rule: Rule, now: datetime) -> None:
        now_ms = int(now.timestamp() * 1000)
        if rule.state == SWITCHING:
            stale_after = 2 * self._config.switch.max_duration * 1000
            if rule.switch_started_at is not None and now_ms - rule.switch_started_at > stale_after:
                log.warning("aborting a switch nobody finishes", extra={"scope": rule.scope, "switch_id": rule.switch_id})
                await self._coordinator.abort(rule.scope)
            return
        if rule.failover_order and rule.state == ACTIVE:
            if await self._fail_over(rule, now_ms):
                return
        due = due_entry(rule.schedule, now)
        if due is None or rule.state != ACTIVE:
            return
        entry, since = due
        if entry.primary == rule.primary or rule.updated_at >= since.timestamp() * 1000:
            return
        log.info("scheduled switch", extra={"scope": rule.scope, "to": entry.primary, "at": entry.at})
        try:
            outcome = await self._coordinator.switch(rule.scope, entry.primary, force=True)
        except SwitchError as exc:
            log.warning("scheduled switch not started: %s", exc, extra={"scope": rule.scope})
            return
        self.switches += 1
        log.info(
            "scheduled switch %s", "committed" if outcome.committed else "aborted",
            extra={"scope": rule.scope, "epoch": outcome.rule.epoch, "seconds": round(outcome.seconds, 3)},
        )

    async def _fail_over(self, rule: Rule, now_ms: int) -> bool:
        """Fail ``rule``'s scope over if its primary has been unreachable from a majority long enough; whether it did."""
        assert rule.failover_after is not None and rule.primary is not None
        after_ms = rule.failover_after * 1000
        if not self._books or (rule.scope, rule.epoch) in self._failed_over:
            return False
        books = await self.promises()

        def quiet(region: str, promises: Mapping[str, Promise]) -> bool:
            """Whether ``region`` has heard nothing from the primary for ``failover_after``: since its promise
            ended, or, when it holds none, since this scheduler first saw it hold none."""
            promise = promises.get(rule.scope)
            unheard = (rule.scope, rule.epoch, region)
            if promise is not None and promise.holder == rule.primary and promise.epoch == rule.epoch:
                self._unpromised.pop(unheard, None)
                since = promise.until_ms
            else:
                since = self._unpromised.setdefault(unheard, now_ms)
            return now_ms >= since + after_ms

        majority = len(self._books) // 2 + 1
        silent = sorted(region for region, promises in books.items() if quiet(region, promises))
        if len(silent) < majority:
            return False
        live = {m.region for m in await self._coordinator.live()}
        witnesses = set(self._config.regions) - set(self._config.primary_regions)
        to = next((r for r in rule.failover_order
                   if r != rule.primary and r in books and r in live and r not in witnesses), None)
        extra = {"scope": rule.scope, "primary": rule.primary, "epoch": rule.epoch, "silent": silent}
        if to is None:
            log.warning("automatic failover: no region of the order answers with live gateways", extra=extra)
            return False
        since = (now_ms - rule.updated_at) / 1000
        if since < self._config.switch.min_interval:
            log.warning("automatic failover waits for the anti-flap interval (%.0fs to go)",
                        self._config.switch.min_interval - since, extra=extra)
            return False
        self._failed_over.add((rule.scope, rule.epoch))
        log.warning("automatic failover to %s: %s unreachable from %s for over %gs", to, rule.primary,
                    ", ".join(silent), rule.failover_after, extra=extra)
        outcome, window = await self._coordinator.failover(rule.scope, to)
        self.failovers += 1
        log.warning("automatic failover done", extra={**extra, "to": to, "new_epoch": outcome.rule.epoch,
                                                       "loss_window": window})
        return True

    async def promises(self) -> dict[str, dict[str, Promise]]:
        """Every region's promises, from the regions whose replica answers within ``BOOK_TIMEOUT``."""

        async def one(book: PromiseBook) -> dict[str, Promise] | None:
            try:
                return await book.promises()
            except GatewayError:
                return None

        # Once a majority answered, a region cut off gets only the grace, not the whole timeout: it would
        # otherwise slow every tick, and so the failover it is the reason for.
        majority = len(self._books) // 2 + 1
        found = await gather_until({r: one(b) for r, b in self._books.items()},
                                   lambda done: sum(1 for p in done.values() if p is not None) >= majority, BOOK_TIMEOUT)
        return {region: promises for region, promises in found.items() if isinstance(promises, dict)}

    async def run(self) -> None:
        """Until cancelled; failures are logged and retried at the next interval."""
        while True:
            try:
                if await self.lease():
                    await self.tick()
            except (GatewayError, SwitchError, ControlTableError) as exc:
                log.warning("scheduler: %s", getattr(exc, "message", exc))
            await self._sleep(self._config.switch.schedule_interval)
