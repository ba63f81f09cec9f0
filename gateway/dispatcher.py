"""The one place that decides where a request goes (DESIGN.md §6, §8).

Handlers translate HTTP into calls on the ``Dispatcher`` and its answers back
into HTTP; they never route, retry or buffer.

Writes: the rule of the entity's scope (``RoutingTable.rule_for``) and
``snapshot.decide`` say LOCAL (this region is the active primary, or the scope
is ``any_region``), FORWARD (another region is primary: one signed request to
a gateway of that region, which revalidates) or SWITCHING (the scope is
moving: the write waits in the ``WriteBuffer`` until the switch ends, then is
routed anew). A peer's ``not_primary`` answer refreshes the rules, learns the
peer's rule when it is newer, and routes the write anew, at most
``routing.max_attempts`` times within the request's deadline; its idempotency
key, fixed at the origin, makes the re-sent write land exactly once.

While this region is a scope's primary, every write it applies is recorded in
the ``AckLog`` (in flight, then acknowledged), the evidence a switch's fence
checks; answering the fence, and the rest of a gateway's part in a switch, is
the ``SwitchParticipant``'s (gateway/switch/participant.py).

Forwarded writes (``accept_forwarded``) are applied here only if this
region's own snapshot says it is the active primary of the scope at exactly
the write's epoch; they are never forwarded again.

Reads: eventual reads come from the local replica; ``strong`` reads from the
primary region (a consistent read here when this region is primary);
``min_version`` reads wait a bounded time for the local replica to reach the
version, then read from the primary.

Invariant: a write is acknowledged (``applied: true``) only after DynamoDB in
the primary region accepted the conditional write; a refused condition is an
answer (``applied: false`` with a reason), never an error.
"""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable
from typing import Any

from gateway import deadlines as request_deadlines
from gateway.clock import Clock
from gateway.config import Config, ViewConfig
from gateway.errors import (
    ConditionFailed,
    GatewayError,
    NoRoutingRule,
    NotPrimary,
    PeerError,
    PrimaryUnreachable,
    Unavailable,
)
from gateway.features.items import (
    Stamp,
    Version,
    features_of,
    key_of,
    lost_the_race,
    not_applied_reason,
    put_condition,
    put_item,
    token_of,
    version_of,
    write_condition,
)
from gateway.features.records import WriteRecord
from gateway.lease.keeper import LeaseKeeper
from gateway.obs.metrics import Metrics
from gateway.peer.client import MAY_HAVE_LANDED, PeerClient
from gateway.routing.loader import RoutingLoader
from gateway.routing.rules import SINGLE_PRIMARY, Rule, RuleError, rule_from_json
from gateway.routing.snapshot import Route, accepts_forward, decide
from gateway.store.base import Store
from gateway.store.read_coalescer import ReadCoalescer
from gateway.switch.fence import AckLog
from gateway.switch.write_buffer import WriteBuffer

#: Seconds of a request's deadline kept for answering when it waited for a lease in vain.
LEASE_WAIT_MARGIN = 0.1
#: Stamps a put tries when writes of its key keep landing first with later ones (each retry stamps above them).
STAMP_ATTEMPTS = 3

#: Pause before the third and later routing attempts: the rule may still be replicating to the peer.
REROUTE_BACKOFF = 0.05
#: How often a ``min_version`` read looks at the local replica again.
MIN_VERSION_POLL = 0.01


