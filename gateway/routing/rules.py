"""Routing rules (DESIGN.md §5): the ``Rule`` of one scope, its validation, and its two outside forms.

A rule is the routing record of one scope: ``default``, ``view#V`` or
``view#V#prefix#P`` (mode, primary, epoch, state, schedule, version). Which
rule an entity follows is the snapshot's business (gateway/routing/snapshot.py).

Invariants:
- A ``Rule`` that exists is valid: ``parse_rule`` (from a control-table item)
  and ``rule_from_json`` (from ``gatewayctl`` or a peer's 409 answer) are the
  only ways in, and both validate every field. A malformed item never becomes
  a ``Rule``; the loader keeps the last good rule of its scope instead.

Control-table items: ``pk = "rule#" + scope``; lease and fence items use
other ``pk`` prefixes and are skipped here. Items carry ``_ts``/``_region``
like every write, so global-table replication orders edits of one rule.
"""

from __future__ import annotations

import re
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, replace
from typing import Any

from gateway.config import NAME_PATTERN, REGION_PATTERN

RULE_PREFIX = "rule#"
DEFAULT_SCOPE = "default"

SINGLE_PRIMARY = "single_primary"
ANY_REGION = "any_region"
MODES = (SINGLE_PRIMARY, ANY_REGION)

ACTIVE = "active"
SWITCHING = "switching"
STATES = (ACTIVE, SWITCHING)

#: Longest ``failover_after``, seconds (a day): past it an operator has long been paged.
MAX_FAILOVER_AFTER = 86_400
_AT_RE = re.compile(r"^([01]\d|2[0-3]):[0-5]\d$")


class RuleError(ValueError):
    """A rule is malformed; the message names the scope and the field."""


@dataclass(frozen=True, slots=True)
class ScheduleEntry:
    """Follow-the-sun: from ``at`` (HH:MM UTC) on, ``primary`` is the scope's primary."""

    at: str
    primary: str


@dataclass(frozen=True, slots=True)
class Rule:
    scope: str
    mode: str
    primary: str | None
    epoch: int
    state: str = ACTIVE
    next_primary: str | None = None
    switch_id: str | None = None
    switch_started_at: int | None = None
    schedule: tuple[ScheduleEntry, ...] = ()
    #: Automatic failover: when the primary has been unreachable from a majority of the regions for
    #: ``failover_after`` seconds, the scheduler fails the scope over to the first reachable region of the order.
    failover_order: tuple[str, ...] = ()
    failover_after: float | None = None
    #: Bumped by every edit; edits are conditional on it (optimistic concurrency).
    version: int = 0
    updated_by: str = ""
    #: Milliseconds since the epoch.
    updated_at: int = 0

    def to_json(self) -> dict[str, Any]:
        body: dict[str, Any] = {
            "scope": self.scope, "mode": self.mode, "primary": self.primary, "epoch": self.epoch,
            "state": self.state, "version": self.version, "updated_by": self.updated_by, "updated_at": self.updated_at,
        }
        if self.next_primary is not None:
            body["next_primary"] = self.next_primary
        if self.switch_id is not None:
            body["switch_id"] = self.switch_id
        if self.switch_started_at is not None:
            body["switch_started_at"] = self.switch_started_at
        if self.schedule:
            body["schedule"] = [{"at": e.at, "primary": e.primary} for e in self.schedule]
        if self.failover_order:
            body["failover_order"] = list(self.failover_order)
            body["failover_after"] = self.failover_after
        return body

    def to_item(self, *, ts_us: int, region: str) -> dict[str, dict[str, Any]]:
        """The control-table item; ``ts_us``/``region`` order it like any replicated write."""
        item: dict[str, dict[str, Any]] = {
            "pk": {"S": RULE_PREFIX + self.scope},
            "kind": {"S": "rule"},
            "scope": {"S": self.scope},
            "mode": {"S": self.mode},
            "epoch": {"N": str(self.epoch)},
            "state": {"S": self.state},
            "version": {"N": str(self.version)},
            "updated_by": {"S": self.updated_by or "-"},
            "updated_at": {"N": str(self.updated_at)},
            "_ts": {"N": str(ts_us)},
            "_region": {"S": region},
        }
        if self.primary is not None:
            item["primary"] = {"S": self.primary}
        if self.next_primary is not None:
            item["next_primary"] = {"S": self.next_primary}
        if self.switch_id is not None:
            item["switch_id"] = {"S": self.switch_id}
        if self.switch_started_at is not None:
            item["switch_started_at"] = {"N": str(self.switch_started_at)}
        # An empty list is left out: DynamoDB Local's stream images render empty collections without a type.
        if self.schedule:
            item["schedule"] = {"L": [{"M": {"at": {"S": e.at}, "primary": {"S": e.primary}}} for e in self.schedule]}
        if self.failover_order:
            item["failover_order"] = {"L": [{"S": r} for r in self.failover_order]}
            item["failover_after"] = {"N": repr(float(self.failover_after or 0))}
        return item


