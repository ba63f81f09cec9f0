"""``gatewayctl`` against an in-memory store: arguments, rule edits, refusals, and what the operator sees."""

from __future__ import annotations

import argparse
import json
import os
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest

from gateway.ctl import render
from gateway.ctl.edits import initial_epoch, plan_set
from gateway.ctl.main import parse_args, parse_schedule, resolve_target, run
from gateway.ctl.session import CtlError
from gateway.errors import StoreUnavailable
from gateway.local.cluster import LOCAL_CREDENTIALS
from gateway.routing.rules import Rule, ScheduleEntry, parse_rule
from tests.fakes import FakeClock, FakeTables

RULES = "routing_t"
MEMBERS = "members_t"
REGIONS = ("us-east-1", "eu-west-1", "ap-southeast-1")
NOW = 1_763_892_000.0  # 2025-11-23T10:00:00Z

CONFIG = f"""
[gateway]
region = "us-east-1"
[routing]
table = "{RULES}"
[members]
table = "{MEMBERS}"
expiry = 5.0
heartbeat_interval = 0.1
[regions.us-east-1]
downstream = "127.0.0.1:8700"
peer = "127.0.0.1:8701"
[regions.eu-west-1]
downstream = "127.0.0.1:8710"
peer = "127.0.0.1:8711"
[regions.ap-southeast-1]
downstream = "127.0.0.1:8720"
peer = "127.0.0.1:8721"
[views.users]
table = "features_users"
[views.items]
table = "features_items"
"""


def rule(scope: str, primary: str | None = "us-east-1", **fields: Any) -> Rule:
    defaults: dict[str, Any] = {"mode": "single_primary", "epoch": 0, "version": 1, "updated_by": "ann@ops", "updated_at": 1}
    return Rule(scope=scope, primary=primary, **{**defaults, **fields})


@dataclass
class Ctl:
    store: FakeTables
    config: Path
    clock: FakeClock

    def __call__(self, *argv: str, confirm: Callable[[str], bool] | None = None) -> int:
        async def open_store(target: Any) -> tuple[FakeTables, str]:
            return self.store, "http://fake:8000"

        return run(["--region", "us-east-1", "--config", str(self.config), *argv],
                   confirm=confirm, open_store=open_store, clock=self.clock)

    def seed(self, *rules: Rule) -> None:
        self.store.put(RULES, *(r.to_item(ts_us=1, region="us-east-1") for r in rules))

    def stored(self, scope: str) -> Rule | None:
        item = self.store.item(RULES, "rule#" + scope)
        return None if item is None else parse_rule(item)


@pytest.fixture
def ctl(tmp_path: Path) -> Ctl:
    path = tmp_path / "gateway.toml"
    path.write_text(CONFIG)
    return Ctl(FakeTables(RULES, MEMBERS), path, FakeClock(NOW))


# -- arguments ---------------------------------------------------------------------------------


def test_schedule_is_parsed_sorted_and_can_be_cleared() -> None:
    assert parse_schedule("08:00=eu-west-1, 00:00=us-east-1") == (
        ScheduleEntry("00:00", "us-east-1"), ScheduleEntry("08:00", "eu-west-1"),
    )
    assert parse_schedule("") == ()
    with pytest.raises(argparse.ArgumentTypeError, match="'08:00' is not HH:MM=REGION"):
        parse_schedule("08:00")


def test_target_options_work_before_and_after_the_subcommand() -> None:
    before = parse_args(["--local", "--json", "rules", "list"])
    after = parse_args(["rules", "list", "--local", "--json", "--state-dir", "/tmp/x"])
    assert (before.local, before.json, before.state_dir) == (True, True, ".local")
    assert (after.local, after.json, after.state_dir) == (True, True, "/tmp/x")


