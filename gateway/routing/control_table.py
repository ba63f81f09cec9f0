"""The control table as an operator and a coordinator see it: rule items to read and edit, and the fleet.

``ControlTable`` reads and conditionally writes the rule items of the control
table (DESIGN.md §3, §5) and reads the members table, in one region's replica,
through a ``Store`` (``BotocoreStore`` for ``gatewayctl``, the gateway's
``LeanStore`` for the scheduler, an in-memory fake in unit tests). Reads are
strongly consistent, so an edit is planned from what that replica holds now.
``gatewayctl`` (gateway/ctl/), the switch coordinator and the scheduler
(gateway/switch/) use it; the gateways' own routing reads rules through the
loader (gateway/routing/loader.py), never through this.

It also keeps one ``switch#SCOPE`` item per scope: the progress of the scope's
latest switch as its coordinator last reported it (``gatewayctl switch status``
reads it from any terminal). That item is advice, not state: it is written
without a condition, and no decision is made from it.

With a ``Proposer`` (every fleet of more than one region), a rule change is not
a write to one replica: it is decided by a majority of the regions
(gateway/consensus/), conditional on the version the edit was planned from,
and then written to the rule item of every replica that answers, each write
landing only over an older decision's (the ``ballot`` attribute); the
gateways route by those items. ``decision`` and ``written()`` say which
regions accepted it. No majority: ``NoMajority``, naming what each region said.

Invariants: every rule change is conditional on what was read (``attribute_not_exists``
to create, ``version = :version`` to edit or delete, or, through the proposer,
the version the register holds), and a failed condition
becomes a ``RuleConflict`` naming who changed the rule. Every other store
failure becomes one ``ControlTableError`` line naming the table, the region
and the endpoint; no DynamoDB or botocore exception leaves this module. An
item that is not a valid rule is returned as ``Malformed``, never raised.
"""

from __future__ import annotations

import contextlib
import dataclasses
import logging
from collections.abc import Awaitable, Callable, Iterator
from dataclasses import dataclass
from typing import Any

import orjson
from botocore.exceptions import BotoCoreError

from gateway.clock import Clock
from gateway.config import Config
from gateway.consensus.acceptor import ACCEPTOR_PREFIX
from gateway.consensus.ballots import Deleted, Value
from gateway.consensus.proposer import Decision, NotDecided, Proposer, gather_until
from gateway.errors import ConditionFailed, GatewayError, StoreTimeout, StoreUnavailable, TableNotFound
from gateway.lease.book import PROMISES_PREFIX
from gateway.members import Member, MemberRow
from gateway.routing.rules import RULE_PREFIX, Rule, RuleError, parse_rule
from gateway.store.base import Condition, Item, Store

#: The item that holds a scope's latest switch progress (``switch#SCOPE``); gateways' rule loaders skip it.
SWITCH_PREFIX = "switch#"
#: Keys of the items that share the control table with the rules: the scheduler's lease, switch progress,
#: the regions' primacy promises (gateway/lease/book.py) and their acceptor slots (gateway/consensus/acceptor.py).
OTHER_PREFIXES = ("lease#", SWITCH_PREFIX, PROMISES_PREFIX, ACCEPTOR_PREFIX)
log = logging.getLogger(__name__)

#: Seconds a decided change's write to one replica's rule item may take before that replica is left to replication.
PUBLISH_TIMEOUT = 2.0
#: Seconds a switch progress item lives (the table's TTL attribute ``expires_at``).
SWITCH_PROGRESS_TTL = 7 * 24 * 3600


class ControlTableError(Exception):
    """The control or members table could not be read or written; one line naming the table, region and endpoint."""


class RuleConflict(ControlTableError):
    """A conditional write found the rule changed since it was read; nothing was written."""


class NoMajority(ControlTableError):
    """A change no majority of the regions decided (gateway/consensus/proposer.py): the message names each region."""


@dataclass(frozen=True, slots=True)
class Malformed:
    """A control-table item that is not a valid rule; gateways ignore it and keep their last good rule.

    ``scope`` is empty for an item whose key names no scope (``rule#`` alone, a key that is not a string, or
    one of no kind this table holds); ``key`` is its key as stored, so the operator can find it.
    """

    scope: str
    reason: str
    key: str = ""