# -- scopes ------------------------------------------------------------------------------------


def check_scope(scope: Any) -> str:
    """``default``, ``view#V`` or ``view#V#prefix#P``; raises ``RuleError`` otherwise."""
    if not isinstance(scope, str):
        raise RuleError(f"scope must be a string ('default', 'view#VIEW' or 'view#VIEW#prefix#PREFIX'), got {scope!r}")
    if scope == DEFAULT_SCOPE:
        return scope
    parts = scope.split("#", 3)
    if len(parts) >= 2 and parts[0] == "view" and NAME_PATTERN.match(parts[1]):
        if len(parts) == 2:
            return scope
        if len(parts) == 4 and parts[2] == "prefix" and parts[3]:
            return scope
    raise RuleError(f"scope {scope!r} is not 'default', 'view#VIEW' or 'view#VIEW#prefix#PREFIX'")


def scope_view(scope: str) -> str | None:
    """The view a scope belongs to (``None`` for ``default``)."""
    return None if scope == DEFAULT_SCOPE else scope.split("#", 3)[1]


def scope_prefix(scope: str) -> str | None:
    parts = scope.split("#", 3)
    return parts[3] if len(parts) == 4 else None


def view_scope(view: str, prefix: str | None = None) -> str:
    return f"view#{view}" if prefix is None else f"view#{view}#prefix#{prefix}"


# -- validation --------------------------------------------------------------------------------


def validate(rule: Rule, regions: Iterable[str] | None = None) -> Rule:
    """Check every field (and, given ``regions``, that each region named exists); returns the rule."""
    where = f"rule {rule.scope!r}"
    check_scope(rule.scope)
    known = set(regions) if regions is not None else None

    def region_ok(field_name: str, value: str | None, required: bool) -> None:
        if value is None:
            if required:
                raise RuleError(f"{where}: {field_name} is required")
            return
        if not isinstance(value, str) or not REGION_PATTERN.match(value):
            raise RuleError(f"{where}: {field_name} {value!r} is not a region name like us-east-1")
        if known is not None and value not in known:
            raise RuleError(f"{where}: {field_name} {value!r} is not a known region ({', '.join(sorted(known))})")

    if rule.mode not in MODES:
        raise RuleError(f"{where}: mode must be one of {', '.join(MODES)}, got {rule.mode!r}")
    if rule.state not in STATES:
        raise RuleError(f"{where}: state must be one of {', '.join(STATES)}, got {rule.state!r}")
    if not isinstance(rule.epoch, int) or isinstance(rule.epoch, bool) or rule.epoch < 0:
        raise RuleError(f"{where}: epoch must be an integer >= 0, got {rule.epoch!r}")
    if not isinstance(rule.version, int) or isinstance(rule.version, bool) or rule.version < 0:
        raise RuleError(f"{where}: version must be an integer >= 0, got {rule.version!r}")
    region_ok("primary", rule.primary, required=rule.mode == SINGLE_PRIMARY)
    if rule.state == SWITCHING:
        if rule.mode != SINGLE_PRIMARY:
            raise RuleError(f"{where}: only single_primary scopes switch")
        region_ok("next_primary", rule.next_primary, required=True)
        if not rule.switch_id:
            raise RuleError(f"{where}: a switching rule needs a switch_id")
        if rule.next_primary == rule.primary:
            raise RuleError(f"{where}: next_primary equals primary ({rule.primary})")
    elif rule.next_primary is not None or rule.switch_id is not None:
        raise RuleError(f"{where}: next_primary and switch_id belong to a switching rule only")
    for i, entry in enumerate(rule.schedule):
        if not _AT_RE.match(entry.at):
            raise RuleError(f"{where}: schedule[{i}].at must be HH:MM (UTC), got {entry.at!r}")
        region_ok(f"schedule[{i}].primary", entry.primary, required=True)
    if rule.schedule and rule.mode != SINGLE_PRIMARY:
        raise RuleError(f"{where}: only single_primary scopes have a schedule")
    if len({e.at for e in rule.schedule}) != len(rule.schedule):
        raise RuleError(f"{where}: schedule has two entries at the same time")
    if rule.failover_order or rule.failover_after is not None:
        if rule.mode != SINGLE_PRIMARY:
            raise RuleError(f"{where}: only single_primary scopes fail over")
        if not rule.failover_order or rule.failover_after is None:
            raise RuleError(f"{where}: automatic failover needs both failover_order and failover_after")
        after = rule.failover_after
        if isinstance(after, bool) or not isinstance(after, (int, float)) or not 0 < after <= MAX_FAILOVER_AFTER:
            raise RuleError(f"{where}: failover_after must be seconds above 0 and at most {MAX_FAILOVER_AFTER}, got {after!r}")
        for i, region in enumerate(rule.failover_order):
            region_ok(f"failover_order[{i}]", region, required=True)
        if len(set(rule.failover_order)) != len(rule.failover_order):
            raise RuleError(f"{where}: failover_order names a region twice")
    return rule


