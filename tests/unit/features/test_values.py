"""JSON values to DynamoDB attribute values and back, exactly, or refused (gateway/features/values.py)."""

import math
from decimal import Decimal

import orjson
import pytest
from hypothesis import given
from hypothesis import strategies as st

from gateway.errors import RequestError
from gateway.features.values import (
    check_attribute,
    from_attribute,
    item_size,
    number_from_text,
    parse_json,
    to_attribute,
)


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
    for _ in range(31):
        ok = [ok]
    to_attribute(ok, "f")
    with pytest.raises(RequestError, match="nests lists and maps more than 31 deep"):
        to_attribute([ok], "f")


def test_item_size_follows_dynamodb_rules():
    # name bytes + value bytes; numbers ~1 byte per 2 digits + 1; bool/null 1; list/map 3 + 1 per element.
    assert item_size({"pk": {"S": "abc"}}) == 5
    assert item_size({"n": {"N": "12345"}}) == 1 + 4
    assert item_size({"b": {"BOOL": True}, "z": {"NULL": True}}) == 4
    assert item_size({"l": {"L": [{"S": "ab"}, {"N": "1"}]}}) == 1 + 3 + (1 + 2) + (1 + 2)
    assert item_size({"m": {"M": {"k": {"S": "v"}}}}) == 1 + 3 + (1 + 1 + 1)
    assert item_size({"s": {"S": "é"}}) == 1 + 2


def test_item_size_counts_numbers_by_significant_digits_and_what_other_tools_write():
    # 1 byte per two significant digits, plus 1; leading zeros and the sign do not count.
    assert [item_size({"n": {"N": text}}) for text in ("12", "-0.0012", "123", "0")] == [1 + 2, 1 + 2, 1 + 3, 1 + 2]
    # Binaries count their bytes (base64 on the wire, bytes from boto3); sets the sum of their members.
    assert item_size({"b": {"B": "AAEC"}}) == 1 + 3 and item_size({"b": {"B": b"\x00\x01"}}) == 1 + 2
    assert item_size({"s": {"SS": ["a", "bé"]}}) == 1 + 1 + 3
    assert item_size({"s": {"NS": ["12", "3"]}}) == 1 + 2 + 2
    assert item_size({"s": {"BS": ["AAEC", b"\x00"]}}) == 1 + 3 + 1
    assert item_size({"x": {}}) == 1  # no value: only its name


def test_sets_and_binary_from_other_tools_are_readable():
    assert from_attribute({"SS": ["a", "b"]}) == ["a", "b"]
    assert from_attribute({"NS": ["1", "2.5"]}) == [1, 2.5]
    assert from_attribute({"B": "aGk="}) == "aGk="
    assert from_attribute({"B": b"hi"}) == "aGk="


# -- numbers arrive exactly or are refused ----------------------------------------------------------

def read_back(text: str):
    """A number sent as JSON ``text``, stored and read back as the gateway does."""
    return from_attribute(to_attribute(parse_json(b'{"f": ' + text.encode() + b"}")["f"], "f"))


@pytest.mark.parametrize(
    "text",
    ["18446744073709551616", "9223372036854775808", "-9223372036854775809", "123456789012345678901234567890123456789",
     "1.00000000000000000000000000000000000001", "2e-400", "0.30000000000000000001", "9007199254740993.0", "1e-131"],
)
def test_a_number_no_int64_or_float64_holds_exactly_is_refused_naming_the_feature(text: str) -> None:
    with pytest.raises(RequestError, match="Feature 'f'"):
        read_back(text)


@pytest.mark.parametrize(
    "text, value",
    [("9223372036854775807", 9223372036854775807), ("-9223372036854775808", -(1 << 63)), ("0.1", 0.1),
     ("1e22", 1e22), ("1.5E3", 1500), ("9007199254740993", 9007199254740993), ("-0.0", 0), ("1.0", 1)],
)
def test_numbers_int64_or_float64_hold_read_back_equal(text: str, value: float) -> None:
    assert read_back(text) == value


@given(st.integers(-(1 << 63), (1 << 63) - 1) | st.floats(allow_nan=False, allow_infinity=False))
def test_every_int64_and_float64_in_dynamodbs_range_reads_back_equal(number: float) -> None:
    text = orjson.dumps(number).decode()
    if number and not Decimal("1E-130") <= abs(Decimal(text)) <= Decimal("9.9999999999999999999999999999999999999E+125"):
        with pytest.raises(RequestError, match="outside DynamoDB's number range"):
            read_back(text)
        return
    back = read_back(text)
    # Equal in value to the text sent, and the same float64 to a reader that parses numbers as doubles.
    assert Decimal(repr(back) if isinstance(back, float) else back) == Decimal(text)
    assert float(back) == float(number) and (isinstance(number, float) or back == number)


