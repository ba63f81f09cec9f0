"""The target and the operator (gateway/ctl/session.py): the local cluster's state file, a bad config, confirmation."""

from __future__ import annotations

import json
import os
from pathlib import Path

import pytest

from gateway.ctl.main import parse_args, resolve_target, run
from gateway.ctl.session import CtlError
from gateway.local.cluster import LOCAL_CREDENTIALS
from tests.unit.ctl.harness import CONFIG, MEMBERS, REGIONS, RULES, Ctl


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
