"""``BotocoreStore``: the ``Store`` interface on an aiobotocore DynamoDB client, plus table management.

It is the reference the lean data-plane client is held to (tests/integration/
test_store_contract.py) and the control plane's client (creating tables,
``gatewayctl``). Speed does not matter here; fidelity does.

Invariant: every method returns exactly what ``LeanStore`` returns for the same
call, and raises the same ``errors.*`` classes. botocore hands binary values
(B, BS) out as ``bytes`` and base64-encodes whatever it is given, so items are
converted at this boundary: wire-format base64 strings in, base64 strings out.
Batch calls follow the same rules as ``LeanStore`` (dedupe, chunk, retry
unprocessed with full-jitter backoff, ``StoreThrottled`` past the budget).
"""

from __future__ import annotations

import asyncio
import base64
import random
from collections.abc import Callable, Mapping, Sequence
from contextlib import AsyncExitStack
from typing import Any

from aiobotocore.config import AioConfig
from botocore.exceptions import (
    ClientError,
    ConnectTimeoutError,
    EndpointConnectionError,
    HTTPClientError,
    NoCredentialsError,
    ParamValidationError,
    ReadTimeoutError,
)

from gateway.errors import StoreThrottled, StoreTimeout, StoreUnavailable, StoreValidation
from gateway.store.base import (
    BATCH_GET_LIMIT,
    BATCH_WRITE_LIMIT,
    Condition,
    Item,
    backoff_delay,
    chunks,
    key_identity,
    projection_expression,
    write_payload,
)
from gateway.store.transport import sentence, store_error, table_of


def _item_to_botocore(item: Mapping[str, Any]) -> dict[str, Any]:
    return {name: _value_to_botocore(attr) for name, attr in item.items()}


def _value_to_botocore(attr: Mapping[str, Any]) -> dict[str, Any]:
    out: dict[str, Any] = {}
    for kind, inner in attr.items():
        if kind == "B":
            out[kind] = base64.b64decode(inner)
        elif kind == "BS":
            out[kind] = [base64.b64decode(b) for b in inner]
        elif kind == "M":
            out[kind] = _item_to_botocore(inner)
        elif kind == "L":
            out[kind] = [_value_to_botocore(v) for v in inner]
        else:
            out[kind] = inner
    return out


def _item_from_botocore(item: Mapping[str, Any] | None) -> Item | None:
    if item is None:
        return None
    return {name: _value_from_botocore(attr) for name, attr in item.items()}


def _value_from_botocore(attr: Mapping[str, Any]) -> dict[str, Any]:
    out: dict[str, Any] = {}
    for kind, inner in attr.items():
        if kind == "B":
            out[kind] = base64.b64encode(inner).decode("ascii")
        elif kind == "BS":
            out[kind] = [base64.b64encode(b).decode("ascii") for b in inner]
        elif kind == "M":
            out[kind] = _item_from_botocore(inner)
        elif kind == "L":
            out[kind] = [_value_from_botocore(v) for v in inner]
        else:
            out[kind] = inner
    return out


def _values_to_botocore(payload: dict[str, Any]) -> dict[str, Any]:
    values = payload.get("ExpressionAttributeValues")
    if values:
        payload["ExpressionAttributeValues"] = _item_to_botocore(values)
    return payload


