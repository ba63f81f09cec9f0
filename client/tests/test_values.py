"""Feature values round-trip exactly: int64 and float64, nested in lists and maps, through what is sent and read."""

from __future__ import annotations

import json
import math

import pytest
from feature_gateway_client import InvalidRequest
from feature_gateway_client.values import INT64_MAX, INT64_MIN, check_features, dumps, loads
from hypothesis import given
from hypothesis import strategies as st

scalars = (
    st.integers(INT64_MIN, INT64_MAX) | st.floats(allow_nan=False, allow_infinity=False) | st.text() | st.booleans()
    | st.none()
)
values = st.recursive(scalars, lambda inner: st.lists(inner, max_size=4) | st.dictionaries(st.text(min_size=1), inner, max_size=4), max_leaves=20)


def same(a, b) -> bool:
    """Equal, and of the same type at every level (1 and 1.0 differ; -0.0 and 0.0 differ)."""
    if type(a) is not type(b):
        return False
    if isinstance(a, float):
        return a == b and math.copysign(1, a) == math.copysign(1, b)
    if isinstance(a, list):
        return len(a) == len(b) and all(same(x, y) for x, y in zip(a, b))
    if isinstance(a, dict):
        return a.keys() == b.keys() and all(same(a[k], b[k]) for k in a)
    return a == b


@given(st.dictionaries(st.text(min_size=1), values, max_size=6))
def test_every_int64_and_float64_comes_back_exactly(features):
    check_features(features)
    assert same(loads(dumps({"features": features}))["features"], features)


def test_the_extremes_are_written_as_exact_digits():
    body = dumps({"features": {"big": INT64_MAX, "small": INT64_MIN, "tiny": 5e-324, "huge": 1.7976931348623157e308, "tenth": 0.1}})
    assert json.loads(body) == {"features": {"big": 9223372036854775807, "small": -9223372036854775808,
                                             "tiny": 5e-324, "huge": 1.7976931348623157e308, "tenth": 0.1}}
    assert b"9223372036854775807" in body and b"0.1" in body


@pytest.mark.parametrize("bad", [2**63, -(2**63) - 1, {"deep": [2**64]}])
def test_integers_past_int64_are_refused_naming_the_feature(bad):
    with pytest.raises(InvalidRequest, match="f"):
        check_features({"f": bad})


def test_nesting_past_the_gateways_limit_is_refused():
    value: object = 1
    for _ in range(31):
        value = [value]
    check_features({"f": value})
    with pytest.raises(InvalidRequest, match="nest at most 31 deep"):
        check_features({"f": [value]})


def test_an_aware_datetime_is_sent_as_its_exact_millisecond_far_from_1970_and_in_any_zone():
    from datetime import datetime, timedelta, timezone

    from feature_gateway_client.protocol import event_time_of

    last_microsecond = datetime(6428, 6, 15, 12, 34, 56, 999999, tzinfo=timezone.utc)
    assert event_time_of(last_microsecond, 0) == 140695274096999  # a float timestamp() says ...097999
    in_paris = datetime(2026, 1, 31, 13, 0, 0, 250000, tzinfo=timezone(timedelta(hours=1)))
    assert event_time_of(in_paris, 0) == 1769860800250
    with pytest.raises(InvalidRequest, match="needs a time zone"):
        event_time_of(datetime(2026, 1, 31), 0)
