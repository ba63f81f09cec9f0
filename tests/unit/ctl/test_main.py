"""gatewayctl's arguments and what a command that cannot reach its tables says (gateway/ctl/main.py)."""

from __future__ import annotations

import argparse

import pytest

from gateway.ctl.main import parse_args, parse_schedule
from gateway.errors import StoreUnavailable
from gateway.routing.rules import ScheduleEntry
from tests.unit.ctl.harness import MEMBERS, Ctl

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


@pytest.mark.parametrize("command", [["rules", "set"], ["rules", "delete"], ["switch"], ["failover"]])
def test_every_changing_command_offers_yes_and_dry_run(command: list[str], capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(SystemExit) as exited:
        parse_args(["--local", *command, "--help"])
    assert exited.value.code == 0
    out = capsys.readouterr().out
    assert "--yes" in out and "apply without asking (required without a terminal)" in out and "--dry-run" in out


def test_switch_usage_names_abort_and_status(capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(SystemExit):
        parse_args(["--local", "switch", "--help"])
    usage = capsys.readouterr().out.split("\n\n")[0]
    assert "gatewayctl switch abort SCOPE [--yes] [--dry-run]" in usage
    assert "gatewayctl switch status SCOPE [--watch]" in usage
