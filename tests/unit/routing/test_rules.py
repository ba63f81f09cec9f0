"""Rules and scopes: validation, the control-table item and JSON forms, edits (gateway/routing/rules.py)."""

from __future__ import annotations

from dataclasses import replace

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
    scope_prefix,
    scope_view,
    validate,
    view_scope,
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


# -- what gatewayctl and a peer's 409 read: every refusal names the scope and the field --------------

SWITCHING_RULE = dict(state="switching", next_primary="eu-west-1", switch_id="s1")


@pytest.mark.parametrize(
    "fields, message",
    [
        (dict(mode="round_robin"), "rule 'default': mode must be one of single_primary, any_region, got 'round_robin'"),
        (dict(state="paused"), "rule 'default': state must be one of active, switching, got 'paused'"),
        (dict(epoch=-1), "rule 'default': epoch must be an integer >= 0, got -1"),
        (dict(epoch=True), "rule 'default': epoch must be an integer >= 0, got True"),
        (dict(epoch="1"), "rule 'default': epoch must be an integer >= 0, got '1'"),
        (dict(version=-1), "rule 'default': version must be an integer >= 0, got -1"),
        (dict(version=False), "rule 'default': version must be an integer >= 0, got False"),
        (dict(version=1.5), "rule 'default': version must be an integer >= 0, got 1.5"),
        (dict(primary=None), "rule 'default': primary is required"),
        (dict(primary="Mars"), "rule 'default': primary 'Mars' is not a region name like us-east-1"),
        (dict(primary=7), "rule 'default': primary 7 is not a region name like us-east-1"),
        (dict(primary="sa-east-1"), "rule 'default': primary 'sa-east-1' is not a known region (eu-west-1, us-east-1)"),
        (dict(mode="any_region", primary=None, **SWITCHING_RULE), "rule 'default': only single_primary scopes switch"),
        (dict(SWITCHING_RULE, next_primary=None), "rule 'default': next_primary is required"),
        (dict(SWITCHING_RULE, switch_id=""), "rule 'default': a switching rule needs a switch_id"),
        (dict(SWITCHING_RULE, next_primary="us-east-1"), "rule 'default': next_primary equals primary (us-east-1)"),
        (dict(next_primary="eu-west-1"), "rule 'default': next_primary and switch_id belong to a switching rule only"),
        (dict(switch_id="s1"), "rule 'default': next_primary and switch_id belong to a switching rule only"),
        (dict(schedule=(ScheduleEntry("8:00", "eu-west-1"),)), "rule 'default': schedule[0].at must be HH:MM (UTC), got '8:00'"),
        (dict(schedule=(ScheduleEntry("08:00", "eu-west-1"), ScheduleEntry("24:00", "us-east-1"))),
         "rule 'default': schedule[1].at must be HH:MM (UTC), got '24:00'"),
        (dict(schedule=(ScheduleEntry("08:60", "eu-west-1"),)), "rule 'default': schedule[0].at must be HH:MM (UTC), got '08:60'"),
        (dict(schedule=(ScheduleEntry("08:00", None),)), "rule 'default': schedule[0].primary is required"),
        (dict(schedule=(ScheduleEntry("08:00", "sa-east-1"),)),
         "rule 'default': schedule[0].primary 'sa-east-1' is not a known region (eu-west-1, us-east-1)"),
        (dict(mode="any_region", primary=None, schedule=(ScheduleEntry("08:00", "eu-west-1"),)),
         "rule 'default': only single_primary scopes have a schedule"),
        (dict(schedule=(ScheduleEntry("08:00", "eu-west-1"), ScheduleEntry("08:00", "us-east-1"))),
         "rule 'default': schedule has two entries at the same time"),
    ],
)
def test_each_invalid_field_is_refused_with_a_message_naming_it(fields, message):
    base = dict(scope="default", mode=SINGLE_PRIMARY, primary="us-east-1", epoch=0)
    with pytest.raises(RuleError) as refused:
        validate(Rule(**{**base, **fields}), regions=["us-east-1", "eu-west-1"])
    assert str(refused.value) == message


@pytest.mark.parametrize("at", ["00:00", "09:59", "19:30", "23:59"])
def test_every_time_of_day_is_a_schedule_entry(at):
    assert validate(rule("default", schedule=(ScheduleEntry(at, "us-east-1"),))).schedule[0].at == at