# 300 examples take ~3.5 s alone and three times that under mutmut's trampolines on a busy machine: past the
# 5 s that `make mutation` gives a test ([tool.mutmut] in pyproject.toml), which would fail its stats run.
@pytest.mark.timeout(60)
@given(st.from_regex(r"\A-?(0|[1-9][0-9]{0,40})(\.[0-9]{1,40})?([eE][-+]?[0-9]{1,3})?\Z"))
def test_any_json_number_is_refused_or_reads_back_equal_in_value(text: str) -> None:
    try:
        back = read_back(text)
    except RequestError:
        return
    except orjson.JSONDecodeError:
        assert abs(Decimal(text)) > Decimal("1.7976931348623157e308")  # orjson refuses numbers past float64
        return
    assert Decimal(repr(back) if isinstance(back, float) else back) == Decimal(text)


# -- a peer's attribute values are checked as strictly as a caller's JSON ------------------------------


@pytest.mark.parametrize(
    "attr",
    [{"S": ""}, {"N": "-1.5E+3"}, {"BOOL": False}, {"BOOL": True}, {"NULL": True}, {"M": {}}, {"L": []},
     {"L": [{"S": "a"}, {"M": {"k": {"N": "1"}, "j": {"L": [{"NULL": True}]}}}]}],
)
def test_the_attribute_values_the_gateway_writes_are_accepted_as_they_are(attr):
    assert check_attribute(attr, "f") is attr


@pytest.mark.parametrize(
    "attr, message",
    [
        ({}, "Feature 'f' is not a DynamoDB attribute value (one type tag and its value)."),
        ({"S": "a", "N": "1"}, "Feature 'f' is not a DynamoDB attribute value (one type tag and its value)."),
        ("S", "Feature 'f' is not a DynamoDB attribute value (one type tag and its value)."),
        ({"S": 1}, "Feature 'f' holds 'S' '1', which is not a value the gateway writes."),
        ({"N": 1}, "Feature 'f' holds 'N' '1', which is not a value the gateway writes."),
        ({"N": "x"}, "Feature 'f' is not a DynamoDB number: 'x'."),
        ({"N": "NaN"}, "Feature 'f' is not a DynamoDB number: 'NaN'."),
        ({"N": "-Infinity"}, "Feature 'f' is not a DynamoDB number: '-Infinity'."),
        ({"N": "\uff11"}, "Feature 'f' is not a DynamoDB number: '\uff11'."),  # a full-width 1: Decimal takes it, DynamoDB not
        ({"N": "1" * 39}, "Feature 'f' has more than 38 significant digits, DynamoDB's limit."),
        ({"N": "1E+126"}, "Feature 'f' is 1E+126, outside DynamoDB's number range (1E-130 to 9.99E+125 in magnitude)."),
        ({"BOOL": 1}, "Feature 'f' holds 'BOOL' '1', which is not a value the gateway writes."),
        ({"BOOL": "true"}, "Feature 'f' holds 'BOOL' 'true', which is not a value the gateway writes."),
        ({"NULL": False}, "Feature 'f' holds 'NULL' 'False', which is not a value the gateway writes."),
        ({"NULL": 1}, "Feature 'f' holds 'NULL' '1', which is not a value the gateway writes."),
        ({"L": {}}, "Feature 'f' holds 'L' '{}', which is not a value the gateway writes."),
        ({"M": []}, "Feature 'f' holds 'M' '[]', which is not a value the gateway writes."),
        ({"SS": ["a"]}, "Feature 'f' holds 'SS' \"['a']\", which is not a value the gateway writes."),
        ({"S ": "a"}, "Feature 'f' holds 'S ' 'a', which is not a value the gateway writes."),
        ({"BOOL": "x" * 40}, f"Feature 'f' holds 'BOOL' '{'x' * 32}', which is not a value the gateway writes."),
        ({"L": [{"S": "a"}, {"N": "x"}]}, "Feature 'f[1]' is not a DynamoDB number: 'x'."),
        ({"M": {"k": {"BOOL": 0}}}, "Feature 'f.k' holds 'BOOL' '0', which is not a value the gateway writes."),
        ({"M": {"k": {"L": [{"N": "1" * 39}]}}}, "Feature 'f.k[0]' has more than 38 significant digits, DynamoDB's limit."),
        ({"M": {"": {"S": "a"}}}, "Feature 'f' has an empty map key; DynamoDB refuses them."),
        ({"N": "y" * 70}, f"Feature 'f' is not a DynamoDB number: '{'y' * 64}'."),
    ],
)
def test_a_malformed_attribute_value_is_refused_naming_where_it_is(attr, message):
    with pytest.raises(RequestError) as refused:
        check_attribute(attr, "f")
    assert str(refused.value) == message


