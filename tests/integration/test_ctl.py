"""``gatewayctl`` against the session's DynamoDB Local, reached through a local cluster's ``cluster.json``.

Each test gets its own control and members tables (uuid names) and a config
naming them; the CLI runs in this process (``gateway.ctl.main``/``run``), each
command in its own event loop, so the tests are plain functions.
"""

from __future__ import annotations

import asyncio
import json
import os
import uuid
from collections.abc import AsyncIterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest

from gateway.ctl import main as ctl
from gateway.local.cluster import LOCAL_CREDENTIALS
from gateway.local.dynamodb_local import DynamoDBLocal, free_port
from gateway.routing.rules import Rule
from gateway.store.botocore import BotocoreStore

REGIONS = ("us-east-1", "eu-west-1", "ap-southeast-1")


def config_toml(endpoint: str, suffix: str) -> str:
    lines = [
        "[gateway]", 'region = "us-east-1"',
        "[routing]", f'table = "routing_{suffix}"',
        "[members]", f'table = "members_{suffix}"',
        "[views.users]", f'table = "features_users_{suffix}"',
        "[views.items]", f'table = "features_items_{suffix}"',
    ]
    for i, region in enumerate(REGIONS):
        lines += [
            f"[regions.{region}]", f'downstream = "127.0.0.1:{8700 + 10 * i}"', f'peer = "127.0.0.1:{8701 + 10 * i}"',
            f'dynamodb_endpoint = "{endpoint}"',
        ]
    return "\n".join(lines) + "\n"


async def _with_store(endpoint: str, work: Any) -> Any:
    store = await BotocoreStore.open("us-east-1", endpoint)
    try:
        return await work(store)
    finally:
        await store.close()


@dataclass
class Cluster:
    """A fake local cluster: its state directory, whose every region is the session's DynamoDB Local."""

    endpoint: str
    state_dir: Path
    routing: str
    members: str

    def argv(self, *args: str) -> list[str]:
        return ["--local", "--state-dir", str(self.state_dir), *args]

    def ctl(self, *args: str) -> int:
        """``gatewayctl --local …`` as an operator without a terminal runs it."""
        return ctl.main(self.argv(*args))

    def rule(self, scope: str, capsys: pytest.CaptureFixture[str]) -> dict[str, Any] | None:
        capsys.readouterr()
        code = self.ctl("--json", "rules", "get", scope)
        out = capsys.readouterr().out
        return json.loads(out) if code == 0 else None

    def item(self, table: str, pk: str) -> dict[str, Any] | None:
        return asyncio.run(_with_store(self.endpoint, lambda s: s.get_item(table, {"pk": {"S": pk}}, consistent=True)))

    def put(self, table: str, item: dict[str, Any]) -> None:
        asyncio.run(_with_store(self.endpoint, lambda s: s.put_item(table, item)))


@pytest.fixture
def local_env(monkeypatch: pytest.MonkeyPatch) -> None:
    """``--local`` switches this process to the local credentials; put the test session's back afterwards."""
    for name in LOCAL_CREDENTIALS:
        if name in os.environ:
            monkeypatch.setenv(name, os.environ[name])
        else:
            monkeypatch.delenv(name, raising=False)


@pytest.fixture
async def cluster(dynamodb_local: DynamoDBLocal, tmp_path: Path, local_env: None) -> AsyncIterator[Cluster]:
    suffix = uuid.uuid4().hex[:8]
    endpoint = dynamodb_local.endpoint
    config = tmp_path / "gateway.toml"
    config.write_text(config_toml(endpoint, suffix))
    state_dir = tmp_path / ".local"
    state_dir.mkdir()
    regions = {r: {"downstream": "http://127.0.0.1:1", "peer": "http://127.0.0.1:2", "dynamodb": endpoint, "stopped": False}
               for r in REGIONS}
    (state_dir / "cluster.json").write_text(json.dumps({"config": str(config), "pids": [], "regions": regions}))
    found = Cluster(endpoint, state_dir, f"routing_{suffix}", f"members_{suffix}")
    store = await BotocoreStore.open("us-east-1", endpoint)
    try:
        await store.create_table(found.routing)
        await store.create_table(found.members)
        yield found
    finally:
        await store.close()


def test_set_creates_a_rule_that_get_reads_back(cluster: Cluster, capsys: pytest.CaptureFixture[str]) -> None:
    assert cluster.ctl("rules", "set", "view#users", "--primary", "us-east-1", "--by", "ann@ops", "--yes") == 0
    assert "create rule view#users:" in capsys.readouterr().out
    rule = cluster.rule("view#users", capsys)
    assert rule is not None
    assert {k: rule[k] for k in ("scope", "mode", "primary", "epoch", "state", "version", "updated_by")} == {
        "scope": "view#users", "mode": "single_primary", "primary": "us-east-1", "epoch": 0, "state": "active",
        "version": 1, "updated_by": "ann@ops",
    }
    item = cluster.item(cluster.routing, "rule#view#users")
    assert item is not None and item["_region"] == {"S": "us-east-1"} and int(item["_ts"]["N"]) > 0


