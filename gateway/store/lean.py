"""``LeanStore``: the data plane's DynamoDB client, over DynamoDB's JSON protocol (DESIGN.md §11).

It implements the ``Store`` interface (gateway/store/base.py) and keeps its
invariants; it sends items with orjson through a ``Transport``
(gateway/store/transport.py), the seam unit tests fake.

Invariants beyond the interface's:
- Retryable failures (throttling, 5xx, connection errors, attempt timeouts) are
  retried with full-jitter exponential backoff up to ``max_attempts`` attempts
  (https://aws.amazon.com/blogs/architecture/exponential-backoff-and-jitter/),
  and never past the request's deadline (``gateway.deadlines.current``): an
  attempt gets at most the time left, and a retry whose backoff is not shorter
  than the time left is not started; the last error is raised instead, so the
  caller hears "throttled" rather than a bare timeout.
- What DynamoDB left unprocessed in a batch is resent after the same backoff,
  within the same attempts and deadline, and never reported as missing or done.
- Each call (retries included) is reported once to the optional ``observer``
  (``(operation, outcome, seconds)``; outcomes ``ok``, ``condition_failed``,
  ``throttled``, ``unavailable``, ``timeout``, ``error``) and, with a
  ``tracer``, is one client span. Without them (the emulator, benchmarks) the
  call path is unchanged.
"""

from __future__ import annotations

import asyncio
import random
import time
from collections.abc import Callable, Mapping, Sequence
from typing import Any

import aiohttp
from opentelemetry.trace import SpanKind, Status, StatusCode

from gateway import deadlines
from gateway.errors import ConditionFailed, StoreThrottled, StoreTimeout, StoreUnavailable
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
from gateway.store.credentials import CredentialSource
from gateway.store.transport import HttpTransport, Transport, Wire, open_wire, table_of

_CLIENT_KIND = SpanKind.CLIENT


def _error_status(outcome: str) -> Status:
    return Status(StatusCode.ERROR, outcome)


