"""Rules and scopes: validation, the control-table item and JSON forms, edits (gateway/routing/rules.py)."""

from __future__ import annotations

import pytest

from gateway.routing.rules import (
    ACTIVE,
    ANY_REGION,
    SINGLE_PRIMARY,
    Rule,
    RuleError,
    ScheduleEntry,
    check_scope,
    edited,
    parse_rule,
    rule_from_json,
    validate,
)


def rule(scope: str, primary: str | None = "us-east-1", **kw) -> Rule:
    return Rule(scope, kw.pop("mode", SINGLE_PRIMARY), primary, kw.pop("epoch", 0), **kw)


@pytest.mark.parametrize("scope", ["default", "view#users", "view#users#prefix#eu-", "view#a.b-c_d#prefix#x#y"])
def test_valid_scopes(scope):
    assert check_scope(scope) == scope


@pytest.mark.parametrize("scope", ["", "users", "view#", "view#users#", "view#users#prefix#", "view#users#pfx#a", "Default", 3])
def test_invalid_scopes_are_refused_with_the_forms_named(scope):
    with pytest.raises(RuleError, match="view#VIEW#prefix#PREFIX"):
        check_scope(scope)



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
