"""How gatewayctl shows things (gateway/ctl/render.py)."""

from __future__ import annotations

from gateway.ctl import render
from gateway.routing.rules import Rule
from tests.unit.ctl.harness import rule


def test_diff_rendering() -> None:
    old = rule("view#users", epoch=1, version=2)
    new = Rule("view#users", "single_primary", "eu-west-1", epoch=2, version=3)
    assert render.diff(old, new) == [("primary", "us-east-1", "eu-west-1"), ("epoch", "1", "2"), ("version", "2", "3")]
    assert render.diff_text("view#users", None, new).splitlines()[0] == "create rule view#users:"
    assert render.diff_text("view#users", old, None).splitlines()[1] == "  mode:    single_primary -> -"
