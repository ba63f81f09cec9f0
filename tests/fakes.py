"""Test doubles for the gateway's seams: the DynamoDB transport, the clock, sleep.

``FakeDynamoDB`` is a ``Transport`` (gateway/store/transport.py) holding one
table in memory, keyed by its ``pk`` attribute, that can be told to leave batch
requests unprocessed or to fail calls, the way a throttled DynamoDB does.
``FakeTables`` is a whole ``Store`` over several in-memory tables, with
conditional writes, for control-plane code (``gatewayctl``).
"""

from __future__ import annotations

import base64
import copy
import datetime
import decimal
import re
from collections import deque
from collections.abc import Callable
from typing import Any

from gateway.errors import ConditionFailed, TableNotFound
from gateway.store.base import Condition, Item


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

    def __init__(self, key_attr: str = "pk", table: str | None = None) -> None:
        self.key_attr = key_attr
        #: When set, a request for any other table fails as DynamoDB's ResourceNotFoundException would.
        self.table = table
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
        names = set(payload["RequestItems"]) if "RequestItems" in payload else {payload.get("TableName")}
        if self.table is not None and names != {self.table}:
            raise TableNotFound(f"DynamoDB {operation}: no table {sorted(map(str, names))}")
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
            condition = Condition(
                payload["ConditionExpression"], payload.get("ExpressionAttributeNames", {}),
                payload.get("ExpressionAttributeValues", {}),
            )
            if not holds(condition, old):
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

    ``tables`` maps a table name to its items by ``pk`` string. Every condition is
    evaluated from its expression text by ``holds``, the way DynamoDB would; a
    failed one raises ``ConditionFailed`` carrying the stored item.
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
        if condition is not None and not holds(condition, old):
            raise ConditionFailed(copy.deepcopy(old))

    async def get_item(self, table: str, key: Item, *, consistent: bool = False, projection: Any = None) -> Item | None:
        return copy.deepcopy(self._table("GetItem", table).get(key["pk"]["S"]))

    async def batch_get_item(self, table: str, keys: Any, *, consistent: bool = False, projection: Any = None) -> list[Item | None]:
        items = self._table("BatchGetItem", table)
        return [copy.deepcopy(items.get(key["pk"]["S"])) for key in keys]

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


# -- DynamoDB condition expressions, evaluated from their text --------------------------------------

_TOKEN = re.compile(r"\s*(<>|<=|>=|[()=<>,]|[#:]?[A-Za-z_][\w.]*)")
_KEYWORDS = {"AND", "OR", "NOT"}


def holds(condition: Any, item: Item | None) -> bool:
    """Whether ``condition`` (a ``gateway.store.base.Condition``) holds for the stored ``item`` (``None``: no item).

    The grammar of https://docs.aws.amazon.com/amazondynamodb/latest/developerguide/Expressions.OperatorsAndFunctions.html
    for what the gateway writes: ``attribute_exists``/``attribute_not_exists``, the comparators
    ``= <> < <= > >=``, ``NOT``, ``AND`` (binding tighter than ``OR``) and parentheses. As in DynamoDB,
    a comparison with a missing attribute or a value of another type is false, except ``<>``, which is
    true; numbers compare by value, strings and binaries by their bytes. An unknown placeholder, a
    missing value or a token this grammar does not know raises ``AssertionError``, so a fake never
    guesses at an expression DynamoDB would refuse.
    """
    tokens = _tokens(condition.expression)
    at = 0

    def peek() -> str | None:
        return tokens[at] if at < len(tokens) else None

    def take(expected: str | None = None) -> str:
        nonlocal at
        token = peek()
        assert token is not None and (expected is None or token.upper() == expected), (
            f"condition {condition.expression!r}: expected {expected or 'more'} at token {at}, got {token!r}"
        )
        at += 1
        return token

    def either() -> bool:
        value = both()
        while (peek() or "").upper() == "OR":
            take()
            value = both() or value  # both sides are parsed whatever the first one says
        return value

    def both() -> bool:
        value = negated()
        while (peek() or "").upper() == "AND":
            take()
            value = negated() and value
        return value

    def negated() -> bool:
        if (peek() or "").upper() == "NOT":
            take()
            return not negated()
        return primary()

    def primary() -> bool:
        token = take()
        if token == "(":
            value = either()
            take(")")
            return value
        if token in ("attribute_exists", "attribute_not_exists"):
            take("(")
            name = attribute(take())
            take(")")
            return (item is not None and name in item) == (token == "attribute_exists")
        left = operand(token)
        operator = take()
        assert operator in ("=", "<>", "<", "<=", ">", ">="), f"condition {condition.expression!r}: {operator!r}"
        return _compare(left, operator, operand(take()))

    def attribute(token: str) -> str:
        if token.startswith("#"):
            assert token in condition.names, f"condition {condition.expression!r}: {token} is not in its names"
            return condition.names[token]
        assert token.upper() not in _KEYWORDS and token[0] != ":", f"condition {condition.expression!r}: {token!r}"
        return token

    def operand(token: str) -> dict[str, Any] | None:
        if token.startswith(":"):
            assert token in condition.values, f"condition {condition.expression!r}: {token} is not in its values"
            return condition.values[token]
        name = attribute(token)
        return None if item is None else item.get(name)

    value = either()
    assert peek() is None, f"condition {condition.expression!r}: left over from token {at}: {tokens[at:]}"
    return value


def _tokens(expression: str) -> list[str]:
    tokens, at = [], 0
    while at < len(expression.rstrip()):
        match = _TOKEN.match(expression, at)
        assert match, f"condition {expression!r}: cannot read from {expression[at:]!r}"
        tokens.append(match[1])
        at = match.end()
    return tokens


def _compare(left: dict[str, Any] | None, operator: str, right: dict[str, Any] | None) -> bool:
    if left is None or right is None or left.keys() != right.keys():
        return operator == "<>"
    ((kind, a),) = left.items()
    ((_, b),) = right.items()
    if kind == "N":
        a, b = decimal.Decimal(a), decimal.Decimal(b)
    elif kind == "S":
        a, b = a.encode(), b.encode()
    elif kind == "B":
        a, b = base64.b64decode(a), base64.b64decode(b)
    elif operator not in ("=", "<>"):
        return False  # DynamoDB orders numbers, strings and binaries only
    return {"=": a == b, "<>": a != b, "<": a < b, "<=": a <= b, ">": a > b, ">=": a >= b}[operator]
