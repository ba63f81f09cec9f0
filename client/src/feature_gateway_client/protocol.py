"""The gateway's API as data, without I/O: the request each call sends, and what its answer means.

Both clients build their requests here and read their answers here, so the
sync and async code paths differ only in how they wait (``client.py``,
``async_client.py``). Paths quote the key whole (``/`` included), which the
gateway reads back as one key.
"""

from __future__ import annotations

import time
import uuid
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from datetime import datetime, timedelta, timezone
from typing import Any
from urllib.parse import quote, urlencode

from feature_gateway_client import values
from feature_gateway_client.errors import GatewayError, InvalidRequest, from_answer
from feature_gateway_client.models import Entity, ReadResult, WriteResult

CONSISTENCIES = ("eventual", "strong")
_NO_QUOTE = "-._~"


@dataclass(frozen=True, slots=True)
class Call:
    """One logical request; every attempt of it sends exactly this (same body, same idempotency key)."""

    method: str
    path: str
    body: bytes | None = None
    idempotency_key: str | None = None


@dataclass(frozen=True, slots=True)
class Answer:
    status: int
    body: bytes
    retry_after: float | None
    request_id: str | None


def new_key() -> str:
    """An idempotency key (or request id): 128 random bits."""
    return uuid.uuid4().hex


_EPOCH = datetime(1970, 1, 1, tzinfo=timezone.utc)
_MILLISECOND = timedelta(milliseconds=1)


def wall_ms() -> int:
    return time.time_ns() // 1_000_000


def event_time_of(event_time: int | str | datetime | None, now_ms: int) -> int | str:
    """A write's event time as the gateway takes it: epoch ms or RFC 3339 text; ``None`` is now, fixed once."""
    if event_time is None:
        return now_ms
    if isinstance(event_time, datetime):
        if event_time.tzinfo is None:
            raise InvalidRequest("event_time: a datetime needs a time zone")
        # Integer arithmetic: a float timestamp() rounds .999999 s up to the next second far from 1970.
        return (event_time - _EPOCH) // _MILLISECOND
    if isinstance(event_time, bool) or not isinstance(event_time, (int, str)):
        raise InvalidRequest("event_time: epoch milliseconds (int), RFC 3339 text or an aware datetime")
    return event_time


def _feature_path(view: str, key: str) -> str:
    _check_name(view, "view")
    if not isinstance(key, str) or not key:
        raise InvalidRequest("key must be a non-empty string")
    return f"/v1/features/{quote(view, safe=_NO_QUOTE)}/{quote(key, safe=_NO_QUOTE)}"


def _check_name(value: Any, what: str) -> None:
    if not isinstance(value, str) or not value:
        raise InvalidRequest(f"{what} must be a non-empty string")


def _consistency(consistency: str) -> str:
    if consistency not in CONSISTENCIES:
        raise InvalidRequest(f"consistency must be one of {', '.join(CONSISTENCIES)}, not {consistency!r}")
    return consistency


def get(
    view: str, key: str, features: Iterable[str] | None, consistency: str, min_version: str | None
) -> Call:
    query: dict[str, str] = {}
    if features is not None:
        query["features"] = ",".join(features)
    if _consistency(consistency) == "strong":
        query["consistency"] = "strong"
    if min_version is not None:
        query["min_version"] = min_version
    path = _feature_path(view, key)
    return Call("GET", f"{path}?{urlencode(query)}" if query else path)


def read(view: str, keys: list[str], features: Iterable[str] | None, consistency: str) -> Call:
    _check_name(view, "view")
    body: dict[str, Any] = {"view": view, "keys": keys}
    if features is not None:
        body["features"] = list(features)
    if _consistency(consistency) == "strong":
        body["consistency"] = "strong"
    return Call("POST", "/v1/read", values.dumps(body))


def put(view: str, key: str, features: Mapping[str, Any], event_time: int | str, idempotency_key: str) -> Call:
    values.check_features(features)
    body = values.dumps({"features": features, "event_time": event_time})
    return Call("PUT", _feature_path(view, key), body, idempotency_key)


