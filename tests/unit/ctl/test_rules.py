"""gatewayctl rules set|delete|list|get against in-memory tables (gateway/ctl/rules.py): conditional edits, refusals, what the operator sees."""

from __future__ import annotations

import json

import pytest

from gateway.routing.rules import ScheduleEntry
from tests.fakes import FakeClock, FakeTables
from tests.unit.ctl.harness import CONFIG, MEMBERS, NOW, RULES, Ctl, member, rule


def test_set_creates_a_rule_at_version_1_epoch_0(ctl: Ctl, capsys: pytest.CaptureFixture[str]) -> None:
    assert ctl("rules", "set", "view#users", "--primary", "eu-west-1", "--by", "ann@ops", "--yes") == 0
    out = capsys.readouterr().out
    assert "create rule view#users:" in out
    assert "  primary: - -> eu-west-1" in out and "  epoch:   - -> 0" in out and "  version: - -> 1" in out
    assert ctl.stored("view#users") == rule(
        "view#users", "eu-west-1", version=1, epoch=0, updated_by="ann@ops", updated_at=ctl.clock.wall_ms()
    )
    item = ctl.store.item(RULES, "rule#view#users")
    assert item is not None
    assert item["_ts"] == {"N": str(ctl.clock.wall_us())} and item["_region"] == {"S": "us-east-1"}


def test_changing_the_primary_bumps_epoch_and_version_and_shows_it(ctl: Ctl, capsys: pytest.CaptureFixture[str]) -> None:
    ctl.seed(rule("view#users", epoch=4, version=7))
    assert ctl("rules", "set", "view#users", "--primary", "eu-west-1", "--by", "bob@ops", "--yes") == 0
    out = capsys.readouterr().out
    assert out.startswith(
        "edit rule view#users (version 7):\n  primary: us-east-1 -> eu-west-1\n  epoch:   4 -> 5\n  version: 7 -> 8\n"
    )
    assert "without a fence" in out
    stored = ctl.stored("view#users")
    assert stored is not None and (stored.primary, stored.epoch, stored.version, stored.updated_by) == (
        "eu-west-1", 5, 8, "bob@ops",
    )


def test_a_schedule_edit_keeps_the_epoch(ctl: Ctl, capsys: pytest.CaptureFixture[str]) -> None:
    ctl.seed(rule("view#users", epoch=2, version=3))
    assert ctl("rules", "set", "view#users", "--schedule", "08:00=eu-west-1,00:00=us-east-1", "--yes") == 0
    assert "  schedule: - -> 00:00=us-east-1,08:00=eu-west-1\n  version:  3 -> 4" in capsys.readouterr().out
    stored = ctl.stored("view#users")
    assert stored is not None and (stored.epoch, stored.version, len(stored.schedule)) == (2, 4, 2)


def test_an_edit_that_changes_nothing_writes_nothing(ctl: Ctl, capsys: pytest.CaptureFixture[str]) -> None:
    ctl.seed(rule("view#users"))
    assert ctl("rules", "set", "view#users", "--primary", "us-east-1", "--mode", "single_primary") == 0
    assert capsys.readouterr().out.startswith("no change")
    assert ctl.store.writes == []


def test_an_edit_racing_another_is_refused_and_names_the_winner(ctl: Ctl, capsys: pytest.CaptureFixture[str]) -> None:
    ctl.seed(rule("view#users", version=3))
    winner = rule("view#users", "ap-southeast-1", epoch=1, version=4, updated_by="eve@ops")

    def someone_else_writes_while_we_ask(question: str) -> bool:
        ctl.seed(winner)
        return True

    assert ctl("rules", "set", "view#users", "--primary", "eu-west-1", confirm=someone_else_writes_while_we_ask) == 1
    assert capsys.readouterr().err == (
        "gatewayctl: the rule for view#users changed since it was read: expected version 3, found version 4 "
        "(by eve@ops); nothing was written — `gatewayctl rules get view#users` shows it; run the edit again\n"
    )
    assert ctl.stored("view#users") == winner


def test_a_create_racing_another_is_refused(ctl: Ctl, capsys: pytest.CaptureFixture[str]) -> None:
    def someone_else_creates_it(question: str) -> bool:
        ctl.seed(rule("view#users", updated_by="eve@ops"))
        return True

    assert ctl("rules", "set", "view#users", "--primary", "eu-west-1", confirm=someone_else_creates_it) == 1
    assert "changed since it was read: it exists now, version 1 (by eve@ops)" in capsys.readouterr().err


