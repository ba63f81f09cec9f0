"""The rule edits of ``gatewayctl``, as pure functions: what ``rules set`` would write, and the checks before it.

Nothing here reads a table or prints; gateway/ctl/rules.py calls these between the
read and the conditional write, so each can be tested without a store.

Invariants: ``plan_set`` returns only rules that ``rules.validate`` accepts
against the config's regions, or ``None`` for an edit that changes nothing (so
nothing is written); a new scope's epoch never goes below the epoch its keys
were covered by (``initial_epoch``).
"""

from __future__ import annotations

from collections.abc import Iterable

from gateway.config import Config
from gateway.ctl.session import CtlError
from gateway.routing.control_table import conflict_message
from gateway.routing.rules import (
    DEFAULT_SCOPE,
    SINGLE_PRIMARY,
    SWITCHING,
    Rule,
    RuleError,
    ScheduleEntry,
    edited,
    scope_prefix,
    scope_view,
    validate,
)
from gateway.routing.snapshot import RoutingTable


def known_regions(config: Config) -> list[str]:
    if not config.regions:
        raise CtlError(f"{config.source} defines no [regions.NAME] tables; gatewayctl checks rules against them, "
                       "so the config must list every region")
    return list(config.regions)


def check_view(scope: str, config: Config) -> None:
    view = scope_view(scope)
    if view is not None and view not in config.views:
        raise CtlError(f"scope {scope}: view {view!r} is not configured in {config.source} "
                       f"(views: {', '.join(sorted(config.views))}); use one of them, or add [views.{view}] there")


def check_regions(scope: str, primary: str | None, schedule: Iterable[ScheduleEntry] | None, regions: list[str],
                  witnesses: Iterable[str] = (), failover_order: Iterable[str] = ()) -> None:
    """Refuse a region the config does not know, or a witness, as a primary before anything is read."""
    named = ([("primary", primary)] + [(f"schedule {e.at}", e.primary) for e in schedule or ()]
             + [("failover_order", r) for r in failover_order])
    for what, region in named:
        if region is not None and region not in regions:
            raise CtlError(f"rule {scope!r}: {what} {region!r} is not a known region ({', '.join(sorted(regions))}); "
                           "use one of them")
        if region is not None and region in witnesses:
            raise CtlError(f"rule {scope!r}: {what} {region!r} is a witness region (regions.{region}.witness): it "
                           "counts in majorities but takes no feature traffic, so it cannot be a primary; pick another")


def covering_rule(scope: str, rules: Iterable[Rule]) -> Rule | None:
    """The rule that covers ``scope``'s keys when ``scope`` has none: a shorter prefix, the view's, or default."""
    if scope == DEFAULT_SCOPE:
        return None
    table = RoutingTable.build((r for r in rules if r.scope != scope), 0.0)
    return table.rule_for(scope_view(scope) or "", scope_prefix(scope) or "")


def initial_epoch(scope: str, rules: Iterable[Rule], observed: Iterable[int]) -> int:
    """A new scope's first epoch: above its keys' covering rule and above what the fleet saw of it; else 0."""
    cover = covering_rule(scope, rules)
    return max([e + 1 for e in observed] + ([cover.epoch + 1] if cover else []), default=0)


def plan_set(
    current: Rule | None,
    scope: str,
    *,
    primary: str | None,
    mode: str | None,
    schedule: tuple[ScheduleEntry, ...] | None,
    regions: list[str],
    by: str,
    now_ms: int,
    epoch: int = 0,
    failover_order: tuple[str, ...] | None = None,
    failover_after: float | None = None,
) -> Rule | None:
    """The rule ``rules set`` would write, validated; ``None`` when it would change nothing.

    ``failover_order`` ``()`` turns automatic failover off (``failover_after`` goes with it); ``None`` leaves it.
    """
    order = current.failover_order if current is not None else ()
    after = current.failover_after if current is not None else None
    if failover_order == ():
        if failover_after is not None:
            raise CtlError("--failover-order '' turns automatic failover off; it takes no --failover-after")
        order, after = (), None
    else:
        order = failover_order if failover_order is not None else order
        after = failover_after if failover_after is not None else after
        if after is not None and not order:
            raise CtlError("--failover-after needs --failover-order REGION,REGION (the regions to fail over to, in order)")
        if order and after is None:
            raise CtlError("--failover-order needs --failover-after S (how long the primary must be unreachable first)")
    try:
        if current is None:
            mode = mode or SINGLE_PRIMARY
            if primary is None and mode == SINGLE_PRIMARY:
                raise CtlError(f"there is no rule for {scope} yet: --primary REGION is required to create it")
            new = Rule(scope=scope, mode=mode, primary=primary, epoch=epoch, schedule=schedule or (),
                       failover_order=order, failover_after=after, version=1, updated_by=by, updated_at=now_ms)
        else:
            wanted = {"primary": primary, "mode": mode, "schedule": schedule}
            changes = {k: v for k, v in wanted.items() if v is not None and v != getattr(current, k)}
            if (order, after) != (current.failover_order, current.failover_after):
                changes.update(failover_order=order, failover_after=after)
            if not changes:
                return None
            new = edited(current, by=by, at_ms=now_ms, **changes)
        return validate(new, regions)
    except RuleError as exc:
        raise CtlError(str(exc)) from None


def refuse_switching(rule: Rule) -> None:
    if rule.state == SWITCHING:
        raise CtlError(f"a switch of {rule.scope} is in progress (switch_id {rule.switch_id}, to {rule.next_primary}); "
                       f"wait for it (`gatewayctl switch status {rule.scope} --watch`) or end it with "
                       f"`gatewayctl switch abort {rule.scope}`")


def check_expected(scope: str, current: Rule | None, expect: int | None) -> None:
    if expect is None:
        return
    if current is None:
        raise CtlError(conflict_message(scope, None, None, expect, pinned=True))
    if current.version != expect:
        raise CtlError(conflict_message(scope, current.version, current.updated_by, expect, pinned=True))


def fallback_note(scope: str, rules: Iterable[Rule]) -> str:
    if scope == DEFAULT_SCOPE:
        return "after the delete, views without a rule of their own are covered by no rule"
    cover = covering_rule(scope, rules)
    if cover is None:
        return f"after the delete, the keys of {scope} are covered by no rule"
    return f"after the delete, the keys of {scope} follow {cover.scope} (primary {cover.primary}, epoch {cover.epoch})"
