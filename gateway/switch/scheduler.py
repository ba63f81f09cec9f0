"""Follow-the-sun: scheduled switches, run by whichever gateway holds the scheduler lease (DESIGN.md §7.6).

Every gateway runs a ``Scheduler``; at most one acts at a time. The lease is
one item of the control table, ``lease#scheduler`` (holder, expires_at),
taken and renewed with a conditional write — "absent, expired, or mine" —
always in the **control region's** replica (``switch.control_region``, the
first region of the config by default), so gateways of different regions
contend on one copy, not on three that replicate slowly into each other.

The holder, every ``switch.schedule_interval`` seconds, looks at each rule
with a schedule: the *due* entry is the latest one whose time (HH:MM UTC)
has passed, today or else yesterday. A rule whose primary differs from the
due entry's, and that has not changed since that entry's time, is switched
by the ordinary planned-switch protocol (gateway/switch/coordinator.py). That condition
is what makes a scheduled switch happen once per entry: the switch itself
changes the rule after the entry's time (a failed, aborted switch too — it
is not retried until the next entry; an operator can still switch by hand).

Recovery: a rule left ``switching`` for more than twice ``max_duration``
(its coordinator died, or lost the lease mid-switch) is aborted by
``switch_id`` — the old primary stays, epoch + 1, buffers drain there.

Invariant: only the lease holder writes rules here, and every rule write is
conditional on the version it read, so even two holders (a lease that
expired under a slow holder) cannot both start a switch of one scope.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Awaitable, Callable
from datetime import datetime, timedelta, timezone

from gateway.clock import Clock
from gateway.config import Config
from gateway.errors import ConditionFailed, GatewayError
from gateway.routing.control_table import ControlTable, ControlTableError
from gateway.routing.rules import ACTIVE, SWITCHING, Rule, ScheduleEntry
from gateway.store.base import Condition, Store
from gateway.switch.coordinator import SwitchCoordinator, SwitchError

log = logging.getLogger(__name__)

LEASE_KEY = "lease#scheduler"


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


def control_region(config: Config) -> str:
    return config.switch.control_region or next(iter(config.regions), config.region)


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
        sleep: Callable[[float], Awaitable[None]] = asyncio.sleep,
    ) -> None:
        self._config = config
        self._store = store  # the control region's DynamoDB
        self._control = control  # rules and members in the control region
        self._coordinator = coordinator
        self._clock = clock
        self._sleep = sleep
        self.instance = instance
        self.holding = False
        self.switches = 0

    async def lease(self) -> bool:
        """Take or renew the lease; True while this instance holds it."""
        now_ms = self._clock.wall_ms()
        item = {
            "pk": {"S": LEASE_KEY},
            "kind": {"S": "lease"},
            "holder": {"S": self.instance},
            "expires_at": {"N": str(now_ms + int(self._config.switch.lease_seconds * 1000))},
            "_ts": {"N": str(self._clock.wall_us())},
            "_region": {"S": control_region(self._config)},
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

    async def run(self) -> None:
        """Until cancelled; failures are logged and retried at the next interval."""
        while True:
            try:
                if await self.lease():
                    await self.tick()
            except (GatewayError, SwitchError, ControlTableError) as exc:
                log.warning("scheduler: %s", getattr(exc, "message", exc))
            await self._sleep(self._config.switch.schedule_interval)
