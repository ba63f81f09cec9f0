"""Validation of downstream requests into domain objects (DESIGN.md §6 step 1).

Everything a caller sends passes through here before any upstream is called,
so a bad request costs no DynamoDB capacity and always answers a 4xx from the
error tree with a sentence naming what is wrong. A ``WriteRecord`` that
exists is valid: known view, declared features of the right type, key of
1–2048 UTF-8 bytes, values DynamoDB can store, item at most 400 KB.
"""

from __future__ import annotations

import re
import uuid
from collections.abc import Mapping
from dataclasses import dataclass
from datetime import datetime, timedelta, timezone
from typing import Any

from gateway.config import MAX_FEATURE_NAME_BYTES, ViewConfig
from gateway.errors import ItemTooLarge, KeyTooLong, RequestError, UnknownFeature, UnknownView
from gateway.features.values import INT64_MAX, INT64_MIN, attribute_size, check_attribute, to_attribute

MAX_KEY_BYTES = 2048
MAX_ITEM_BYTES = 400 * 1024
MAX_READ_KEYS = 100
MAX_WRITE_RECORDS = 25
MAX_IDEMPOTENCY_KEY = 256
#: Room reserved in the 400 KB for the system attributes (_ts, _region, _epoch, _event_ts, _req).
SYSTEM_ATTRIBUTES_BYTES = 64 + MAX_IDEMPOTENCY_KEY

CONSISTENCIES = ("eventual", "strong")
#: The last millisecond of the year 9999: event times are epoch milliseconds between 1970 and 9999.
MAX_EVENT_MS = 253402300799999
#: An event time as text: RFC 3339 (its ``date-time``) from 1970 to 9999, with a time zone. The OpenAPI
#: description (gateway/api/openapi.py) states these same patterns, so the two cannot disagree. Every such pattern
#: ends in ``$(?!\n)``: the end of the text for ECMA-262 and Python alike (Python's ``$`` alone also matches
#: before a final newline).
EVENT_TIME_PATTERN = (
    r"^(19[7-9][0-9]|[2-9][0-9]{3})-(0[1-9]|1[0-2])-(0[1-9]|[12][0-9]|3[01])[Tt]([01][0-9]|2[0-3]):[0-5][0-9]:"
    r"[0-5][0-9](\.[0-9]+)?([Zz]|[+-]([01][0-9]|2[0-3]):[0-5][0-9])$(?!\n)"
)
#: An event time in a query string (``DELETE ?event_time=``): epoch milliseconds in ASCII digits, or the above.
EPOCH_MS_PATTERN = r"^[0-9]{1,15}$(?!\n)"
_EVENT_TIME = re.compile(EVENT_TIME_PATTERN)
_EPOCH_MS = re.compile(EPOCH_MS_PATTERN)
_EPOCH = datetime(1970, 1, 1, tzinfo=timezone.utc)
_MILLISECOND = timedelta(milliseconds=1)

_TYPE_CHECKS: dict[str, Any] = {
    "string": lambda v: isinstance(v, str),
    # JSON has one number type: 3.0 is the integer 3 (as JSON Schema reads it too).
    "int": lambda v: (isinstance(v, int) and not isinstance(v, bool))
    or (isinstance(v, float) and v.is_integer() and INT64_MIN <= v <= INT64_MAX),
    "float": lambda v: isinstance(v, (int, float)) and not isinstance(v, bool),
    "bool": lambda v: isinstance(v, bool),
    "list": lambda v: isinstance(v, list),
    "map": lambda v: isinstance(v, dict),
    "any": lambda v: True,
}


@dataclass(frozen=True, slots=True)
class WriteRecord:
    """One validated write: a PUT of a whole feature set, or a DELETE (``attributes is None``)."""

    view: ViewConfig
    key: str
    #: Feature attributes in DynamoDB form; ``None`` for a delete.
    attributes: dict[str, dict[str, Any]] | None
    event_ms: int
    idempotency_key: str
    #: Approximate item size in bytes (what the write buffer counts against its max_bytes).
    size: int = 0


