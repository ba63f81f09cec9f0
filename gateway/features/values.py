"""Feature values: JSON values <-> DynamoDB attribute values, exactly.

Invariants:
- Feature values are stored as native DynamoDB attributes (S, N, BOOL, NULL,
  L, M), so other tools can read the tables.
- A number is stored exactly as sent or refused. JSON numbers arrive through
  ``parse_json``: an integer within int64, or a number whose decimal value is
  exactly that of the float64 it reads as (``0.1`` is; ``1.00000000000000000001``,
  ``2e-400`` and ``18446744073709551616`` are not, and become ``Inexact``
  markers that ``to_attribute`` refuses naming the feature). An int is written
  as its decimal digits; a float as ``repr()``, the shortest string that reads
  back as the same float64, equal in value to what was sent. On the way out an
  ``N`` that is integral and fits int64 becomes a JSON integer, anything else a
  float (DESIGN.md §6), so every number accepted reads back equal to it.
- ``item_size()`` follows DynamoDB's documented item-size rules
  (https://docs.aws.amazon.com/amazondynamodb/latest/developerguide/CapacityUnitCalculations.html)
  so the 400 KB limit is enforced before a write leaves the gateway.
"""

from __future__ import annotations

import base64
import json
import math
import re
from decimal import Decimal, InvalidOperation
from typing import Any

import orjson

from gateway.errors import RequestError

#: Lists and maps inside one feature value. DynamoDB's documents nest 32 levels counting the item's own attribute,
#: so a value holds at most 31 containers one inside the other: DynamoDB (Local) refuses a 32nd with a
#: ValidationException (tests/integration/test_api.py stores 31 and is refused 32).
MAX_DEPTH = 31
#: DynamoDB numbers: up to 38 significant digits, magnitude between 1E-130 and 9.9999…E+125.
MAX_MAGNITUDE = Decimal("9.9999999999999999999999999999999999999E+125")
MIN_MAGNITUDE = Decimal("1E-130")
MAX_DIGITS = 38
#: Longest key of a map value, in UTF-8 bytes. DynamoDB allows attribute names of up to 64 KB; DynamoDB Local
#: fails with a 500 near that size, and no feature needs more than this.
MAX_MAP_KEY_BYTES = 1024

INT64_MIN = -(1 << 63)
INT64_MAX = (1 << 63) - 1


#: Where a JSON body may hold a number that orjson would round: a run of 16+ digits (with or without a decimal
#: point; float64 keeps 15 significant digits exactly) or an exponent. Matches in strings too: then the slow
#: path runs for nothing, which costs time, never correctness.
_MAYBE_INEXACT = re.compile(rb"[0-9][0-9.]{15}|[0-9][eE]")


class Inexact:
    """A JSON number that neither int64 nor float64 holds exactly; refused by ``to_attribute`` naming its feature."""

    __slots__ = ("text",)

    def __init__(self, text: str) -> None:
        self.text = text


def _exact_int(text: str) -> int | Inexact:
    number = int(text)
    return number if INT64_MIN <= number <= INT64_MAX else Inexact(text)


def _exact_float(text: str) -> float | Inexact:
    number = float(text)
    if math.isfinite(number) and Decimal(repr(number)) == Decimal(text):
        return number
    return Inexact(text)


def parse_json(raw: bytes) -> Any:
    """A JSON document with every number exact or marked ``Inexact``; ``orjson.JSONDecodeError`` if it is not JSON.

    orjson parses first (and alone, for almost every body: the cost is one regex scan); only a
    body that may hold a number orjson rounds is parsed again by the standard library, whose
    number hooks see each number's text.
    """
    value = orjson.loads(raw)
    if _MAYBE_INEXACT.search(raw) is None:
        return value
    # orjson accepted the document, so the standard library reads the same structure from it.
    return json.loads(raw, parse_int=_exact_int, parse_float=_exact_float)


def to_attribute(value: Any, path: str = "", depth: int = 0) -> dict[str, Any]:
    """One JSON value as a DynamoDB attribute value; raises ``RequestError`` naming ``path``."""
    # bool before int: True is an int in Python.
    if value is None:
        return {"NULL": True}
    if value is True or value is False:
        return {"BOOL": value}
    if isinstance(value, str):
        return {"S": value}
    if isinstance(value, int):
        return {"N": _check_number(str(value), path)}
    if isinstance(value, float):
        if not math.isfinite(value):
            raise RequestError(f"Feature {path!r} is not a finite number.")
        return {"N": _check_number(repr(value), path)}
    if isinstance(value, Inexact):
        raise RequestError(
            f"Feature {path!r} is {value.text[:64]}, which no int64 or float64 holds exactly; it would not read back "
            "as sent. Send an integer within ±9223372036854775807, a float64 value, or a string."
        )
    if depth >= MAX_DEPTH:
        raise RequestError(f"Feature {path!r} nests lists and maps more than {MAX_DEPTH} deep, DynamoDB's limit.")
    if isinstance(value, list):
        return {"L": [to_attribute(v, f"{path}[{i}]", depth + 1) for i, v in enumerate(value)]}
    if isinstance(value, dict):
        for key in value:
            check_map_key(key, path)
        return {"M": {k: to_attribute(v, f"{path}.{k}", depth + 1) for k, v in value.items()}}
    raise RequestError(f"Feature {path!r} has a value of a type JSON cannot carry.")


def check_map_key(key: Any, path: str) -> str:
    if not isinstance(key, str) or not key:
        raise RequestError(f"Feature {path!r} has an empty map key; DynamoDB refuses them.")
    if len(key) > MAX_MAP_KEY_BYTES // 4 and len(key.encode()) > MAX_MAP_KEY_BYTES:
        raise RequestError(f"Feature {path!r} has a map key of more than {MAX_MAP_KEY_BYTES} bytes in UTF-8.")
    return key


