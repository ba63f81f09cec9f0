"""Handler-level behaviour with a scripted store: upstream failures map to the error tree, never a crash."""

from __future__ import annotations

import orjson
import pytest
from aiohttp.test_utils import TestClient, TestServer

from gateway.api import HEALTH, create_app
from gateway.clock import SystemClock
from gateway.config import from_dict
from gateway.dispatcher import Dispatcher
from gateway.errors import StoreThrottled, StoreTimeout, StoreUnavailable, StoreValidation, TableNotFound
from gateway.health import Health
from gateway.metrics import Metrics
from gateway.read_coalescer import ReadCoalescer

CONFIG = from_dict({"gateway": {"region": "eu-west-1"}, "views": {"items": {"table": "features_items"}}})


class ScriptedStore:
    """Answers every call with ``outcome``: an exception to raise, or a value to return."""

    def __init__(self) -> None:
        self.outcome: object = None
        self.calls = 0

    async def _answer(self):
        self.calls += 1
        if isinstance(self.outcome, BaseException):
            raise self.outcome
        return self.outcome

    async def get_item(self, table, key, *, consistent=False, projection=None):
        return await self._answer()

    async def batch_get_item(self, table, keys, *, consistent=False, projection=None):
        return await self._answer()

    async def put_item(self, table, item, *, condition=None):
        return await self._answer()

    async def delete_item(self, table, key, *, condition=None, return_old=False):
        return await self._answer()

    async def close(self):
        pass


@pytest.fixture
async def client():
    store = ScriptedStore()
    clock = SystemClock()
    health = Health(CONFIG, store, clock, interval=3600)
    app = create_app(CONFIG, Dispatcher(CONFIG, store, ReadCoalescer(store), clock), health, Metrics(), clock)
    async with TestClient(TestServer(app, host="127.0.0.1")) as client:
        client.store = store
        yield client


@pytest.mark.parametrize(
    "error, status, code, retryable, retry_after",
    [
        (StoreThrottled("DynamoDB throttled GetItem on features_items."), 429, "throttled", True, "1"),
        (StoreUnavailable("DynamoDB is unreachable."), 503, "upstream_unavailable", True, "1"),
        (StoreTimeout("DynamoDB did not answer."), 504, "upstream_timeout", True, None),
        (TableNotFound("Table features_items does not exist."), 503, "table_not_found", False, "5"),
        (StoreValidation("DynamoDB refused the request."), 400, "invalid_request", False, None),
        (RuntimeError("a bug"), 500, "internal", False, None),
    ],
)
async def test_upstream_failures_become_json_errors(client, error, status, code, retryable, retry_after):
    client.store.outcome = error
    for method, path, body in (
        ("GET", "/v1/features/items/k1", None),
        ("PUT", "/v1/features/items/k1", {"features": {"a": 1}}),
        ("POST", "/v1/read", {"view": "items", "keys": ["k1"]}),
    ):
        resp = await client.request(method, path, data=orjson.dumps(body) if body else None)
        payload = orjson.loads(await resp.read())
        assert resp.status == status
        assert payload["error"]["code"] == code and payload["error"]["retryable"] is retryable
        assert "Traceback" not in payload["error"]["message"] and "a bug" not in payload["error"]["message"]
        assert resp.headers.get("Retry-After") == retry_after


async def test_batch_write_reports_upstream_errors_per_record(client):
    client.store.outcome = StoreThrottled("DynamoDB throttled PutItem on features_items.")
    resp = await client.post("/v1/write", data=orjson.dumps({"view": "items", "records": [{"key": "a", "features": {}}]}))
    body = orjson.loads(await resp.read())
    assert resp.status == 200
    assert body["results"] == [
        {"key": "a", "error": {"code": "throttled", "message": "DynamoDB throttled PutItem on features_items.", "retryable": True}}
    ]


async def test_validation_happens_before_any_upstream_call(client):
    before = client.store.calls  # the readiness probe at start-up
    resp = await client.put("/v1/features/items/k1", data=b"{not json")
    assert resp.status == 400
    resp = await client.put("/v1/features/nope/k1", data=orjson.dumps({"features": {}}))
    assert resp.status == 400
    assert client.store.calls == before


async def test_readyz_follows_the_store_probe_and_draining(client):
    health = client.server.app[HEALTH]
    client.store.outcome = None
    await health.probe()
    assert (await client.get("/readyz")).status == 200
    client.store.outcome = StoreUnavailable("DynamoDB is unreachable.")
    await health.probe()
    resp = await client.get("/readyz")
    assert resp.status == 503 and "DynamoDB is unreachable." in (await resp.json())["reasons"][0]
    client.store.outcome = None
    await health.probe()
    health.draining = True
    assert (await client.get("/readyz")).status == 503
