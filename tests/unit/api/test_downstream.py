"""Handler-level behaviour with a scripted store: upstream failures map to the error tree, never a crash."""

from __future__ import annotations

import asyncio
import time

import aiohttp
import orjson
import pytest
from aiohttp import web

from gateway.api.auth import TokenAuthority
from gateway.api.downstream import DownstreamApi
from gateway.api.frontend import create_server
from gateway.api.health import Health
from gateway.api.overload import ConcurrencyLimit
from gateway.background import background
from gateway.clock import SystemClock
from gateway.config import BufferConfig, Config, from_dict
from gateway.deadlines import Deadlines
from gateway.dispatcher import Dispatcher
from gateway.errors import StoreThrottled, StoreTimeout, StoreUnavailable, StoreValidation, TableNotFound
from gateway.members import Membership
from gateway.obs.metrics import Metrics
from gateway.routing.rules import DEFAULT_SCOPE, SINGLE_PRIMARY, Rule
from gateway.store.read_coalescer import ReadCoalescer
from gateway.switch.fence import AckLog
from gateway.switch.write_buffer import WriteBuffer
from tests.fakes import FakePeers, StaticRouting

CONFIG = from_dict(
    {"gateway": {"region": "eu-west-1", "request_timeout": 0.3}, "views": {"items": {"table": "features_items"}}}
)
#: A store outcome that never completes, like a DynamoDB that accepted the connection and went silent.
HANG = object()


class ScriptedStore:
    """Answers every call with ``outcome``: an exception to raise, or a value to return."""

    def __init__(self) -> None:
        self.outcome: object = None
        self.calls = 0

    async def _answer(self):
        self.calls += 1
        if self.outcome is HANG:
            await asyncio.Event().wait()
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


class Client:
    """A real loopback server running ``DownstreamApi`` over the scripted store, and a client session."""

    def __init__(self, session: aiohttp.ClientSession, base: str, store: ScriptedStore, health: Health) -> None:
        self.session, self.base, self.store, self.health = session, base, store, health

    async def request(self, method: str, path: str, **kw):
        return await self.session.request(method, self.base + path, **kw)

    async def get(self, path: str, **kw):
        return await self.request("GET", path, **kw)

    async def put(self, path: str, **kw):
        return await self.request("PUT", path, **kw)

    async def post(self, path: str, **kw):
        return await self.request("POST", path, **kw)


def downstream_api(
    store: ScriptedStore, limit: int | None = None, config: Config = CONFIG, auth: TokenAuthority | None = None
) -> tuple[DownstreamApi, Health, Deadlines, Metrics]:
    """A ``DownstreamApi`` over ``store``, with the parts a test may need to reach."""
    clock = SystemClock()
    routing = StaticRouting(Rule(DEFAULT_SCOPE, SINGLE_PRIMARY, config.region, epoch=0))
    health = Health(config, store, clock, routing, interval=3600)  # as gateway/server.py builds it
    deadlines = Deadlines(clock)
    metrics = Metrics()
    membership = Membership(config, store, clock, metrics)
    dispatcher = Dispatcher(
        config, store, ReadCoalescer(store), clock, routing, FakePeers(), metrics, WriteBuffer(BufferConfig(), clock),
        AckLog(clock, config.switch.fence_window, config.switch.fence_max_keys),
    )
    bound = ConcurrencyLimit(limit) if limit is not None else None
    api = DownstreamApi(config, dispatcher, health, metrics, clock, deadlines, membership, routing, auth=auth, limit=bound)
    return api, health, deadlines, metrics


@pytest.fixture
async def client():
    store = ScriptedStore()
    api, health, deadlines, _ = downstream_api(store)
    runner = web.ServerRunner(create_server(api, CONFIG))
    await runner.setup()
    site = web.TCPSite(runner, "127.0.0.1", 0)
    await site.start()
    port = runner.addresses[0][1]
    async with background(deadlines.run(), "deadline-sweeper"), aiohttp.ClientSession() as session:
        yield Client(session, f"http://127.0.0.1:{port}", store, health)
    await runner.cleanup()


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
    before = client.store.calls
    resp = await client.put("/v1/features/items/k1", data=b"{not json")
    assert resp.status == 400
    resp = await client.put("/v1/features/nope/k1", data=orjson.dumps({"features": {}}))
    assert resp.status == 400
    assert client.store.calls == before


async def test_readyz_follows_the_store_probe_and_draining(client):
    health = client.health
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


async def test_readyz_is_false_until_the_routing_rules_are_loaded(client):
    # The README: "/readyz stays false until rules are loaded" (a gateway must not take writes it cannot route).
    routing = client.health._routing
    loaded, routing.table, routing.problem = routing.table, None, "rules not loaded yet"
    await client.health.probe()  # the store answers: only the rules are missing
    resp = await client.get("/readyz")
    assert resp.status == 503 and (await resp.json())["reasons"] == ["routing: rules not loaded yet"]
    routing.table = loaded
    assert (await client.get("/readyz")).status == 200


@pytest.mark.parametrize(
    "method, path, status, code",
    [
        ("GET", "/v1/features/items", 404, "route_not_found"),
        ("GET", "/v1/features/items/", 404, "route_not_found"),
        ("GET", "/v1/features//k1", 404, "route_not_found"),
        ("GET", "/nope", 404, "route_not_found"),
        ("PATCH", "/v1/features/items/k1", 405, "method_not_allowed"),
        ("GET", "/v1/read", 405, "method_not_allowed"),
        ("DELETE", "/healthz", 405, "method_not_allowed"),
    ],
)
async def test_routing_errors(client, method, path, status, code):
    resp = await client.request(method, path)
    body = orjson.loads(await resp.read())
    assert resp.status == status and body["error"]["code"] == code


