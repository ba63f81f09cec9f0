"""Feature values to and from the gateway's JSON, by its rules: int64 and float64 exactly, or refused before sending.

The gateway stores a number exactly as sent or refuses it (README, API): an
integer must fit int64, any other number is a float64. Python's ``json`` writes
an ``int`` as its digits and a ``float`` as the shortest text that reads back as
the same double (``repr``), and reads them back the same way, so both round-trip
exactly; what no int64 or finite double holds (``2**63``, ``nan``, ``inf``) is
refused here as ``InvalidRequest`` naming the feature, without a request. The
gateway answers integral numbers as JSON integers, so ``3.0`` reads back as ``3``.
Lists and maps nest (maps with string keys); ``bool`` and ``None`` pass as JSON's.
"""

from __future__ import annotations

import json
from collections.abc import Mapping
from typing import Any

from feature_gateway_client.errors import InvalidRequest

INT64_MIN, INT64_MAX = -(2**63), 2**63 - 1
#: The gateway's nesting limit: lists and maps one inside the other (DynamoDB's 32 levels, counting the item).
MAX_DEPTH = 31

_encode = json.JSONEncoder(ensure_ascii=False, allow_nan=False, separators=(",", ":")).encode
loads = json.loads


def _check(value: Any, where: str, depth: int) -> None:
    kind = type(value)
    if kind is str or kind is bool or value is None or kind is float:
        return  # non-finite floats are refused by the encoder (allow_nan=False)
    if kind is int:
        if not INT64_MIN <= value <= INT64_MAX:
            raise InvalidRequest(f"{where}: {value} does not fit int64")
        return
    if depth >= MAX_DEPTH:
        raise InvalidRequest(f"{where}: lists and maps nest at most {MAX_DEPTH} deep")
    if isinstance(value, Mapping):
        for name, item in value.items():
            if not isinstance(name, str):
                raise InvalidRequest(f"{where}: map keys must be strings, not {type(name).__name__}")
            _check(item, f"{where}.{name}", depth + 1)
    elif isinstance(value, (list, tuple)):
        for i, item in enumerate(value):
            _check(item, f"{where}[{i}]", depth + 1)
    elif isinstance(value, int):  # an int subclass (IntEnum): its value
        _check(int(value), where, depth)
    elif isinstance(value, float):
        return
    else:
        raise InvalidRequest(f"{where}: {type(value).__name__} is not a feature value (str, int, float, bool, None, list, dict)")


def check_features(features: Any, where: str = "features") -> None:
    if not isinstance(features, Mapping):
        raise InvalidRequest(f"{where} must be a mapping of feature names to values")
    for name, value in features.items():
        if not isinstance(name, str):
            raise InvalidRequest(f"{where}: feature names are strings, not {type(name).__name__}")
        _check(value, f"{where}.{name}", 0)


def dumps(body: Any) -> bytes:
    """A request body; raises ``InvalidRequest`` for what JSON cannot carry exactly (``nan``, ``inf``)."""
    try:
        return _encode(body).encode()
    except ValueError as exc:
        raise InvalidRequest(f"not sendable as exact JSON: {exc}") from None
