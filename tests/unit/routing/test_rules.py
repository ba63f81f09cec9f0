"""Rules, scopes, the snapshot's longest-prefix match and the write decision (gateway/routing/rules.py)."""

from __future__ import annotations

import pytest

from gateway.routing.rules import (
    ACTIVE,
    ANY_REGION,
    DEFAULT_SCOPE,
    SINGLE_PRIMARY,
    SWITCHING,
    Rule,
    RuleError,
    ScheduleEntry,
    check_scope,
    edited,
    parse_rule,
    rule_from_json,
    validate,
)
from gateway.routing.snapshot import Route, RoutingTable, accepts_forward, decide


def rule(scope: str, primary: str | None = "us-east-1", **kw) -> Rule:
    return Rule(scope, kw.pop("mode", SINGLE_PRIMARY), primary, kw.pop("epoch", 0), **kw)


@pytest.mark.parametrize("scope", ["default", "view#users", "view#users#prefix#eu-", "view#a.b-c_d#prefix#x#y"])
def test_valid_scopes(scope):
    assert check_scope(scope) == scope


@pytest.mark.parametrize("scope", ["", "users", "view#", "view#users#", "view#users#prefix#", "view#users#pfx#a", "Default", 3])
def test_invalid_scopes_are_refused_with_the_forms_named(scope):
    with pytest.raises(RuleError, match="view#VIEW#prefix#PREFIX"):
        check_scope(scope)


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


def test_items_round_trip_and_carry_a_replication_version():
    original = rule(
        "view#users#prefix#eu-", "eu-west-1", epoch=7, version=4, updated_by="ops@host", updated_at=123,
        schedule=(ScheduleEntry("08:00", "eu-west-1"), ScheduleEntry("20:00", "us-east-1")),
    )
    item = original.to_item(ts_us=99, region="eu-west-1")
    assert item["pk"] == {"S": "rule#view#users#prefix#eu-"} and item["_ts"] == {"N": "99"}
    assert parse_rule(item) == original
    assert rule_from_json(original.to_json()) == original


@pytest.mark.parametrize(
    "change, message",
    [
        ({"mode": {"S": "round_robin"}}, "mode must be one of"),
        ({"epoch": {"N": "-1"}}, "epoch must be an integer >= 0"),
        ({"epoch": {"S": "one"}}, "epoch must be an integer"),
        ({"primary": {"S": "mars-1"}}, "not a region name"),
        ({"state": {"S": "switching"}}, "next_primary is required"),
        ({"scope": {"S": "view#other"}}, "does not match its key"),
        ({"schedule": {"L": [{"M": {"at": {"S": "25:00"}, "primary": {"S": "us-east-1"}}}]}}, "HH:MM"),
    ],
)
def test_malformed_items_are_refused_naming_the_field(change, message):
    item = rule("view#users").to_item(ts_us=1, region="us-east-1")
    item.update(change)
    with pytest.raises(RuleError, match=message):
        parse_rule(item)


def test_missing_primary_is_refused_for_single_primary_only():
    item = rule("view#users").to_item(ts_us=1, region="us-east-1")
    del item["primary"]
    with pytest.raises(RuleError, match="primary is required"):
        parse_rule(item)
    assert validate(rule("view#users", None, mode=ANY_REGION)).primary is None


def test_known_regions_are_enforced_when_given():
    with pytest.raises(RuleError, match="not a known region"):
        validate(rule("default", "sa-east-1"), regions=["us-east-1", "eu-west-1"])


def test_json_rules_refuse_unknown_fields():
    with pytest.raises(RuleError, match="unknown rule field 'primay'"):
        rule_from_json({"scope": "default", "primay": "us-east-1"})


def test_an_edit_bumps_the_version_and_a_primary_change_bumps_the_epoch():
    before = rule("view#users", "us-east-1", epoch=3, version=5)
    moved = edited(before, by="ops", at_ms=10, primary="eu-west-1")
    assert (moved.primary, moved.epoch, moved.version, moved.updated_by) == ("eu-west-1", 4, 6, "ops")
    rescheduled = edited(before, by="ops", at_ms=10, schedule=(ScheduleEntry("08:00", "eu-west-1"),))
    assert (rescheduled.epoch, rescheduled.version, rescheduled.state) == (3, 6, ACTIVE)