@pytest.mark.parametrize(
    "method, path, allow",
    [("PATCH", "/v1/features/items/k1", "GET, PUT, DELETE"), ("GET", "/v1/read", "POST"), ("DELETE", "/healthz", "GET")],
)
async def test_a_405_names_the_methods_the_path_takes_in_allow(client, method, path, allow):
    resp = await client.request(method, path)
    assert resp.status == 405 and resp.headers["Allow"] == allow  # RFC 9110 §15.5.6


@pytest.mark.parametrize("event_time", ["²", "١٢", "1_000", "+5", " 5", "5 "])
async def test_a_delete_event_time_that_is_not_ascii_digits_nor_rfc_3339_is_400_never_500(client, event_time):
    resp = await client.request("DELETE", "/v1/features/items/k1", params={"event_time": event_time})
    body = orjson.loads(await resp.read())
    assert resp.status == 400 and body["error"]["code"] == "invalid_request" and "event_time" in body["error"]["message"]


@pytest.mark.parametrize("token", ["+1.5.us-east-1", "1_0.5.us-east-1", "١.5.us-east-1", "1.5.US", "1.5"])
async def test_a_min_version_that_is_not_a_version_token_is_400(client, token):
    resp = await client.get("/v1/features/items/k1", params={"min_version": token})
    assert resp.status == 400 and "min_version" in (await resp.json())["error"]["message"]


async def test_keys_may_hold_slashes(client):
    client.store.outcome = {"pk": {"S": "a/b/c"}, "v": {"N": "1"}}
    resp = await client.get("/v1/features/items/a%2Fb%2Fc")
    body = orjson.loads(await resp.read())
    assert resp.status == 200 and body["key"] == "a/b/c"


async def test_a_request_past_its_deadline_gets_504_and_the_gateway_keeps_serving(client):
    client.store.outcome = HANG
    started = time.monotonic()
    resp = await client.get("/v1/features/items/k1")
    body = orjson.loads(await resp.read())
    elapsed = time.monotonic() - started
    assert resp.status == 504 and body["error"]["code"] == "upstream_timeout"
    # The deadline is 0.3 s; the sweeper checks every 50 ms.
    assert 0.3 <= elapsed < 0.6
    client.store.outcome = {"pk": {"S": "k2"}}
    resp = await client.get("/v1/features/items/k2")
    assert resp.status == 200


async def test_past_the_bound_every_route_answers_json_503_overloaded():
    """The refusal path is the one that runs under load: it must answer like every other error."""
    store = ScriptedStore()
    api, _, deadlines, _ = downstream_api(store, limit=1)
    runner = web.ServerRunner(create_server(api, CONFIG))
    await runner.setup()
    await web.TCPSite(runner, "127.0.0.1", 0).start()
    base = f"http://127.0.0.1:{runner.addresses[0][1]}"
    store.outcome = HANG
    async with background(deadlines.run(), "deadline-sweeper"), aiohttp.ClientSession() as session:
        busy = asyncio.create_task(session.get(base + "/v1/features/items/busy"))
        while store.calls == 0:
            await asyncio.sleep(0.001)
        for method, path, body in (
            ("GET", "/v1/features/items/k1", None),
            ("PUT", "/v1/features/items/k1", {"features": {"a": 1}}),
            ("DELETE", "/v1/features/items/k1", None),
            ("POST", "/v1/read", {"view": "items", "keys": ["k1"]}),
            ("POST", "/v1/write", {"view": "items", "records": [{"key": "k1", "features": {}}]}),
            ("GET", "/v1/routing", None),
            ("GET", "/v1/nowhere", None),
        ):
            resp = await session.request(method, base + path, data=orjson.dumps(body) if body else None)
            assert (resp.status, resp.content_type, resp.headers.get("Retry-After")) == (503, "application/json", "1"), path
            assert (await resp.json())["error"]["code"] == "overloaded", path
        (await busy).close()
    await runner.cleanup()


@pytest.mark.parametrize("names", ["_req", "_ts", "_epoch", "_region", "_event_ts", "pk", "a,_req"])
async def test_system_attributes_are_never_features(client, names):
    client.store.outcome = {"pk": {"S": "k1"}, "a": {"N": "1"}, "_req": {"S": "the-last-writers-key"},
                            "_ts": {"N": "1"}, "_epoch": {"N": "0"}, "_region": {"S": "eu-west-1"}}
    resp = await client.get(f"/v1/features/items/k1?features={names}")
    body = await resp.json()
    assert resp.status == 400 and body["error"]["code"] == "invalid_request", body
    assert "the-last-writers-key" not in str(body)
    resp = await client.post("/v1/read", data=orjson.dumps({"view": "items", "keys": ["k1"], "features": names.split(",")}))
    assert resp.status == 400 and "reserved" in (await resp.json())["error"]["message"]


@pytest.mark.parametrize(
    "number", [b"18446744073709551616", b"123456789012345678901234567890123456789",
               b"1.00000000000000000000000000000000000001", b"2e-400"],
)
async def test_a_number_that_would_not_read_back_as_sent_is_refused_naming_the_feature(client, number):
    before = client.store.calls
    resp = await client.put("/v1/features/items/k1", data=b'{"features": {"ok": 1, "exact": ' + number + b"}}")
    body = await resp.json()
    assert resp.status == 400 and body["error"]["code"] == "invalid_request", body
    assert "Feature 'exact'" in body["error"]["message"] and client.store.calls == before