def check_attribute(attr: Any, path: str, depth: int = 0) -> dict[str, Any]:
    """A DynamoDB attribute value of the kinds the gateway writes (what a forwarded write carries), checked
    as strictly as ``to_attribute`` checks JSON: a peer's record is never trusted to be well formed."""
    if not isinstance(attr, dict) or len(attr) != 1:
        raise RequestError(f"Feature {path!r} is not a DynamoDB attribute value (one type tag and its value).")
    ((tag, raw),) = attr.items()
    if tag == "S" and isinstance(raw, str):
        return attr
    if tag == "N" and isinstance(raw, str):
        try:
            number = Decimal(raw)
        except InvalidOperation:
            number = None
        if number is None or not number.is_finite() or not raw.isascii():
            raise RequestError(f"Feature {path!r} is not a DynamoDB number: {raw[:64]!r}.")
        _check_number(raw, path)
        return attr
    if tag == "BOOL" and isinstance(raw, bool):
        return attr
    if tag == "NULL" and raw is True:
        return attr
    if tag in ("L", "M") and depth >= MAX_DEPTH:
        raise RequestError(f"Feature {path!r} nests lists and maps more than {MAX_DEPTH} deep, DynamoDB's limit.")
    if tag == "L" and isinstance(raw, list):
        for i, item in enumerate(raw):
            check_attribute(item, f"{path}[{i}]", depth + 1)
        return attr
    if tag == "M" and isinstance(raw, dict):
        for key, item in raw.items():
            check_attribute(item, f"{path}.{check_map_key(key, path)}", depth + 1)
        return attr
    raise RequestError(f"Feature {path!r} holds {tag!r} {str(raw)[:32]!r}, which is not a value the gateway writes.")


def _check_number(text: str, path: str) -> str:
    number = Decimal(text)
    if number:
        magnitude = number.copy_abs()  # not abs(): it rounds to the context's 28 digits (9.99…E+125 to 1E+126)
        if magnitude > MAX_MAGNITUDE or magnitude < MIN_MAGNITUDE:
            raise RequestError(
                f"Feature {path!r} is {text}, outside DynamoDB's number range (1E-130 to 9.99E+125 in magnitude)."
            )
        # Not normalize(): it rounds to the context's 28 digits and would hide the excess.
        digits = "".join(map(str, number.as_tuple().digits)).strip("0")
        if len(digits) > MAX_DIGITS:
            raise RequestError(f"Feature {path!r} has more than {MAX_DIGITS} significant digits, DynamoDB's limit.")
    return text


def from_attribute(attr: dict[str, Any]) -> Any:
    """One DynamoDB attribute value as a JSON value."""
    # Dispatch on the single type tag; N and S first, they are most of the traffic.
    for tag, raw in attr.items():
        if tag == "N":
            return number_from_text(raw)
        if tag == "S":
            return raw
        if tag == "BOOL":
            return raw
        if tag == "NULL":
            return None
        if tag == "M":
            return {k: from_attribute(v) for k, v in raw.items()}
        if tag == "L":
            return [from_attribute(v) for v in raw]
        # Sets and binaries are never written by the gateway but other tools may write them.
        if tag == "SS":
            return list(raw)
        if tag == "NS":
            return [number_from_text(n) for n in raw]
        if tag == "B":
            return raw if isinstance(raw, str) else base64.b64encode(raw).decode()
        if tag == "BS":
            return [r if isinstance(r, str) else base64.b64encode(r).decode() for r in raw]
    raise ValueError(f"not a DynamoDB attribute value: {attr!r}")


def number_from_text(text: str) -> int | float:
    try:
        number = int(text)
    except ValueError:
        pass
    else:
        if INT64_MIN <= number <= INT64_MAX:
            return number
        return float(text)
    # DynamoDB may answer "1E+2" or "100.0"-style text for integral values written by other tools.
    try:
        exact = Decimal(text)
    except InvalidOperation:
        raise ValueError(f"not a DynamoDB number: {text!r}") from None
    if exact == exact.to_integral_value() and INT64_MIN <= exact <= INT64_MAX:
        return int(exact)
    return float(text)


def attribute_size(name: str, attr: dict[str, Any]) -> int:
    """Bytes DynamoDB counts for one attribute (name + value)."""
    return len(name.encode()) + _value_size(attr)


def _value_size(attr: dict[str, Any]) -> int:
    for tag, raw in attr.items():
        if tag == "S":
            return len(raw.encode())
        if tag == "N":
            # About one byte per two significant digits, plus one (DynamoDB docs).
            digits = len(raw.lstrip("-").replace(".", "").lstrip("0")) or 1
            return (digits + 1) // 2 + 1
        if tag in ("BOOL", "NULL"):
            return 1
        if tag == "L":
            return 3 + sum(1 + _value_size(v) for v in raw)
        if tag == "M":
            return 3 + sum(1 + attribute_size(k, v) for k, v in raw.items())
        if tag == "B":
            return len(base64.b64decode(raw)) if isinstance(raw, str) else len(raw)
        if tag == "SS":
            return sum(len(s.encode()) for s in raw)
        if tag == "NS":
            return sum(_value_size({"N": n}) for n in raw)
        if tag == "BS":
            return sum(_value_size({"B": b}) for b in raw)
    return 0


def item_size(item: dict[str, dict[str, Any]]) -> int:
    return sum(attribute_size(name, attr) for name, attr in item.items())