def test_a_stale_expect_version_is_refused(ctl: Ctl, capsys: pytest.CaptureFixture[str]) -> None:
    ctl.seed(rule("view#users", version=5, updated_by="eve@ops"))
    assert ctl("rules", "set", "view#users", "--primary", "eu-west-1", "--expect-version", "4", "--yes") == 1
    assert capsys.readouterr().err == (
        "gatewayctl: the rule for view#users: expected version 4, found version 5 (by eve@ops); nothing was written"
        " — `gatewayctl rules get view#users` shows it; edit again with --expect-version 5\n"
    )
    assert ctl.store.writes == []
    assert ctl("rules", "set", "view#users", "--primary", "eu-west-1", "--expect-version", "5", "--yes") == 0


def test_a_switching_rule_is_not_edited(ctl: Ctl, capsys: pytest.CaptureFixture[str]) -> None:
    ctl.seed(rule("view#users", state="switching", next_primary="eu-west-1", switch_id="sw-42"))
    assert ctl("rules", "set", "view#users", "--primary", "ap-southeast-1", "--yes") == 1
    assert capsys.readouterr().err == (
        "gatewayctl: a switch of view#users is in progress (switch_id sw-42, to eu-west-1); wait for it "
        "(`gatewayctl switch status view#users --watch`) or end it with `gatewayctl switch abort view#users`\n"
    )
    assert ctl("rules", "delete", "view#users", "--yes") == 1
    assert ctl.store.writes == []


@pytest.mark.parametrize(
    ("argv", "says"),
    [
        (["view#users", "--primary", "us-west-2"],
         "rule 'view#users': primary 'us-west-2' is not a known region (ap-southeast-1, eu-west-1, us-east-1)"),
        (["view#users", "--primary", "us-east-1", "--schedule", "08:00=mars"],
         "schedule 08:00 'mars' is not a known region"),
        (["view#orders", "--primary", "us-east-1"],
         "view 'orders' is not configured in"),
        (["view#users", "--primary", "us-east-1", "--schedule", "25:00=eu-west-1"],
         "schedule[0].at must be HH:MM (UTC), got '25:00'"),
        (["view#users", "--mode", "any_region", "--schedule", "08:00=eu-west-1"],
         "only single_primary scopes have a schedule"),
        (["view#users"], "--primary REGION is required to create it"),
    ],
)
def test_invalid_rules_are_refused_before_anything_is_written(
    ctl: Ctl, argv: list[str], says: str, capsys: pytest.CaptureFixture[str]
) -> None:
    assert ctl("rules", "set", *argv, "--yes") == 1
    err = capsys.readouterr().err
    assert err.startswith("gatewayctl: ") and says in err and err.count("\n") == 1
    assert ctl.store.writes == []


def test_a_config_without_regions_cannot_validate_rules(ctl: Ctl, capsys: pytest.CaptureFixture[str]) -> None:
    ctl.config.write_text('[gateway]\nregion = "us-east-1"\n[views.users]\ntable = "features_users"\n')
    assert ctl("rules", "set", "view#users", "--primary", "us-east-1", "--yes") == 1
    assert "defines no [regions.NAME] tables" in capsys.readouterr().err


def test_the_default_scope_needs_no_view(ctl: Ctl) -> None:
    assert ctl("rules", "set", "default", "--primary", "us-east-1", "--yes") == 0
    assert ctl.stored("default") is not None


def test_a_new_prefix_scope_is_written_above_its_view(ctl: Ctl) -> None:
    ctl.seed(rule("view#users", epoch=3))
    ctl.store.put(MEMBERS, member("us-east-1/a", "us-east-1", epochs={"view#users#prefix#eu-": 8}))
    assert ctl("rules", "set", "view#users#prefix#eu-", "--primary", "eu-west-1", "--yes") == 0
    stored = ctl.stored("view#users#prefix#eu-")
    assert stored is not None and (stored.epoch, stored.version) == (9, 1)


def test_delete_shows_what_goes_and_is_conditional(ctl: Ctl, capsys: pytest.CaptureFixture[str]) -> None:
    ctl.seed(rule("default", epoch=2), rule("view#users", "eu-west-1", epoch=5, version=9))
    assert ctl("rules", "delete", "view#users", "--yes") == 0
    out = capsys.readouterr().out
    assert out.startswith("delete rule view#users (version 9):\n  mode:    single_primary -> -\n  primary: eu-west-1 -> -")
    assert "after the delete, the keys of view#users follow default (primary us-east-1, epoch 2)" in out
    assert ctl.stored("view#users") is None and ctl.stored("default") is not None
    assert ctl("rules", "delete", "view#users", "--yes") == 1
    assert "no rule for view#users" in capsys.readouterr().err


