"""The rule edits as pure functions (gateway/ctl/edits.py): first epochs, mode changes."""

from __future__ import annotations

from gateway.ctl.edits import initial_epoch, plan_set
from tests.unit.ctl.harness import REGIONS, rule


def test_a_new_scope_starts_above_its_parent_and_what_the_fleet_saw() -> None:
    rules = [rule("default", epoch=1), rule("view#users", epoch=3), rule("view#users#prefix#eu-", epoch=6)]
    assert initial_epoch("view#users#prefix#eu-west-", rules, []) == 7  # under the eu- prefix
    assert initial_epoch("view#users#prefix#us-", rules, []) == 4  # under the view's rule
    assert initial_epoch("view#items", rules, []) == 2  # under default
    assert initial_epoch("view#items", [], [9, 2]) == 10  # re-created: the fleet still reports epoch 9
    assert initial_epoch("default", [], []) == 0


def test_plan_set_mode_change_bumps_epoch() -> None:
    current = rule("view#users", epoch=1, version=2)
    new = plan_set(current, "view#users", primary=None, mode="any_region", schedule=None,
                   regions=list(REGIONS), by="x@y", now_ms=5)
    assert new is not None and (new.mode, new.primary, new.epoch, new.version) == ("any_region", "us-east-1", 2, 3)
