"""gatewayctl members (gateway/ctl/members.py): the fleet in text and JSON."""

from __future__ import annotations

import json

import pytest

from tests.unit.ctl.harness import MEMBERS, Ctl, member


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