def test_delete_racing_an_edit_is_refused(ctl: Ctl, capsys: pytest.CaptureFixture[str]) -> None:
    ctl.seed(rule("view#users", version=2))

    def edited_meanwhile(question: str) -> bool:
        ctl.seed(rule("view#users", version=3, updated_by="eve@ops"))
        return True

    assert ctl("rules", "delete", "view#users", confirm=edited_meanwhile) == 1
    assert "expected version 2, found version 3 (by eve@ops); nothing was written" in capsys.readouterr().err
    assert ctl.stored("view#users") is not None


def test_a_malformed_item_can_be_deleted(ctl: Ctl, capsys: pytest.CaptureFixture[str]) -> None:
    ctl.store.put(RULES, {"pk": {"S": "rule#view#users"}, "scope": {"S": "view#users"}, "mode": {"S": "sometimes"}})
    assert ctl("rules", "set", "view#users", "--primary", "us-east-1", "--yes") == 1
    assert "delete it first: gatewayctl rules delete view#users" in capsys.readouterr().err
    assert ctl("rules", "delete", "view#users", "--yes") == 0
    assert ctl.store.item(RULES, "rule#view#users") is None


def test_rules_list_is_an_aligned_table_with_malformed_items_listed(ctl: Ctl, capsys: pytest.CaptureFixture[str]) -> None:
    ctl.seed(
        rule("view#users", "eu-west-1", epoch=2, version=3, updated_at=1_763_892_000_000),
        rule("default", updated_by="feature-gateway local up", updated_at=1_763_891_000_000),
        rule("view#items", state="switching", next_primary="ap-southeast-1", switch_id="s1"),
    )
    ctl.store.put(RULES, {"pk": {"S": "rule#view#bad"}, "scope": {"S": "view#bad"}})
    ctl.store.put(RULES, {"pk": {"S": "lease#schedule"}, "holder": {"S": "x"}})  # not a rule: skipped
    assert ctl("rules", "list") == 0
    assert capsys.readouterr().out == (
        "scope       mode            primary    epoch  state      next_primary    version  updated_by"
        "                updated_at\n"
        "default     single_primary  us-east-1  0      active     -               1        feature-gateway local up"
        "  2025-11-23T09:43:20Z\n"
        "view#items  single_primary  us-east-1  0      switching  ap-southeast-1  1        ann@ops"
        "                   1970-01-01T00:00:00Z\n"
        "view#users  single_primary  eu-west-1  2      active     -               3        ann@ops"
        "                   2025-11-23T10:00:00Z\n"
        "\n"
        "malformed rule items (gateways ignore them and keep their last good rule):\n"
        "  view#bad: error: rule 'view#bad': mode is missing\n"
    )


def test_rules_list_json_has_the_malformed_items_as_error_objects(ctl: Ctl, capsys: pytest.CaptureFixture[str]) -> None:
    users = rule("view#users", schedule=(ScheduleEntry("08:00", "eu-west-1"),))
    ctl.seed(users)
    ctl.store.put(RULES, {"pk": {"S": "rule#view#bad"}, "scope": {"S": "view#bad"}})
    ctl.store.put(RULES, {"pk": {"S": "rule#"}, "mode": {"S": "single_primary"}})  # a rule key without its scope
    ctl.store.put(RULES, {"pk": {"S": "view#items"}, "primary": {"S": "us-east-1"}})  # a rule written without rule#
    ctl.store.put(RULES, {"pk": {"S": "lease#scheduler"}, "holder": {"S": "x"}})  # the lease shares the table
    assert ctl("--json", "rules", "list") == 0
    captured = capsys.readouterr()
    assert json.loads(captured.out) == [
        users.to_json(),
        {"scope": None, "key": "rule#", "error": "item 'rule#' names no scope: a rule's key is rule#SCOPE"},
        {"scope": None, "key": "view#items", "error": "item 'view#items' names no scope: a rule's key is rule#SCOPE"},
        {"scope": "view#bad", "key": "rule#view#bad", "error": "rule 'view#bad': mode is missing"},
    ]
    assert captured.err.splitlines() == [
        "gatewayctl: malformed rule item rule#: item 'rule#' names no scope: a rule's key is rule#SCOPE",
        "gatewayctl: malformed rule item view#items: item 'view#items' names no scope: a rule's key is rule#SCOPE",
        "gatewayctl: malformed rule item view#bad: rule 'view#bad': mode is missing",
    ]
    assert ctl("rules", "list") == 0
    assert capsys.readouterr().out.splitlines()[-3:] == [
        "  (no scope): error: item 'rule#' names no scope: a rule's key is rule#SCOPE",
        "  (no scope): error: item 'view#items' names no scope: a rule's key is rule#SCOPE",
        "  view#bad: error: rule 'view#bad': mode is missing",
    ]


