"""The immutable ``RoutingTable`` snapshot every request routes by, and ``decide``, where a write goes.

The rule for an entity is the longest matching scope: the longest prefix rule
of its view whose prefix starts the key, else the view's rule, else
``default``.

Invariants:
- A ``RoutingTable`` never changes after it is built; the loader
  (gateway/routing/loader.py) swaps a new one in with one assignment, so a
  request sees one consistent snapshot.
- ``decide`` is the one exhaustive decision of where a write goes; its
  fall-through is a bug and asserts.
"""

from __future__ import annotations

import enum
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from types import MappingProxyType
from typing import Any

from gateway.routing.rules import (
    ACTIVE,
    ANY_REGION,
    DEFAULT_SCOPE,
    SINGLE_PRIMARY,
    SWITCHING,
    Rule,
    scope_prefix,
    scope_view,
)

# -- the snapshot ------------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class _ViewRules:
    rule: Rule | None
    #: (prefix, rule), longest prefix first.
    prefixes: tuple[tuple[str, Rule], ...] = ()


@dataclass(frozen=True, slots=True)
class RoutingTable:
    """One immutable snapshot of every rule; ``loaded_at`` is the monotonic time of the read behind it."""

    rules: Mapping[str, Rule] = field(default_factory=lambda: MappingProxyType({}))
    loaded_at: float = 0.0
    _views: Mapping[str, _ViewRules] = field(default_factory=lambda: MappingProxyType({}))
    _default: Rule | None = None

    @classmethod
    def build(cls, rules: Iterable[Rule], loaded_at: float) -> RoutingTable:
        by_scope = {r.scope: r for r in rules}
        views: dict[str, tuple[Rule | None, list[tuple[str, Rule]]]] = {}
        for rule in by_scope.values():
            view = scope_view(rule.scope)
            if view is None:
                continue
            own, prefixes = views.setdefault(view, (None, []))
            prefix = scope_prefix(rule.scope)
            if prefix is None:
                views[view] = (rule, prefixes)
            else:
                prefixes.append((prefix, rule))
        compiled = {
            view: _ViewRules(own, tuple(sorted(prefixes, key=lambda p: -len(p[0]))))
            for view, (own, prefixes) in views.items()
        }
        return cls(MappingProxyType(by_scope), loaded_at, MappingProxyType(compiled), by_scope.get(DEFAULT_SCOPE))

    def rule_for(self, view: str, key: str) -> Rule | None:
        """The longest matching scope's rule, or ``None`` when no rule (not even ``default``) covers it."""
        entry = self._views.get(view)
        if entry is not None:
            for prefix, rule in entry.prefixes:
                if key.startswith(prefix):
                    return rule
            if entry.rule is not None:
                return entry.rule
        return self._default

    def describe(self) -> list[dict[str, Any]]:
        return [self.rules[s].to_json() for s in sorted(self.rules)]


# -- the decision ------------------------------------------------------------------------------


class Route(enum.Enum):
    LOCAL = "local"          # write here, stamped with the rule's epoch
    FORWARD = "forward"      # send to the primary region's gateway
    SWITCHING = "switching"  # the scope is moving: hold (buffer) or refuse with primary_switching


def decide(rule: Rule, region: str) -> Route:
    """Where a write under ``rule`` goes, seen from ``region``. Exhaustive: falling through is a bug."""
    if rule.mode == ANY_REGION:
        return Route.LOCAL
    if rule.mode == SINGLE_PRIMARY:
        if rule.state == SWITCHING:
            return Route.SWITCHING
        if rule.state == ACTIVE:
            return Route.LOCAL if rule.primary == region else Route.FORWARD
    raise AssertionError(f"no route for {rule!r}")


def accepts_forward(rule: Rule, region: str, epoch: int) -> bool:
    """Whether ``region`` may apply a write forwarded under ``epoch`` (DESIGN.md §6.3 revalidation)."""
    if rule.mode == ANY_REGION:
        return epoch == rule.epoch
    return rule.state == ACTIVE and rule.primary == region and epoch == rule.epoch
