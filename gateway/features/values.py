"""Feature values: JSON values <-> DynamoDB attribute values, exactly.

Invariants:
- Feature values are stored as native DynamoDB attributes (S, N, BOOL, NULL,
  L, M), so other tools can read the tables.
- Numbers never pass through a lossy conversion: an int is written as its
  decimal digits; a float as ``repr()``, the shortest string that reads back
  as the same float64. On the way out an ``N`` that is integral and fits
  int64 becomes a JSON integer, anything else a float (DESIGN.md §6).
- ``item_size()`` follows DynamoDB's documented item-size rules
  (https://docs.aws.amazon.com/amazondynamodb/latest/developerguide/CapacityUnitCalculations.html)
  so the 400 KB limit is enforced before a write leaves the gateway.
"""

from __future__ import annotations

import base64
import math
from decimal import Decimal, InvalidOperation
from typing import Any

from gateway.errors import RequestError

#: DynamoDB's nesting limit for documents.
MAX_DEPTH = 32
#: DynamoDB numbers: up to 38 significant digits, magnitude between 1E-130 and 9.9999…E+125.
MAX_MAGNITUDE = Decimal("9.9999999999999999999999999999999999999E+125")
MIN_MAGNITUDE = Decimal("1E-130")
MAX_DIGITS = 38

INT64_MIN = -(1 << 63)
INT64_MAX = (1 << 63) - 1


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
    if depth >= MAX_DEPTH:
        raise RequestError(f"Feature {path!r} nests deeper than {MAX_DEPTH} levels, DynamoDB's limit.")
    if isinstance(value, list):
        return {"L": [to_attribute(v, f"{path}[{i}]", depth + 1) for i, v in enumerate(value)]}
    if isinstance(value, dict):
        return {"M": {k: to_attribute(v, f"{path}.{k}", depth + 1) for k, v in value.items()}}
    raise RequestError(f"Feature {path!r} has a value of a type JSON cannot carry.")


def _check_number(text: str, path: str) -> str:
    number = Decimal(text)
    if number:
        magnitude = abs(number)
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
