"""Validation of requests' records into WriteRecords (gateway/features/records.py)."""

from datetime import datetime, timedelta, timezone

import pytest
from hypothesis import given
from hypothesis import strategies as st

from gateway.config import ViewConfig
from gateway.errors import ItemTooLarge, KeyTooLong, RequestError, UnknownFeature, UnknownView
from gateway.features.records import (
    check_consistency,
    check_feature_names,
    check_idempotency_key,
    check_key,
    delete_record,
    event_time_of_query,
    forwarded_record,
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


@pytest.mark.parametrize(
    "value, kind", [(None, "null"), (True, "bool"), (1, "int"), (1.5, "float"), (["x"], "list"), ({"a": 1}, "map")]
)
def test_a_wrongly_typed_feature_names_the_json_type_it_got(value, kind):
    with pytest.raises(RequestError) as refused:
        write_record(TYPED, "u1", {"name": value}, None, None, NOW, "records[3].")
    assert str(refused.value) == f"records[3].feature 'name' of view 'users' must be of type string, got {kind}."


@pytest.mark.parametrize(
    "kind, accepted, refused",
    [
        ("float", [1, 1.5, -0.0], [True, "1", None]),
        ("int", [0, -7], [1.5, False]),
        ("bool", [True, False], [0, 1, "true"]),
        ("list", [[], [1, "a"]], [{}, "[]"]),
        ("map", [{}, {"a": [1]}], [[], "{}"]),
        ("string", ["", "x"], [1, None]),
        ("any", [None, 1, "x", [1], {"a": 1}, True], []),
    ],
)
def test_declared_feature_types_take_exactly_their_json_values(kind, accepted, refused):
    view = ViewConfig("v", "t", "pk", {"f": kind})
    for value in accepted:
        assert write_record(view, "k", {"f": value}, None, None, NOW).attributes["f"]
    for value in refused:
        with pytest.raises(RequestError, match=f"must be of type {kind}"):
            write_record(view, "k", {"f": value}, None, None, NOW)


def test_a_records_size_counts_its_key_features_and_the_room_for_system_attributes():
    record = write_record(OPEN, "k1", {"name": "abc", "n": 12}, 5, "i", NOW)
    assert record.size == len("pk") + len("k1") + 64 + 256 + (4 + 3) + (1 + 2)
    assert delete_record(OPEN, "k1", None, None, NOW).size == len("k1") + 64 + 256
    near = 400 * 1024 - (len("pk") + len("k1") + 320) - len("blob")
    assert write_record(OPEN, "k1", {"blob": "x" * near}, None, None, NOW).size == 400 * 1024  # exactly the limit
    with pytest.raises(ItemTooLarge, match=r"item for key 'k1' is about 409601 bytes; DynamoDB items hold at most 409600"):
        write_record(OPEN, "k1", {"blob": "x" * (near + 1)}, None, None, NOW)


def test_event_times_span_1970_to_the_last_millisecond_of_9999():
    assert parse_event_time(0, NOW) == 0 and parse_event_time(253402300799999, NOW) == 253402300799999
    with pytest.raises(RequestError, match="event_time 253402300800000 is not an epoch-milliseconds time between 1970 and 9999"):
        parse_event_time(253402300800000, NOW)
    with pytest.raises(RequestError, match="with its time zone"):
        parse_event_time("2026-01-01T00:00:00", NOW)
    assert parse_event_time("2026-01-31T12:00:00.250Z", NOW) == 1769860800250


def test_rfc_3339_event_times_span_the_first_and_the_last_millisecond_in_any_zone():
    assert parse_event_time("1970-01-01T00:00:00Z", NOW) == 0
    assert parse_event_time("1970-01-01T01:00:00+01:00", NOW) == 0
    assert parse_event_time("9999-12-31T23:59:59.999Z", NOW) == 253402300799999
    assert parse_event_time("2026-01-31T13:00:00.250+01:00", NOW) == parse_event_time("2026-01-31T12:00:00.250Z", NOW)
    # Exactly the millisecond sent, far from 1970 too (a float timestamp lands a millisecond short of this one).
    assert parse_event_time("6428-06-15T12:34:56.253Z", NOW) == 140695274096253
    assert parse_event_time("2026-01-31T12:00:00.2509Z", NOW) == 1769860800250  # a finer fraction is cut, not rounded


@given(
    st.integers(0, 253402300799999),
    st.integers(-(23 * 60 + 59), 23 * 60 + 59).map(lambda minutes: timezone(timedelta(minutes=minutes))),
)
def test_every_millisecond_from_1970_to_9999_written_in_any_zone_is_read_as_that_millisecond(ms, zone):
    moment = datetime(1970, 1, 1, tzinfo=timezone.utc) + timedelta(milliseconds=ms)
    try:
        written = moment.astimezone(zone)
    except OverflowError:  # that zone's wall time is in the year 10000
        written = moment
    if not 1970 <= written.year <= 9999:  # the text must say 1970 to 9999, whatever the instant
        written = moment
    assert parse_event_time(written.isoformat(timespec="milliseconds"), NOW) == ms


@pytest.mark.parametrize(("value", "message"), [
    ("1970-01-01T00:30:00+01:00", "event_time '1970-01-01T00:30:00+01:00' is not between 1970 and 9999."),
    ("9999-12-31T23:59:59-00:01", "event_time '9999-12-31T23:59:59-00:01' is not between 1970 and 9999."),
    ("20260131T1200Z", "event_time '20260131T1200Z' is not an RFC 3339 time from 1970 to 9999 with its time zone "
                       "(e.g. 2026-01-31T12:00:00Z), nor epoch milliseconds."),
    (True, "event_time must be an RFC 3339 string or epoch milliseconds."),
    ([1], "event_time must be an RFC 3339 string or epoch milliseconds."),
])
def test_an_event_time_outside_the_range_or_not_a_time_is_refused_saying_which(value, message):
    with pytest.raises(RequestError) as refused:
        parse_event_time(value, NOW)
    assert refused.value.message == message


@pytest.mark.parametrize(("query", "taken"), [
    (None, None), ("0", 0), ("1769860800250", 1769860800250), ("2026-01-31T12:00:00Z", "2026-01-31T12:00:00Z"),
    ("12a", "12a"), ("-5", "-5"), ("1234567890123456", "1234567890123456"),  # 16 digits: parse_event_time refuses it
])
def test_an_event_time_in_a_query_string_is_epoch_milliseconds_only_in_ascii_digits(query, taken):
    assert event_time_of_query(query) == taken


def test_an_idempotency_key_of_the_longest_length_is_kept_and_an_empty_one_replaced():
    assert check_idempotency_key("x" * 256) == "x" * 256
    assert len(check_idempotency_key("")) == 32
    with pytest.raises(RequestError, match="printable text of at most 256 characters"):
        check_idempotency_key("x" * 257)


def test_refusals_name_where_in_the_request_they_are():
    with pytest.raises(RequestError, match=r"^records\[1\]\.key must be a non-empty string\.$"):
        write_record(OPEN, "", {}, None, None, NOW, "records[1].")
    with pytest.raises(RequestError, match=r"^records\[1\]\.features must be a JSON object"):
        write_record(OPEN, "k", None, None, None, NOW, "records[1].")
    with pytest.raises(RequestError, match=r"^records\[1\]\.feature name '_ts' is reserved"):
        write_record(OPEN, "k", {"_ts": 1}, None, None, NOW, "records[1].")
    with pytest.raises(UnknownView, match=r"View 'x' is not configured on this gateway; known views: items, users\.$"):
        view_of({"users": TYPED, "items": OPEN}, "x")
    with pytest.raises(RequestError, match="consistency must be 'eventual' or 'strong', got 'linear'"):
        check_consistency("linear")
    with pytest.raises(RequestError, match="'features' must be a list of feature names"):
        check_feature_names(OPEN, ["a", 1])


# -- forwarded records: the origin validated them; the receiver checks their shape again --------------


def forwarded(**over):
    rec = {"key": "k", "attributes": {"a": {"N": "1"}}, "event_ms": 5, "idempotency_key": "i1", **over}
    return forwarded_record(OPEN, rec, "records[0]")


def test_a_forwarded_record_keeps_what_the_origin_sent():
    record = forwarded()
    assert (record.key, record.attributes, record.event_ms, record.idempotency_key) == ("k", {"a": {"N": "1"}}, 5, "i1")
    assert record.size == 1 + 320 + (1 + 2)
    deleted = forwarded(attributes=None)
    assert deleted.attributes is None and deleted.size == 1 + 320
    assert forwarded(event_ms=253402300799999).event_ms == 253402300799999


@pytest.mark.parametrize(
    "over, message",
    [
        ({"key": ""}, "records[0].key must be a non-empty string."),
        ({"attributes": [1]}, "records[0].attributes must be DynamoDB attribute values by feature name, or null for a delete."),
        ({"attributes": {"_ts": {"N": "1"}}}, "records[0].feature name '_ts' is reserved"),
        ({"attributes": {"a": {"N": "x"}}}, "Feature 'records[0].attributes.a' is not a DynamoDB number: 'x'."),
        ({"event_ms": -1}, "records[0].event_ms must be epoch milliseconds."),
        ({"event_ms": True}, "records[0].event_ms must be epoch milliseconds."),
        ({"event_ms": "5"}, "records[0].event_ms must be epoch milliseconds."),
        ({"event_ms": 253402300800000}, "records[0].event_ms 253402300800000 is after the year 9999."),
        ({"idempotency_key": ""}, "records[0].idempotency_key is required on a forwarded write."),
        ({"idempotency_key": None}, "records[0].idempotency_key is required on a forwarded write."),
        ({"attributes": {"a": {"S": "x" * 409_600}}}, "records[0] item for key 'k' is about 409922 bytes"),
    ],
)
def test_a_malformed_forwarded_record_is_refused_naming_the_field(over, message):
    with pytest.raises(RequestError) as refused:
        forwarded(**over)
    assert str(refused.value).startswith(message)


def test_a_forwarded_record_that_is_not_an_object_is_refused():
    with pytest.raises(RequestError, match=r"^records\[0\] must be a JSON object\.$"):
        forwarded_record(OPEN, ["k"], "records[0]")


def test_a_value_dynamodb_cannot_store_is_refused_naming_its_feature():
    with pytest.raises(RequestError, match=r"^Feature 'score' is not a finite number\.$"):
        write_record(OPEN, "k", {"score": float("inf")}, None, None, NOW)


def test_a_delete_without_an_event_time_happens_now():
    assert delete_record(OPEN, "k", None, None, NOW).event_ms == NOW


def test_a_forwarded_record_at_the_edges_is_accepted_for_its_view():
    assert forwarded(event_ms=0).event_ms == 0 and forwarded().view is OPEN
    room = 400 * 1024 - (1 + 320) - len("a")
    assert forwarded(attributes={"a": {"S": "x" * room}}).size == 400 * 1024
