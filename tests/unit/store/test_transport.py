"""The HTTP transport under LeanStore against a canned DynamoDB: signed DynamoDB JSON out, the error tree in (gateway/store/transport.py)."""

from __future__ import annotations

from collections.abc import AsyncIterator
from typing import Any

import orjson
import pytest
from aiohttp import web
from aiohttp.test_utils import TestServer

from gateway import errors
from gateway.local.dynamodb_local import free_port
from gateway.store.base import Condition
from gateway.store.credentials import CredentialSource
from gateway.store.lean import LeanStore
from tests.fakes import RecordingSleep


def item(pk: str, **attrs: str) -> dict[str, Any]:
    return {"pk": {"S": pk}, **{name: {"S": value} for name, value in attrs.items()}}


def key(pk: str) -> dict[str, Any]:
    return {"pk": {"S": pk}}


class CannedDynamoDB:
    """An HTTP server answering every POST with the status and JSON body set by the test."""

    def __init__(self) -> None:
        self.status = 200
        self.body: dict[str, Any] = {}
        self.requests: list[tuple[dict[str, str], dict[str, Any]]] = []
        self.remotes: list[str | None] = []  # the address each request came from

    async def handle(self, request: web.Request) -> web.Response:
        self.requests.append((dict(request.headers), orjson.loads(await request.read())))
        self.remotes.append(request.remote)
        return web.Response(status=self.status, body=orjson.dumps(self.body), content_type="application/x-amz-json-1.0")


@pytest.fixture(scope="module")
async def canned() -> AsyncIterator[tuple[CannedDynamoDB, str]]:
    fake = CannedDynamoDB()
    app = web.Application()
    app.router.add_post("/", fake.handle)
    server = TestServer(app, host="127.0.0.1")
    await server.start_server()
    try:
        yield fake, str(server.make_url("/"))
    finally:
        await server.close()


@pytest.fixture
async def http_store(canned: tuple[CannedDynamoDB, str]) -> AsyncIterator[tuple[CannedDynamoDB, LeanStore, RecordingSleep]]:
    fake, url = canned
    fake.status, fake.body, fake.requests[:] = 200, {}, []
    sleep = RecordingSleep()
    store = LeanStore(url, "us-east-1", CredentialSource.static("AKID", "secret", "tok"), max_attempts=2, sleep=sleep)
    try:
        yield fake, store, sleep
    finally:
        await store.close()


NS = "com.amazonaws.dynamodb.v20120810#"


@pytest.mark.parametrize(
    ("status", "error_type", "message", "expected"),
    [
        (400, "ProvisionedThroughputExceededException", "slow down", errors.StoreThrottled),
        (400, "ThrottlingException", "slow down", errors.StoreThrottled),
        (400, "RequestLimitExceeded", "account limit", errors.StoreThrottled),
        (500, "InternalServerError", "oops", errors.StoreUnavailable),
        (503, "ServiceUnavailable", "", errors.StoreUnavailable),
        (502, "", "bad gateway", errors.StoreUnavailable),
        (400, "ValidationException", "One of the required keys was not given a value", errors.StoreValidation),
        (400, "ValidationException", "Item size has exceeded the maximum allowed size", errors.ItemTooLarge),
        (400, "ValidationException", "Item size to update has exceeded the maximum allowed size", errors.ItemTooLarge),
        (400, "ResourceNotFoundException", "Requested resource not found", errors.TableNotFound),
        (400, "SerializationException", "NUMBER_VALUE cannot be converted to String", errors.StoreValidation),
        (400, "ExpiredTokenException", "The security token included in the request is expired", errors.StoreUnavailable),
        (400, "AccessDeniedException", "not authorized", errors.StoreError),
        (400, "UnrecognizedClientException", "bad token", errors.StoreError),
    ],
)
async def test_error_types_map_to_the_error_tree(
    http_store: tuple[CannedDynamoDB, LeanStore, RecordingSleep],
    status: int,
    error_type: str,
    message: str,
    expected: type[errors.GatewayError],
) -> None:
    fake, store, _ = http_store
    fake.status, fake.body = status, {"__type": NS + error_type, "message": message}

    with pytest.raises(errors.GatewayError) as raised:
        await store.get_item("features", key("u1"))

    assert type(raised.value) is expected
    assert "GetItem" in raised.value.message and "'features'" in raised.value.message
    # DynamoDB's own words end without a full stop; what the gateway answers is a sentence a person can act on.
    assert raised.value.message.endswith(".")
    assert len(fake.requests) == (2 if expected(message).retryable else 1)