@pytest.mark.parametrize("tag", ["L", "M"])
def test_attribute_values_nest_at_most_31_lists_and_maps(tag):
    attr: dict = {"S": "a"}
    for _ in range(31):
        attr = {"L": [attr]} if tag == "L" else {"M": {"k": attr}}
    assert check_attribute(attr, "f") is attr
    with pytest.raises(RequestError, match="nests lists and maps more than 31 deep, DynamoDB's limit"):
        check_attribute({"L": [attr]} if tag == "L" else {"M": {"k": attr}}, "f")


@pytest.mark.parametrize("value", [None, True, "s", 1, 0.5, [None, 1], {"a": {"b": None}}])
def test_what_the_gateway_writes_passes_its_own_check_of_a_forwarded_record(value):
    # DynamoDB refuses {"NULL": false}; a peer checks a forwarded value with check_attribute before writing it.
    attr = to_attribute(value)
    assert check_attribute(attr, "f") == attr


@pytest.mark.parametrize(
    "number",
    [
        int("9" * 38) * 10**88,  # DynamoDB's largest magnitude, 9.99…E+125, exactly
        -int("9" * 38) * 10**88,
        1e-130,  # its smallest, exactly
        int("1" * 38),  # 38 significant digits
        10**40,  # one significant digit, however many zeros follow
    ],
)
def test_numbers_at_dynamodbs_limits_are_accepted(number):
    assert "N" in to_attribute(number)


def test_int64s_written_as_exponents_by_other_tools_read_back_as_integers():
    assert number_from_text("-9.223372036854775808E+18") == -(1 << 63)
    assert number_from_text("9.223372036854775807E+18") == (1 << 63) - 1
    assert all(isinstance(number_from_text(t), int) for t in ("-9.223372036854775808E+18", "9.223372036854775807E+18"))


def test_a_binary_set_written_by_another_tool_reads_back_as_base64_text():
    assert from_attribute({"BS": [b"\x00\x01", "AAE="]}) == ["AAE=", "AAE="]


def test_a_number_a_hair_outside_dynamodbs_range_is_refused_however_many_digits_it_has():
    # Compared exactly: rounded to 28 digits, both of these would look like the range's own ends.
    for text in ("9.99999999999999999999999999999999E-131", "1.00000000000000000000000000000001E+126"):
        with pytest.raises(RequestError, match="outside DynamoDB's number range"):
            check_attribute({"N": text}, "f")


@pytest.mark.parametrize(("value", "message"), [
    ({"a": [1, {"b": math.inf}]}, "Feature 'f.a[1].b' is not a finite number."),
    ({"a": [{"n": 10**126}]}, "Feature 'f.a[0].n' is " + str(10**126) + ", outside DynamoDB's number range (1E-130 to "
                                                                        "9.99E+125 in magnitude)."),
    ({"a": {"b": {"": 1}}}, "Feature 'f.a.b' has an empty map key; DynamoDB refuses them."),
    ({"a": [object()]}, "Feature 'f.a[0]' has a value of a type JSON cannot carry."),
])
def test_a_refused_value_deep_in_a_feature_is_named_by_its_path(value, message):
    with pytest.raises(RequestError) as refused:
        to_attribute(value, "f")
    assert refused.value.message == message


def test_maps_nest_at_most_31_deep_as_lists_do():
    ok: object = 1
    for _ in range(31):
        ok = {"k": ok}
    assert to_attribute(ok, "f") is not None
    with pytest.raises(RequestError, match=r"^Feature 'f(\.k){31}' nests lists and maps more than 31 deep"):
        to_attribute({"k": ok}, "f")
    mixed: object = 1
    for level in range(31):
        mixed = [mixed] if level % 2 else {"k": mixed}
    assert to_attribute(mixed, "f") is not None
    with pytest.raises(RequestError, match="more than 31 deep"):
        to_attribute([mixed], "f")


def test_a_number_no_int64_or_float64_holds_is_refused_saying_what_to_send_instead():
    with pytest.raises(RequestError) as refused:
        to_attribute(parse_json(b'{"x": 123456789012345678901234567890}')["x"], "f")
    assert refused.value.message == (
        "Feature 'f' is 123456789012345678901234567890, which no int64 or float64 holds exactly; it would not read back "
        "as sent. Send an integer within ±9223372036854775807, a float64 value, or a string.")