class LeanStore:
    """``Store`` over DynamoDB's JSON protocol with a cached-key SigV4 signer (DESIGN.md §11)."""

    def __init__(
        self,
        endpoint: str,
        region: str,
        credentials: CredentialSource,
        *,
        wire: str = "http1",
        session: aiohttp.ClientSession | None = None,
        transport: Transport | None = None,
        attempt_timeout: float = 2.0,
        max_attempts: int = 6,
        backoff_base: float = 0.02,
        backoff_cap: float = 1.0,
        sleep: Callable[[float], Any] = asyncio.sleep,
        rng: Callable[[], float] = random.random,
        observer: Callable[[str, str, float], None] | None = None,
        tracer: Any = None,
        source_address: str | None = None,
    ) -> None:
        """Without a ``transport``, the store opens a ``wire`` ("http1" or "aiohttp", over ``session`` if
        given, from ``source_address`` if given) to ``endpoint`` and closes it on ``close()``; construct it
        inside a running event loop."""
        if max_attempts < 1:
            raise ValueError("max_attempts must be at least 1")
        self.endpoint = endpoint
        self.region = region
        self._wire: Wire | None = None
        if transport is None:
            # Both wires post to the endpoint's root, given with its final '/' or without.
            self._wire = open_wire(wire, endpoint, session, source_address=source_address)
            transport = HttpTransport(endpoint, region, credentials, self._wire)
        self._transport = transport
        self._attempt_timeout = attempt_timeout
        self._max_attempts = max_attempts
        self._backoff_base = backoff_base
        self._backoff_cap = backoff_cap
        self._sleep = sleep
        self._rng = rng
        self._observer = observer
        #: An OpenTelemetry ``Tracer`` or None (no span objects at all).
        self._tracer = tracer
        self._projections: dict[tuple[str, ...], tuple[str, dict[str, str]]] = {}

    async def close(self) -> None:
        if self._wire is not None:
            await self._wire.close()
            self._wire = None

    def _backoff(self, retry: int) -> float:
        return backoff_delay(retry, self._backoff_base, self._backoff_cap, self._rng)

    async def _call(self, operation: str, payload: dict[str, Any]) -> dict[str, Any]:
        if self._observer is None and self._tracer is None:
            return await self._attempts(operation, payload)
        started = time.perf_counter()
        span = None
        if self._tracer is not None:
            span = self._tracer.start_span(
                f"DynamoDB {operation}",
                kind=_CLIENT_KIND,
                attributes={"db.system": "dynamodb", "db.operation": operation, "aws.dynamodb.table_names": (table_of(payload),)},
            )
        outcome = "error"
        try:
            answer = await self._attempts(operation, payload)
            outcome = "ok"
            return answer
        except ConditionFailed:
            outcome = "condition_failed"  # a normal answer of a conditional write, not a failure
            raise
        except StoreThrottled:
            outcome = "throttled"
            raise
        except StoreUnavailable:
            outcome = "unavailable"
            raise
        except (StoreTimeout, asyncio.CancelledError):
            outcome = "timeout"
            raise
        finally:
            if self._observer is not None:
                self._observer(operation, outcome, time.perf_counter() - started)
            if span is not None:
                span.set_attribute("gateway.outcome", outcome)
                if outcome not in ("ok", "condition_failed"):
                    span.set_status(_error_status(outcome))
                span.end()

    def _attempt_budget(self, operation: str, payload: dict[str, Any]) -> float:
        """The attempt timeout, cut to what is left of the request's deadline."""
        left = deadlines.remaining()
        if left is None or left >= self._attempt_timeout:
            return self._attempt_timeout
        if left <= 0:
            raise StoreTimeout(
                f"DynamoDB {operation} on table {table_of(payload)!r} was not tried: the request's deadline had passed."
            )
        return left

    def _no_time_for(self, delay: float) -> bool:
        """True when the request's deadline ends before a retry after ``delay`` could even start."""
        left = deadlines.remaining()
        return left is not None and left <= delay

    async def _attempts(self, operation: str, payload: dict[str, Any]) -> dict[str, Any]:
        retry = 0
        while True:
            timeout = self._attempt_budget(operation, payload)
            try:
                async with asyncio.timeout(timeout):
                    return await self._transport.call(operation, payload)
            except (StoreThrottled, StoreUnavailable, StoreTimeout) as exc:
                error: StoreThrottled | StoreUnavailable | StoreTimeout = exc
            except TimeoutError as exc:
                # Retrying is safe: the gateway's writes are conditional or idempotent.
                error = StoreTimeout(
                    f"DynamoDB {operation} on table {table_of(payload)!r} did not answer within "
                    f"{timeout:g} s."
                )
                error.__cause__ = exc
            retry += 1
            if retry >= self._max_attempts:
                raise type(error)(f"{error.message} Gave up after {retry} attempts.") from error
            delay = self._backoff(retry - 1)
            if self._no_time_for(delay):
                raise type(error)(
                    f"{error.message} Gave up after {retry} attempts: the request's deadline leaves no time for another."
                ) from error
            await self._sleep(delay)

    def _projection(self, projection: Sequence[str]) -> tuple[str, dict[str, str]]:
        # Views ask for the same few projections over and over; cache the expression.
        cache_key = tuple(projection)
        cached = self._projections.get(cache_key)
        if cached is None:
            if len(self._projections) > 256:
                self._projections.clear()
            cached = self._projections[cache_key] = projection_expression(cache_key)
        return cached

    async def get_item(
        self, table: str, key: Item, *, consistent: bool = False, projection: Sequence[str] | None = None
    ) -> Item | None:
        payload: dict[str, Any] = {"TableName": table, "Key": key}
        if consistent:
            payload["ConsistentRead"] = True
        if projection is not None:
            payload["ProjectionExpression"], payload["ExpressionAttributeNames"] = self._projection(projection)
        body = await self._call("GetItem", payload)
        return body.get("Item")

    async def batch_get_item(
        self, table: str, keys: Sequence[Item], *, consistent: bool = False, projection: Sequence[str] | None = None
    ) -> list[Item | None]:
        """Duplicate keys are sent once and share the same answer object."""
        if not keys:
            return []
        key_names = tuple(keys[0])
        idents = [key_identity(key, key_names) for key in keys]
        unique = list(dict(zip(idents, keys)).values())
        request: dict[str, Any] = {}
        if consistent:
            request["ConsistentRead"] = True
        strip: frozenset[str] = frozenset()
        if projection is not None:
            # The key attributes must come back to match answers to keys; drop them again
            # if the caller did not ask for them.
            wanted = list(dict.fromkeys(projection))
            strip = frozenset(name for name in key_names if name not in wanted)
            request["ProjectionExpression"], request["ExpressionAttributeNames"] = self._projection(
                [*wanted, *sorted(strip)] if wanted else wanted
            )
        found: dict[tuple[Any, ...], Item] = {}
        batches = chunks(unique, BATCH_GET_LIMIT)
        if len(batches) == 1:
            await self._batch_get(table, {**request, "Keys": batches[0]}, key_names, strip, found)
        else:
            async with asyncio.TaskGroup() as group:
                for batch in batches:
                    group.create_task(self._batch_get(table, {**request, "Keys": batch}, key_names, strip, found))
        return [found.get(ident) for ident in idents]

    async def _batch_get(
        self,
        table: str,
        keys_and_attributes: dict[str, Any],
        key_names: tuple[str, ...],
        strip: frozenset[str],
        found: dict[tuple[Any, ...], Item],
    ) -> None:
        request: dict[str, Any] = {"RequestItems": {table: keys_and_attributes}}
        retry = 0
        while True:
            body = await self._call("BatchGetItem", request)
            for item in body.get("Responses", {}).get(table, ()):
                ident = key_identity(item, key_names)
                found[ident] = {k: v for k, v in item.items() if k not in strip} if strip else item
            # UnprocessedKeys repeats the whole KeysAndAttributes (projection included), so it is resent as is.
            unprocessed = body.get("UnprocessedKeys")
            if not unprocessed:
                return
            await self._before_resending("BatchGetItem", table, retry, len(unprocessed.get(table, {}).get("Keys", ())), "keys")
            retry += 1
            request = {"RequestItems": unprocessed}

    async def _before_resending(self, operation: str, table: str, retry: int, left: int, what: str) -> None:
        """Back off before resending what DynamoDB left unprocessed; ``StoreThrottled`` when out of attempts or time.

        Unprocessed keys or writes are never reported as missing or done: they are resent or the call fails.
        """
        if retry + 1 >= self._max_attempts:
            raise StoreThrottled(
                f"DynamoDB {operation} on table {table!r} left {left} {what} unprocessed after "
                f"{retry + 1} attempts; the table is throttled, retry later or raise its capacity."
            )
        delay = self._backoff(retry)
        if self._no_time_for(delay):
            raise StoreThrottled(
                f"DynamoDB {operation} on table {table!r} left {what} unprocessed and the request's deadline "
                "leaves no time to retry them; the table is throttled, retry later or raise its capacity."
            )
        await self._sleep(delay)

    async def put_item(self, table: str, item: Item, *, condition: Condition | None = None) -> None:
        payload = write_payload(table, "PutItem", condition)
        payload["Item"] = item
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
        payload = write_payload(table, "UpdateItem", condition, names, values)
        payload["Key"] = key
        payload["UpdateExpression"] = update
        if return_values != "NONE":
            payload["ReturnValues"] = return_values
        body = await self._call("UpdateItem", payload)
        return body.get("Attributes")

    async def delete_item(
        self, table: str, key: Item, *, condition: Condition | None = None, return_old: bool = False
    ) -> Item | None:
        payload = write_payload(table, "DeleteItem", condition)
        payload["Key"] = key
        if return_old:
            payload["ReturnValues"] = "ALL_OLD"
        body = await self._call("DeleteItem", payload)
        return body.get("Attributes")

    async def batch_write_item(self, table: str, *, puts: Sequence[Item] = (), deletes: Sequence[Item] = ()) -> None:
        requests = [{"PutRequest": {"Item": item}} for item in puts]
        requests += [{"DeleteRequest": {"Key": key}} for key in deletes]
        batches = chunks(requests, BATCH_WRITE_LIMIT)
        if len(batches) == 1:
            await self._batch_write(table, batches[0])
        elif batches:
            async with asyncio.TaskGroup() as group:
                for batch in batches:
                    group.create_task(self._batch_write(table, batch))

    async def scan(self, table: str, *, consistent: bool = False, page_size: int | None = None) -> list[Item]:
        payload: dict[str, Any] = {"TableName": table}
        if consistent:
            payload["ConsistentRead"] = True
        if page_size is not None:
            payload["Limit"] = page_size
        items: list[Item] = []
        while True:
            body = await self._call("Scan", payload)
            items += body.get("Items", ())
            last = body.get("LastEvaluatedKey")
            if not last:
                return items
            payload = {**payload, "ExclusiveStartKey": last}

    async def _batch_write(self, table: str, requests: Sequence[dict[str, Any]]) -> None:
        request: dict[str, Any] = {"RequestItems": {table: requests}}
        retry = 0
        while True:
            body = await self._call("BatchWriteItem", request)
            unprocessed = body.get("UnprocessedItems")
            if not unprocessed:
                return
            await self._before_resending("BatchWriteItem", table, retry, len(unprocessed.get(table, ())), "writes")
            retry += 1
            request = {"RequestItems": unprocessed}


async def open_lean_store(region: str, endpoint_url: str | None = None, **kw: Any) -> LeanStore:
    """A ``LeanStore`` with credentials from the provider chain and botocore's endpoint for ``region``.

    Call at startup: resolving the endpoint loads botocore's service model (blocking file reads).
    The store owns the wire it opens.
    """
    from aiobotocore.session import get_session

    session = get_session()
    credentials = kw.pop("credentials", None) or await CredentialSource.from_provider_chain(session)
    if endpoint_url is None:
        # A throwaway client resolves the endpoint exactly as the SDK would (FIPS, dual-stack,
        # AWS_ENDPOINT_URL_DYNAMODB, partitions) without us re-implementing endpoint rules.
        async with session.create_client("dynamodb", region_name=region) as client:
            endpoint_url = client.meta.endpoint_url
    return LeanStore(endpoint_url, region, credentials, **kw)
