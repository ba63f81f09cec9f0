"""What both store clients share: key identity and projection expressions (gateway/store/base.py)."""

from __future__ import annotations

import pytest

from gateway import errors
from gateway.store.base import Condition, backoff_delay, chunks, key_identity, projection_expression, write_payload


def test_number_keys_are_identified_by_value() -> None:
    assert key_identity({"id": {"N": "1.0"}}, ["id"]) == key_identity({"id": {"N": "1"}}, ["id"])
    assert key_identity({"id": {"N": "1"}}, ["id"]) != key_identity({"id": {"S": "1"}}, ["id"])


def test_projection_uses_placeholders_for_every_name() -> None:
    assert projection_expression(["a", "_ts", "a", "size"]) == ("#p0,#p1,#p2", {"#p0": "a", "#p1": "_ts", "#p2": "size"})
    with pytest.raises(errors.StoreValidation):
        projection_expression([])


def test_an_empty_projection_says_how_to_read_whole_items() -> None:
    with pytest.raises(errors.StoreValidation) as refused:
        projection_expression([])
    assert str(refused.value) == "A projection must name at least one attribute; pass None to read whole items."


def test_a_write_payload_merges_its_own_and_its_conditions_placeholders() -> None:
    condition = Condition("#ts < :ts", {"#ts": "_ts"}, {":ts": {"N": "5"}})
    assert write_payload("t", "UpdateItem", condition, {"#v": "v"}, {":v": {"S": "x"}}) == {
        "TableName": "t", "ConditionExpression": "#ts < :ts", "ReturnValuesOnConditionCheckFailure": "ALL_OLD",
        "ExpressionAttributeNames": {"#v": "v", "#ts": "_ts"}, "ExpressionAttributeValues": {":v": {"S": "x"}, ":ts": {"N": "5"}},
    }
    assert write_payload("t", "PutItem", None) == {"TableName": "t"}  # no empty placeholder maps: DynamoDB refuses them
    same = Condition("#v = :v", {"#v": "v"}, {":v": {"S": "x"}})
    assert write_payload("t", "UpdateItem", same, {"#v": "v"}, {":v": {"S": "x"}})["ExpressionAttributeNames"] == {"#v": "v"}


@pytest.mark.parametrize(
    "names, values, message",
    [
        ({"#v": "other"}, {}, "UpdateItem on table 't': placeholder #v is bound to two different attribute names "
                              "('v' and 'other'); rename one."),
        ({}, {":v": {"S": "y"}}, "UpdateItem on table 't': placeholder :v is bound to two different values "
                                 "({'S': 'x'} and {'S': 'y'}); rename one."),
    ],
)
def test_a_placeholder_bound_twice_is_refused_naming_the_table_and_both_bindings(names, values, message) -> None:
    with pytest.raises(errors.StoreValidation) as refused:
        write_payload("t", "UpdateItem", Condition("x", names, values), {"#v": "v"}, {":v": {"S": "x"}})
    assert str(refused.value) == message


def test_full_jitter_backoff_doubles_up_to_its_cap() -> None:
    assert [backoff_delay(r, 0.02, 1.0, lambda: 1.0) for r in range(8)] == [0.02, 0.04, 0.08, 0.16, 0.32, 0.64, 1.0, 1.0]
    assert backoff_delay(3, 0.02, 1.0, lambda: 0.5) == 0.08
    assert backoff_delay(10_000, 0.02, 1.0, lambda: 0.25) == 0.25  # a huge retry count never overflows


def test_chunks_keep_order_and_size() -> None:
    assert chunks([1, 2, 3, 4, 5], 2) == [[1, 2], [3, 4], [5]] and chunks([], 25) == []


def test_key_identity_of_missing_or_malformed_attributes_is_still_an_identity() -> None:
    assert key_identity({"id": {"N": "x"}}, ["id"]) == (("id", "N", "x"),)
    assert key_identity({}, ["id"]) == (("id", None),)
    assert key_identity({"b": {"S": "x"}}, ["a", "b"]) == (("a", None), ("b", "S", "x"))  # every name, in order
    assert key_identity({"id": {"N": "1"}}, ["id"]) != key_identity({"id": {"N": "2"}}, ["id"])
    assert key_identity({"id": {"S": "a", "N": "1"}}, ["id"]) == (("id", None),)
    assert key_identity({"a": {"S": "1"}, "b": {"N": "2.50"}}, ["a", "b"]) == key_identity({"a": {"S": "1"}, "b": {"N": "2.5"}}, ["a", "b"])