class BotocoreStore:
    """``Store`` on an aiobotocore ``dynamodb`` client. Use ``await BotocoreStore.open(...)``."""

    def __init__(
        self,
        client: Any,
        *,
        exit_stack: AsyncExitStack | None = None,
        max_attempts: int = 6,
        backoff_base: float = 0.02,
        backoff_cap: float = 1.0,
        sleep: Callable[[float], Any] = asyncio.sleep,
        rng: Callable[[], float] = random.random,
    ) -> None:
        self.client = client
        self._exit_stack = exit_stack
        self._max_attempts = max_attempts
        self._backoff_base = backoff_base
        self._backoff_cap = backoff_cap
        self._sleep = sleep
        self._rng = rng

    @classmethod
    async def open(
        cls,
        region: str,
        endpoint_url: str | None = None,
        *,
        session: Any = None,
        max_attempts: int = 6,
        profile: str | None = None,
        **kw: Any,
    ) -> BotocoreStore:
        """A store owning its client (``close()`` closes it). botocore's own retries use the same budget.

        ``profile`` names a profile of the AWS config files (``gatewayctl --profile``); without it the
        default provider chain decides.
        """
        if session is None:
            from aiobotocore.session import AioSession

            session = AioSession(profile=profile)
        config = AioConfig(retries={"max_attempts": max_attempts, "mode": "standard"})
        stack = AsyncExitStack()
        client = await stack.enter_async_context(
            session.create_client("dynamodb", region_name=region, endpoint_url=endpoint_url, config=config)
        )
        return cls(client, exit_stack=stack, max_attempts=max_attempts, **kw)

    async def close(self) -> None:
        if self._exit_stack is not None:
            await self._exit_stack.aclose()
            self._exit_stack = None

    async def _call(self, operation: str, payload: dict[str, Any]) -> dict[str, Any]:
        method = getattr(self.client, _snake(operation))
        try:
            return await method(**payload)
        except ClientError as exc:
            error = exc.response.get("Error", {})
            status = exc.response.get("ResponseMetadata", {}).get("HTTPStatusCode", 0)
            raise store_error(
                operation,
                table_of(payload),
                status,
                error.get("Code", ""),
                error.get("Message", ""),
                _item_from_botocore(exc.response.get("Item")),
            ) from exc
        except ParamValidationError as exc:
            # botocore checks types before sending; DynamoDB answers the same request with a ValidationException.
            raise StoreValidation(sentence(f"DynamoDB {operation} on table {table_of(payload)!r} was rejected as invalid: {exc}")) from exc
        except (ReadTimeoutError, ConnectTimeoutError) as exc:
            raise StoreTimeout(sentence(f"DynamoDB {operation} on table {table_of(payload)!r} timed out: {exc}")) from exc
        except (EndpointConnectionError, HTTPClientError, NoCredentialsError) as exc:
            raise StoreUnavailable(sentence(f"DynamoDB {operation} on table {table_of(payload)!r} failed: {exc}")) from exc

    async def get_item(
        self, table: str, key: Item, *, consistent: bool = False, projection: Sequence[str] | None = None
    ) -> Item | None:
        payload: dict[str, Any] = {"TableName": table, "Key": _item_to_botocore(key), "ConsistentRead": consistent}
        if projection is not None:
            payload["ProjectionExpression"], payload["ExpressionAttributeNames"] = projection_expression(projection)
        body = await self._call("GetItem", payload)
        return _item_from_botocore(body.get("Item"))

    async def batch_get_item(
        self, table: str, keys: Sequence[Item], *, consistent: bool = False, projection: Sequence[str] | None = None
    ) -> list[Item | None]:
        if not keys:
            return []
        key_names = tuple(keys[0])
        idents = [key_identity(key, key_names) for key in keys]
        unique = list(dict(zip(idents, keys)).values())
        request: dict[str, Any] = {"ConsistentRead": consistent}
        strip: set[str] = set()
        if projection is not None:
            wanted = list(dict.fromkeys(projection))
            if wanted:
                strip = {name for name in key_names if name not in wanted}
            request["ProjectionExpression"], request["ExpressionAttributeNames"] = projection_expression(
                wanted + sorted(strip)
            )
        found: dict[tuple[Any, ...], Item] = {}
        for batch in chunks(unique, BATCH_GET_LIMIT):
            pending: dict[str, Any] = {table: {**request, "Keys": [_item_to_botocore(k) for k in batch]}}
            for retry in range(self._max_attempts):
                if retry:
                    await self._sleep(backoff_delay(retry - 1, self._backoff_base, self._backoff_cap, self._rng))
                body = await self._call("BatchGetItem", {"RequestItems": pending})
                for raw in body.get("Responses", {}).get(table, ()):
                    item = _item_from_botocore(raw) or {}
                    found[key_identity(item, key_names)] = {k: v for k, v in item.items() if k not in strip}
                pending = body.get("UnprocessedKeys") or {}
                if not pending:
                    break
            else:
                raise StoreThrottled(
                    f"DynamoDB BatchGetItem on table {table!r} left "
                    f"{len(pending.get(table, {}).get('Keys', ()))} keys unprocessed after "
                    f"{self._max_attempts} attempts; the table is throttled, retry later or raise its capacity."
                )
        return [found.get(ident) for ident in idents]

    async def put_item(self, table: str, item: Item, *, condition: Condition | None = None) -> None:
        payload = _values_to_botocore(write_payload(table, "PutItem", condition))
        payload["Item"] = _item_to_botocore(item)
        await self._call("PutItem", payload)

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
    ) -> Item | None:
        payload = _values_to_botocore(write_payload(table, "UpdateItem", condition, names, values))
        payload.update(Key=_item_to_botocore(key), UpdateExpression=update, ReturnValues=return_values)
        body = await self._call("UpdateItem", payload)
        return _item_from_botocore(body.get("Attributes"))

    async def delete_item(
        self, table: str, key: Item, *, condition: Condition | None = None, return_old: bool = False
    ) -> Item | None:
        payload = _values_to_botocore(write_payload(table, "DeleteItem", condition))
        payload.update(Key=_item_to_botocore(key), ReturnValues="ALL_OLD" if return_old else "NONE")
        body = await self._call("DeleteItem", payload)
        return _item_from_botocore(body.get("Attributes"))

    async def batch_write_item(self, table: str, *, puts: Sequence[Item] = (), deletes: Sequence[Item] = ()) -> None:
        requests = [{"PutRequest": {"Item": _item_to_botocore(item)}} for item in puts]
        requests += [{"DeleteRequest": {"Key": _item_to_botocore(key)}} for key in deletes]
        for batch in chunks(requests, BATCH_WRITE_LIMIT):
            pending: dict[str, Any] = {table: batch}
            for retry in range(self._max_attempts):
                if retry:
                    await self._sleep(backoff_delay(retry - 1, self._backoff_base, self._backoff_cap, self._rng))
                body = await self._call("BatchWriteItem", {"RequestItems": pending})
                pending = body.get("UnprocessedItems") or {}
                if not pending:
                    break
            else:
                raise StoreThrottled(
                    f"DynamoDB BatchWriteItem on table {table!r} left {len(pending.get(table, ()))} writes "
                    f"unprocessed after {self._max_attempts} attempts; the table is throttled, retry later "
                    "or raise its capacity."
                )

    async def scan(self, table: str, *, consistent: bool = False, page_size: int | None = None) -> list[Item]:
        payload: dict[str, Any] = {"TableName": table, "ConsistentRead": consistent}
        if page_size is not None:
            payload["Limit"] = page_size
        items: list[Item] = []
        while True:
            body = await self._call("Scan", payload)
            items += [_item_from_botocore(item) for item in body.get("Items", ())]  # type: ignore[misc]
            last = body.get("LastEvaluatedKey")
            if not last:
                return items
            payload = {**payload, "ExclusiveStartKey": last}

    # --- control plane ---

    async def create_table(self, table: str, key_attr: str = "pk") -> None:
        """On-demand table with a string hash key and a NEW_AND_OLD_IMAGES stream; returns once ACTIVE."""
        payload = {
            "TableName": table,
            "AttributeDefinitions": [{"AttributeName": key_attr, "AttributeType": "S"}],
            "KeySchema": [{"AttributeName": key_attr, "KeyType": "HASH"}],
            "BillingMode": "PAY_PER_REQUEST",
            # Global tables replicate through streams; the emulator reads them too.
            "StreamSpecification": {"StreamEnabled": True, "StreamViewType": "NEW_AND_OLD_IMAGES"},
        }
        await self._call("CreateTable", payload)
        await self._wait("table_exists", table)

    async def delete_table(self, table: str) -> None:
        await self._call("DeleteTable", {"TableName": table})
        await self._wait("table_not_exists", table)

    async def list_tables(self) -> list[str]:
        names: list[str] = []
        payload: dict[str, Any] = {}
        while True:
            body = await self._call("ListTables", payload)
            names += body.get("TableNames", [])
            if "LastEvaluatedTableName" not in body:
                return names
            payload = {"ExclusiveStartTableName": body["LastEvaluatedTableName"]}

    async def _wait(self, waiter_name: str, table: str) -> None:
        waiter = self.client.get_waiter(waiter_name)
        try:
            # botocore's default polls every 20 s; tables are usually ready within seconds.
            await waiter.wait(TableName=table, WaiterConfig={"Delay": 1, "MaxAttempts": 300})
        except Exception as exc:  # botocore.exceptions.WaiterError and its causes
            raise StoreUnavailable(sentence(f"DynamoDB table {table!r} did not reach the expected state: {exc}")) from exc


def _snake(operation: str) -> str:
    return "".join("_" + c.lower() if c.isupper() else c for c in operation).lstrip("_")
