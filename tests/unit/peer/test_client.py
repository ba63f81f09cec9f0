"""PeerClient against loopback servers: instance failover, signed requests, and how peer answers map (gateway/peer/client.py)."""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncIterator
from dataclasses import replace

import orjson
import pytest
from aiohttp import web

from gateway.config import from_dict
from gateway.errors import NotPrimary, PeerError, PrimaryUnreachable
from gateway.local.dynamodb_local import free_port
from gateway.obs.metrics import Metrics
from gateway.peer.auth import PeerSigner, PeerVerifier
from gateway.peer.client import PeerClient
from tests.fakes import FakeClock

SECRET = b"peer-secret-for-unit-tests-0123"


def config(peer_port: int):
    return from_dict(
        {
            "gateway": {"region": "eu-west-1"},
            "peer": {"timeout": 0.5},
            "regions": {
                "eu-west-1": {"downstream": "127.0.0.1:1", "peer": "127.0.0.1:2"},
                "us-east-1": {"downstream": "127.0.0.1:3", "peer": f"127.0.0.1:{peer_port}"},
            },
            "views": {"items": {"table": "t_items"}},
        }
    )


class Peer:
    """A loopback peer that verifies signatures and answers what the test scripts."""

    def __init__(self, clock: FakeClock) -> None:
        self.verifier = PeerVerifier(SECRET, clock, 30.0, region="us-east-1")  # the region these tests call
        self.status, self.body = 200, {"results": []}
        self.seen: list[dict] = []
        self.runner: web.ServerRunner | None = None

    async def handle(self, request: web.BaseRequest) -> web.Response:
        raw = await request.read()
        self.verifier.verify(request.method, request.raw_path, request.headers, raw)
        self.seen.append(orjson.loads(raw))
        return web.Response(body=orjson.dumps(self.body), status=self.status, content_type="application/json")


@pytest.fixture
async def peer() -> AsyncIterator[tuple[Peer, int]]:
    clock = FakeClock()
    server = Peer(clock)
    runner = server.runner = web.ServerRunner(web.Server(server.handle))
    await runner.setup()
    site = web.TCPSite(runner, "127.0.0.1", 0)
    await site.start()
    yield server, runner.addresses[0][1]
    await runner.cleanup()


def make_client(port: int, members=lambda region: []) -> PeerClient:
    clock = FakeClock()
    return PeerClient(config(port), PeerSigner(SECRET, clock), clock, Metrics(), members)


async def test_a_signed_write_reaches_the_region_and_its_answer_comes_back(peer):
    server, port = peer
    server.body = {"results": [{"applied": True}]}
    client = make_client(port)
    try:
        assert await client.write("us-east-1", {"records": [1]}) == {"results": [{"applied": True}]}
        assert server.seen == [{"records": [1]}]
    finally:
        await client.close()


async def test_an_unreachable_instance_is_skipped_for_the_next_one_of_the_region(peer):
    server, port = peer
    dead = free_port()
    client = make_client(dead, members=lambda region: [f"127.0.0.1:{port}"] if region == "us-east-1" else [])
    try:
        assert client.addresses("us-east-1") == [f"127.0.0.1:{dead}", f"127.0.0.1:{port}"]
        await client.write("us-east-1", {"n": 1})
        assert server.seen == [{"n": 1}]
    finally:
        await client.close()


async def test_no_answering_instance_is_primary_unreachable_naming_each():
    dead = free_port()
    client = make_client(dead)
    try:
        with pytest.raises(PrimaryUnreachable, match=f"127.0.0.1:{dead}.*Nothing was sent; retrying is safe"):
            await client.write("us-east-1", {})
        with pytest.raises(PrimaryUnreachable, match="No gateway address is known for region sa-east-1"):
            await client.write("sa-east-1", {})
    finally:
        await client.close()


def test_members_advertising_a_wildcard_address_are_not_peers():
    client = make_client(9, members=lambda region: ["0.0.0.0:8701", "10.0.0.7:8701", "127.0.0.1:9"])
    assert client.addresses("us-east-1") == ["127.0.0.1:9", "10.0.0.7:8701"]


@pytest.mark.parametrize(
    "status, body, error, match",
    [
        (409, {"error": {"code": "not_primary", "message": "moved", "retryable": True}, "rule": {"scope": "default"}}, NotPrimary, "moved"),
        (401, {"error": {"code": "unauthorized", "message": "bad sig", "retryable": False}}, PrimaryUnreachable, "same peer secret"),
        (503, {"error": {"code": "draining", "message": "bye", "retryable": True}}, PeerError, "bye"),
        (502, {"not": "an error body"}, PeerError, "without an error body"),
    ],
)
async def test_peer_error_answers_map_to_the_error_tree(peer, status, body, error, match):
    server, port = peer
    server.status, server.body = status, body
    client = make_client(port)
    try:
        with pytest.raises(error, match=match) as caught:
            await client.write("us-east-1", {})
    finally:
        await client.close()
    if error is NotPrimary:
        assert caught.value.rule == {"scope": "default"}
    if status == 503:
        assert (caught.value.status, caught.value.code, caught.value.retry_after) == (503, "draining", 1.0)


# --- outlier detection, and what travels with a forward ---


def outlier_config(peer_port: int):
    from dataclasses import replace

    base = config(peer_port)
    return replace(
        base, peer=replace(base.peer, timeout=0.5, outlier_consecutive_failures=2, outlier_base_ejection=0.2)
    )