class Dispatcher:
    __slots__ = ("_config", "_store", "_reads", "_clock", "_routing", "_peers", "_metrics", "_sleep", "_buffer", "_acks",
                 "region", "_leases")

    def __init__(
        self,
        config: Config,
        store: Store,
        reads: ReadCoalescer,
        clock: Clock,
        routing: RoutingLoader,
        peers: PeerClient,
        metrics: Metrics,
        buffer: WriteBuffer,
        acks: AckLog,
        sleep: Callable[[float], Awaitable[None]] = asyncio.sleep,
        *,
        leases: LeaseKeeper | None = None,
    ) -> None:
        """``leases``: this gateway's primacy leases; without them (unit tests of routing alone) none is required."""
        self._leases = leases
        self._config = config
        self._store = store
        self._reads = reads
        self._clock = clock
        self._routing = routing
        self._peers = peers
        self._metrics = metrics
        self._sleep = sleep
        self._buffer = buffer
        self._acks = acks
        self.region = config.region

    # -- rules ---------------------------------------------------------------------------------

    def rule(self, view: str, key: str) -> Rule:
        table = self._routing.table
        if table is None:
            raise Unavailable("This gateway has not loaded its routing rules yet.", retry_after=1.0)
        rule = table.rule_for(view, key)
        if rule is None:
            raise NoRoutingRule(
                f"No routing rule covers view {view!r} (no 'view#{view}' and no 'default' scope); "
                "add one with `gatewayctl rules set`."
            )
        return rule

    async def _reroute(self, refused: NotPrimary, attempt: int) -> None:
        """After a ``not_primary`` answer: refresh, and learn the peer's rule (used only if it is newer than ours)."""
        if attempt >= 2:
            await self._sleep(REROUTE_BACKOFF * (attempt - 1))
        try:
            await self._routing.refresh()
        except GatewayError:
            pass  # the poller keeps trying; the peer's rule may still tell us where to go
        try:
            theirs = rule_from_json(refused.rule) if refused.rule else None
        except RuleError:
            theirs = None
        if theirs is not None:
            self._routing.learn([theirs])

    # -- reads ---------------------------------------------------------------------------------

    async def read(
        self, view: ViewConfig, key: str, wanted: tuple[str, ...] | None, strong: bool, min_version: Version | None = None
    ) -> dict[str, Any] | None:
        """One entity's features, or ``None`` when it does not exist."""
        if strong:
            return await self._read_primary(view, key, wanted)
        item = await self._reads.get(view.table, view.key_attribute, key, False)
        if min_version is not None and not _reached(item, min_version):
            return await self._read_min_version(view, key, wanted, min_version)
        return self._found(view, key, item, wanted, self.region)

    async def _read_min_version(
        self, view: ViewConfig, key: str, wanted: tuple[str, ...] | None, min_version: Version
    ) -> dict[str, Any] | None:
        """Wait (bounded) for the local replica to reach ``min_version``; else read from the primary."""
        give_up = self._clock.monotonic() + self._config.routing.min_version_wait
        while self._clock.monotonic() < give_up:
            await self._sleep(MIN_VERSION_POLL)
            item = await self._reads.get(view.table, view.key_attribute, key, False)
            if _reached(item, min_version):
                return self._found(view, key, item, wanted, self.region)
        return await self._read_primary(view, key, wanted)

    async def _read_primary(self, view: ViewConfig, key: str, wanted: tuple[str, ...] | None) -> dict[str, Any] | None:
        for attempt in range(self._config.routing.max_attempts):
            rule = self.rule(view.name, key)
            primary = _primary_for_reads(rule, self.region)
            if primary == self.region:
                item = await self._reads.get(view.table, view.key_attribute, key, True)
                return self._found(view, key, item, wanted, self.region)
            try:
                answer = await self._peers.read(
                    primary, {"view": view.name, "keys": [key], "features": list(wanted) if wanted is not None else None}
                )
            except NotPrimary as refused:
                await self._reroute(refused, attempt + 1)
                continue
            result = answer["results"][0]
            if result["status"] != "PRESENT":
                return None
            return {"view": view.name, "key": key, "features": result["features"], "version": result["version"], "region": primary}
        raise PrimaryUnreachable(f"Gateways disagree on the primary of view {view.name!r}; retry shortly.")

    def _found(
        self, view: ViewConfig, key: str, item: dict[str, Any] | None, wanted: tuple[str, ...] | None, region: str
    ) -> dict[str, Any] | None:
        if item is None:
            return None
        return {
            "view": view.name,
            "key": key,
            "features": features_of(item, view.key_attribute, wanted),
            "version": token_of(item),
            "region": region,
        }

    async def read_many(
        self, view: ViewConfig, keys: list[str], wanted: tuple[str, ...] | None, strong: bool
    ) -> list[dict[str, Any]]:
        if not strong:
            return await self.read_local(view, keys, wanted, False)
        # Strong: each key from its scope's primary; keys of one primary go in one call. Keys a peer
        # refused as not its own (a switch moved them) are re-routed like a write, bounded the same way.
        results: list[dict[str, Any] | None] = [None] * len(keys)
        pending = list(range(len(keys)))
        for attempt in range(1, self._config.routing.max_attempts + 1):
            by_primary: dict[str, list[int]] = {}
            for i in pending:
                by_primary.setdefault(_primary_for_reads(self.rule(view.name, keys[i]), self.region), []).append(i)
            groups = list(by_primary.items())
            outcomes = await asyncio.gather(
                *(self._read_strong_at(primary, view, [keys[i] for i in positions], wanted) for primary, positions in groups),
                return_exceptions=True,
            )
            pending = []
            refused: NotPrimary | None = None
            for (_, positions), outcome in zip(groups, outcomes):
                if isinstance(outcome, NotPrimary):
                    pending += positions
                    refused = outcome
                elif isinstance(outcome, BaseException):
                    raise outcome
                else:
                    for i, result in zip(positions, outcome):
                        results[i] = result
            if refused is None:
                return results  # type: ignore[return-value]
            if attempt == self._config.routing.max_attempts:
                break
            await self._reroute(refused, attempt)
        raise PrimaryUnreachable(
            f"The primary of some keys of view {view.name!r} kept moving during {self._config.routing.max_attempts} "
            "attempts; retry shortly."
        )

    async def _read_strong_at(
        self, primary: str, view: ViewConfig, keys: list[str], wanted: tuple[str, ...] | None
    ) -> list[dict[str, Any]]:
        if primary == self.region:
            return await self.read_local(view, keys, wanted, True)
        answer = await self._peers.read(
            primary, {"view": view.name, "keys": keys, "features": list(wanted) if wanted is not None else None}
        )
        return answer["results"]  # type: ignore[no-any-return]

    async def read_local(
        self, view: ViewConfig, keys: list[str], wanted: tuple[str, ...] | None, strong: bool
    ) -> list[dict[str, Any]]:
        key_attribute = view.key_attribute
        items = await self._store.batch_get_item(
            view.table, [key_of(key_attribute, k) for k in keys], consistent=strong
        )
        results = []
        for key, item in zip(keys, items):
            if item is None:
                results.append({"key": key, "status": "NOT_FOUND", "features": None, "version": None})
            else:
                results.append(
                    {
                        "key": key,
                        "status": "PRESENT",
                        "features": features_of(item, key_attribute, wanted),
                        "version": token_of(item),
                    }
                )
        return results

    async def accept_read(self, view: ViewConfig, keys: list[str], wanted: tuple[str, ...] | None) -> list[dict[str, Any]]:
        """A strong read sent by a peer: answered only while this region is the primary of every key's scope."""
        for key in keys:
            rule = self.rule(view.name, key)
            if _primary_for_reads(rule, self.region) != self.region:
                raise NotPrimary(f"{self.region} is not the primary of scope {rule.scope}.", rule=rule.to_json())
        return await self.read_local(view, keys, wanted, True)

    # -- writes --------------------------------------------------------------------------------

    async def write(self, record: WriteRecord) -> dict[str, Any]:
        """Apply one write (put or delete) in the primary region and say whether it was applied."""
        view = record.view
        slot = None
        refusals = 0
        try:
            while True:
                rule = self.rule(view.name, record.key)
                route = decide(rule, self.region)
                if route is Route.LOCAL:
                    try:
                        return await self.apply(record, rule)
                    except NotPrimary as moved:  # the rule moved on while the write waited for a lease: route again
                        refusals = self._refused(view.name, refusals, moved)
                        continue
                if route is Route.SWITCHING:
                    if slot is not None:  # drained, but the scope switches again: wait for that one too
                        slot.release()
                        slot = None
                    slot = await self._buffer.hold(rule.scope, record.size)
                    continue
                assert route is Route.FORWARD and rule.primary is not None
                try:
                    return (await self._forward(rule, [record]))[0]
                except NotPrimary as refused:
                    refusals = self._refused(view.name, refusals, refused)
                    await self._reroute(refused, refusals)
        finally:
            if slot is not None:
                slot.release()

    def _refused(self, view: str, refusals: int, refused: NotPrimary) -> int:
        """One more ``not_primary``; past ``routing.max_attempts`` the write gives up (503, retry shortly)."""
        refusals += 1
        if refusals >= self._config.routing.max_attempts:
            raise PrimaryUnreachable(
                f"The primary of {view!r} kept moving during {refusals} attempts (last: {refused.message}); retry shortly."
            ) from None
        return refusals

    async def write_many(self, records: list[WriteRecord]) -> list[dict[str, Any]]:
        """Each record is routed and answered on its own (BatchWriteItem takes no conditions); answers in order."""
        answers = await asyncio.gather(*(self.write(r) for r in records), return_exceptions=True)
        return [self._result(record, answer) for record, answer in zip(records, answers)]

    async def _forward(self, rule: Rule, records: list[WriteRecord]) -> list[dict[str, Any]]:
        primary = rule.primary
        assert primary is not None
        view = records[0].view
        body = {
            "view": view.name,
            "scope": rule.scope,
            "epoch": rule.epoch,
            "origin": self.region,
            "records": [
                {"key": r.key, "attributes": r.attributes, "event_ms": r.event_ms, "idempotency_key": r.idempotency_key}
                for r in records
            ],
        }
        try:
            answer = await self._peers.write(primary, body)
        except NotPrimary:
            self._metrics.forwarded(primary, "not_primary")
            raise
        except Unavailable:
            self._metrics.forwarded(primary, "unreachable")
            raise
        except GatewayError:
            self._metrics.forwarded(primary, "error")
            raise
        results = answer["results"]
        for result in results:
            result["forwarded"] = True
            if "error" in result:
                error = _peer_record_error(result["error"], result.get("rule"))
                self._metrics.forwarded(primary, "not_primary" if isinstance(error, NotPrimary) else "ok")
                raise error
            result.pop("key", None)
        self._metrics.forwarded(primary, "ok")
        return results

    async def accept_forwarded(self, view: ViewConfig, scope: str, epoch: int, records: list[WriteRecord]) -> list[dict[str, Any]]:
        """Writes a peer forwarded under (``scope``, ``epoch``): applied only if this region is that epoch's primary."""
        refreshed = False
        while True:
            refusal = self._revalidate(view, scope, epoch, records)
            if refusal is None:
                break
            rule, reason = refusal
            if refreshed or (rule is not None and rule.epoch > epoch):
                raise NotPrimary(reason, rule=rule.to_json() if rule is not None else None)
            # The sender saw a newer epoch (or another scope) than we have: our snapshot may be behind.
            refreshed = True
            await self._routing.refresh()
        rule = self.rule(view.name, records[0].key)
        if len(records) == 1:  # the common case: no task per record, no extra turn of the loop
            answer: dict[str, Any] | BaseException
            try:
                answer = await self.apply(records[0], rule)
            except GatewayError as exc:
                answer = exc
            return [self._result(records[0], answer, with_status=True)]
        answers = await asyncio.gather(*(self.apply(r, rule) for r in records), return_exceptions=True)
        return [self._result(record, answer, with_status=True) for record, answer in zip(records, answers)]

    def _revalidate(self, view: ViewConfig, scope: str, epoch: int, records: list[WriteRecord]) -> tuple[Rule | None, str] | None:
        for record in records:
            rule = self.rule(view.name, record.key)
            if rule.scope != scope:
                return rule, f"{self.region} routes key {record.key[:64]!r} by scope {rule.scope}, not {scope}."
            if not accepts_forward(rule, self.region, epoch):
                if epoch < rule.epoch:
                    return rule, f"Epoch {epoch} of scope {scope} is over; it is at epoch {rule.epoch} (primary {rule.primary})."
                return rule, (
                    f"{self.region} is not the active primary of scope {scope} at epoch {epoch} "
                    f"(its rule: primary {rule.primary}, epoch {rule.epoch}, {rule.state})."
                )
        return None

    async def apply(self, record: WriteRecord, rule: Rule) -> dict[str, Any]:
        """The conditional write to this region's table, stamped with this region and the rule's epoch.

        As a single-primary scope's primary, only under a lease a majority of the regions confirmed
        (gateway/lease/): without one the write is not applied (503 ``primary_unreachable``, once the
        request's deadline is near); if the lease ended while DynamoDB wrote, the write is not acknowledged.
        """
        view = record.view
        if rule.mode != SINGLE_PRIMARY:
            return await self._apply(record, Stamp(self._clock.wall_us(), self.region, rule.epoch), self.region)
        leases = self._leases
        if leases is not None and not leases.valid(rule.scope, rule.epoch):
            await self._await_lease(rule)
        stamp = Stamp(self._clock.wall_us(), self.region, rule.epoch)
        # As the scope's primary: in flight until DynamoDB answered, then acknowledged (for a switch's fence).
        acks = self._acks
        acks.begin(rule.scope)
        answer = None
        try:
            answer = await self._apply(record, stamp, rule.primary)
            if leases is not None and not leases.valid(rule.scope, rule.epoch):
                answer = None
                raise PrimaryUnreachable(
                    f"{self.region}'s lease on {rule.scope} ended while DynamoDB wrote: the write was not acknowledged. "
                    + MAY_HAVE_LANDED
                )
        finally:
            acks.end(rule.scope, view.name, record.key, answer["version"] if answer and answer["applied"] else None)
        return answer

    async def _await_lease(self, rule: Rule) -> None:
        """Wait, within the request's deadline, for the lease on ``rule``'s scope; 503 if it does not come."""
        assert self._leases is not None
        left = request_deadlines.remaining()
        wait = (self._config.request_timeout if left is None else left) - LEASE_WAIT_MARGIN
        if wait > 0 and await self._leases.wait_valid(rule.scope, rule.epoch, wait):
            return
        now = self._routing.table.rules.get(rule.scope) if self._routing.table is not None else None
        if now is not None and (now.epoch, now.primary) != (rule.epoch, rule.primary):
            # The rule moved on while the write waited (this region was deposed while cut off, and learned it):
            # nothing was applied; route it again by the new rule (a forwarded write: its sender does, on the 409).
            raise NotPrimary(f"{self.region} is no longer the primary of {rule.scope}: epoch {now.epoch} "
                             f"(primary {now.primary}).", rule=now.to_json())
        raise PrimaryUnreachable(
            f"{self.region} is the primary of {rule.scope} (epoch {rule.epoch}) but a majority of the regions has not "
            "confirmed its lease: it may be cut off from them. Nothing was applied; retry (the primary may be moving)."
        )

    async def _apply(self, record: WriteRecord, stamp: Stamp, primary: str | None) -> dict[str, Any]:
        view = record.view
        try:
            if record.attributes is None:
                old = await self._store.delete_item(
                    view.table, key_of(view.key_attribute, record.key), condition=write_condition(record), return_old=True
                )
                if old is None:
                    return _answer(False, None, primary, reason="not_found")
            else:
                for _ in range(STAMP_ATTEMPTS):
                    try:
                        await self._store.put_item(view.table, put_item(record, stamp), condition=put_condition(record, stamp))
                        break
                    except ConditionFailed as refused:
                        above = lost_the_race(record, stamp, refused.old_item)
                        if above is None:
                            raise
                        # A write of the same key landed first with a later stamp: stamp above it and try again.
                        stamp = Stamp(max(self._clock.wall_us(), above + 1), stamp.region, stamp.epoch)
                else:
                    raise PrimaryUnreachable(f"Writes of key {record.key[:64]!r} kept racing this one; retry with the "
                                             "same Idempotency-Key.")
        except ConditionFailed as refused:
            stored = refused.old_item
            return _answer(False, token_of(stored) if stored else None, primary, reason=not_applied_reason(record, stored))
        return _answer(True, stamp.version().token(), primary)

    @staticmethod
    def _result(record: WriteRecord, answer: dict[str, Any] | BaseException, with_status: bool = False) -> dict[str, Any]:
        if isinstance(answer, GatewayError):
            error = {"code": answer.code, "message": answer.message, "retryable": answer.retryable}
            if with_status:  # a peer's record error keeps its status when the origin passes it on
                error["status"] = answer.status
                if isinstance(answer, NotPrimary) and answer.rule is not None:
                    # Deposed while the write waited for a lease: the origin routes it again by this rule.
                    return {"key": record.key, "error": error, "rule": answer.rule}
            return {"key": record.key, "error": error}
        if isinstance(answer, BaseException):
            raise answer
        answer["key"] = record.key
        return answer


