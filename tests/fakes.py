"""Test doubles for the gateway's seams: the DynamoDB transport, the clock, sleep.

``FakeDynamoDB`` is a ``Transport`` (gateway/store_transport.py) holding one
table in memory, keyed by its ``pk`` attribute, that can be told to leave batch
requests unprocessed or to fail calls, the way a throttled DynamoDB does.
"""

from __future__ import annotations

import copy
import datetime
from collections import deque
from collections.abc import Callable
from typing import Any

from gateway.errors import ConditionFailed
from gateway.store import Item


class FakeClock:
    """A clock that moves only when told to: ``now`` in seconds since the epoch.

    Callable (for ``clock=`` parameters that take ``time.time``/``time.monotonic``)
    and a ``gateway.clock.Clock`` (``monotonic``, ``wall_us``, ``wall_ms``).
    """

    def __init__(self, now: float = 1_700_000_000.0) -> None:
        self.now = now

    def __call__(self) -> float:
        return self.now

    def advance(self, seconds: float) -> None:
        self.now += seconds

    def monotonic(self) -> float:
        return self.now

    def wall_us(self) -> int:
        return round(self.now * 1_000_000)

    def wall_ms(self) -> int:
        return round(self.now * 1_000)

    def datetime(self) -> datetime.datetime:
        return datetime.datetime.fromtimestamp(self.now, tz=datetime.timezone.utc)


class RecordingSleep:
    """Stands in for ``asyncio.sleep``: records the delays, returns at once."""

    def __init__(self) -> None:
        self.delays: list[float] = []

    async def __call__(self, delay: float) -> None:
        self.delays.append(delay)


class FakeDynamoDB:
    """An in-memory single-table DynamoDB behind the ``Transport`` seam.

    - ``unprocessed``: per batch call, how many of its requests to leave unprocessed
      (consumed left to right; afterwards everything is processed).
    - ``always_unprocessed``: leave this many unprocessed on every batch call (a hot table).
    - ``failures``: exceptions to raise, one per call, before answering normally.
    """

    def __init__(self, key_attr: str = "pk") -> None:
        self.key_attr = key_attr
        self.items: dict[Any, Item] = {}
        self.calls: list[tuple[str, dict[str, Any]]] = []
        self.unprocessed: deque[int] = deque()
        self.always_unprocessed = 0
        self.failures: deque[BaseException] = deque()
        self.handlers: dict[str, Callable[[dict[str, Any]], dict[str, Any]]] = {
            "GetItem": self._get_item,
            "PutItem": self._put_item,
            "BatchGetItem": self._batch_get_item,
            "BatchWriteItem": self._batch_write_item,
        }

    def operations(self) -> list[str]:
        return [operation for operation, _ in self.calls]

    def _key(self, item: Item) -> Any:
        return tuple(item[self.key_attr].items())

    def put(self, *items: Item) -> None:
        for item in items:
            self.items[self._key(item)] = copy.deepcopy(item)

    def _leave(self, total: int) -> int:
        leave = self.unprocessed.popleft() if self.unprocessed else self.always_unprocessed
        return min(leave, total)

    async def call(self, operation: str, payload: dict[str, Any]) -> dict[str, Any]:
        self.calls.append((operation, copy.deepcopy(payload)))
        if self.failures:
            raise self.failures.popleft()
        return self.handlers[operation](payload)

    def _project(self, item: Item, request: dict[str, Any]) -> Item:
        if "ProjectionExpression" not in request:
            return copy.deepcopy(item)
        names = request.get("ExpressionAttributeNames", {})
        wanted = [names.get(p, p) for p in request["ProjectionExpression"].split(",")]
        return {name: copy.deepcopy(item[name]) for name in wanted if name in item}

    def _get_item(self, payload: dict[str, Any]) -> dict[str, Any]:
        item = self.items.get(self._key(payload["Key"]))
        return {} if item is None else {"Item": self._project(item, payload)}

    def _put_item(self, payload: dict[str, Any]) -> dict[str, Any]:
        if "ConditionExpression" in payload:
            old = self.items.get(self._key(payload["Item"]))
            if payload["ConditionExpression"] == "attribute_not_exists(pk)" and old is not None:
                raise ConditionFailed(copy.deepcopy(old))
        self.put(payload["Item"])
        return {}

    def _batch_get_item(self, payload: dict[str, Any]) -> dict[str, Any]:
        ((table, request),) = payload["RequestItems"].items()
        keys = request["Keys"]
        if len(keys) > 100:
            raise AssertionError("BatchGetItem with more than 100 keys")
        if len({self._key(k) for k in keys}) != len(keys):
            raise AssertionError("BatchGetItem with duplicate keys (DynamoDB rejects them)")
        leave = self._leave(len(keys))
        served, left = keys[: len(keys) - leave], keys[len(keys) - leave :]
        found = [self.items.get(self._key(k)) for k in served]
        body: dict[str, Any] = {"Responses": {table: [self._project(i, request) for i in found if i is not None]}}
        body["UnprocessedKeys"] = {table: {**request, "Keys": left}} if left else {}
        return body

    def _batch_write_item(self, payload: dict[str, Any]) -> dict[str, Any]:
        ((table, requests),) = payload["RequestItems"].items()
        if len(requests) > 25:
            raise AssertionError("BatchWriteItem with more than 25 requests")
        leave = self._leave(len(requests))
        done, left = requests[: len(requests) - leave], requests[len(requests) - leave :]
        for request in done:
            if "PutRequest" in request:
                self.put(request["PutRequest"]["Item"])
            else:
                self.items.pop(self._key(request["DeleteRequest"]["Key"]), None)
        return {"UnprocessedItems": {table: left} if left else {}}
