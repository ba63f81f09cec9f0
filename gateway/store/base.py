"""The ``Store`` interface, and what its two clients share: the item form, conditions, limits, request building.

Items cross this interface exactly as DynamoDB JSON puts them on the wire
(``{"pk": {"S": "u1"}, "n": {"N": "1.5"}, "b": {"B": "<base64>"}}``): no
conversion, no floats, numbers stay strings. ``LeanStore`` (gateway/store/lean.py)
is the data plane's implementation; ``BotocoreStore`` (gateway/store/botocore.py)
is the reference the contract tests hold it to; the unit tests' fake is
``tests/fakes.py``.

Invariants every implementation keeps:
- ``batch_get_item`` returns one entry per requested key, in order; ``None``
  means DynamoDB said the item does not exist. A key DynamoDB left unprocessed
  is retried and, past the retry budget, raises ``StoreThrottled``: it is never
  reported as missing.
- ``batch_write_item`` either writes every request or raises.
- A failed condition raises ``errors.ConditionFailed`` carrying the stored item
  (``ReturnValuesOnConditionCheckFailure=ALL_OLD``), or ``None`` if there was none.
- Nothing but ``errors.*`` leaves an implementation.

The request-building functions here are pure, so both clients build the same
DynamoDB requests from the same arguments.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from decimal import Decimal, InvalidOperation
from typing import Any, Protocol

from gateway.errors import StoreValidation

Item = dict[str, dict[str, Any]]

#: DynamoDB's per-request limits (https://docs.aws.amazon.com/amazondynamodb/latest/APIReference/API_BatchGetItem.html,
#: .../API_BatchWriteItem.html).
BATCH_GET_LIMIT = 100
BATCH_WRITE_LIMIT = 25


@dataclass(frozen=True, slots=True)
class Condition:
    """A ``ConditionExpression`` with its own placeholders."""

    expression: str
    names: Mapping[str, str] = field(default_factory=dict)
    values: Mapping[str, dict[str, Any]] = field(default_factory=dict)


class Store(Protocol):
    async def get_item(
        self, table: str, key: Item, *, consistent: bool = False, projection: Sequence[str] | None = None
    ) -> Item | None: ...

    async def batch_get_item(
        self, table: str, keys: Sequence[Item], *, consistent: bool = False, projection: Sequence[str] | None = None
    ) -> list[Item | None]: ...

    async def put_item(self, table: str, item: Item, *, condition: Condition | None = None) -> None: ...

    async def update_item(
        self,
        table: str,
        key: Item,
        *,
        update: str,
        names: Mapping[str, str],
        values: Mapping[str, dict[str, Any]],
        condition: Condition | None = None,
        return_values: str = "NONE",
    ) -> Item | None: ...

    async def delete_item(
        self, table: str, key: Item, *, condition: Condition | None = None, return_old: bool = False
    ) -> Item | None: ...

    async def batch_write_item(self, table: str, *, puts: Sequence[Item] = (), deletes: Sequence[Item] = ()) -> None: ...

    async def scan(self, table: str, *, consistent: bool = False, page_size: int | None = None) -> list[Item]:
        """Every item of a (small) table, all pages: for the members table, never for feature tables."""
        ...

    async def close(self) -> None: ...


# --- request building shared by LeanStore and BotocoreStore (pure functions) ---


def projection_expression(projection: Sequence[str]) -> tuple[str, dict[str, str]]:
    """``["a", "_ts"]`` -> ``("#p0,#p1", {"#p0": "a", "#p1": "_ts"})``: placeholders make reserved
    words and names starting with "_" legal (https://docs.aws.amazon.com/amazondynamodb/latest/developerguide/Expressions.ExpressionAttributeNames.html)."""
    unique = list(dict.fromkeys(projection))  # DynamoDB rejects overlapping paths
    if not unique:
        raise StoreValidation("A projection must name at least one attribute; pass None to read whole items.")
    names = {f"#p{i}": name for i, name in enumerate(unique)}
    return ",".join(names), names


def merge_placeholders(
    into: dict[str, Any], extra: Mapping[str, Any], table: str, operation: str, what: str
) -> dict[str, Any]:
    for placeholder, value in extra.items():
        if into.setdefault(placeholder, value) != value:
            raise StoreValidation(
                f"{operation} on table {table!r}: placeholder {placeholder} is bound to two different "
                f"{what} ({into[placeholder]!r} and {value!r}); rename one."
            )
    return into


def write_payload(
    table: str,
    operation: str,
    condition: Condition | None,
    names: Mapping[str, str] | None = None,
    values: Mapping[str, dict[str, Any]] | None = None,
) -> dict[str, Any]:
    """TableName plus the merged condition/expression placeholders of a single-item write."""
    payload: dict[str, Any] = {"TableName": table}
    merged_names = dict(names) if names else {}
    merged_values = dict(values) if values else {}
    if condition is not None:
        payload["ConditionExpression"] = condition.expression
        # Makes a ConditionalCheckFailedException carry the stored item, so callers learn why.
        payload["ReturnValuesOnConditionCheckFailure"] = "ALL_OLD"
        merge_placeholders(merged_names, condition.names, table, operation, "attribute names")
        merge_placeholders(merged_values, condition.values, table, operation, "values")
    if merged_names:  # DynamoDB rejects empty placeholder maps
        payload["ExpressionAttributeNames"] = merged_names
    if merged_values:
        payload["ExpressionAttributeValues"] = merged_values
    return payload


def key_identity(item: Mapping[str, Mapping[str, Any]], names: Sequence[str]) -> tuple[Any, ...]:
    """A hashable identity of the key attributes ``names`` of ``item``.

    Numbers compare by value (DynamoDB answers key {"N": "1.0"} with {"N": "1"}), so
    duplicates are found and answers matched to the keys that asked for them.
    """
    ident: list[Any] = []
    for name in names:
        attr = item.get(name)
        if not attr or len(attr) != 1:
            ident.append((name, None))
            continue
        ((kind, value),) = attr.items()
        if kind == "N":
            try:
                value = Decimal(value)
            except (InvalidOperation, TypeError, ValueError):
                pass
        ident.append((name, kind, value))
    return tuple(ident)


def backoff_delay(retry: int, base: float, cap: float, rng: Callable[[], float]) -> float:
    """Full jitter: uniform in [0, min(cap, base * 2**retry)) for the ``retry``-th retry (0-based)."""
    return rng() * min(cap, base * (1 << min(retry, 30)))


def chunks(seq: Sequence[Any], size: int) -> list[Sequence[Any]]:
    return [seq[i : i + size] for i in range(0, len(seq), size)]
