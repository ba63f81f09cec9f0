import math

import orjson
import pytest

from gateway.errors import RequestError
from gateway.features.values import from_attribute, item_size, number_from_text, to_attribute


@pytest.mark.parametrize(
    "value",
    [
        "text", "", "ünïcødé ✓", 0, 1, -1, 9223372036854775807, -9223372036854775808,
        0.1, -2.5, 1.7976931348623157e125, 5e-324 * 1e200, 3.141592653589793, 1e-100,
        True, False, None, [1, "a", None, [True]], {"a": {"b": [1.5, {"c": "d"}]}},
    ],
)
def test_round_trip_is_exact(value):
    back = from_attribute(to_attribute(value))
    assert back == value
    assert type(back) is type(value) or (isinstance(value, float) and value.is_integer())
    # Through JSON too, as the API sends it.
    assert orjson.loads(orjson.dumps(back)) == value


def test_floats_use_the_shortest_exact_text():
    assert to_attribute(0.1) == {"N": "0.1"}
    assert number_from_text("0.1") == 0.1
    assert to_attribute(2**53 + 1) == {"N": "9007199254740993"}
    assert number_from_text("9007199254740993") == 2**53 + 1


def test_integral_numbers_come_back_as_integers():
    assert number_from_text("1E+2") == 100 and isinstance(number_from_text("1E+2"), int)
    assert number_from_text("100.000") == 100
    assert isinstance(number_from_text("1E+100"), float)
    assert isinstance(number_from_text("9223372036854775808"), float)


def test_bool_is_not_a_number():
    assert to_attribute(True) == {"BOOL": True}
    assert to_attribute(1) == {"N": "1"}


@pytest.mark.parametrize("value", [1e126, 1e-131, -1e126, 10**126])
def test_numbers_outside_dynamodb_range_are_refused(value):
    with pytest.raises(RequestError, match="outside DynamoDB's number range"):
        to_attribute(value, "f")


def test_too_many_digits_refused():
    with pytest.raises(RequestError, match="significant digits"):
        to_attribute(123456789012345678901234567890123456789, "f")


def test_non_finite_refused():
    with pytest.raises(RequestError, match="finite"):
        to_attribute(math.inf, "f")


def test_nesting_limit():
    ok = 1
    for _ in range(32):
        ok = [ok]
    to_attribute(ok, "f")
    with pytest.raises(RequestError, match="deeper than 32"):
        to_attribute([ok], "f")


def test_item_size_follows_dynamodb_rules():
    # name bytes + value bytes; numbers ~1 byte per 2 digits + 1; bool/null 1; list/map 3 + 1 per element.
    assert item_size({"pk": {"S": "abc"}}) == 5
    assert item_size({"n": {"N": "12345"}}) == 1 + 4
    assert item_size({"b": {"BOOL": True}, "z": {"NULL": True}}) == 4
    assert item_size({"l": {"L": [{"S": "ab"}, {"N": "1"}]}}) == 1 + 3 + (1 + 2) + (1 + 2)
    assert item_size({"m": {"M": {"k": {"S": "v"}}}}) == 1 + 3 + (1 + 1 + 1)
    assert item_size({"s": {"S": "é"}}) == 1 + 2


def test_sets_and_binary_from_other_tools_are_readable():
    assert from_attribute({"SS": ["a", "b"]}) == ["a", "b"]
    assert from_attribute({"NS": ["1", "2.5"]}) == [1, 2.5]
    assert from_attribute({"B": "aGk="}) == "aGk="
    assert from_attribute({"B": b"hi"}) == "aGk="