def parse_rule(item: Mapping[str, Mapping[str, Any]]) -> Rule:
    """A control-table item as a validated ``Rule``; raises ``RuleError`` naming what is wrong."""
    pk = item.get("pk", {}).get("S", "")
    scope = pk[len(RULE_PREFIX):] if pk.startswith(RULE_PREFIX) else pk

    def s(name: str, required: bool = True) -> str | None:
        attr = item.get(name)
        if attr is None:
            if required:
                raise RuleError(f"rule {scope!r}: {name} is missing")
            return None
        if "S" not in attr:
            raise RuleError(f"rule {scope!r}: {name} must be a string")
        return attr["S"]

    def n(name: str, required: bool = True) -> int | None:
        attr = item.get(name)
        if attr is None:
            if required:
                raise RuleError(f"rule {scope!r}: {name} is missing")
            return None
        try:
            return int(attr["N"])
        except (KeyError, ValueError):
            raise RuleError(f"rule {scope!r}: {name} must be an integer") from None

    if s("scope") != scope:
        raise RuleError(f"rule {scope!r}: its scope attribute does not match its key {pk!r}")
    schedule = []
    for i, entry in enumerate(item.get("schedule", {}).get("L", [])):
        fields = entry.get("M", {})
        try:
            schedule.append(ScheduleEntry(fields["at"]["S"], fields["primary"]["S"]))
        except KeyError:
            raise RuleError(f"rule {scope!r}: schedule[{i}] needs 'at' and 'primary' strings") from None
    rule = Rule(
        scope=scope,
        mode=s("mode") or "",
        primary=s("primary", required=False),
        epoch=n("epoch") or 0,
        state=s("state") or "",
        next_primary=s("next_primary", required=False),
        switch_id=s("switch_id", required=False),
        switch_started_at=n("switch_started_at", required=False),
        schedule=tuple(schedule),
        failover_order=tuple(_strings(item.get("failover_order"), scope)),
        failover_after=_seconds(item.get("failover_after"), scope),
        version=n("version") or 0,
        updated_by=s("updated_by", required=False) or "",
        updated_at=n("updated_at", required=False) or 0,
    )
    return validate(rule)


def _strings(attr: Mapping[str, Any] | None, scope: str) -> list[str]:
    if attr is None:
        return []
    try:
        return [entry["S"] for entry in attr["L"]]
    except (KeyError, TypeError):
        raise RuleError(f"rule {scope!r}: failover_order must be a list of region names") from None


def _seconds(attr: Mapping[str, Any] | None, scope: str) -> float | None:
    if attr is None:
        return None
    try:
        return float(attr["N"])
    except (KeyError, TypeError, ValueError):
        raise RuleError(f"rule {scope!r}: failover_after must be a number of seconds") from None


def rule_from_json(body: Any, regions: Iterable[str] | None = None) -> Rule:
    """A rule from its JSON form (``Rule.to_json``); raises ``RuleError``."""
    if not isinstance(body, dict):
        raise RuleError(f"a rule must be a JSON object, got {type(body).__name__}")
    known = {
        "scope", "mode", "primary", "epoch", "state", "next_primary", "switch_id", "switch_started_at",
        "schedule", "failover_order", "failover_after", "version", "updated_by", "updated_at",
    }
    unknown = sorted(set(body) - known)
    if unknown:
        raise RuleError(f"unknown rule field {unknown[0]!r}")
    schedule = body.get("schedule") or []
    if not isinstance(schedule, list) or not all(isinstance(e, dict) for e in schedule):
        raise RuleError("schedule must be a list of {\"at\": \"HH:MM\", \"primary\": REGION}")
    failover_order = body.get("failover_order") or []
    if not isinstance(failover_order, list) or not all(isinstance(r, str) for r in failover_order):
        raise RuleError("failover_order must be a list of region names")
    try:
        rule = Rule(
            scope=check_scope(body.get("scope")),
            mode=body.get("mode", SINGLE_PRIMARY),
            primary=body.get("primary"),
            epoch=body.get("epoch", 0),
            state=body.get("state", ACTIVE),
            next_primary=body.get("next_primary"),
            switch_id=body.get("switch_id"),
            switch_started_at=body.get("switch_started_at"),
            schedule=tuple(ScheduleEntry(str(e.get("at")), e.get("primary")) for e in schedule),
            failover_order=tuple(failover_order),
            failover_after=body.get("failover_after"),
            version=body.get("version", 0),
            updated_by=str(body.get("updated_by", "")),
            updated_at=body.get("updated_at", 0),
        )
    except TypeError as exc:
        raise RuleError(str(exc)) from None
    return validate(rule, regions)


def edited(rule: Rule, *, by: str, at_ms: int, **changes: Any) -> Rule:
    """``rule`` with ``changes``, its version bumped, and the epoch bumped when the primary or mode changes."""
    new = replace(rule, **changes)
    if new.primary != rule.primary or new.mode != rule.mode:
        new = replace(new, epoch=rule.epoch + 1)
    return replace(new, version=rule.version + 1, updated_by=by, updated_at=at_ms)