@pytest.mark.parametrize(
    ("argv", "says"),
    [
        (["rules", "list"], "--region and --config are both required"),
        (["--region", "us-east-1", "rules", "list"], "--region and --config are both required"),
        (["--local", "--profile", "prod", "rules", "list"], "--local uses the local cluster"),
        (["--local", "rules", "get", "users"], "is not 'default', 'view#VIEW'"),
        (["--local", "rules", "set", "view#users", "--mode", "sometimes"], "invalid choice"),
        (["--local", "rules", "set", "view#users", "--schedule", "soon"], "is not HH:MM=REGION"),
        (["--local"], "required"),
    ],
)
def test_bad_arguments_exit_2_with_usage(argv: list[str], says: str, capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(SystemExit) as exited:
        parse_args(argv)
    assert exited.value.code == 2
    err = capsys.readouterr().err
    assert "usage: gatewayctl" in err and says in err


# -- the target --------------------------------------------------------------------------------


@pytest.fixture
def local_env(monkeypatch: pytest.MonkeyPatch) -> None:
    """``--local`` switches this process to the local credentials; put the test session's back afterwards."""
    for name in LOCAL_CREDENTIALS:
        if name in os.environ:
            monkeypatch.setenv(name, os.environ[name])
        else:
            monkeypatch.delenv(name, raising=False)


def test_local_target_reads_cluster_json(tmp_path: Path, ctl: Ctl, local_env: None) -> None:
    state = tmp_path / "state"
    state.mkdir()
    regions = {r: {"dynamodb": f"http://127.0.0.1:86{i}0", "stopped": r == "ap-southeast-1"} for i, r in enumerate(REGIONS)}
    (state / "cluster.json").write_text(json.dumps({"config": str(ctl.config), "regions": regions}))
    first = resolve_target(parse_args(["--local", "--state-dir", str(state), "members"]))
    assert (first.region, first.endpoint_url) == ("us-east-1", "http://127.0.0.1:8600")
    assert first.config.routing.table == RULES
    assert os.environ["AWS_ACCESS_KEY_ID"] == LOCAL_CREDENTIALS["AWS_ACCESS_KEY_ID"]
    chosen = resolve_target(parse_args(["--local", "--state-dir", str(state), "--region", "eu-west-1", "members"]))
    assert chosen.endpoint_url == "http://127.0.0.1:8610"
    with pytest.raises(CtlError, match="ap-southeast-1 of the local cluster is stopped"):
        resolve_target(parse_args(["--local", "--state-dir", str(state), "--region", "ap-southeast-1", "members"]))
    with pytest.raises(CtlError, match=r"region us-west-2 is not in the local cluster \(us-east-1, eu-west-1"):
        resolve_target(parse_args(["--local", "--state-dir", str(state), "--region", "us-west-2", "members"]))


def test_local_target_finds_a_config_path_relative_to_the_checkout(tmp_path: Path, local_env: None) -> None:
    (tmp_path / "config").mkdir()
    (tmp_path / "config" / "local.toml").write_text(CONFIG)
    (tmp_path / ".local").mkdir()
    state = {"config": "config/local.toml", "regions": {"us-east-1": {"dynamodb": "http://127.0.0.1:8600"}}}
    (tmp_path / ".local" / "cluster.json").write_text(json.dumps(state))
    target = resolve_target(parse_args(["--local", "--state-dir", str(tmp_path / ".local"), "members"]))
    assert target.config.members.table == MEMBERS


def test_no_local_cluster_is_one_clear_line(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    assert run(["--local", "--state-dir", str(tmp_path), "rules", "list"]) == 1
    err = capsys.readouterr().err
    assert err == f"gatewayctl: no running local cluster ({tmp_path}/cluster.json missing); start one with `make run`\n"


def test_a_bad_config_is_one_clear_line(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    assert run(["--region", "us-east-1", "--config", str(tmp_path / "nope.toml"), "rules", "list"]) == 1
    assert capsys.readouterr().err == f"gatewayctl: bad configuration: {tmp_path}/nope.toml: file not found\n"


# -- creating and editing ----------------------------------------------------------------------


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


def test_without_a_terminal_nothing_is_written_unless_yes(ctl: Ctl, capsys: pytest.CaptureFixture[str]) -> None:
    assert ctl("rules", "set", "view#users", "--primary", "eu-west-1") == 1
    captured = capsys.readouterr()
    assert "create rule view#users:" in captured.out  # the diff is still shown
    assert "pass --yes to apply without asking" in captured.err
    assert ctl.store.writes == [] and ctl.stored("view#users") is None


def test_the_operator_is_asked_and_no_means_nothing_written(ctl: Ctl, capsys: pytest.CaptureFixture[str]) -> None:
    questions: list[str] = []
    assert ctl("rules", "set", "view#users", "--primary", "eu-west-1", confirm=lambda q: questions.append(q) or False) == 1
    assert questions == ["apply? [y/N] "] and ctl.store.writes == []
    assert ctl("rules", "set", "view#users", "--primary", "eu-west-1", confirm=lambda q: True) == 0
    assert ctl.stored("view#users") is not None


def test_an_edit_racing_another_is_refused_and_names_the_winner(ctl: Ctl, capsys: pytest.CaptureFixture[str]) -> None:
    ctl.seed(rule("view#users", version=3))
    winner = rule("view#users", "ap-southeast-1", epoch=1, version=4, updated_by="eve@ops")

    def someone_else_writes_while_we_ask(question: str) -> bool:
        ctl.seed(winner)
        return True

    assert ctl("rules", "set", "view#users", "--primary", "eu-west-1", confirm=someone_else_writes_while_we_ask) == 1
    assert capsys.readouterr().err == (
        "gatewayctl: the rule for view#users changed since it was read (now version 4 by eve@ops); "
        "nothing was written — re-run to see the change\n"
    )
    assert ctl.stored("view#users") == winner


def test_a_create_racing_another_is_refused(ctl: Ctl, capsys: pytest.CaptureFixture[str]) -> None:
    def someone_else_creates_it(question: str) -> bool:
        ctl.seed(rule("view#users", updated_by="eve@ops"))
        return True

    assert ctl("rules", "set", "view#users", "--primary", "eu-west-1", confirm=someone_else_creates_it) == 1
    assert "(now version 1 by eve@ops)" in capsys.readouterr().err


def test_a_stale_expect_version_is_refused(ctl: Ctl, capsys: pytest.CaptureFixture[str]) -> None:
    ctl.seed(rule("view#users", version=5, updated_by="eve@ops"))
    assert ctl("rules", "set", "view#users", "--primary", "eu-west-1", "--expect-version", "4", "--yes") == 1
    assert "changed since it was read (now version 5 by eve@ops); nothing was written" in capsys.readouterr().err
    assert ctl.store.writes == []
    assert ctl("rules", "set", "view#users", "--primary", "eu-west-1", "--expect-version", "5", "--yes") == 0


def test_a_switching_rule_is_not_edited(ctl: Ctl, capsys: pytest.CaptureFixture[str]) -> None:
    ctl.seed(rule("view#users", state="switching", next_primary="eu-west-1", switch_id="sw-42"))
    assert ctl("rules", "set", "view#users", "--primary", "ap-southeast-1", "--yes") == 1
    assert capsys.readouterr().err == (
        "gatewayctl: a switch of view#users is in progress (switch_id sw-42, to eu-west-1); wait for it or abort it\n"
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


def test_a_new_scope_starts_above_its_parent_and_what_the_fleet_saw() -> None:
    rules = [rule("default", epoch=1), rule("view#users", epoch=3), rule("view#users#prefix#eu-", epoch=6)]
    assert initial_epoch("view#users#prefix#eu-west-", rules, []) == 7  # under the eu- prefix
    assert initial_epoch("view#users#prefix#us-", rules, []) == 4  # under the view's rule
    assert initial_epoch("view#items", rules, []) == 2  # under default
    assert initial_epoch("view#items", [], [9, 2]) == 10  # re-created: the fleet still reports epoch 9
    assert initial_epoch("default", [], []) == 0


def test_a_new_prefix_scope_is_written_above_its_view(ctl: Ctl) -> None:
    ctl.seed(rule("view#users", epoch=3))
    ctl.store.put(MEMBERS, member("us-east-1/a", "us-east-1", epochs={"view#users#prefix#eu-": 8}))
    assert ctl("rules", "set", "view#users#prefix#eu-", "--primary", "eu-west-1", "--yes") == 0
    stored = ctl.stored("view#users#prefix#eu-")
    assert stored is not None and (stored.epoch, stored.version) == (9, 1)


def test_plan_set_mode_change_bumps_epoch() -> None:
    current = rule("view#users", epoch=1, version=2)
    new = plan_set(current, "view#users", primary=None, mode="any_region", schedule=None,
                   regions=list(REGIONS), by="x@y", now_ms=5)
    assert new is not None and (new.mode, new.primary, new.epoch, new.version) == ("any_region", "us-east-1", 2, 3)


# -- delete ------------------------------------------------------------------------------------


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
    assert "(now version 3 by eve@ops)" in capsys.readouterr().err
    assert ctl.stored("view#users") is not None


def test_a_malformed_item_can_be_deleted(ctl: Ctl, capsys: pytest.CaptureFixture[str]) -> None:
    ctl.store.put(RULES, {"pk": {"S": "rule#view#users"}, "scope": {"S": "view#users"}, "mode": {"S": "sometimes"}})
    assert ctl("rules", "set", "view#users", "--primary", "us-east-1", "--yes") == 1
    assert "delete it first: gatewayctl rules delete view#users" in capsys.readouterr().err
    assert ctl("rules", "delete", "view#users", "--yes") == 0
    assert ctl.store.item(RULES, "rule#view#users") is None


# -- reading and rendering ---------------------------------------------------------------------


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


def test_rules_list_json_is_the_rules_and_malformed_go_to_stderr(ctl: Ctl, capsys: pytest.CaptureFixture[str]) -> None:
    users = rule("view#users", schedule=(ScheduleEntry("08:00", "eu-west-1"),))
    ctl.seed(users)
    ctl.store.put(RULES, {"pk": {"S": "rule#view#bad"}, "scope": {"S": "view#bad"}})
    assert ctl("--json", "rules", "list") == 0
    captured = capsys.readouterr()
    assert json.loads(captured.out) == [users.to_json()]
    assert captured.err == "gatewayctl: malformed rule item view#bad: rule 'view#bad': mode is missing\n"


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


def test_diff_rendering() -> None:
    old = rule("view#users", epoch=1, version=2)
    new = Rule("view#users", "single_primary", "eu-west-1", epoch=2, version=3)
    assert render.diff(old, new) == [("primary", "us-east-1", "eu-west-1"), ("epoch", "1", "2"), ("version", "2", "3")]
    assert render.diff_text("view#users", None, new).splitlines()[0] == "create rule view#users:"
    assert render.diff_text("view#users", old, None).splitlines()[1] == "  mode:    single_primary -> -"


def member(instance: str, region: str, *, age: float = 0.5, **extra: Any) -> dict[str, Any]:
    heartbeat_us = round((NOW - age) * 1e6)
    item: dict[str, Any] = {
        "pk": {"S": instance}, "region": {"S": region}, "downstream": {"S": "127.0.0.1:8700"},
        "peer": {"S": f"10.0.0.{len(instance)}:8701"}, "started_at": {"N": "1"},
        "heartbeat_at": {"N": str(heartbeat_us)}, "buffer_depth": {"N": str(extra.get("buffer", 0))},
    }
    if "epochs" in extra:
        item["epochs"] = {"M": {s: {"N": str(e)} for s, e in extra["epochs"].items()}}
    if "lag" in extra:
        item["replication_lag"] = {"M": {r: {"N": str(s)} for r, s in extra["lag"].items()}}
    return item


def test_members_text_sorted_by_region_with_stale_marked(ctl: Ctl, capsys: pytest.CaptureFixture[str]) -> None:
    ctl.store.put(
        MEMBERS,
        member("us-east-1/a", "us-east-1", epochs={"view#users": 2, "default": 0}, lag={"eu-west-1": 0.08}, buffer=3),
        member("eu-west-1/b", "eu-west-1", age=12.0),
        {"pk": {"S": "junk"}},  # no heartbeat: not a member
    )
    assert ctl("members") == 0
    assert capsys.readouterr().out == (
        "region     instance     peer            heartbeat_age  epochs                  replication_lag   buffer  status\n"
        "eu-west-1  eu-west-1/b  10.0.0.11:8701  12.0s          -                       -                 0       stale\n"
        "us-east-1  us-east-1/a  10.0.0.11:8701  0.5s           default=0,view#users=2  eu-west-1=0.080s  3       live\n"
        "\n"
        "1 stale: no heartbeat for more than members.expiry (5s); they are gone, their items wait for the table's TTL\n"
    )


def test_members_json(ctl: Ctl, capsys: pytest.CaptureFixture[str]) -> None:
    ctl.store.put(MEMBERS, member("us-east-1/a", "us-east-1", epochs={"view#users": 2}, lag={"eu-west-1": 0.25}))
    assert ctl("members", "--json") == 0
    assert json.loads(capsys.readouterr().out) == [{
        "region": "us-east-1", "instance": "us-east-1/a", "downstream": "127.0.0.1:8700", "peer": "10.0.0.11:8701",
        "started_at": 1, "heartbeat_age_seconds": 0.5, "epochs": {"view#users": 2},
        "replication_lag_seconds": {"eu-west-1": 0.25}, "buffer_depth": 0, "stale": False,
    }]


# -- store failures ----------------------------------------------------------------------------


def test_an_unreachable_control_table_is_one_clear_line(ctl: Ctl, capsys: pytest.CaptureFixture[str]) -> None:
    ctl.store.failures.append(StoreUnavailable("DynamoDB Scan on table 'routing_t' failed: connection refused"))
    assert ctl("rules", "list") == 1
    assert capsys.readouterr().err == (
        "gatewayctl: cannot reach the control table routing_t in us-east-1 at http://fake:8000: DynamoDB Scan on "
        "table 'routing_t' failed: connection refused; is the cluster running / are credentials valid?\n"
    )


def test_a_missing_table_is_named(ctl: Ctl, capsys: pytest.CaptureFixture[str]) -> None:
    del ctl.store.tables[MEMBERS]
    assert ctl("members") == 1
    assert capsys.readouterr().err.startswith(
        "gatewayctl: the members table members_t does not exist in us-east-1 at http://fake:8000"
    )
