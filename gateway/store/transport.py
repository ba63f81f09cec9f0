"""The network seam under ``LeanStore``: one DynamoDB JSON call in, one parsed body (or one gateway error) out.

``Transport.call(operation, payload)`` is the only way ``LeanStore`` talks to
DynamoDB, so tests swap in a fake (tests/fakes.py) instead of monkeypatching.
``HttpTransport`` is the real one: it signs with ``gateway.store.sigv4``, POSTs orjson
bytes over a ``Wire`` and parses the answer with orjson. Two wires exist:
``Http1Pool`` (gateway/http1/pool.py, the default: a lean keep-alive HTTP/1.1 pool)
and ``AiohttpWire`` (one shared ``aiohttp.ClientSession``), chosen by
``dynamodb.wire`` in the config; the contract tests run both.

Invariant: nothing from aiohttp or orjson leaves this module. Every failure is
an ``errors.*`` instance whose message names the operation and the table, via
``store_error()``, which ``BotocoreStore`` uses too so both clients map
DynamoDB's error types identically.

Errors: https://docs.aws.amazon.com/amazondynamodb/latest/developerguide/Programming.Errors.html
"""

from __future__ import annotations

from typing import Any, Protocol

import aiohttp
import orjson

from gateway.errors import (
    ConditionFailed,
    ItemTooLarge,
    StoreError,
    StoreThrottled,
    StoreUnavailable,
    StoreValidation,
    TableNotFound,
)
from gateway.http1.pool import Http1Pool
from gateway.store.credentials import CredentialSource
from gateway.store.sigv4 import TARGET_PREFIX, SigV4Signer

THROTTLING = frozenset({"ProvisionedThroughputExceededException", "ThrottlingException", "RequestLimitExceeded"})
UNAVAILABLE = frozenset({"InternalServerError", "ServiceUnavailable", "InternalFailure"})
#: Prefixes of the ValidationException messages DynamoDB sends for items over 400 KB
#: (https://docs.aws.amazon.com/amazondynamodb/latest/developerguide/ServiceQuotas.html#limits-items).
ITEM_TOO_LARGE = ("Item size has exceeded the maximum allowed size", "Item size to update has exceeded")
EXPIRED_CREDENTIALS = frozenset({"ExpiredTokenException", "ExpiredToken"})


class Transport(Protocol):
    async def call(self, operation: str, payload: dict[str, Any]) -> dict[str, Any]:
        """Send ``payload`` as ``operation`` (e.g. "GetItem"); return the parsed body or raise ``errors.*``."""
        ...


def table_of(payload: dict[str, Any]) -> str:
    """The table a request is about, for error messages (batch requests name it in RequestItems)."""
    table = payload.get("TableName")
    if table is None:
        table = ",".join(payload.get("RequestItems") or ()) or payload.get("StreamArn") or "?"
    return table


def sentence(text: str) -> str:
    """``text`` ending as a sentence: DynamoDB's messages mostly have no full stop, and every gateway error is one."""
    text = text.rstrip()
    return text if text.endswith((".", "!", "?")) else f"{text}."


def store_error(
    operation: str, table: str, status: int, error_type: str, message: str, item: dict[str, Any] | None = None
) -> BaseException:
    """The gateway error for a DynamoDB error answer (``error_type`` is ``__type`` without its namespace)."""
    where = f"DynamoDB {operation} on table {table!r}"
    if error_type == "ConditionalCheckFailedException":
        return ConditionFailed(item)
    if error_type in THROTTLING:
        return StoreThrottled(f"{where} was throttled ({error_type}); reduce the request rate or raise the table's capacity.")
    if error_type == "ResourceNotFoundException":
        return TableNotFound(
            f"{where} failed: the table does not exist in this region (or is not ACTIVE); create it or fix the "
            f"view's table name. DynamoDB said: {sentence(message)}"
        )
    if error_type in ("ValidationException", "SerializationException"):
        if message.startswith(ITEM_TOO_LARGE):
            return ItemTooLarge(f"{where} refused the item: DynamoDB items are limited to 400 KB ({message}).")
        return StoreValidation(sentence(f"{where} was rejected as invalid: {message}"))
    if error_type in UNAVAILABLE or status >= 500:
        return StoreUnavailable(sentence(f"{where} failed with HTTP {status} {error_type or 'error'}: {message or 'no message'}"))
    if error_type in EXPIRED_CREDENTIALS:
        return StoreUnavailable(f"{where} was refused because the credentials expired ({message}); they will be refreshed.")
    return StoreError(sentence(f"{where} failed with HTTP {status} {error_type or 'error'}: {message or 'no message'}"))