def _answer(applied: bool, version: str | None, primary: str | None, reason: str | None = None) -> dict[str, Any]:
    answer: dict[str, Any] = {"applied": applied, "version": version, "primary": primary, "forwarded": False}
    if reason is not None:
        answer["reason"] = reason
    return answer


def _primary_for_reads(rule: Rule, region: str) -> str:
    """Where a strong read goes: the primary (also while switching: it holds every acknowledged write)."""
    if rule.mode != SINGLE_PRIMARY or rule.primary is None:
        return region
    return rule.primary


def _reached(item: dict[str, Any] | None, wanted: Version) -> bool:
    if item is None:
        return False
    version = version_of(item)
    return version is not None and version >= wanted


def _peer_record_error(error: Any, rule: Any = None) -> GatewayError:
    """A record error in a peer's answer, as the error the origin answers with (same status and code); but
    ``not_primary`` (the primary was deposed while the write waited) is a re-route, never a caller's answer."""
    if not isinstance(error, dict):
        return PeerError(502, "upstream_error", "A peer gateway answered a malformed record result.", True)
    if error.get("code") == NotPrimary.code:
        return NotPrimary(str(error.get("message", "")), rule=rule if isinstance(rule, dict) else None)
    status = error.get("status")
    retryable = bool(error.get("retryable"))
    return PeerError(
        status if isinstance(status, int) and 400 <= status < 600 else 502,
        str(error.get("code", "upstream_error")),
        str(error.get("message", "")),
        retryable,
        retry_after=1.0 if retryable and status in (429, 503) else None,
    )
