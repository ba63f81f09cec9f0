"""Keeps this gateway's ``RoutingTable`` fresh from the local control-table replica (DESIGN.md §5).

The loader reads every rule item of the **local** replica of the control
table at least once per ``routing.poll_interval`` (≤ 1 s) and at once when a
peer answers ``not_primary`` (``refresh()``). Each successful read builds a new
immutable ``RoutingTable`` and swaps it in with one assignment; requests keep
routing by whichever snapshot they read.

Invariants:
- ``table`` is ``None`` until the first successful read; ``/readyz`` is false
  until then, and writes cannot be routed.
- A malformed rule item never replaces a good rule: the scope keeps its last
  good rule (or stays absent if it never had one), an error is logged once per
  distinct bad item, and ``gateway_routing_rules_rejected_total`` counts it.
- A rule whose scope disappears from the table is dropped (deleted by an operator).
- Concurrent ``refresh()`` calls share one read of the control table.
- A read never waits on the control table: ``table`` is a plain attribute.
- Rules can also be **learned** ahead of the local replica: pushed by a switch
  coordinator, carried in a peer's ``not_primary`` answer, or read from a peer
  region at start. A learned rule is used only while it is newer, by
  (epoch, version), than the local replica's rule of its scope; once the
  replica catches up (or after ``LEARNED_TTL`` seconds) it is dropped. Epochs
  therefore never go back in a snapshot, whichever path a rule arrived by.
- Listeners (``on_change``) are called synchronously with (old, new) after
  every swap, so a scope entering or leaving ``switching`` is acted on before
  any request sees the new snapshot.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Callable, Iterable

from gateway.clock import Clock
from gateway.errors import GatewayError
from gateway.obs.metrics import Metrics
from gateway.routing.rules import RULE_PREFIX, Rule, RuleError, parse_rule
from gateway.routing.snapshot import RoutingTable
from gateway.store.base import Store

log = logging.getLogger(__name__)

#: Seconds a learned rule is kept when the local replica never shows it (e.g. its scope was deleted).
LEARNED_TTL = 60.0

Listener = Callable[[RoutingTable | None, RoutingTable], None]


def newer(a: Rule, b: Rule | None) -> bool:
    """Whether ``a`` supersedes ``b``: rules of one scope order by (epoch, version)."""
    return b is None or (a.epoch, a.version) > (b.epoch, b.version)


class RoutingLoader:
    def __init__(self, table_name: str, store: Store, clock: Clock, metrics: Metrics, poll_interval: float) -> None:
        self._table_name = table_name
        self._store = store
        self._clock = clock
        self._metrics = metrics
        self._poll_interval = poll_interval
        #: The current snapshot; swapped whole, never mutated.
        self.table: RoutingTable | None = None
        self.problem = "rules not loaded yet"
        # Event-loop confined.
        self._refreshing: asyncio.Future[None] | None = None
        self._rejected: set[tuple[str, int]] = set()  # (pk, hash of the bad item) already reported
        self._epoch_gauges: dict[str, object] = {}
        self._local: dict[str, Rule] = {}  # the local replica's rules at the last read
        self._learned: dict[str, tuple[Rule, float]] = {}  # scope -> (rule, learned at, monotonic)
        self._listeners: list[Listener] = []
        # gateway_routing_snapshot_age_seconds is sampled from age() by gateway/server.py (Metrics.sampled):
        # set_function gauges do not work in prometheus-client multiprocess mode.

    def age(self) -> float:
        """Seconds since the snapshot's read (``inf`` before the first)."""
        table = self.table
        return float("inf") if table is None else max(0.0, self._clock.monotonic() - table.loaded_at)

    async def refresh(self) -> None:
        """Read the control table now; concurrent callers share one read. Raises the read's error."""
        if self._refreshing is not None:
            return await asyncio.shield(self._refreshing)
        future: asyncio.Future[None] = asyncio.get_running_loop().create_future()
        self._refreshing = future
        try:
            await self._load()
        except BaseException as exc:
            future.set_exception(exc)
            raise
        else:
            future.set_result(None)
        finally:
            self._refreshing = None
            if future.done() and not future.cancelled():
                future.exception()  # retrieved: sharing callers may all have gone

    async def _load(self) -> None:
        started = self._clock.monotonic()
        items = await self._store.scan(self._table_name, consistent=True)
        previous = self._local
        rules: dict[str, Rule] = {}
        for item in items:
            pk = item.get("pk", {}).get("S", "")
            if not pk.startswith(RULE_PREFIX):
                continue  # lease and fence items
            try:
                rule = parse_rule(item)
            except RuleError as exc:
                self._reject(pk, item, exc)
                kept = previous.get(pk[len(RULE_PREFIX):])
                if kept is not None:
                    rules[kept.scope] = kept
                continue
            rules[rule.scope] = rule
        self._local = rules
        self.problem = ""
        self._swap(started)

    def learn(self, rules: Iterable[Rule]) -> bool:
        """Use these rules at once where they are newer than what this gateway has; True if any was."""
        now = self._clock.monotonic()
        current = self.table.rules if self.table is not None else {}
        changed = False
        for rule in rules:
            if newer(rule, current.get(rule.scope)) and newer(rule, self._learned.get(rule.scope, (None, 0.0))[0]):
                self._learned[rule.scope] = (rule, now)
                changed = True
        if changed and self.table is not None:
            self._swap(self.table.loaded_at)
        return changed

    def epochs(self) -> dict[str, int]:
        """The epoch of every scope in the current snapshot (empty before the first read)."""
        table = self.table
        return {scope: rule.epoch for scope, rule in table.rules.items()} if table is not None else {}

    def on_change(self, listener: Listener) -> None:
        self._listeners.append(listener)

    def _swap(self, loaded_at: float) -> None:
        """Build the snapshot from the local rules and the still-newer learned ones; notify listeners."""
        now = self._clock.monotonic()
        rules = dict(self._local)
        for scope, (rule, at) in list(self._learned.items()):
            if newer(rule, rules.get(scope)) and now - at < LEARNED_TTL:
                rules[scope] = rule
            else:
                del self._learned[scope]  # the replica caught up (or never will)
        old, self.table = self.table, RoutingTable.build(rules.values(), loaded_at)
        self._export(rules)
        for listener in self._listeners:
            listener(old, self.table)

    def _reject(self, pk: str, item: dict, exc: RuleError) -> None:
        identity = (pk, hash(repr(sorted(item.items()))))
        if identity in self._rejected:
            return
        self._rejected.add(identity)
        self._metrics.routing_rules_rejected_total.inc()
        log.error("ignoring malformed routing rule %s (last good rule kept): %s", pk, exc)

    def _export(self, rules: dict[str, Rule]) -> None:
        gauge = self._metrics.routing_epoch
        for scope in list(self._epoch_gauges):
            if scope not in rules:
                gauge.remove(scope)
                del self._epoch_gauges[scope]
        for scope, rule in rules.items():
            child = self._epoch_gauges.get(scope)
            if child is None:
                child = self._epoch_gauges[scope] = gauge.labels(scope)
            child.set(rule.epoch)  # type: ignore[attr-defined]

    async def run(self) -> None:
        """Poll until cancelled; a failed read keeps the last snapshot (its age shows in the metrics)."""
        while True:
            try:
                await self.refresh()
            except GatewayError as exc:
                if self.table is None:
                    self.problem = f"control table {self._table_name}: {exc.message}"
                log.warning("routing rules not refreshed: %s", exc.message)
            await asyncio.sleep(self._poll_interval)
