"""Validation of requests' records into WriteRecords (gateway/features/records.py)."""

import pytest

from gateway.config import ViewConfig
from gateway.errors import ItemTooLarge, KeyTooLong, RequestError, UnknownFeature, UnknownView
from gateway.features.records import (
    check_consistency,
    check_feature_names,
    check_idempotency_key,
    check_key,
    delete_record,
    parse_event_time,
    view_of,
    write_record,
)

NOW = 1_700_000_000_000
TYPED = ViewConfig("users", "features_users", "pk", {"age": "int", "score": "float", "name": "string", "tags": "list", "ok": "bool", "m": "map"})
OPEN = ViewConfig("items", "features_items")


def test_view_lookup():
    assert view_of({"users": TYPED}, "users") is TYPED
    with pytest.raises(UnknownView, match="'nope' is not configured.*users"):
        view_of({"users": TYPED}, "nope")
    with pytest.raises(RequestError):
        view_of({"users": TYPED}, 3)


def test_key_limits_count_utf8_bytes():
    assert check_key("k" * 2048) == "k" * 2048
    with pytest.raises(KeyTooLong, match="2049 bytes"):
        check_key("k" * 2049)
    with pytest.raises(KeyTooLong):
        check_key("é" * 1025)  # 2050 bytes in 1025 characters
    for bad in ("", None, 5):
        with pytest.raises(RequestError):
            check_key(bad)


def test_event_time_forms():
    assert parse_event_time(None, NOW) == NOW
    assert parse_event_time(123, NOW) == 123
    assert parse_event_time("1970-01-01T00:00:01Z", NOW) == 1000
    assert parse_event_time("1970-01-01T01:00:01+01:00", NOW) == 1000
    for bad in ("yesterday", "2026-01-01T00:00:00", -1, True, 1.5):
        with pytest.raises(RequestError, match="event_time"):
            parse_event_time(bad, NOW)


def test_typed_view_checks_names_and_types():
    record = write_record(TYPED, "u1", {"age": 3, "score": 3, "name": "x", "tags": [], "ok": False, "m": {}}, None, "req-1", NOW)
    assert record.attributes["age"] == {"N": "3"}
    assert (record.event_ms, record.idempotency_key) == (NOW, "req-1")
    with pytest.raises(UnknownFeature, match="no feature 'height'"):
        write_record(TYPED, "u1", {"height": 3}, None, None, NOW)
    with pytest.raises(RequestError, match="'age' of view 'users' must be of type int, got string"):
        write_record(TYPED, "u1", {"age": "3"}, None, None, NOW)
    with pytest.raises(RequestError, match="type int, got bool"):
        write_record(TYPED, "u1", {"age": True}, None, None, NOW)


def test_open_view_takes_any_feature_but_not_reserved_names():
    write_record(OPEN, "i1", {"anything": {"nested": [1, 2]}}, None, None, NOW)
    for name in ("_ts", "pk", ""):
        with pytest.raises(RequestError, match="reserved"):
            write_record(OPEN, "i1", {name: 1}, None, None, NOW)
    with pytest.raises(RequestError, match="features must be a JSON object"):
        write_record(OPEN, "i1", [1], None, None, NOW)


def test_item_size_limit():
    write_record(OPEN, "i1", {"blob": "x" * 400_000}, None, None, NOW)
    with pytest.raises(ItemTooLarge, match="400 KB"):
        write_record(OPEN, "i1", {"blob": "x" * 409_600}, None, None, NOW)


def test_idempotency_keys():
    assert check_idempotency_key("abc") == "abc"
    generated = {check_idempotency_key(None) for _ in range(3)}
    assert len(generated) == 3
    for bad in ("x" * 257, "a\nb", 7):
        with pytest.raises(RequestError):
            check_idempotency_key(bad)


def test_read_options():
    assert check_consistency(None) is False and check_consistency("eventual") is False
    assert check_consistency("strong") is True
    with pytest.raises(RequestError, match="consistency"):
        check_consistency("linearizable")
    assert check_feature_names(TYPED, ["age"]) == ("age",)
    assert check_feature_names(TYPED, None) is None
    with pytest.raises(UnknownFeature):
        check_feature_names(TYPED, ["height"])
    with pytest.raises(RequestError):
        check_feature_names(TYPED, "age")


def test_delete_record():
    record = delete_record(OPEN, "i1", None, "d-1", NOW)
    assert record.attributes is None and record.idempotency_key == "d-1"


@pytest.mark.parametrize(
    "features, message",
    [
        ({"a" * 65536: 1}, "longer than 255 bytes"),
        ({"é" * 128: 1}, "longer than 255 bytes"),  # 256 bytes in UTF-8
        ({"m": {"k" * 1025: 1}}, "map key of more than 1024 bytes"),
        ({"m": {"": 1}}, "empty map key"),
        ({"m": {"n": {"": 1}}}, "empty map key"),
    ],
)
def test_names_dynamodb_cannot_take_are_a_caller_error_before_any_upstream(features, message):
    with pytest.raises(RequestError, match=message):
        write_record(OPEN, "k", features, None, None, 0)


def test_the_longest_names_allowed_are_written():
    record = write_record(OPEN, "k", {"a" * 255: {"k" * 1024: 1}}, None, None, 0)
    assert record.attributes["a" * 255] == {"M": {"k" * 1024: {"N": "1"}}}


def test_an_integral_float_is_an_int_as_json_reads_it_and_a_float_event_time_too():
    record = write_record(TYPED, "k", {"age": 3.0}, 99.0, None, NOW)
    assert record.event_ms == 99 and record.attributes["age"] == {"N": "3.0"}
    with pytest.raises(RequestError, match="must be of type int"):
        write_record(TYPED, "k", {"age": 3.5}, None, None, NOW)
    with pytest.raises(RequestError, match="must be of type int"):
        write_record(TYPED, "k", {"age": 1e19}, None, None, NOW)  # integral, but beyond int64
    with pytest.raises(RequestError, match="event_time"):
        parse_event_time(99.5, NOW)


@pytest.mark.parametrize("text", ["20260131T120000Z", "2026-01-31T12:00:00", "1969-12-31T23:59:59Z", "2026-01-31T12:00:00Z\n"])
def test_event_time_text_must_be_rfc_3339_from_1970_with_a_zone(text):
    with pytest.raises(RequestError, match="RFC 3339"):
        parse_event_time(text, NOW)
