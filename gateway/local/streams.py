"""A small DynamoDB Streams client for the global-table emulator (gateway/local/emulator.py).

It speaks the Streams JSON protocol (target prefix ``DynamoDBStreams_20120810.``,
https://docs.aws.amazon.com/amazondynamodb/latest/APIReference/API_Operations_Amazon_DynamoDB_Streams.html)
through the same ``HttpTransport`` (signer, wire, error mapping) as ``LeanStore``, so stream records arrive exactly
as DynamoDB JSON puts them on the wire: images can be written to another region
unchanged (no botocore conversion of binary values or timestamps).

Invariant: nothing from the wire or orjson leaves this module; every failure is
an ``errors.*`` instance (``store_error`` maps DynamoDB's error types the same
way for the data-plane client). Streams-specific errors such as
``ExpiredIteratorException`` and ``TrimmedDataAccessException`` surface as a
plain ``StoreError``: the emulator's answer to all of them is the same (get a
new iterator after the last processed sequence number, or re-discover the stream).
"""

from __future__ import annotations

import asyncio
from typing import Any, Protocol

from gateway.errors import StoreTimeout
from gateway.http1.pool import Http1Pool
from gateway.store.credentials import CredentialSource
from gateway.store.transport import HttpTransport

STREAMS_TARGET_PREFIX = "DynamoDBStreams_20120810."


class Streams(Protocol):
    """The seam the emulator reads streams through (tests pass an in-memory one)."""

    async def latest_stream(self, table: str) -> str | None: ...

    async def shards(self, stream_arn: str) -> list[dict[str, Any]]: ...

    async def shard_iterator(self, stream_arn: str, shard_id: str, after_sequence: str | None) -> str: ...

    async def records(self, iterator: str, limit: int = 1000) -> tuple[list[dict[str, Any]], str | None]: ...

    async def close(self) -> None: ...


class StreamsClient:
    """One region's stream API. Owns its wire; ``close()`` it."""

    def __init__(self, endpoint: str, region: str, credentials: CredentialSource, *, attempt_timeout: float = 2.0) -> None:
        self.endpoint = endpoint
        url = endpoint if endpoint.endswith("/") else endpoint + "/"
        self._wire = Http1Pool(url)
        self._url = url
        # Streams requests are signed for the "dynamodb" service, like the tables API; only the target differs.
        self._transport = HttpTransport(url, region, credentials, self._wire, target_prefix=STREAMS_TARGET_PREFIX)
        self._attempt_timeout = attempt_timeout

    async def close(self) -> None:
        await self._wire.close()

    async def call(self, operation: str, payload: dict[str, Any]) -> dict[str, Any]:
        """One attempt: the emulator's loops decide when to retry, and from which position."""
        try:
            async with asyncio.timeout(self._attempt_timeout):
                return await self._transport.call(operation, payload)
        except TimeoutError as exc:
            raise StoreTimeout(
                f"DynamoDB Streams {operation} at {self._url} did not answer within {self._attempt_timeout:g} s."
            ) from exc

    async def latest_stream(self, table: str) -> str | None:
        """The ARN of the table's newest stream, or ``None`` if it has none (yet)."""
        body = await self.call("ListStreams", {"TableName": table})
        streams = body.get("Streams") or []
        # Labels are creation timestamps (ISO 8601), so the largest is the newest.
        return max(streams, key=lambda s: s.get("StreamLabel", ""))["StreamArn"] if streams else None

    async def shards(self, stream_arn: str) -> list[dict[str, Any]]:
        shards: list[dict[str, Any]] = []
        payload: dict[str, Any] = {"StreamArn": stream_arn}
        while True:
            description = (await self.call("DescribeStream", payload)).get("StreamDescription", {})
            shards += description.get("Shards", [])
            last = description.get("LastEvaluatedShardId")
            if not last:
                return shards
            payload = {"StreamArn": stream_arn, "ExclusiveStartShardId": last}

    async def shard_iterator(self, stream_arn: str, shard_id: str, after_sequence: str | None) -> str:
        payload: dict[str, Any] = {"StreamArn": stream_arn, "ShardId": shard_id}
        if after_sequence is None:
            payload["ShardIteratorType"] = "TRIM_HORIZON"
        else:
            payload["ShardIteratorType"] = "AFTER_SEQUENCE_NUMBER"
            payload["SequenceNumber"] = after_sequence
        return (await self.call("GetShardIterator", payload))["ShardIterator"]

    async def records(self, iterator: str, limit: int = 1000) -> tuple[list[dict[str, Any]], str | None]:
        """The records at ``iterator`` and the next iterator (``None`` once a closed shard is exhausted)."""
        body = await self.call("GetRecords", {"ShardIterator": iterator, "Limit": limit})
        return body.get("Records", []), body.get("NextShardIterator")