def conflict_message(scope: str, version: int | str | None, by: str | None, expected: int | None = None,
                     *, pinned: bool = False) -> str:
    """A refused edit: what was expected and what is there, and how to see it before editing again.

    ``pinned``: the operator named the version (``--expect-version``); else it is the one read just before.
    """
    found = "no rule (deleted)" if version is None else f"version {version} (by {by or 'unknown'})"
    if expected is None:  # a create found a rule there
        head = f"the rule for {scope} changed since it was read: it exists now, {found}"
    elif pinned:
        head = f"the rule for {scope}: expected version {expected}, found {found}"
    else:
        head = f"the rule for {scope} changed since it was read: expected version {expected}, found {found}"
    if pinned and version is not None:
        return f"{head}; nothing was written — `gatewayctl rules get {scope}` shows it; edit again with --expect-version {version}"
    return f"{head}; nothing was written — `gatewayctl rules get {scope}` shows it; run the edit again"


def _version_condition(expect: int) -> Condition:
    return Condition("#version = :version", {"#version": "version"}, {":version": {"N": str(expect)}})


class ControlTable:
    """The rule items of the control table and the members table, in one region's replica (``where()``)."""

    def __init__(
        self, store: Store, region: str, endpoint: str, config: Config, clock: Clock, *,
        proposer: Proposer | None = None, replicas: dict[str, Store] | None = None,
    ) -> None:
        """``proposer``: the fleet's majority control plane; with it, every rule change is decided by a majority
        of the regions and then written to the rule item of every replica of ``replicas`` (region -> its
        store) that answers. Without it (a one-region fleet, unit tests), changes are written to this replica."""
        self.store = store
        self.region = region
        self.endpoint = endpoint
        self.rules_table = config.routing.table
        self.members_table = config.members.table
        self._clock = clock
        self.proposer = proposer
        self._replicas = replicas or {region: store}
        #: The latest decision of a change made through this table (``gatewayctl`` reports who accepted it).
        self.decision: Decision | None = None

    def where(self) -> str:
        return f"the control table {self.rules_table} in {self.region}"

    def written(self) -> str:
        """Where the last change was made: the regions that decided it, or this replica."""
        if self.decision is None or self.proposer is None:
            return f"in {self.where()}"
        return f"decided by a majority of the regions, {self.decision.summary(len(self.proposer.acceptors))}"

    @contextlib.contextmanager
    def _reaching(self, kind: str, table: str) -> Iterator[None]:
        try:
            yield
        except TableNotFound:
            raise ControlTableError(
                f"the {kind} table {table} does not exist in {self.region} at {self.endpoint}; create it, or name "
                f"the right one in the config ([{'routing' if kind == 'control' else 'members'}] table = ...)"
            ) from None
        except (StoreUnavailable, StoreTimeout) as exc:
            raise ControlTableError(
                f"cannot reach the {kind} table {table} in {self.region} at {self.endpoint}: {exc.message}; "
                "is the cluster running / are credentials valid?"
            ) from None
        except GatewayError as exc:
            raise ControlTableError(f"the {kind} table {table} in {self.region} at {self.endpoint} refused: {exc.message}") from None
        except BotoCoreError as exc:  # credential providers (SSO, assume-role) raise these past BotocoreStore
            raise ControlTableError(
                f"cannot reach the {kind} table {table} in {self.region} at {self.endpoint}: {exc}; "
                "is the cluster running / are credentials valid?"
            ) from None

    # -- rules -----------------------------------------------------------------------------------

    async def rules(self) -> tuple[list[Rule], list[Malformed]]:
        """Every rule item; items that are not valid rules come back as ``Malformed``, not as an error."""
        with self._reaching("control", self.rules_table):
            items = await self.store.scan(self.rules_table, consistent=True)
        rules: list[Rule] = []
        malformed: list[Malformed] = []
        for item in items:
            pk = item.get("pk", {}).get("S")
            if isinstance(pk, str) and pk.startswith(OTHER_PREFIXES):
                continue  # the lease and switch progress share the table
            if not isinstance(pk, str) or not pk.startswith(RULE_PREFIX) or pk == RULE_PREFIX:
                key = pk if isinstance(pk, str) else repr(item.get("pk"))
                malformed.append(Malformed("", f"item {key!r} names no scope: a rule's key is rule#SCOPE", key))
                continue
            parsed = _parse(item)
            (malformed if isinstance(parsed, Malformed) else rules).append(parsed)  # type: ignore[arg-type]
        return rules, malformed

    async def rule(self, scope: str) -> Rule | Malformed | None:
        with self._reaching("control", self.rules_table):
            item = await self.store.get_item(self.rules_table, {"pk": {"S": RULE_PREFIX + scope}}, consistent=True)
        return None if item is None else _parse(item)

    async def put(self, rule: Rule, *, expect: int | None) -> Rule:
        """Write ``rule`` if the stored one is still version ``expect`` (``None``: if there is none); the rule written.

        A rule made again after its scope's was deleted continues from the deleted one's version, so the
        written rule's version may be above ``rule``'s.
        """
        if self.proposer is not None:
            value = await self._decide(rule.scope, expect, lambda current: _renumbered(rule, current))
            assert isinstance(value, Rule)
            return value
        condition = Condition("attribute_not_exists(pk)") if expect is None else _version_condition(expect)
        item = rule.to_item(ts_us=self._clock.wall_us(), region=self.region)
        await self._write(rule.scope, expect, lambda: self.store.put_item(self.rules_table, item, condition=condition))
        return rule

    async def delete(self, scope: str, *, expect: int | None) -> None:
        """Delete if the stored rule is still version ``expect`` (``None``: whatever is there, for malformed items)."""
        if self.proposer is not None:
            await self._decide(scope, expect, lambda current: Deleted(scope, _version(current), self._by(current)),
                               deleting=True)
            return
        condition = Condition("attribute_exists(pk)") if expect is None else _version_condition(expect)
        key = {"pk": {"S": RULE_PREFIX + scope}}
        await self._write(scope, expect, lambda: self.store.delete_item(self.rules_table, key, condition=condition))

    @staticmethod
    def _by(current: Value | None) -> str:
        return current.updated_by if current is not None else ""

    async def _decide(self, scope: str, expect: int | None, make: Callable[[Value | None], Value], *,
                      deleting: bool = False) -> Value:
        """Decide a change of ``scope`` with a majority, then write it to every replica that answers."""
        assert self.proposer is not None

        def change(current: Value | None) -> Value:
            found = current if isinstance(current, Rule) else None
            if expect is None and found is not None and not deleting:
                raise RuleConflict(conflict_message(scope, found.version, found.updated_by))
            if expect is not None and (found is None or found.version != expect):
                raise RuleConflict(conflict_message(
                    scope, None if found is None else found.version, None if found is None else found.updated_by, expect))
            return make(current)

        try:
            decision = await self.proposer.change(scope, change)
        except NotDecided as exc:
            raise NoMajority(str(exc)) from None
        self.decision = decision
        await self._publish(scope, decision)
        return decision.value

    async def _publish(self, scope: str, decision: Decision) -> None:
        """Write a decided value to the rule item of every replica that answers (the gateways route by those);
        a replica that does not answer gets it by replication. A write lands only over an older decision's."""
        key = {"pk": {"S": RULE_PREFIX + scope}}
        values = {":b": {"S": decision.ballot}}
        older = "attribute_not_exists(#ballot) OR #ballot < :b"

        async def publish_in(region: str, store: Store) -> bool:
            value = decision.value
            try:
                if isinstance(value, Deleted):
                    await store.delete_item(self.rules_table, key, condition=Condition(
                        f"attribute_exists(pk) AND ({older})", {"#ballot": "ballot"}, values))
                else:
                    item = {**value.to_item(ts_us=self._clock.wall_us(), region=self.region),
                            "ballot": {"S": decision.ballot}}
                    await store.put_item(self.rules_table, item, condition=Condition(
                        f"attribute_not_exists(pk) OR {older}", {"#ballot": "ballot"}, values))
            except ConditionFailed:
                pass  # a later decision is there already (or, for a delete, no rule is)
            except (GatewayError, BotoCoreError, OSError) as exc:
                log.info("decided %s not written to %s's replica now (it replicates there): %s", scope, region,
                         getattr(exc, "message", exc))
                return False
            return True

        majority = len(self._replicas) // 2 + 1
        written = await gather_until(
            {region: publish_in(region, store) for region, store in self._replicas.items()},
            lambda done: sum(1 for ok in done.values() if ok is True) >= majority, PUBLISH_TIMEOUT,
        )
        for region in (r for r, ok in written.items() if isinstance(ok, str)):
            log.info("decided %s not written to %s's replica now (it replicates there): %s", scope, region, written[region])

    async def _write(self, scope: str, expect: int | None, write: Callable[[], Awaitable[Any]]) -> None:
        try:
            with self._reaching("control", self.rules_table):
                await write()
        except ConditionFailed as exc:
            old = exc.old_item
            if old is None:  # a store that does not return the old item: look
                with self._reaching("control", self.rules_table):
                    old = await self.store.get_item(self.rules_table, {"pk": {"S": RULE_PREFIX + scope}}, consistent=True)
            version = None if old is None else old.get("version", {}).get("N", "?")
            by = None if old is None else old.get("updated_by", {}).get("S")
            raise RuleConflict(conflict_message(scope, version, by, expect)) from None

    # -- switch progress -------------------------------------------------------------------------

    async def put_switch_progress(self, scope: str, progress: dict[str, Any]) -> None:
        """Keep what a running switch of ``scope`` has done so far (unconditional: the newest report wins)."""
        now_us = self._clock.wall_us()
        item = {
            "pk": {"S": SWITCH_PREFIX + scope},
            "kind": {"S": "switch_progress"},
            "progress": {"S": orjson.dumps(progress).decode()},
            "expires_at": {"N": str(now_us // 1_000_000 + SWITCH_PROGRESS_TTL)},
            "_ts": {"N": str(now_us)},
            "_region": {"S": self.region},
        }
        with self._reaching("control", self.rules_table):
            await self.store.put_item(self.rules_table, item)

    async def switch_progress(self, scope: str) -> dict[str, Any] | None:
        """The latest progress report of a switch of ``scope``, or ``None`` (never switched, or unreadable)."""
        with self._reaching("control", self.rules_table):
            item = await self.store.get_item(self.rules_table, {"pk": {"S": SWITCH_PREFIX + scope}}, consistent=True)
        try:
            body = orjson.loads(item["progress"]["S"]) if item is not None else None
        except (KeyError, orjson.JSONDecodeError):
            return None
        return body if isinstance(body, dict) else None

    # -- members ---------------------------------------------------------------------------------

    async def _member_items(self) -> list[Item]:
        with self._reaching("members", self.members_table):
            return await self.store.scan(self.members_table)

    async def members(self, *, now_us: int, expiry: float) -> list[MemberRow]:
        """The fleet, sorted by region and instance; ``stale`` marks heartbeats older than ``expiry``."""
        rows = []
        for item in await self._member_items():
            member = _member(item)
            if member is None:
                continue
            age = max(0.0, (now_us - member.heartbeat_at_us) / 1e6)
            rows.append(MemberRow(
                region=member.region, instance=member.instance, downstream=member.downstream, peer=member.peer,
                started_at_ms=member.started_at_ms, heartbeat_age=age, epochs=dict(member.epochs),
                replication_lag=member.replication_lag, replication_lag_sampled=member.replication_lag_sampled,
                buffer_depth=member.buffer_depth, stale=age > expiry,
            ))
        return sorted(rows, key=lambda m: (m.region, m.instance))

    async def observed_epochs(self, scope: str) -> list[int]:
        """Epochs members report for ``scope``: a deleted scope's gateways may still remember one."""
        try:
            items = await self._member_items()
        except ControlTableError:
            return []  # the members table is advice here; the control table's answer decides
        return [m.epochs[scope] for m in map(_member, items) if m is not None and scope in m.epochs]


def _version(value: Value | None) -> int:
    return 0 if value is None else value.version


def _renumbered(rule: Rule, current: Value | None) -> Rule:
    """A scope's versions never repeat: a rule made after a delete continues from the deleted rule's version."""
    if isinstance(current, Deleted) and rule.version <= current.version:
        return dataclasses.replace(rule, version=current.version + 1)
    return rule


def _parse(item: Item) -> Rule | Malformed:
    pk = item.get("pk", {}).get("S", "")
    try:
        return parse_rule(item)
    except RuleError as exc:
        return Malformed(pk[len(RULE_PREFIX):], str(exc), pk)


def _member(item: Item) -> Member | None:
    if "heartbeat_at" not in item or "region" not in item:
        return None
    try:
        return Member.from_item(item)
    except (KeyError, ValueError, TypeError):
        return None  # a half-written or foreign item; the gateways skip it too
