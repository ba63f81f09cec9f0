"""Test doubles for the gateway's seams: the DynamoDB transport, the clock, sleep.

``FakeDynamoDB`` is a ``Transport`` (gateway/store/transport.py) holding one
table in memory, keyed by its ``pk`` attribute, that can be told to leave batch
requests unprocessed or to fail calls, the way a throttled DynamoDB does.
``FakeTables`` is a whole ``Store`` over several in-memory tables, with
conditional writes, for control-plane code (``gatewayctl``).
"""

from __future__ import annotations

import copy
import datetime
import re
from collections import deque
from collections.abc import Callable
from typing import Any

from gateway.errors import ConditionFailed, TableNotFound
from gateway.store.base import Item


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


class AdvancingSleep(RecordingSleep):
    """Stands in for ``asyncio.sleep`` on a ``FakeClock``: records the delay, and the time passes at once."""

    def __init__(self, clock: FakeClock) -> None:
        super().__init__()
        self.clock = clock

    async def __call__(self, delay: float) -> None:
        await super().__call__(delay)
        self.clock.advance(delay)


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


class StaticRouting:
    """A ``RoutingLoader`` stand-in: a snapshot of given rules; ``refresh()`` swaps in ``next_rules`` if set.

    ``learn`` and ``on_change`` behave like the loader's: newer rules (by epoch, version) replace
    older ones, and listeners hear every swap.
    """

    def __init__(self, *rules: Any) -> None:
        from gateway.routing.snapshot import RoutingTable

        self._build = RoutingTable.build
        self.table = RoutingTable.build(rules, 0.0)
        self.next_rules: tuple[Any, ...] | None = None
        self.refreshes = 0
        self.problem = ""
        self.listeners: list[Any] = []

    def set(self, *rules: Any) -> None:
        old, self.table = self.table, self._build(rules, 0.0)
        for listener in self.listeners:
            listener(old, self.table)

    def on_change(self, listener: Any) -> None:
        self.listeners.append(listener)

    def learn(self, rules: Any) -> bool:
        from gateway.routing.loader import newer

        current = dict(self.table.rules)
        changed = False
        for rule in rules:
            if newer(rule, current.get(rule.scope)):
                current[rule.scope] = rule
                changed = True
        if changed:
            self.set(*current.values())
        return changed

    def age(self) -> float:
        return 0.0

    async def refresh(self) -> None:
        self.refreshes += 1
        if self.next_rules is not None:
            self.set(*self.next_rules)


class FakePeers:
    """A ``PeerClient`` stand-in: records each call and answers with a scripted function of (region, body)."""

    def __init__(self, answer: Any = None) -> None:
        self.calls: list[tuple[str, str, dict[str, Any]]] = []
        self.answer = answer

    async def write(self, region: str, body: dict[str, Any]) -> dict[str, Any]:
        self.calls.append(("write", region, body))
        return await self.answer(region, body)

    async def read(self, region: str, body: dict[str, Any]) -> dict[str, Any]:
        self.calls.append(("read", region, body))
        return await self.answer(region, body)

    async def close(self) -> None:
        pass


class FakeTables:
    """A ``Store`` over in-memory tables, for control-plane code such as ``gatewayctl``.

    ``tables`` maps a table name to its items by ``pk`` string. Conditions are
    evaluated the way DynamoDB does for the forms the control plane writes
    (``attribute_not_exists(X)``, ``attribute_exists(X)``, ``X = :v``, ``X < :v``,
    joined by ``AND`` and ``OR``); a failed one raises ``ConditionFailed``
    carrying the stored item.
    A table that is not there raises ``TableNotFound``; ``failures`` are raised
    one per call before anything else happens.
    """

    def __init__(self, *tables: str) -> None:
        self.tables: dict[str, dict[str, Item]] = {table: {} for table in tables}
        self.failures: deque[BaseException] = deque()
        self.writes: list[tuple[str, str, str]] = []  # (operation, table, pk) of every applied write
        self.closed = False

    def put(self, table: str, *items: Item) -> None:
        for item in items:
            self.tables[table][item["pk"]["S"]] = copy.deepcopy(item)

    def item(self, table: str, pk: str) -> Item | None:
        return copy.deepcopy(self.tables[table].get(pk))

    def _table(self, operation: str, table: str) -> dict[str, Item]:
        if self.failures:
            raise self.failures.popleft()
        if table not in self.tables:
            raise TableNotFound(f"DynamoDB {operation} on table {table!r} failed: the table does not exist")
        return self.tables[table]

    @staticmethod
    def _check(condition: Any, old: Item | None) -> None:
        if condition is not None and not FakeTables._holds(condition, old):
            raise ConditionFailed(copy.deepcopy(old))

    @staticmethod
    def _holds(condition: Any, old: Item | None) -> bool:
        """DynamoDB's reading of ``A AND B OR C`` (AND binds tighter; no parentheses in these forms)."""
        return any(
            all(FakeTables._clause(condition, clause.strip(), old) for clause in either.split(" AND "))
            for either in condition.expression.split(" OR ")
        )

    @staticmethod
    def _clause(condition: Any, clause: str, old: Item | None) -> bool:
        exists = re.fullmatch(r"attribute_(not_)?exists\((\S+)\)", clause)
        if exists:
            name = condition.names.get(exists[2], exists[2])
            return (old is not None and name in old) != bool(exists[1])
        left, operator, right = re.fullmatch(r"(\S+) (=|<) (\S+)", clause).groups()  # type: ignore[union-attr]
        stored = None if old is None else old.get(condition.names.get(left, left))
        wanted = condition.values[right]
        if stored is None:
            return False  # a comparison with a missing attribute is false in DynamoDB
        if operator == "=":
            return stored == wanted
        ((kind, value),) = stored.items()
        ((_, bound),) = wanted.items()
        return float(value) < float(bound) if kind == "N" else value < bound

    async def get_item(self, table: str, key: Item, *, consistent: bool = False, projection: Any = None) -> Item | None:
        return copy.deepcopy(self._table("GetItem", table).get(key["pk"]["S"]))

    async def put_item(self, table: str, item: Item, *, condition: Any = None) -> None:
        items = self._table("PutItem", table)
        self._check(condition, items.get(item["pk"]["S"]))
        items[item["pk"]["S"]] = copy.deepcopy(item)
        self.writes.append(("PutItem", table, item["pk"]["S"]))

    async def delete_item(self, table: str, key: Item, *, condition: Any = None, return_old: bool = False) -> Item | None:
        items = self._table("DeleteItem", table)
        self._check(condition, items.get(key["pk"]["S"]))
        old = items.pop(key["pk"]["S"], None)
        self.writes.append(("DeleteItem", table, key["pk"]["S"]))
        return old if return_old else None

    async def scan(self, table: str, *, consistent: bool = False, page_size: int | None = None) -> list[Item]:
        return [copy.deepcopy(item) for item in self._table("Scan", table).values()]

    async def close(self) -> None:
        self.closed = True