def view_of(views: Mapping[str, ViewConfig], name: Any) -> ViewConfig:
    if not isinstance(name, str):
        raise RequestError("'view' must be a string naming a configured view.")
    view = views.get(name)
    if view is None:
        raise UnknownView(f"View {name!r} is not configured on this gateway; known views: {', '.join(sorted(views))}.")
    return view


def check_key(key: Any, where: str = "key") -> str:
    if not isinstance(key, str) or not key:
        raise RequestError(f"{where} must be a non-empty string.")
    size = len(key.encode())
    if size > MAX_KEY_BYTES:
        raise KeyTooLong(f"{where} is {size} bytes in UTF-8; DynamoDB partition keys hold at most {MAX_KEY_BYTES}.")
    return key


def check_consistency(value: Any) -> bool:
    """True for a strong read."""
    if value is None or value == "eventual":
        return False
    if value == "strong":
        return True
    raise RequestError(f"consistency must be 'eventual' or 'strong', got {value!r}.")


def check_feature_name(view: ViewConfig, name: str, where: str = "") -> str:
    """A feature name a caller may read or write: never a system attribute (``_…``) nor the key attribute."""
    if not name or name[0] == "_" or name == view.key_attribute:
        raise RequestError(
            f"{where}feature name {name[:64]!r} is reserved (empty, starts with '_', or is the key attribute)."
        )
    if len(name) > MAX_FEATURE_NAME_BYTES // 4 and len(name.encode()) > MAX_FEATURE_NAME_BYTES:
        raise RequestError(f"{where}feature name {name[:64]!r}... is longer than {MAX_FEATURE_NAME_BYTES} bytes in UTF-8.")
    if view.features is not None and name not in view.features:
        raise UnknownFeature(f"View {view.name!r} has no feature {name[:64]!r}.")
    return name


def check_feature_names(view: ViewConfig, names: Any) -> tuple[str, ...] | None:
    """The feature filter of a read; ``None`` means all features."""
    if names is None:
        return None
    if not isinstance(names, list) or not all(isinstance(n, str) for n in names):
        raise RequestError("'features' must be a list of feature names.")
    return tuple(check_feature_name(view, name) for name in names)


def parse_event_time(value: Any, now_ms: int) -> int:
    """Epoch milliseconds from RFC 3339 text or an epoch-ms integer; absent means now."""
    if value is None:
        return now_ms
    if isinstance(value, float) and value.is_integer():  # 99.0 is the integer 99 in JSON
        value = int(value)
    if isinstance(value, int) and not isinstance(value, bool):
        if not 0 <= value <= MAX_EVENT_MS:
            raise RequestError(f"event_time {value} is not an epoch-milliseconds time between 1970 and 9999.")
        return value
    if isinstance(value, str):
        # The pattern first: fromisoformat also reads ISO 8601 forms that are not RFC 3339 ("20260131T1200").
        try:
            if _EVENT_TIME.fullmatch(value) is None:
                raise ValueError(value)
            parsed = datetime.fromisoformat(value.upper())
        except ValueError:
            raise RequestError(
                f"event_time {value[:64]!r} is not an RFC 3339 time from 1970 to 9999 with its time zone "
                "(e.g. 2026-01-31T12:00:00Z), nor epoch milliseconds."
            ) from None
        # Exact: the difference of two aware datetimes is integer arithmetic (timestamp() is a float, a millisecond
        # short for a tenth of the years up to 9999), and it never builds a datetime past 9999 (astimezone would:
        # 9999-12-31T23:59:59-00:01 is in the year 10000).
        ms = (parsed - _EPOCH) // _MILLISECOND
        if not 0 <= ms <= MAX_EVENT_MS:  # 1970-01-01T00:30+01:00 is in 1969
            raise RequestError(f"event_time {value!r} is not between 1970 and 9999.")
        return ms
    raise RequestError("event_time must be an RFC 3339 string or epoch milliseconds.")


def check_idempotency_key(value: Any) -> str:
    """The caller's idempotency key, or a fresh one (a write without a key is never deduplicated)."""
    if value is None or value == "":
        return uuid.uuid4().hex
    if not isinstance(value, str) or len(value) > MAX_IDEMPOTENCY_KEY or not value.isprintable():
        raise RequestError(f"Idempotency key must be printable text of at most {MAX_IDEMPOTENCY_KEY} characters.")
    return value