def delete(view: str, key: str, event_time: int, idempotency_key: str) -> Call:
    return Call("DELETE", f"{_feature_path(view, key)}?event_time={event_time}", None, idempotency_key)


@dataclass(frozen=True, slots=True)
class Record:
    """One record of a batch write, with its idempotency key and event time fixed for every attempt."""

    key: str
    features: Mapping[str, Any]
    event_time: int | str
    idempotency_key: str

    def json(self) -> dict[str, Any]:
        return {"key": self.key, "features": self.features, "event_time": self.event_time,
                "idempotency_key": self.idempotency_key}


def records_of(records: Iterable[Mapping[str, Any]], now_ms: int) -> list[Record]:
    """The caller's ``{"key", "features", "event_time"?, "idempotency_key"?}`` mappings, keys and times fixed."""
    fixed = []
    for i, rec in enumerate(records):
        if not isinstance(rec, Mapping):
            raise InvalidRequest(f"records[{i}] must be a mapping with key and features")
        key = rec.get("key")
        if not isinstance(key, str) or not key:
            raise InvalidRequest(f"records[{i}].key must be a non-empty string")
        values.check_features(rec.get("features"), f"records[{i}].features")
        fixed.append(Record(key, rec["features"], event_time_of(rec.get("event_time"), now_ms),
                            rec.get("idempotency_key") or new_key()))
    if not fixed:
        raise InvalidRequest("records must not be empty")
    return fixed


def write(view: str, records: list[Record]) -> Call:
    _check_name(view, "view")
    return Call("POST", "/v1/write", values.dumps({"view": view, "records": [r.json() for r in records]}))


# -- answers -------------------------------------------------------------------------------------


def error_of(answer: Answer) -> GatewayError | None:
    """``None`` for a 2xx answer; else the exception it means."""
    if 200 <= answer.status < 300:
        return None
    try:
        error = values.loads(answer.body).get("error")
    except (ValueError, AttributeError):
        error = None
    return from_answer(answer.status, error, retry_after=answer.retry_after, request_id=answer.request_id)


def retry_after_of(header: str | None) -> float | None:
    """``Retry-After`` in seconds; an HTTP date (which the gateway never sends) counts as absent."""
    if header is None:
        return None
    try:
        seconds = float(header)
    except ValueError:
        return None
    return seconds if seconds >= 0 else None


def readiness(answer: Answer) -> dict[str, Any]:
    """``/readyz``'s body, ready (200) or not (503); anything else is the error it means."""
    if answer.status in (200, 503):
        try:
            body = values.loads(answer.body)
        except ValueError:
            body = None
        if isinstance(body, dict) and "ready" in body:
            return body
    raise error_of(answer) or GatewayError(f"/readyz answered {answer.status} without a readiness body",
                                           status=answer.status, request_id=answer.request_id)


def entity(answer: Answer) -> Entity:
    body = values.loads(answer.body)
    return Entity(body["view"], body["key"], body["features"], body["version"], body["region"])


def read_results(answer: Answer) -> list[ReadResult]:
    return [
        ReadResult(r["key"], r["status"] == "PRESENT", r.get("features") or {}, r.get("version"))
        for r in values.loads(answer.body)["results"]
    ]


def write_result(key: str, idempotency_key: str | None, result: Mapping[str, Any], request_id: str | None = None) -> WriteResult:
    error = result.get("error")
    if error is not None:
        status = error.get("status", 500) if isinstance(error, Mapping) else 500
        return WriteResult(
            key, False, None, idempotency_key=idempotency_key,
            error=from_answer(status, error, retry_after=None, request_id=request_id),
        )
    return WriteResult(
        key, bool(result["applied"]), result.get("version"), result.get("reason"), result.get("primary"),
        bool(result.get("forwarded")), idempotency_key,
    )


def write_answer(key: str, idempotency_key: str | None, answer: Answer) -> WriteResult:
    return write_result(key, idempotency_key, values.loads(answer.body))


def batch_results(answer: Answer) -> list[Mapping[str, Any]]:
    return values.loads(answer.body)["results"]
