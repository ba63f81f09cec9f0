"""Logs are JSON lines on stderr: one object per record, with any ``extra=`` fields as keys.

Every line written while a request is served carries its ``request_id`` (the
caller's ``X-Request-Id``, or one generated here; returned in the answer's
header and sent on across the peer hop), taken from a context variable, so no
call site has to pass it. The access log (``AccessLog``) writes one line per
request for a sampled fraction of requests (``logs.access_sample``) and for
every 5xx answer.
"""

from __future__ import annotations

import contextvars
import logging
import random
import sys
from typing import Any

import orjson

# Attributes every LogRecord has; anything else on a record came from ``extra=``.
_STANDARD = set(vars(logging.LogRecord("", 0, "", 0, "", None, None))) | {"message", "asctime", "taskName"}

REQUEST_ID_HEADER = "X-Request-Id"
#: Longest caller-chosen request id accepted; a longer (or non-ASCII) one is replaced by a generated id.
MAX_REQUEST_ID = 128

#: The id of the request being served in this context, if any.
request_id: contextvars.ContextVar[str | None] = contextvars.ContextVar("gateway_request_id", default=None)

access = logging.getLogger("gateway.access")


def new_request_id() -> str:
    # 64 random bits: unique enough to find a request, and no urandom system call as uuid4 makes;
    # random is reseeded in each forked worker.
    return f"{random.getrandbits(64):016x}"


def accept_request_id(value: str | None) -> str:
    """The caller's id if it is a reasonable one, else a new one."""
    if value and len(value) <= MAX_REQUEST_ID and value.isascii() and value.isprintable():
        return value
    return new_request_id()


class JsonFormatter(logging.Formatter):
    def format(self, record: logging.LogRecord) -> str:
        entry: dict[str, Any] = {
            "ts": round(record.created, 6),
            "level": record.levelname.lower(),
            "logger": record.name,
            "msg": record.getMessage(),
        }
        rid = request_id.get()
        if rid is not None:
            entry["request_id"] = rid
        for key, value in vars(record).items():
            if key not in _STANDARD:
                entry[key] = value
        if record.exc_info:
            entry["exc"] = self.formatException(record.exc_info)
        return orjson.dumps(entry, default=str).decode()


class AccessLog:
    """One JSON line per sampled request: request id, region, method, route, status, outcome, duration, scope, epoch."""

    __slots__ = ("_sample", "_region", "_rng")

    def __init__(self, sample: float, region: str, rng: Any = random.random) -> None:
        self._sample = sample
        self._region = region
        self._rng = rng

    def wanted(self, status: int) -> bool:
        return status >= 500 or (self._sample > 0.0 and (self._sample >= 1.0 or self._rng() < self._sample))

    def write(self, fields: dict[str, Any]) -> None:
        fields["region"] = self._region
        access.info("request", extra=fields)


def setup_logging(level: int = logging.INFO) -> None:
    handler = logging.StreamHandler(sys.stderr)
    handler.setFormatter(JsonFormatter())
    root = logging.getLogger()
    root.handlers[:] = [handler]
    root.setLevel(level)