def write_record(
    view: ViewConfig, key: Any, features: Any, event_time: Any, idempotency_key: Any, now_ms: int, where: str = ""
) -> WriteRecord:
    key = check_key(key, f"{where}key")
    if not isinstance(features, dict):
        raise RequestError(f"{where}features must be a JSON object of feature name to value.")
    attributes: dict[str, dict[str, Any]] = {}
    size = len(view.key_attribute.encode()) + len(key.encode()) + SYSTEM_ATTRIBUTES_BYTES
    declared = view.features
    for name, value in features.items():
        check_feature_name(view, name, where)
        if declared is not None:
            kind = declared[name]
            if not _TYPE_CHECKS[kind](value):
                raise RequestError(f"{where}feature {name!r} of view {view.name!r} must be of type {kind}, got {_json_type(value)}.")
        attr = to_attribute(value, name)
        attributes[name] = attr
        size += attribute_size(name, attr)
    if size > MAX_ITEM_BYTES:
        raise ItemTooLarge(
            f"{where}item for key {key[:64]!r} is about {size} bytes; DynamoDB items hold at most {MAX_ITEM_BYTES} (400 KB)."
        )
    return WriteRecord(
        view, key, attributes, parse_event_time(event_time, now_ms), check_idempotency_key(idempotency_key), size
    )


def event_time_of_query(value: str | None) -> int | str | None:
    """``?event_time=`` as ``parse_event_time`` takes it: ASCII digits are epoch milliseconds, the rest RFC 3339."""
    if value is not None and _EPOCH_MS.fullmatch(value):
        return int(value)
    return value


def delete_record(view: ViewConfig, key: Any, event_time: Any, idempotency_key: Any, now_ms: int) -> WriteRecord:
    key = check_key(key)
    return WriteRecord(
        view, key, None, parse_event_time(event_time, now_ms), check_idempotency_key(idempotency_key),
        len(key.encode()) + SYSTEM_ATTRIBUTES_BYTES,
    )


def forwarded_record(view: ViewConfig, rec: Any, where: str) -> WriteRecord:
    """A record of a forwarded write (peer API): the origin validated it; check its shape, never trust it blindly."""
    if not isinstance(rec, dict):
        raise RequestError(f"{where} must be a JSON object.")
    key = check_key(rec.get("key"), f"{where}.key")
    attributes = rec.get("attributes")
    if attributes is not None:
        if not isinstance(attributes, dict):
            raise RequestError(f"{where}.attributes must be DynamoDB attribute values by feature name, or null for a delete.")
        for name, attr in attributes.items():
            check_feature_name(view, name, f"{where}.")
            check_attribute(attr, f"{where}.attributes.{name}")
    event_ms = rec.get("event_ms")
    if not isinstance(event_ms, int) or isinstance(event_ms, bool) or event_ms < 0:
        raise RequestError(f"{where}.event_ms must be epoch milliseconds.")
    idempotency_key = rec.get("idempotency_key")
    if not isinstance(idempotency_key, str) or not idempotency_key:
        raise RequestError(f"{where}.idempotency_key is required on a forwarded write.")
    size = len(key.encode()) + SYSTEM_ATTRIBUTES_BYTES + sum(attribute_size(n, a) for n, a in (attributes or {}).items())
    if size > MAX_ITEM_BYTES:
        raise ItemTooLarge(f"{where} item for key {key[:64]!r} is about {size} bytes; DynamoDB items hold at most {MAX_ITEM_BYTES}.")
    if event_ms > MAX_EVENT_MS:
        raise RequestError(f"{where}.event_ms {event_ms} is after the year 9999.")
    return WriteRecord(view, key, attributes, event_ms, check_idempotency_key(idempotency_key), size)


def _json_type(value: Any) -> str:
    if value is None:
        return "null"
    if isinstance(value, bool):
        return "bool"
    if isinstance(value, int):
        return "int"
    if isinstance(value, float):
        return "float"
    if isinstance(value, str):
        return "string"
    if isinstance(value, list):
        return "list"
    return "map"