def test_a_switching_rule_round_trips_through_both_forms():
    switching = rule(
        "view#items", "us-east-1", epoch=2, version=3, updated_by="ops", updated_at=5, **SWITCHING_RULE,
        switch_started_at=1234,
    )
    item = switching.to_item(ts_us=7, region="us-east-1")
    assert item == {
        "pk": {"S": "rule#view#items"}, "kind": {"S": "rule"}, "scope": {"S": "view#items"},
        "mode": {"S": "single_primary"}, "epoch": {"N": "2"}, "state": {"S": "switching"}, "version": {"N": "3"},
        "updated_by": {"S": "ops"}, "updated_at": {"N": "5"}, "_ts": {"N": "7"}, "_region": {"S": "us-east-1"},
        "primary": {"S": "us-east-1"}, "next_primary": {"S": "eu-west-1"}, "switch_id": {"S": "s1"},
        "switch_started_at": {"N": "1234"},
    }
    assert parse_rule(item) == switching
    assert switching.to_json() == {
        "scope": "view#items", "mode": "single_primary", "primary": "us-east-1", "epoch": 2, "state": "switching",
        "version": 3, "updated_by": "ops", "updated_at": 5, "next_primary": "eu-west-1", "switch_id": "s1",
        "switch_started_at": 1234,
    }
    assert rule_from_json(switching.to_json()) == switching
    assert rule("default").to_item(ts_us=1, region="us-east-1")["updated_by"] == {"S": "-"}  # never an empty string


def test_a_json_rule_takes_the_documented_defaults():
    assert rule_from_json({"scope": "default", "primary": "us-east-1"}) == Rule("default", SINGLE_PRIMARY, "us-east-1", 0)
    assert rule_from_json({"scope": "default", "mode": "any_region", "updated_by": 7}).updated_by == "7"


@pytest.mark.parametrize(
    "body, message",
    [
        ([], "a rule must be a JSON object, got list"),
        ({"scope": "default", "primary": "us-east-1", "schedule": {"at": "08:00"}}, "schedule must be a list of"),
        ({"scope": "default", "primary": "us-east-1", "schedule": ["08:00"]}, "schedule must be a list of"),
        ({"scope": "view#", "primary": "us-east-1"}, "is not 'default', 'view#VIEW'"),
        ({"scope": "default", "primary": "sa-east-1"}, "primary 'sa-east-1' is not a known region (us-east-1)"),
    ],
)
def test_malformed_json_rules_are_refused(body, message):
    with pytest.raises(RuleError) as refused:
        rule_from_json(body, regions=["us-east-1"])
    assert message in str(refused.value)


def test_a_json_schedule_is_read_entry_by_entry():
    body = {"scope": "default", "primary": "us-east-1", "schedule": [{"at": "08:00", "primary": "eu-west-1"}]}
    assert rule_from_json(body).schedule == (ScheduleEntry("08:00", "eu-west-1"),)
    assert rule_from_json({**body, "schedule": None}).schedule == ()


@pytest.mark.parametrize(
    "change, message",
    [
        ({"mode": None}, "rule 'view#users': mode is missing"),
        ({"state": None}, "rule 'view#users': state is missing"),
        ({"scope": None}, "rule 'view#users': scope is missing"),
        ({"epoch": None}, "rule 'view#users': epoch is missing"),
        ({"version": None}, "rule 'view#users': version is missing"),
        ({"mode": {"N": "1"}}, "rule 'view#users': mode must be a string"),
        ({"version": {"S": "1"}}, "rule 'view#users': version must be an integer"),
        ({"updated_at": {"N": "soon"}}, "rule 'view#users': updated_at must be an integer"),
        ({"schedule": {"L": [{"M": {"at": {"S": "08:00"}}}]}}, "rule 'view#users': schedule[0] needs 'at' and 'primary' strings"),
    ],
)
def test_malformed_items_name_the_attribute(change, message):
    item = rule("view#users").to_item(ts_us=1, region="us-east-1")
    for name, value in change.items():
        if value is None:
            del item[name]
        else:
            item[name] = value
    with pytest.raises(RuleError) as refused:
        parse_rule(item)
    assert str(refused.value) == message


def test_optional_item_attributes_default_to_empty():
    item = rule("view#users", version=2).to_item(ts_us=1, region="us-east-1")
    del item["updated_by"], item["updated_at"]
    parsed = parse_rule(item)
    assert (parsed.updated_by, parsed.updated_at, parsed.switch_started_at, parsed.version) == ("", 0, None, 2)


def test_scopes_name_their_view_and_prefix():
    assert [scope_view(s) for s in ("default", "view#users", "view#users#prefix#eu-#x")] == [None, "users", "users"]
    assert [scope_prefix(s) for s in ("default", "view#users", "view#users#prefix#eu-#x")] == [None, None, "eu-#x"]
    assert (view_scope("users"), view_scope("users", "eu-")) == ("view#users", "view#users#prefix#eu-")


def test_an_edit_of_the_mode_bumps_the_epoch_and_stamps_who_and_when():
    before = rule("view#users", "us-east-1", epoch=3, version=5)
    changed = edited(before, by="ann", at_ms=42, mode=ANY_REGION, primary="us-east-1")
    assert (changed.mode, changed.epoch, changed.version, changed.updated_by, changed.updated_at) == (ANY_REGION, 4, 6, "ann", 42)