class Headers:
    """A loopback peer that answers 200 and remembers each request's headers."""

    def __init__(self) -> None:
        self.seen: list = []

    async def handle(self, request: web.BaseRequest) -> web.Response:
        await request.read()
        self.seen.append(request.headers.copy())  # case-insensitive
        return web.Response(body=b'{"results": []}', content_type="application/json")


async def serve_on(port: int, handler) -> web.ServerRunner:
    runner = web.ServerRunner(web.Server(handler))
    await runner.setup()
    await web.TCPSite(runner, "127.0.0.1", port).start()
    return runner


async def test_a_peer_is_ejected_while_it_is_down_and_healthy_again_after_it_is_back():
    from gateway.clock import SystemClock
    from gateway.peer.outlier_detection import State

    port = free_port()
    peer, metrics = Headers(), Metrics()
    clock = SystemClock()
    client = PeerClient(outlier_config(port), PeerSigner(SECRET, clock), clock, metrics)
    address = f"127.0.0.1:{port}"
    runner = await serve_on(port, peer.handle)
    try:
        await client.write("us-east-1", {})
        await runner.cleanup()  # the peer goes down
        for _ in range(2):
            with pytest.raises(PrimaryUnreachable, match="Connect|connect|refused"):
                await client.write("us-east-1", {})
        assert client.outliers.state(address) is State.EJECTED
        # Open: refused at once, without a connection attempt.
        with pytest.raises(PrimaryUnreachable, match="ejected after consecutive failures"):
            await client.write("us-east-1", {})
        runner = await serve_on(port, peer.handle)  # back
        give_up = asyncio.get_running_loop().time() + 5.0
        while client.outliers.state(address) is not State.HEALTHY:
            assert asyncio.get_running_loop().time() < give_up, "the address never became healthy again"
            with contextlib.suppress(PrimaryUnreachable):
                await client.write("us-east-1", {})
            await asyncio.sleep(0.05)
        assert await client.write("us-east-1", {}) == {"results": []}
        assert len(peer.seen) >= 3
        ejections = metrics.registry.get_sample_value("gateway_outlier_ejections_total", {"upstream": "peer:us-east-1"})
        ejected_now = metrics.registry.get_sample_value("gateway_outlier_ejected", {"upstream": "peer:us-east-1"})
        assert ejections == 1 and ejected_now == 0
    finally:
        await runner.cleanup()
        await client.close()


async def test_a_forward_carries_the_request_id_the_time_left_and_the_trace_context():
    from opentelemetry.sdk.trace import TracerProvider
    from opentelemetry.sdk.trace.export import SimpleSpanProcessor
    from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter

    from gateway import deadlines as request_deadlines
    from gateway.clock import SystemClock
    from gateway.deadlines import Deadlines
    from gateway.obs.logs import request_id

    port = free_port()
    peer = Headers()
    exporter = InMemorySpanExporter()
    provider = TracerProvider()
    provider.add_span_processor(SimpleSpanProcessor(exporter))
    clock = SystemClock()
    client = PeerClient(config(port), PeerSigner(SECRET, clock), clock, Metrics(), tracer=provider.get_tracer("t"))
    runner = await serve_on(port, peer.handle)

    async def request() -> None:
        request_id.set("rid-123")
        request_deadlines.current.set(Deadlines(clock).track(asyncio.current_task(), 0.3))
        await client.write("us-east-1", {})

    try:
        await asyncio.create_task(request())
        await client.write("us-east-1", {})  # outside a request: nothing to carry but the trace
    finally:
        await runner.cleanup()
        await client.close()
    inside, outside = peer.seen
    assert inside["X-Request-Id"] == "rid-123"
    assert 0.0 < float(inside["X-Request-Timeout"]) <= 0.25  # what was left, less the margin
    assert "X-Request-Id" not in outside and "X-Request-Timeout" not in outside
    spans = exporter.get_finished_spans()
    assert [s.name for s in spans] == ["forward write", "forward write"]
    trace_id, span_id = spans[0].context.trace_id, spans[0].context.span_id
    assert inside["traceparent"].startswith(f"00-{trace_id:032x}-{span_id:016x}-")


async def test_an_instance_that_left_its_region_has_its_connections_closed(peer):
    server, port = peer
    members = [f"127.0.0.1:{port}"]
    configured = free_port()
    client = make_client(configured, members=lambda region: list(members) if region == "us-east-1" else [])
    listener = server.runner.server
    try:
        await client.write("us-east-1", {"n": 1})  # the configured address is down: the member answers
        assert server.seen == [{"n": 1}] and len(listener.connections) == 1  # kept alive for the next forward
        members.clear()  # its member item expired
        assert client.addresses("us-east-1") == [f"127.0.0.1:{configured}"]
        async with asyncio.timeout(2):
            while listener.connections:  # the close reaches the server's side
                await asyncio.sleep(0.01)
    finally:
        await client.close()


async def test_a_forward_sent_and_never_answered_may_have_landed_and_says_so():
    accepted: list[asyncio.StreamWriter] = []
    silent = await asyncio.start_server(lambda reader, writer: accepted.append(writer), "127.0.0.1", 0)  # never answers
    port = silent.sockets[0].getsockname()[1]
    cfg = config(port)
    client = PeerClient(replace(cfg, peer=replace(cfg.peer, timeout=0.2)), PeerSigner(SECRET, FakeClock()), FakeClock(), Metrics())
    try:
        with pytest.raises(PrimaryUnreachable, match="may or may not have been applied.*same Idempotency-Key"):
            await client.write("us-east-1", {"n": 1})
    finally:
        await client.close()
        for writer in accepted:
            writer.close()
        silent.close()
        await silent.wait_closed()
