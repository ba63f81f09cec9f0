"""The peer listener: authentication before routing, and validation of forwarded bodies (gateway/api/peer.py)."""

from __future__ import annotations

from collections.abc import AsyncIterator

import aiohttp
import orjson
import pytest
from aiohttp import web

from gateway.api.frontend import create_server
from gateway.api.peer import PeerApi
from gateway.background import background
from gateway.clock import SystemClock
from gateway.config import BufferConfig, from_dict
from gateway.deadlines import Deadlines
from gateway.dispatcher import Dispatcher
from gateway.obs.metrics import Metrics
from gateway.peer.auth import PeerSigner, PeerVerifier
from gateway.peer.routes import WRITE_PATH
from gateway.routing.rules import DEFAULT_SCOPE, SINGLE_PRIMARY, Rule
from gateway.store.read_coalescer import ReadCoalescer
from gateway.switch.fence import AckLog
from gateway.switch.participant import SwitchParticipant
from gateway.switch.write_buffer import WriteBuffer
from tests.fakes import FakeClock, FakePeers, StaticRouting
from tests.unit.test_dispatcher import ConditionalStore

SECRET = b"peer-secret-for-unit-tests-0123"
CONFIG = from_dict({"gateway": {"region": "us-east-1"}, "views": {"items": {"table": "features_items"}}})


@pytest.fixture
async def peer_api() -> AsyncIterator[tuple[aiohttp.ClientSession, str, ConditionalStore]]:
    clock = SystemClock()
    store = ConditionalStore()
    routing = StaticRouting(Rule(DEFAULT_SCOPE, SINGLE_PRIMARY, "us-east-1", epoch=2))
    metrics = Metrics()
    deadlines = Deadlines(clock)
    buffer = WriteBuffer(BufferConfig(), clock)
    acks = AckLog(clock, CONFIG.switch.fence_window, CONFIG.switch.fence_max_keys)
    dispatcher = Dispatcher(CONFIG, store, ReadCoalescer(store), clock, routing, FakePeers(), metrics, buffer, acks)
    participant = SwitchParticipant(CONFIG.region, routing, store, acks, buffer)
    verifier = PeerVerifier(SECRET, clock, 30.0, region="us-east-1")
    api = PeerApi(CONFIG, dispatcher, participant, verifier, metrics, deadlines, routing, "us-east-1/test/1")
    runner = web.ServerRunner(create_server(api, CONFIG))
    await runner.setup()
    await web.TCPSite(runner, "127.0.0.1", 0).start()
    async with background(deadlines.run(), "deadlines"), aiohttp.ClientSession() as session:
        yield session, f"http://127.0.0.1:{runner.addresses[0][1]}", store
    await runner.cleanup()


async def call(session, base, path, body, *, method="POST", signed=True):
    raw = orjson.dumps(body)
    headers = PeerSigner(SECRET, SystemClock()).headers(method, path, raw, to="us-east-1") if signed else {}
    async with session.request(method, base + path, data=raw, headers=headers) as resp:
        return resp.status, await resp.json()


def forwarded(epoch=2, **over):
    body = {
        "view": "items", "scope": "default", "epoch": epoch, "origin": "eu-west-1",
        "records": [{"key": "k", "attributes": {"a": {"N": "1"}}, "event_ms": 5, "idempotency_key": "i1"}],
    }
    body.update(over)
    return body


async def test_unsigned_requests_get_401_whatever_the_path(peer_api):
    session, base, store = peer_api
    for path in ("/internal/v1/write", "/internal/v1/read", "/nope", "/v1/features/items/k"):
        status, body = await call(session, base, path, forwarded(), signed=False)
        assert status == 401 and body["error"]["code"] == "unauthorized", path
    assert store.items == {}


async def test_a_signed_forward_at_the_current_epoch_is_applied(peer_api):
    session, base, store = peer_api
    status, body = await call(session, base, "/internal/v1/write", forwarded())
    assert status == 200 and body["results"][0]["applied"] is True
    assert store.items["k"]["_epoch"] == {"N": "2"} and store.items["k"]["_region"] == {"S": "us-east-1"}