def test_changing_the_primary_bumps_epoch_and_version(cluster: Cluster, capsys: pytest.CaptureFixture[str]) -> None:
    assert cluster.ctl("rules", "set", "view#users", "--primary", "us-east-1", "--yes") == 0
    assert cluster.ctl("rules", "set", "view#users", "--primary", "eu-west-1", "--yes") == 0
    out = capsys.readouterr().out
    assert "  primary: us-east-1 -> eu-west-1\n  epoch:   0 -> 1\n  version: 1 -> 2" in out
    rule = cluster.rule("view#users", capsys)
    assert rule is not None and (rule["primary"], rule["epoch"], rule["version"]) == ("eu-west-1", 1, 2)
    assert cluster.ctl("rules", "set", "view#users", "--primary", "eu-west-1", "--yes") == 0
    assert capsys.readouterr().out.startswith("no change")
    assert cluster.rule("view#users", capsys)["version"] == 2  # type: ignore[index]


def test_without_yes_and_without_a_terminal_nothing_is_written(cluster: Cluster, capsys: pytest.CaptureFixture[str]) -> None:
    assert cluster.ctl("rules", "set", "view#users", "--primary", "us-east-1") == 1
    assert "pass --yes to apply without asking" in capsys.readouterr().err
    assert cluster.item(cluster.routing, "rule#view#users") is None


def test_a_stale_expected_version_is_refused(cluster: Cluster, capsys: pytest.CaptureFixture[str]) -> None:
    assert cluster.ctl("rules", "set", "view#users", "--primary", "us-east-1", "--yes") == 0
    assert cluster.ctl("rules", "set", "view#users", "--primary", "eu-west-1", "--by", "eve@ops", "--yes") == 0
    before = cluster.rule("view#users", capsys)
    assert cluster.ctl("rules", "set", "view#users", "--primary", "ap-southeast-1", "--expect-version", "1", "--yes") == 1
    assert capsys.readouterr().err == (
        "gatewayctl: the rule for view#users: expected version 1, found version 2 (by eve@ops); nothing was written"
        " — `gatewayctl rules get view#users` shows it; edit again with --expect-version 2\n"
    )
    assert cluster.rule("view#users", capsys) == before


def test_two_edits_from_the_same_read_one_is_written(cluster: Cluster, capsys: pytest.CaptureFixture[str]) -> None:
    assert cluster.ctl("rules", "set", "view#users", "--primary", "us-east-1", "--yes") == 0

    def another_operator_edits_while_we_confirm(question: str) -> bool:
        # This runs in a worker thread, between our read (version 1) and our conditional write.
        assert cluster.ctl("rules", "set", "view#users", "--primary", "eu-west-1", "--by", "eve@ops", "--yes") == 0
        return True

    argv = cluster.argv("rules", "set", "view#users", "--primary", "ap-southeast-1", "--by", "ann@ops")
    assert ctl.run(argv, confirm=another_operator_edits_while_we_confirm) == 1
    assert "changed since it was read: expected version 1, found version 2 (by eve@ops); nothing was written" \
        in capsys.readouterr().err
    rule = cluster.rule("view#users", capsys)
    assert rule is not None and (rule["primary"], rule["version"], rule["updated_by"]) == ("eu-west-1", 2, "eve@ops")


def test_an_unknown_region_is_refused(cluster: Cluster, capsys: pytest.CaptureFixture[str]) -> None:
    assert cluster.ctl("rules", "set", "view#users", "--primary", "us-west-2", "--yes") == 1
    assert capsys.readouterr().err == (
        "gatewayctl: rule 'view#users': primary 'us-west-2' is not a known region "
        "(ap-southeast-1, eu-west-1, us-east-1); use one of them\n"
    )
    assert cluster.ctl("rules", "set", "view#orders", "--primary", "us-east-1", "--yes") == 1
    assert "view 'orders' is not configured" in capsys.readouterr().err
    assert cluster.ctl("rules", "list") == 0
    assert capsys.readouterr().out == "no rules\n"


