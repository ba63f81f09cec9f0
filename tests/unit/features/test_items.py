"""System attributes, the write condition and versions (gateway/features/items.py)."""

import re

import pytest

from gateway.config import ViewConfig
from gateway.features.items import (
    Stamp,
    Version,
    features_of,
    lost_the_race,
    not_applied_reason,
    put_condition,
    put_item,
    token_of,
    version_of,
    write_condition,
)
from gateway.features.records import write_record

VIEW = ViewConfig("items", "features_items")


def record(**kw):
    return write_record(VIEW, "k1", {"a": 1}, kw.get("event_time", 5), kw.get("req", "r1"), 0)


def test_put_item_stamps_system_attributes():
    item = put_item(record(), Stamp(ts=111, region="eu-west-1", epoch=3))
    assert item == {
        "a": {"N": "1"}, "pk": {"S": "k1"}, "_ts": {"N": "111"}, "_region": {"S": "eu-west-1"},
        "_epoch": {"N": "3"}, "_event_ts": {"N": "5"}, "_req": {"S": "r1"},
    }


def test_condition_binds_event_time_and_idempotency_key():
    condition = write_condition(record(event_time=7, req="r9"))
    assert condition.values == {":ets": {"N": "7"}, ":req": {"S": "r9"}}
    assert set(condition.names.values()) == {"_event_ts", "_req"}


def test_a_puts_condition_binds_its_event_time_idempotency_key_and_stamp_with_their_types():
    condition = put_condition(record(event_time=7, req="r9"), Stamp(ts=111, region="eu-west-1", epoch=3))
    assert condition.values == {":ets": {"N": "7"}, ":req": {"S": "r9"}, ":ep": {"N": "3"}, ":ts": {"N": "111"}}
    assert set(condition.names.values()) == {"_event_ts", "_req", "_epoch", "_ts"}


def stored(**attributes):
    """An item as DynamoDB holds it: only the attributes given (a tool or an older writer may leave some out)."""
    return {name: ({"S": v} if name == "_req" else {"N": str(v)}) for name, v in attributes.items()}


@pytest.mark.parametrize(("item", "stamp_epoch", "above"), [
    (None, 3, None),  # refused for no item: not a race
    (stored(_req="r1", _epoch=3, _ts=900), 3, None),  # its own earlier attempt: a duplicate, not a race
    (stored(_req="r2", _event_ts=6, _epoch=3, _ts=900), 3, None),  # a later event time: stale, not a race
    (stored(_req="r2", _event_ts=5, _epoch=3, _ts=900), 3, 900),  # same event time, later stamp: stamp above it
    (stored(_event_ts=5, _epoch=3, _ts=900), 3, 900),  # written without an idempotency key (a backfill)
    (stored(_req="r2", _epoch=2, _ts=900), 3, None),  # another epoch: epochs order versions, no race within one
    (stored(_req="r2", _ts=900), 0, 900),  # no _epoch: stamped past the gateway, epoch 0
    (stored(_req="r2", _ts=900), 3, None),
    (stored(_req="r2", _epoch=3), 3, None),  # no _ts to stamp above
])
def test_a_put_lost_the_race_only_to_another_write_of_its_epoch_with_no_later_event_time(item, stamp_epoch, above):
    assert lost_the_race(record(event_time=5, req="r1"), Stamp(ts=111, region="eu-west-1", epoch=stamp_epoch), item) == above


def test_versions_order_by_epoch_before_timestamp():
    # A region with a fast clock under an old epoch must not beat the new epoch.
    assert Version(2, 100, "us-east-1") > Version(1, 999_999, "eu-west-1")
    assert Version(1, 5, "a") < Version(1, 6, "a")
    token = Version(2, 100, "us-east-1").token()
    assert Version.parse(token) == Version(2, 100, "us-east-1")


def test_version_of_items():
    item = put_item(record(), Stamp(ts=111, region="eu-west-1", epoch=3))
    assert version_of(item) == Version(3, 111, "eu-west-1")
    assert token_of({"pk": {"S": "x"}}) is None


def test_features_hide_system_attributes_and_key():
    item = put_item(record(), Stamp(1, "r", 0))
    assert features_of(item, "pk", None) == {"a": 1}
    assert features_of(item, "pk", ("a", "missing")) == {"a": 1}


def test_not_applied_reason():
    rec = record(req="r1")
    assert not_applied_reason(rec, {"_req": {"S": "r1"}}) == "duplicate"
    assert not_applied_reason(rec, {"_req": {"S": "other"}}) == "stale_event_time"
    assert not_applied_reason(rec, None) == "stale_event_time"


def test_token_of_matches_version_token():
    item = put_item(record(), Stamp(ts=1_700_000_000_000_001, region="ap-southeast-1", epoch=12))
    assert token_of(item) == version_of(item).token() == "12.1700000000000001.ap-southeast-1"
    assert Version.parse(token_of({"_ts": {"N": "5"}})) == Version(0, 5, "")


def test_an_item_stamped_past_the_gateway_has_epoch_0_and_no_region():
    # The local cluster stamps writes that bypass the gateway with _ts only (README): they order before epoch 1.
    assert version_of({"_ts": {"N": "5"}}) == Version(0, 5, "")
    assert version_of({"_ts": {"N": "5"}, "_epoch": {"N": "2"}}) == Version(2, 5, "")
    assert version_of({"_ts": {"N": "5"}, "_region": {"S": "eu-west-1"}}) == Version(0, 5, "eu-west-1")
    assert version_of({"pk": {"S": "x"}}) is None


def test_a_refusal_of_an_item_a_tool_wrote_without_an_idempotency_key_is_about_event_time():
    assert not_applied_reason(record(req="r1"), {"_event_ts": {"N": "9"}}) == "stale_event_time"


def test_a_token_that_is_not_a_version_is_refused_naming_it():
    for token in ("", "1.2", "x.2.r", "1.y.r"):
        with pytest.raises(ValueError, match=f"^{re.escape(repr(token))} is not a version token returned by this gateway$"):
            Version.parse(token)