def error_from_body(operation: str, payload: dict[str, Any], status: int, raw: bytes) -> BaseException:
    try:
        body = orjson.loads(raw) if raw else {}
    except orjson.JSONDecodeError:
        body = {}
    if not isinstance(body, dict):
        body = {}
    error_type = str(body.get("__type", "")).rpartition("#")[2]
    message = str(body.get("message") or body.get("Message") or raw[:200].decode("utf-8", "replace"))
    return store_error(operation, table_of(payload), status, error_type, message, body.get("Item"))


class Wire(Protocol):
    """One POST of a signed body to the endpoint; raises ``ConnectionError`` when the answer cannot be had."""

    async def post(self, headers: dict[str, str], body: bytes) -> tuple[int, bytes]: ...

    async def close(self) -> None: ...


class AiohttpWire:
    """A ``Wire`` over an ``aiohttp.ClientSession``; closes the session only if it created it."""

    __slots__ = ("_session", "_url", "_owned")

    def __init__(
        self, url: str, session: aiohttp.ClientSession | None = None, *, limit: int = 256, source_address: str | None = None
    ) -> None:
        self._url = url
        self._owned = session is None
        self._session = session or aiohttp.ClientSession(
            connector=aiohttp.TCPConnector(
                limit=limit, keepalive_timeout=30.0, local_addr=(source_address, 0) if source_address else None
            ),
            # Timeouts are LeanStore's, per attempt; not aiohttp's.
            timeout=aiohttp.ClientTimeout(total=None),
        )

    async def post(self, headers: dict[str, str], body: bytes) -> tuple[int, bytes]:
        try:
            async with self._session.post(self._url, data=body, headers=headers) as response:
                return response.status, await response.read()
        except aiohttp.ClientError as exc:
            raise ConnectionError(f"{type(exc).__name__}: {exc}") from exc

    async def close(self) -> None:
        if self._owned:
            await self._session.close()


def open_wire(
    kind: str, url: str, session: aiohttp.ClientSession | None = None, *, source_address: str | None = None
) -> Wire:
    """``source_address``: the local address connections are made from (``gateway.source_address``)."""
    if kind == "http1":
        return Http1Pool(url, source_address=source_address)
    if kind == "aiohttp":
        return AiohttpWire(url, session, source_address=source_address)
    raise ValueError(f"unknown wire {kind!r}: use 'http1' or 'aiohttp'")


class HttpTransport:
    """DynamoDB's JSON protocol over a ``Wire`` (not owned: the caller closes it)."""

    __slots__ = ("_wire", "_url", "_credentials", "_signer", "_targets", "_target_prefix")

    def __init__(
        self,
        endpoint: str,
        region: str,
        credentials: CredentialSource,
        wire: Wire,
        *,
        signer: SigV4Signer | None = None,
        target_prefix: str = TARGET_PREFIX,
    ) -> None:
        """``target_prefix``: ``DynamoDB_20120810.`` for tables, ``DynamoDBStreams_20120810.`` for streams."""
        self._wire = wire
        self._target_prefix = target_prefix
        self._url = endpoint if endpoint.endswith("/") else endpoint + "/"
        self._credentials = credentials
        self._signer = signer or SigV4Signer(self._url, region)
        self._targets: dict[str, str] = {}

    async def call(self, operation: str, payload: dict[str, Any]) -> dict[str, Any]:
        target = self._targets.get(operation)
        if target is None:
            target = self._targets[operation] = self._target_prefix + operation
        body = orjson.dumps(payload)
        credentials = self._credentials.cached() or await self._credentials.get()
        headers = self._signer.sign(target, body, credentials)
        try:
            status, raw = await self._wire.post(headers, body)
        except OSError as exc:  # ConnectionError included
            # Refused/reset connections and truncated answers: the request may be retried (see LeanStore).
            raise StoreUnavailable(
                f"DynamoDB {operation} on table {table_of(payload)!r} could not reach {self._url} "
                f"({type(exc).__name__}: {exc})."
            ) from exc
        if status == 200:
            try:
                return orjson.loads(raw)
            except orjson.JSONDecodeError as exc:
                raise StoreUnavailable(
                    f"DynamoDB {operation} on table {table_of(payload)!r} answered 200 with a body that is not JSON."
                ) from exc
        error = error_from_body(operation, payload, status, raw)
        if status < 500 and isinstance(error, StoreUnavailable):
            # Only expired credentials map a 4xx to StoreUnavailable: ask the provider again before the retry.
            self._credentials.invalidate()
        raise error