def test_rules_get_text_json_and_unknown(ctl: Ctl, capsys: pytest.CaptureFixture[str]) -> None:
    users = rule("view#users", epoch=1, version=2, updated_at=1_763_892_000_000)
    ctl.seed(users)
    assert ctl("rules", "get", "view#users") == 0
    out = capsys.readouterr().out
    assert "scope:             view#users\n" in out and "updated_at:        2025-11-23T10:00:00Z\n" in out
    assert ctl("rules", "get", "view#users", "--json") == 0
    assert json.loads(capsys.readouterr().out) == users.to_json()
    assert ctl("rules", "get", "view#items") == 1
    assert capsys.readouterr().err.startswith("gatewayctl: no rule for view#items in the control table routing_t")


def test_automatic_failover_is_set_shown_and_turned_off_and_half_of_it_is_refused(
    ctl: Ctl, capsys: pytest.CaptureFixture[str]
) -> None:
    ctl.seed(rule("view#users", epoch=4, version=7))
    assert ctl("rules", "set", "view#users", "--failover-order", "eu-west-1,ap-southeast-1", "--failover-after", "5",
               "--yes") == 0
    out = capsys.readouterr().out
    assert "  failover: - -> eu-west-1,ap-southeast-1 after 5s unreachable" in out
    stored = ctl.stored("view#users")
    assert (stored.failover_order, stored.failover_after, stored.epoch, stored.version) == (
        ("eu-west-1", "ap-southeast-1"), 5.0, 4, 8)  # no new epoch: the primary stays
    assert ctl("rules", "get", "view#users") == 0
    assert "failover:" in capsys.readouterr().out
    assert ctl("rules", "set", "view#users", "--failover-order", "", "--yes") == 0
    assert (ctl.stored("view#users").failover_order, ctl.stored("view#users").failover_after) == ((), None)
    capsys.readouterr()
    assert ctl("rules", "set", "view#users", "--failover-after", "5", "--yes") == 1
    assert "--failover-after needs --failover-order REGION,REGION" in capsys.readouterr().err
    assert ctl("rules", "set", "view#users", "--failover-order", "sa-east-1", "--failover-after", "5", "--yes") == 1
    assert "'sa-east-1' is not a known region" in capsys.readouterr().err


def test_a_witness_region_counts_in_majorities_but_no_rule_may_make_it_primary(
    tmp_path, capsys: pytest.CaptureFixture[str]
) -> None:
    """Two regions and a witness: edits are decided by a majority of the three; the witness is refused as a primary."""
    path = tmp_path / "two.toml"
    path.write_text(CONFIG.replace('[regions.ap-southeast-1]\n', '[regions.ap-southeast-1]\nwitness = true\n'))
    two = Ctl(FakeTables(RULES, MEMBERS), path, FakeClock(NOW))
    assert two("rules", "set", "view#items", "--primary", "ap-southeast-1", "--yes") == 1
    assert "'ap-southeast-1' is a witness region" in capsys.readouterr().err
    assert two("rules", "set", "view#items", "--primary", "us-east-1", "--schedule", "08:00=ap-southeast-1", "--yes") == 1
    assert "schedule 08:00 'ap-southeast-1' is a witness region" in capsys.readouterr().err
    assert two("rules", "set", "view#items", "--primary", "eu-west-1", "--yes") == 0
    assert "accepted by us-east-1, eu-west-1, ap-southeast-1 (3 of 3 regions)" in capsys.readouterr().out
    assert two("rules", "set", "view#items", "--failover-order", "ap-southeast-1", "--failover-after", "5", "--yes") == 1
    assert "failover_order 'ap-southeast-1' is a witness region" in capsys.readouterr().err