async def test_an_older_epoch_gets_409_with_the_rule(peer_api):
    session, base, store = peer_api
    status, body = await call(session, base, "/internal/v1/write", forwarded(epoch=1))
    assert status == 409 and body["error"]["code"] == "not_primary"
    assert body["rule"]["epoch"] == 2 and body["rule"]["primary"] == "us-east-1"
    assert store.items == {}


@pytest.mark.parametrize(
    "change, message",
    [
        ({"epoch": "2"}, "'epoch'"),
        ({"scope": "users"}, "'scope'"),
        ({"records": []}, "'records'"),
        ({"records": [{"key": "k", "attributes": {"a": 1}, "event_ms": 5, "idempotency_key": "i"}]}, "attributes"),
        ({"records": [{"key": "k", "attributes": None, "event_ms": 5}]}, "idempotency_key"),
        ({"view": "nope"}, "nope"),
    ],
)
async def test_malformed_forwards_are_a_clear_400(peer_api, change, message):
    session, base, store = peer_api
    status, body = await call(session, base, "/internal/v1/write", forwarded(**change))
    assert status == 400 and message in body["error"]["message"], body
    assert store.items == {}


async def test_signed_requests_to_unknown_paths_and_methods_are_404_and_405(peer_api):
    session, base, _ = peer_api
    assert (await call(session, base, "/internal/v1/nope", {}))[0] == 404
    assert (await call(session, base, "/internal/v1/write", {}, method="PUT"))[0] == 405


@pytest.mark.parametrize(
    "attributes, message",
    [
        ({"a": {"N": "abc"}}, "not a DynamoDB number"),
        ({"a": {"N": "1e400"}}, "outside DynamoDB's number range"),
        ({"a": {"N": "NaN"}}, "not a DynamoDB number"),
        ({"a": {"X": 1}}, "not a value the gateway writes"),
        ({"a": {"SS": []}}, "not a value the gateway writes"),
        ({"a": {"S": 5}}, "not a value the gateway writes"),
        ({"a": {"M": {"": {"S": "x"}}}}, "empty map key"),
        ({"a": {"L": [{"N": "1", "S": "2"}]}}, "one type tag"),
        ({"_req": {"S": "forged"}}, "reserved"),
        ({"pk": {"S": "other-key"}}, "reserved"),
    ],
)
async def test_forwarded_attribute_values_are_validated_as_strictly_as_downstream_input(peer_api, attributes, message):
    session, base, store = peer_api
    records = [{"key": "k", "attributes": attributes, "event_ms": 5, "idempotency_key": "i"}]
    status, answer = await call(session, base, "/internal/v1/write", forwarded(records=records))
    assert status == 400 and message in answer["error"]["message"], answer
    assert store.items == {}


async def test_a_forward_that_arrives_after_its_senders_deadline_is_not_applied(peer_api):
    """As if this gateway had been paused: the forward was signed 3 s ago with 1 s to live."""
    session, base, store = peer_api
    raw = orjson.dumps(forwarded())
    signed_earlier = FakeClock(SystemClock().wall_ms() / 1000 - 3.0)
    headers = PeerSigner(SECRET, signed_earlier).headers("POST", WRITE_PATH, raw, to="us-east-1")
    async with session.post(base + WRITE_PATH, data=raw, headers={**headers, "X-Request-Timeout": "1.0"}) as resp:
        body = await resp.json()
        assert resp.status == 408 and body["error"]["code"] == "request_timeout", body
        assert "not applied" in body["error"]["message"]
    assert store.items == {}
    # The same age within a longer deadline is a request like any other.
    headers = PeerSigner(SECRET, signed_earlier).headers("POST", WRITE_PATH, raw, to="us-east-1")
    async with session.post(base + WRITE_PATH, data=raw, headers={**headers, "X-Request-Timeout": "5.0"}) as resp:
        assert resp.status == 200 and "k" in store.items