def test_a_new_rule_at_version_and_epoch_0_round_trips_as_it_is():
    fresh = rule("default")
    assert parse_rule(fresh.to_item(ts_us=1, region="us-east-1")) == replace(fresh, updated_by="-")
    assert parse_rule({**fresh.to_item(ts_us=1, region="us-east-1"), "updated_by": {"S": ""}}) == fresh


def test_a_schedule_entry_that_is_not_a_map_is_a_malformed_item_not_a_crash():
    item = rule("view#users").to_item(ts_us=1, region="us-east-1")
    item["schedule"] = {"L": [{"S": "08:00=us-east-1"}]}
    with pytest.raises(RuleError, match=r"schedule\[0\] needs 'at' and 'primary' strings"):
        parse_rule(item)


AUTO = dict(failover_order=("eu-west-1", "ap-southeast-1"), failover_after=2.5)


def test_a_rule_that_fails_over_by_itself_round_trips_through_both_forms():
    auto = Rule("view#items", SINGLE_PRIMARY, "us-east-1", epoch=2, version=3, updated_by="ops", updated_at=5, **AUTO)
    body = auto.to_json()
    assert (body["failover_order"], body["failover_after"]) == (["eu-west-1", "ap-southeast-1"], 2.5)
    assert rule_from_json(body) == auto  # a pushed rule (peer API, gatewayctl --json)
    item = auto.to_item(ts_us=7, region="us-east-1")
    assert (item["failover_order"], item["failover_after"]) == (
        {"L": [{"S": "eu-west-1"}, {"S": "ap-southeast-1"}]}, {"N": "2.5"})
    assert parse_rule(item) == auto  # the control table's item


@pytest.mark.parametrize(("changes", "why"), [
    (dict(mode=ANY_REGION, primary=None, **AUTO), "only single_primary scopes fail over"),
    (dict(failover_order=("eu-west-1",)), "automatic failover needs both failover_order and failover_after"),
    (dict(failover_after=2.5), "automatic failover needs both failover_order and failover_after"),
    (dict(failover_order=("eu-west-1",), failover_after=True), "failover_after must be seconds above 0 and at most 86400, got True"),
    (dict(failover_order=("eu-west-1",), failover_after="2"), "failover_after must be seconds above 0 and at most 86400, got '2'"),
    (dict(failover_order=("eu-west-1",), failover_after=0), "failover_after must be seconds above 0 and at most 86400, got 0"),
    (dict(failover_order=("eu-west-1",), failover_after=86_400.5), "at most 86400, got 86400.5"),
])
def test_automatic_failover_settings_are_refused_saying_which_is_wrong(changes, why):
    base = dict(scope="view#items", mode=SINGLE_PRIMARY, primary="us-east-1", epoch=1)
    with pytest.raises(RuleError) as refused:
        validate(Rule(**{**base, **changes}))
    assert str(refused.value).endswith(why)
    assert validate(Rule(**{**base, "failover_order": ("eu-west-1",), "failover_after": 86_400})).failover_after == 86_400
    assert validate(Rule(**{**base, "failover_order": ("eu-west-1",), "failover_after": 0.5})).failover_after == 0.5


@pytest.mark.parametrize("order", ["eu-west-1", ["eu-west-1", 3]])
def test_a_failover_order_that_is_not_a_list_of_names_is_refused_in_both_forms(order):
    body = {"scope": "view#items", "mode": SINGLE_PRIMARY, "primary": "us-east-1", "epoch": 1, "state": ACTIVE,
            "failover_order": order, "failover_after": 2}
    with pytest.raises(RuleError, match=r"^failover_order must be a list of region names$"):
        rule_from_json(body)
    item = Rule("view#items", SINGLE_PRIMARY, "us-east-1", epoch=1).to_item(ts_us=1, region="us-east-1")
    with pytest.raises(RuleError, match=r"^rule 'view#items': failover_order must be a list of region names$"):
        parse_rule({**item, "failover_order": {"S": "eu-west-1"}})
    with pytest.raises(RuleError, match=r"^rule 'view#items': failover_after must be a number of seconds$"):
        parse_rule({**item, "failover_order": {"L": [{"S": "eu-west-1"}]}, "failover_after": {"S": "2"}})


@pytest.mark.parametrize(("order", "why"), [
    (("eu-west-1", None), "rule 'view#items': failover_order[1] is required"),
    (("eu-west-1", "Mars"), "rule 'view#items': failover_order[1] 'Mars' is not a region name like us-east-1"),
    (("eu-west-1", "eu-west-1"), "rule 'view#items': failover_order names a region twice"),
])
def test_each_region_of_a_failover_order_is_checked_by_its_place(order, why):
    with pytest.raises(RuleError) as refused:
        validate(Rule("view#items", SINGLE_PRIMARY, "us-east-1", epoch=1, failover_order=order, failover_after=2))
    assert str(refused.value) == why