def test_delete(cluster: Cluster, capsys: pytest.CaptureFixture[str]) -> None:
    assert cluster.ctl("rules", "set", "default", "--primary", "us-east-1", "--yes") == 0
    assert cluster.ctl("rules", "set", "view#users", "--primary", "eu-west-1", "--yes") == 0
    rule = cluster.rule("view#users", capsys)
    assert rule is not None and rule["epoch"] == 1  # one above default, whose keys it takes over
    assert cluster.ctl("rules", "delete", "view#users") == 1  # no terminal, no --yes
    assert cluster.item(cluster.routing, "rule#view#users") is not None
    assert cluster.ctl("rules", "delete", "view#users", "--yes") == 0
    out = capsys.readouterr().out
    assert "delete rule view#users (version 1):" in out and "follow default (primary us-east-1, epoch 0)" in out
    assert cluster.rule("view#users", capsys) is None
    assert cluster.ctl("rules", "get", "view#users") == 1
    assert "no rule for view#users" in capsys.readouterr().err


def test_rules_list_shows_rules_and_malformed_items(cluster: Cluster, capsys: pytest.CaptureFixture[str]) -> None:
    assert cluster.ctl("rules", "set", "view#users", "--primary", "us-east-1", "--by", "ann@ops", "--yes") == 0
    bad = Rule("view#items", "single_primary", "us-east-1", epoch=0).to_item(ts_us=1, region="us-east-1")
    cluster.put(cluster.routing, {**bad, "mode": {"S": "x"}})  # written by hand, past the CLI
    capsys.readouterr()
    assert cluster.ctl("rules", "list") == 0
    lines = capsys.readouterr().out.splitlines()
    assert lines[0].split() == ["scope", "mode", "primary", "epoch", "state", "next_primary", "version", "updated_by",
                                "updated_at"]
    assert lines[1].split()[:8] == ["view#users", "single_primary", "us-east-1", "0", "active", "-", "1", "ann@ops"]
    assert lines[-1] == "  view#items: error: rule 'view#items': mode must be one of single_primary, any_region, got 'x'"
    assert cluster.ctl("--json", "rules", "list") == 0
    listed = json.loads(capsys.readouterr().out)
    assert [r["scope"] for r in listed] == ["view#users", "view#items"]
    assert listed[1] == {"scope": "view#items", "key": "rule#view#items",
                         "error": "rule 'view#items': mode must be one of single_primary, any_region, got 'x'"}


def test_members_lists_a_member_item(cluster: Cluster, capsys: pytest.CaptureFixture[str]) -> None:
    import time

    now_us = time.time_ns() // 1000
    cluster.put(cluster.members, {
        "pk": {"S": "eu-west-1/host/42/abc123"}, "region": {"S": "eu-west-1"},
        "downstream": {"S": "127.0.0.1:8710"}, "peer": {"S": "127.0.0.1:8711"},
        "started_at": {"N": str(now_us // 1000 - 60_000)}, "heartbeat_at": {"N": str(now_us)},
        "epochs": {"M": {"view#users": {"N": "3"}}}, "buffer_depth": {"N": "2"},
        "replication_lag": {"M": {"us-east-1": {"N": "0.125"}}},
    })
    assert cluster.ctl("members") == 0
    row = capsys.readouterr().out.splitlines()[1].split()
    assert row[:3] == ["eu-west-1", "eu-west-1/host/42/abc123", "127.0.0.1:8711"]
    assert row[4:] == ["view#users=3", "us-east-1=0.125s", "2", "live"]
    assert cluster.ctl("members", "--json") == 0
    (member,) = json.loads(capsys.readouterr().out)
    assert member["epochs"] == {"view#users": 3} and member["replication_lag_seconds"] == {"us-east-1": 0.125}
    assert member["stale"] is False and 0 <= member["heartbeat_age_seconds"] < 30


def test_an_unreachable_control_table_is_one_clear_line(cluster: Cluster, capsys: pytest.CaptureFixture[str]) -> None:
    state = json.loads((cluster.state_dir / "cluster.json").read_text())
    dead = f"http://127.0.0.1:{free_port()}"
    state["regions"]["us-east-1"]["dynamodb"] = dead
    (cluster.state_dir / "cluster.json").write_text(json.dumps(state))
    assert cluster.ctl("rules", "list") == 1
    err = capsys.readouterr().err
    assert err.startswith(f"gatewayctl: cannot reach the control table {cluster.routing} in us-east-1 at {dead}: ")
    assert err.endswith("is the cluster running / are credentials valid?\n") and err.count("\n") == 1


def test_a_missing_control_table_is_named(cluster: Cluster, capsys: pytest.CaptureFixture[str]) -> None:
    config = Path(json.loads((cluster.state_dir / "cluster.json").read_text())["config"])
    config.write_text(config.read_text().replace(f'table = "{cluster.routing}"', 'table = "no_such_routing"'))
    assert cluster.ctl("rules", "list") == 1
    assert capsys.readouterr().err.startswith(
        f"gatewayctl: the control table no_such_routing does not exist in us-east-1 at {cluster.endpoint}"
    )
