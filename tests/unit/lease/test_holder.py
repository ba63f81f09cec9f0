"""The holder's lease (gateway/lease/holder.py): a majority of one round, from when it was asked, less the drift."""

from __future__ import annotations

import pytest

from gateway.lease.holder import LeaseHolder

REGIONS = ("us-east-1", "eu-west-1", "ap-southeast-1")


def holder() -> LeaseHolder:
    return LeaseHolder("us-east-1", REGIONS, lease=3.0, max_drift=0.5)


def test_a_majority_of_one_round_gives_a_lease_from_the_time_it_was_asked_less_the_drift():
    h = holder()
    first = h.ask({"view#a": 2}, now=10.0)
    h.confirmed(first, "us-east-1", ["view#a"])
    assert not h.valid("view#a", 2, 10.5)  # one region of three is no majority
    h.confirmed(first, "eu-west-1", ["view#a"])
    assert h.valid("view#a", 2, 12.49) and not h.valid("view#a", 2, 12.5)  # 10 + 3 - 0.5
    assert not h.valid("view#a", 1, 11.0) and not h.valid("view#b", 2, 11.0)


def test_confirmations_of_different_rounds_never_add_up():
    h = holder()
    one, two = h.ask({"view#a": 2}, now=10.0), h.ask({"view#a": 2}, now=11.0)
    h.confirmed(one, "us-east-1", ["view#a"])
    h.confirmed(two, "eu-west-1", ["view#a"])
    assert h.until("view#a") is None and not h.valid("view#a", 2, 11.5)


def test_a_later_round_extends_an_older_never_shortens_and_a_higher_epoch_replaces_it():
    h = holder()
    late, early = h.ask({"view#a": 2}, now=11.0), h.ask({"view#a": 2}, now=10.0)
    for region in REGIONS[:2]:
        h.confirmed(late, region, ["view#a"])
        h.confirmed(early, region, ["view#a"])
    assert h.until("view#a") == (2, 13.5)
    higher = h.ask({"view#a": 3}, now=12.0)
    for region in REGIONS[1:]:
        h.confirmed(higher, region, ["view#a"])
    assert h.until("view#a") == (3, 14.5) and not h.valid("view#a", 2, 12.5)
    h.drop("view#a")
    assert h.until("view#a") is None and not h.valid("view#a", 3, 12.5)


def test_a_round_older_than_a_lease_is_forgotten_and_a_lease_must_outlast_twice_the_drift():
    h = holder()
    old = h.ask({"view#a": 2}, now=10.0)
    h.ask({"view#a": 2}, now=13.5)
    for region in REGIONS:
        h.confirmed(old, region, ["view#a"])
    assert h.until("view#a") is None
    with pytest.raises(AssertionError):
        LeaseHolder("us-east-1", REGIONS, lease=1.0, max_drift=0.5)
