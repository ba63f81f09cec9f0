"""The acceptor's rule (gateway/lease/promises.py): a live promise is never broken, expiry waits out the drift."""

from __future__ import annotations

from gateway.lease.promises import Known, Promise, expired, grant, release

LEASE, DRIFT, NOW = 1000, 100, 1_700_000_000_000


def test_a_live_promise_to_another_region_refuses_until_it_expired_with_the_drift_margin():
    held = Promise("us-east-1", 3, NOW + 500)
    assert "promised to us-east-1" in grant(held, "eu-west-1", 4, Known(4, "eu-west-1"), NOW, LEASE, DRIFT)
    # At its end, and within the drift after it, another gateway of the region may still be bound by it.
    assert isinstance(grant(held, "eu-west-1", 4, None, NOW + 600, LEASE, DRIFT), str)
    assert grant(held, "eu-west-1", 4, None, NOW + 601, LEASE, DRIFT) == Promise("eu-west-1", 4, NOW + 601 + LEASE)
    assert not expired(held, NOW + 600, DRIFT) and expired(held, NOW + 601, DRIFT) and expired(None, NOW, DRIFT)


def test_the_same_holder_renews_and_may_rise_in_epoch_never_fall():
    held = Promise("us-east-1", 3, NOW + 500)
    assert grant(held, "us-east-1", 3, None, NOW, LEASE, DRIFT) == Promise("us-east-1", 3, NOW + LEASE)
    assert grant(held, "us-east-1", 4, None, NOW, LEASE, DRIFT) == Promise("us-east-1", 4, NOW + LEASE)
    assert "epoch 2 is over" in grant(held, "us-east-1", 2, None, NOW, LEASE, DRIFT)


def test_a_deposed_or_wrong_primary_is_refused_by_what_the_region_knows():
    assert "epoch 3 is over" in grant(None, "us-east-1", 3, Known(4, "eu-west-1"), NOW, LEASE, DRIFT)
    assert "eu-west-1 is" in grant(None, "us-east-1", 4, Known(4, "eu-west-1"), NOW, LEASE, DRIFT)
    # A region behind the asker (it has not learned epoch 5 yet) confirms: its promise binds it all the same.
    assert grant(None, "ap-southeast-1", 5, Known(4, "eu-west-1"), NOW, LEASE, DRIFT) == Promise("ap-southeast-1", 5, NOW + LEASE)


def test_release_ends_only_the_holders_own_promise():
    held = Promise("us-east-1", 3, NOW + 500)
    assert release(held, "us-east-1", 3) is None and release(held, "us-east-1", 4) is None
    assert release(held, "eu-west-1", 3) == held and release(held, "us-east-1", 2) == held and release(None, "x", 1) is None


def test_a_refusal_for_another_regions_live_promise_says_how_long_it_has_left():
    held = Promise("us-east-1", 3, NOW + 500)
    refused = grant(held, "eu-west-1", 3, None, NOW + 100, LEASE, DRIFT)
    assert refused == "promised to us-east-1 (epoch 3) for 400 ms more"
