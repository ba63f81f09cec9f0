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


def test_a_lease_needs_a_majority_of_all_the_regions_three_of_five():
    regions = ("us-east-1", "us-west-2", "eu-west-1", "eu-central-1", "ap-southeast-1")
    h = LeaseHolder("us-east-1", regions, lease=3.0, max_drift=0.5)
    round_id = h.ask({"view#a": 2}, now=10.0)
    for region in regions[:2]:
        h.confirmed(round_id, region, ["view#a"])
    assert not h.valid("view#a", 2, 10.5)  # two of five regions could be outvoted by the other three
    h.confirmed(round_id, regions[2], ["view#a"])
    assert h.valid("view#a", 2, 10.5)


def test_each_scope_of_a_round_counts_only_its_own_confirmations():
    h = holder()
    round_id = h.ask({"view#a": 2, "view#b": 2}, now=10.0)
    h.confirmed(round_id, "us-east-1", ["view#a"])
    h.confirmed(round_id, "eu-west-1", ["view#b"])
    assert not h.valid("view#a", 2, 10.5) and not h.valid("view#b", 2, 10.5)  # one region each
    # A scope the round did not ask for is passed over; the ones it did ask for still count.
    h.confirmed(round_id, "ap-southeast-1", ["view#other", "view#a"])
    assert h.valid("view#a", 2, 10.5) and not h.valid("view#b", 2, 10.5)


def test_a_later_round_extends_the_lease_it_renews():
    h = holder()
    early = h.ask({"view#a": 2}, now=10.0)
    for region in REGIONS[:2]:
        h.confirmed(early, region, ["view#a"])
    late = h.ask({"view#a": 2}, now=11.0)
    for region in REGIONS[:2]:
        h.confirmed(late, region, ["view#a"])
    assert h.until("view#a") == (2, 13.5) and h.valid("view#a", 2, 13.0)


def test_a_lower_epochs_round_never_extends_the_lease_of_a_higher_epoch():
    h = holder()
    higher, lower = h.ask({"view#a": 3}, now=11.0), h.ask({"view#a": 2}, now=12.0)
    for region in REGIONS[:2]:
        h.confirmed(higher, region, ["view#a"])
        h.confirmed(lower, region, ["view#a"])  # a round asked before this gateway learned epoch 3
    assert h.until("view#a") == (3, 13.5) and not h.valid("view#a", 3, 14.0) and not h.valid("view#a", 2, 12.5)


def test_scopes_lists_the_leases_held_or_ended_and_dropping_one_never_held_is_a_no_op():
    h = holder()
    round_id = h.ask({"view#a": 2, "view#b": 2}, now=10.0)
    for region in REGIONS[:2]:
        h.confirmed(round_id, region, ["view#a", "view#b"])
    assert sorted(h.scopes()) == ["view#a", "view#b"]
    h.drop("view#never")
    h.drop("view#b")
    assert h.scopes() == ["view#a"] and h.valid("view#a", 2, 10.5)


def test_a_lease_just_over_twice_the_drift_is_accepted_and_a_drift_of_zero_is_not():
    assert LeaseHolder("us-east-1", REGIONS, lease=1.2, max_drift=0.5).lease == 1.2
    with pytest.raises(AssertionError):
        LeaseHolder("us-east-1", REGIONS, lease=1.0, max_drift=0.0)  # no margin for the clocks' disagreement