async def test_condition_failed_carries_the_item_from_the_error_body(
    http_store: tuple[CannedDynamoDB, LeanStore, RecordingSleep],
) -> None:
    fake, store, _ = http_store
    stored = item("u1", v="old")
    fake.status, fake.body = 400, {"__type": NS + "ConditionalCheckFailedException", "message": "failed", "Item": stored}
    with pytest.raises(errors.ConditionFailed) as failed:
        await store.delete_item("features", key("u1"), condition=Condition("attribute_not_exists(pk)"))
    assert failed.value.old_item == stored

    fake.body = {"__type": NS + "ConditionalCheckFailedException", "message": "failed"}
    with pytest.raises(errors.ConditionFailed) as failed:
        await store.put_item("features", item("u1"), condition=Condition("attribute_exists(pk)"))
    assert failed.value.old_item is None


async def test_http_transport_sends_signed_dynamodb_json(
    http_store: tuple[CannedDynamoDB, LeanStore, RecordingSleep],
) -> None:
    fake, store, _ = http_store
    fake.body = {"Item": item("u1", b="AAE=")}
    assert await store.get_item("features", key("u1"), consistent=True, projection=["b", "pk"]) == item("u1", b="AAE=")
    ((headers, body),) = fake.requests
    assert body == {
        "TableName": "features",
        "Key": key("u1"),
        "ConsistentRead": True,
        "ProjectionExpression": "#p0,#p1",
        "ExpressionAttributeNames": {"#p0": "b", "#p1": "pk"},
    }
    assert headers["X-Amz-Target"] == "DynamoDB_20120810.GetItem"
    assert headers["Content-Type"] == "application/x-amz-json-1.0"
    assert headers["X-Amz-Security-Token"] == "tok"
    assert headers["Authorization"].startswith("AWS4-HMAC-SHA256 Credential=AKID/")
    assert "SignedHeaders=content-type;host;x-amz-date;x-amz-security-token;x-amz-target" in headers["Authorization"]


async def test_connection_refused_is_store_unavailable_after_retries() -> None:
    sleep = RecordingSleep()
    store = LeanStore(
        f"http://127.0.0.1:{free_port()}", "us-east-1", CredentialSource.static("AKID", "secret"),
        max_attempts=3, sleep=sleep,
    )  # fmt: skip
    try:
        with pytest.raises(errors.StoreUnavailable, match=r"GetItem on table 'features' could not reach .*Gave up after 3"):
            await store.get_item("features", key("u1"))
    finally:
        await store.close()
    assert len(sleep.delays) == 2


@pytest.mark.parametrize("wire", ["http1", "aiohttp"])
async def test_a_store_reaches_an_endpoint_given_without_its_slash_from_the_source_address_it_is_bound_to(
    canned: tuple[CannedDynamoDB, str], wire: str
) -> None:
    # The local cluster binds each region's store to that region's loopback address, so that a partition (nftables,
    # by source address) cuts its DynamoDB traffic too.
    fake, url = canned
    fake.status, fake.body, fake.requests[:], fake.remotes[:] = 200, {"Item": {"pk": {"S": "u1"}}}, [], []
    store = LeanStore(url.rstrip("/"), "us-east-1", CredentialSource.static("AKID", "secret", "tok"), wire=wire,
                      source_address="127.0.0.2")
    try:
        assert await store.get_item("features", key("u1")) == {"pk": {"S": "u1"}}
    finally:
        await store.close()
    assert fake.remotes == ["127.0.0.2"]
