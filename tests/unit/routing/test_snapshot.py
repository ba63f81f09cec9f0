"""The snapshot's longest-prefix match and the write decision (gateway/routing/snapshot.py)."""

from __future__ import annotations

import pytest

from gateway.routing.rules import (
    ANY_REGION,
    DEFAULT_SCOPE,
    SINGLE_PRIMARY,
    SWITCHING,
    Rule,
)
from gateway.routing.snapshot import Route, RoutingTable, accepts_forward, decide


def rule(scope: str, primary: str | None = "us-east-1", **kw) -> Rule:
    return Rule(scope, kw.pop("mode", SINGLE_PRIMARY), primary, kw.pop("epoch", 0), **kw)


def test_the_longest_matching_scope_wins():
    table = RoutingTable.build(
        [
            rule(DEFAULT_SCOPE, "us-east-1"),
            rule("view#users", "eu-west-1"),
            rule("view#users#prefix#eu-", "eu-west-1"),
            rule("view#users#prefix#eu-de-", "ap-southeast-1"),
        ],
        loaded_at=0.0,
    )
    assert table.rule_for("users", "eu-de-42").scope == "view#users#prefix#eu-de-"
    assert table.rule_for("users", "eu-fr-42").scope == "view#users#prefix#eu-"
    assert table.rule_for("users", "us-42").scope == "view#users"
    assert table.rule_for("items", "eu-de-42").scope == DEFAULT_SCOPE


def test_a_view_with_only_prefix_rules_falls_back_to_default_and_no_default_means_no_rule():
    table = RoutingTable.build([rule("view#users#prefix#a", "eu-west-1")], loaded_at=0.0)
    assert table.rule_for("users", "abc").scope == "view#users#prefix#a"
    assert table.rule_for("users", "xyz") is None
    assert RoutingTable.build([rule(DEFAULT_SCOPE)], 0.0).rule_for("users", "xyz").scope == DEFAULT_SCOPE


def test_decide_is_local_forward_or_switching():
    assert decide(rule("default", "us-east-1"), "us-east-1") is Route.LOCAL
    assert decide(rule("default", "us-east-1"), "eu-west-1") is Route.FORWARD
    assert decide(rule("default", None, mode=ANY_REGION), "eu-west-1") is Route.LOCAL
    switching = rule("default", "us-east-1", state=SWITCHING, next_primary="eu-west-1", switch_id="s1")
    assert decide(switching, "us-east-1") is Route.SWITCHING
    assert decide(switching, "eu-west-1") is Route.SWITCHING


def test_decide_falls_through_only_on_an_impossible_rule():
    impossible = Rule("default", "round_robin", "us-east-1", 0)  # built around validation on purpose
    with pytest.raises(AssertionError):
        decide(impossible, "us-east-1")


def test_a_forward_is_accepted_only_by_the_active_primary_at_that_epoch():
    active = rule("default", "us-east-1", epoch=3)
    assert accepts_forward(active, "us-east-1", 3)
    assert not accepts_forward(active, "us-east-1", 2)  # an older epoch is over
    assert not accepts_forward(active, "us-east-1", 4)  # the sender knows something we do not (yet)
    assert not accepts_forward(active, "eu-west-1", 3)
    switching = rule("default", "us-east-1", epoch=3, state=SWITCHING, next_primary="eu-west-1", switch_id="s")
    assert not accepts_forward(switching, "us-east-1", 3)


def test_an_any_region_scope_accepts_forwards_at_its_epoch_in_every_region():
    everywhere = rule("default", None, mode=ANY_REGION, epoch=2)
    assert accepts_forward(everywhere, "eu-west-1", 2) and accepts_forward(everywhere, "us-east-1", 2)
    assert not accepts_forward(everywhere, "eu-west-1", 1) and not accepts_forward(everywhere, "eu-west-1", 3)


def test_a_snapshot_lists_its_rules_by_scope_and_keeps_when_it_was_read():
    table = RoutingTable.build([rule("view#users", "eu-west-1"), rule(DEFAULT_SCOPE)], loaded_at=12.5)
    assert [r["scope"] for r in table.describe()] == ["default", "view#users"] and table.loaded_at == 12.5
    assert table.describe()[1] == rule("view#users", "eu-west-1").to_json()
    with pytest.raises(AssertionError, match="no route for Rule"):
        decide(Rule("default", SINGLE_PRIMARY, "us-east-1", 0, state="paused"), "us-east-1")
