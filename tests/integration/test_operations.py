"""Operations (metrics, traces, logs, drain, overload) on real gateways against the session's DynamoDB Local.

Two gateways, us-east-1 and eu-west-1, run in this process (``open_gateway`` +
``listening``, each with its own in-memory span exporter), on free ports. They
share the DynamoDB Local but not their tables: each region has its own feature
and control tables (no replication between them here, so a region's rules are
exactly what the test writes into its control table), and both heartbeat into
one members table, which makes each see the other's heartbeats at once: a
replication lag of (almost) zero, measured.
"""

from __future__ import annotations

import asyncio
import re
import uuid
from collections.abc import AsyncIterator
from dataclasses import dataclass, replace
from typing import Any

import aiohttp
import orjson
import pytest
from opentelemetry.sdk.trace import TracerProvider
from opentelemetry.sdk.trace.export import SimpleSpanProcessor
from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter
from opentelemetry.trace import SpanKind

from gateway.config import Config, from_dict
from gateway.local.dynamodb_local import DynamoDBLocal, free_port
from gateway.routing.rules import SINGLE_PRIMARY, Rule
from gateway.server import Gateway, listening, open_gateway
from gateway.store.botocore import BotocoreStore

SECRET = b"operations-test-peer-secret-0123456789"
REGIONS = ("us-east-1", "eu-west-1")
SHORT = {"us-east-1": "us", "eu-west-1": "eu"}


@dataclass
class Region:
    config: Config
    gateway: Gateway
    spans: InMemorySpanExporter

    @property
    def url(self) -> str:
        return f"http://{self.config.listen}"


def region_config(region: str, ports: dict[str, tuple[int, int]], endpoint: str, suffix: str) -> Config:
    short = SHORT[region]
    config = from_dict(
        {
            "gateway": {
                "region": region, "drain_seconds": 0, "request_timeout": 5.0,
                "listen": f"127.0.0.1:{ports[region][0]}", "peer_listen": f"127.0.0.1:{ports[region][1]}",
            },
            "dynamodb": {"endpoint_url": endpoint},
            "members": {"table": f"ops_members_{suffix}", "heartbeat_interval": 0.1, "observe_interval": 0.05, "expiry": 5.0},
            "routing": {"table": f"ops_routing_{short}_{suffix}", "poll_interval": 0.2},
            "regions": {
                r: {"downstream": f"127.0.0.1:{ports[r][0]}", "peer": f"127.0.0.1:{ports[r][1]}", "dynamodb_endpoint": endpoint}
                for r in REGIONS
            },
            "views": {"users": {"table": f"ops_users_{short}_{suffix}"}, "items": {"table": f"ops_items_{short}_{suffix}"}},
        }
    )
    return replace(config, peer=replace(config.peer, secret=SECRET))


async def put_rule(store: BotocoreStore, config: Config, rule: Rule) -> None:
    await store.put_item(config.routing.table, rule.to_item(ts_us=1, region=config.region))


@pytest.fixture(scope="module")
async def regions(dynamodb_local: DynamoDBLocal) -> AsyncIterator[dict[str, Region]]:
    suffix = uuid.uuid4().hex[:8]
    ports = {r: (free_port(), free_port()) for r in REGIONS}
    configs = {r: region_config(r, ports, dynamodb_local.endpoint, suffix) for r in REGIONS}
    store = await BotocoreStore.open("us-east-1", dynamodb_local.endpoint)
    try:
        await store.create_table(configs["us-east-1"].members.table)
        for config in configs.values():
            for table in (config.routing.table, *(v.table for v in config.views.values())):
                await store.create_table(table)
            # us-east-1 is the primary of users and items in both regions' rules.
            for view in ("users", "items"):
                await put_rule(store, config, Rule(f"view#{view}", SINGLE_PRIMARY, "us-east-1", epoch=1, version=1))
    finally:
        await store.close()
    async with contextlib_stack() as stack:
        opened: dict[str, Region] = {}
        for region, config in configs.items():
            spans = InMemorySpanExporter()
            provider = TracerProvider()
            provider.add_span_processor(SimpleSpanProcessor(spans))
            gateway = await stack.enter_async_context(open_gateway(config, tracer_provider=provider))
            await stack.enter_async_context(listening(gateway, config))
            opened[region] = Region(config, gateway, spans)
        yield opened


def contextlib_stack():
    import contextlib

    return contextlib.AsyncExitStack()


@pytest.fixture
async def http() -> AsyncIterator[aiohttp.ClientSession]:
    async with aiohttp.ClientSession() as session:
        yield session


async def metrics_text(http: aiohttp.ClientSession, region: Region) -> str:
    async with http.get(f"{region.url}/metrics") as resp:
        assert resp.status == 200
        return await resp.text()


def value(text: str, name: str, **labels: str) -> float | None:
    wanted = sorted(f'{k}="{v}"' for k, v in labels.items())
    for line in text.splitlines():
        match = re.match(rf"^{name}(?:\{{(.*)\}})? (\S+)$", line)
        if match and sorted(filter(None, (match.group(1) or "").split(","))) == wanted:
            return float(match.group(2))
    return None


async def put(http, region: Region, view: str, key: str, features: dict, **headers: str) -> tuple[int, dict, Any]:
    async with http.put(f"{region.url}/v1/features/{view}/{key}", data=orjson.dumps({"features": features}), headers=headers) as resp:
        return resp.status, await resp.json(), resp.headers.copy()


async def test_a_forwarded_write_is_one_trace_across_both_gateways(regions, http):
    us, eu = regions["us-east-1"], regions["eu-west-1"]
    key = f"trace-{uuid.uuid4().hex[:8]}"
    us.spans.clear()
    eu.spans.clear()
    status, answer, headers = await put(http, eu, "users", key, {"age": 3}, **{"X-Request-Id": f"rid-{key}"})
    assert status == 200 and answer["forwarded"] is True and headers["X-Request-Id"] == f"rid-{key}"

    def of_write(exporter: InMemorySpanExporter, kind: SpanKind, name: str):
        return [s for s in exporter.get_finished_spans() if s.kind is kind and s.name == name]

    (origin,) = of_write(eu.spans, SpanKind.SERVER, "PUT /v1/features/{view}/{key}")
    (forward,) = of_write(eu.spans, SpanKind.CLIENT, "forward write")
    (received,) = of_write(us.spans, SpanKind.SERVER, "POST /internal/v1/write")
    put_items = [s for s in of_write(us.spans, SpanKind.CLIENT, "DynamoDB PutItem") if s.context.trace_id == origin.context.trace_id]
    trace_id = origin.context.trace_id
    assert {forward.context.trace_id, received.context.trace_id} == {trace_id}
    assert forward.parent.span_id == origin.context.span_id
    assert received.parent.span_id == forward.context.span_id  # the traceparent crossed the peer hop
    assert len(put_items) == 1 and put_items[0].parent.span_id == received.context.span_id
    assert received.attributes["http.response.status_code"] == 200


async def test_the_metrics_follow_a_scripted_scenario(regions, http):
    us, eu = regions["us-east-1"], regions["eu-west-1"]
    before = await metrics_text(http, eu)
    route = "/v1/features/{view}/{key}"

    def moved(after: str, name: str, **labels: str) -> float:
        now = value(after, name, **labels)
        assert now is not None, f"{name}{labels} is not exported"
        return now - (value(before, name, **labels) or 0.0)
    key = f"m-{uuid.uuid4().hex[:8]}"
    assert (await put(http, eu, "items", key, {"v": 1}))[0] == 200  # forwarded: ok
    async with http.get(f"{us.url}/v1/features/items/{key}") as resp:
        assert resp.status == 200
    async with http.get(f"{eu.url}/v1/features/items/absent-{key}") as resp:
        assert resp.status == 404
    async with http.put(f"{eu.url}/v1/features/items/{key}", data=b"not json") as resp:
        assert resp.status == 400

    # A stale rule: us-east-1 has moved the scope to eu-west-1 (epoch 2), eu-west-1 still routes by epoch 1.
    prefix = f"np{uuid.uuid4().hex[:6]}-"
    scope = f"view#items#prefix#{prefix}"
    store = await BotocoreStore.open("us-east-1", us.config.dynamodb.endpoint_url)
    try:
        await put_rule(store, eu.config, Rule(scope, SINGLE_PRIMARY, "us-east-1", epoch=1, version=1))
        await put_rule(store, us.config, Rule(scope, SINGLE_PRIMARY, "eu-west-1", epoch=2, version=2))
    finally:
        await store.close()
    await until(lambda: epoch_of(http, us, scope), 2)
    await until(lambda: epoch_of(http, eu, scope), 1)
    status, answer, _ = await put(http, eu, "items", f"{prefix}k", {"v": 2})
    # eu-west-1 forwarded under epoch 1; us-east-1 answered 409 not_primary with its rule; eu-west-1 re-routed
    # by that newer rule and applied the write itself.
    assert status == 200 and answer["applied"] is True and answer["primary"] == "eu-west-1"

    after = await metrics_text(http, eu)
    assert moved(after, "gateway_forward_total", to_region="us-east-1", outcome="ok") == 1
    assert moved(after, "gateway_forward_total", to_region="us-east-1", outcome="not_primary") == 1
    assert moved(after, "gateway_forward_total", to_region="us-east-1", outcome="unreachable") == 0
    assert moved(after, "gateway_forward_total", to_region="us-east-1", outcome="error") == 0
    assert moved(after, "gateway_downstream_rq_total", route=route, code="200") == 2
    assert moved(after, "gateway_downstream_rq_total", route=route, code="404") == 1
    assert moved(after, "gateway_downstream_rq_total", route=route, code="400") == 1
    assert moved(after, "gateway_upstream_rq_total", upstream="peer:us-east-1", op="write", outcome="not_primary") == 1
    assert moved(after, "gateway_upstream_rq_total", upstream="dynamodb", op="PutItem", outcome="ok") >= 1
    # The gauge is the snapshot's epoch (2 once eu-west-1 took the newer rule from the refusal, else 1).
    async with http.get(f"{eu.url}/v1/routing") as resp:
        snapshot = {r["scope"]: r["epoch"] for r in (await resp.json())["rules"]}
    assert value(after, "gateway_routing_epoch", scope=scope) == snapshot[scope]
    assert value(after, "gateway_routing_epoch", scope="view#items") == 1
    age = value(after, "gateway_routing_snapshot_age_seconds")
    assert age is not None and 0 <= age < 5
    lag = value(after, "gateway_replication_lag_seconds", from_region="us-east-1")
    assert lag is not None and 0 <= lag < 2  # both heartbeat into one table: no replication in between
    us_after = await metrics_text(http, us)
    assert value(us_after, "gateway_routing_epoch", scope=scope) == 2
    assert value(us_after, "gateway_downstream_rq_total", route="/internal/v1/write", code="409") >= 1


async def epoch_of(http, region: Region, scope: str) -> float | None:
    return value(await metrics_text(http, region), "gateway_routing_epoch", scope=scope)


async def until(probe, expected, timeout: float = 5.0) -> None:
    loop = asyncio.get_running_loop()
    give_up = loop.time() + timeout
    while (got := await probe()) != expected:
        assert loop.time() < give_up, f"still {got}, expected {expected}"
        await asyncio.sleep(0.05)


# --- real processes: `feature-gateway serve` -------------------------------------------------------

import signal  # noqa: E402
import socket  # noqa: E402
import time  # noqa: E402

from gateway.local.gateway_process import GatewayProcess  # noqa: E402
from tests.integration.conftest import gateway_toml, unique, write_config  # noqa: E402


async def test_two_workers_on_one_port_export_one_set_of_metrics(tmp_path, dynamodb_local, feature_tables, table_suffix, http):
    path = write_config(tmp_path, gateway_toml(dynamodb_local.endpoint, free_port(), table_suffix))
    proc = GatewayProcess(path, workers=2, log_path=tmp_path / "gw.log").start()
    try:
        key = unique()
        async with http.put(f"{proc.url}/v1/features/items/{key}", data=orjson.dumps({"features": {"v": 1}})) as resp:
            assert resp.status == 200
        for _ in range(20):  # fresh connections: spread over both workers
            async with http.get(f"{proc.url}/v1/features/items/{key}", headers={"Connection": "close"}) as resp:
                assert resp.status == 200
        route = "/v1/features/{view}/{key}"
        scraped = []
        for _ in range(6):  # whichever worker answers the scrape, it counts both workers' requests
            async with http.get(f"{proc.url}/metrics", headers={"Connection": "close"}) as resp:
                text = await resp.text()
            scraped.append(value(text, "gateway_downstream_rq_total", route=route, code="200"))
            assert value(text, "gateway_routing_epoch", scope="default") == 0
        assert scraped == [21.0] * 6
        pids = {line for line in (tmp_path / "gw.log").read_text().splitlines() if '"serving"' in line}
        assert len(pids) == 2
    finally:
        proc.signal(signal.SIGTERM)
        assert proc.wait(20) == 0


async def test_sigterm_under_load_fails_no_request(tmp_path, dynamodb_local, feature_tables, table_suffix):
    """A load balancer's view of a pool of two workers on one port being stopped.

    The balancer polls /readyz and stops sending new requests once it fails; clients keep going until
    then. Nothing they sent may fail: readiness must turn false while requests are still served, and
    the listener may close only after that.
    """
    drain, grace = 1.5, 3.0
    port = free_port()
    path = write_config(tmp_path, gateway_toml(dynamodb_local.endpoint, port, table_suffix))
    env = {"FGW_GATEWAY__DRAIN_SECONDS": str(drain), "FGW_GATEWAY__SHUTDOWN_GRACE": str(grace)}
    proc = GatewayProcess(path, workers=2, log_path=tmp_path / "gw.log", env=env).start()
    loop = asyncio.get_running_loop()
    key = unique()
    results: list[tuple[float, int | str]] = []
    readiness: list[tuple[float, int | str]] = []
    ready = asyncio.Event()
    ready.set()
    try:
        async with aiohttp.ClientSession() as http:
            async with http.put(f"{proc.url}/v1/features/items/{key}", data=orjson.dumps({"features": {"v": 1}})) as resp:
                assert resp.status == 200

            async def balancer() -> None:
                # Like a Kubernetes readiness probe: every 0.1 s, out of rotation after 3 failures in a row.
                failures = 0
                async with aiohttp.ClientSession() as probe:
                    while ready.is_set():
                        try:
                            async with probe.get(f"{proc.url}/readyz", headers={"Connection": "close"}) as resp:
                                status: int | str = resp.status
                        except aiohttp.ClientError as exc:
                            status = type(exc).__name__
                        readiness.append((loop.time(), status))
                        failures = failures + 1 if status != 200 else 0
                        if failures == 3:
                            ready.clear()
                            return
                        await asyncio.sleep(0.1)

            async def client(n: int) -> None:
                while ready.is_set():
                    sent = loop.time()
                    try:
                        method = http.get if n % 2 else http.put
                        kw = {} if n % 2 else {"data": orjson.dumps({"features": {"v": n}})}
                        async with method(f"{proc.url}/v1/features/items/{key}", **kw) as resp:
                            await resp.read()
                            results.append((sent, resp.status))
                    except aiohttp.ClientError as exc:
                        results.append((sent, f"{type(exc).__name__}: {exc}"))

            tasks = [asyncio.create_task(balancer())] + [asyncio.create_task(client(n)) for n in range(8)]
            await asyncio.sleep(0.5)
            stopped_at = loop.time()
            proc.signal(signal.SIGTERM)
            await asyncio.wait_for(asyncio.gather(*tasks), timeout=drain + 5)
        # The balancer saw 503 (not a closed port) first: readiness turned false before the listener closed.
        assert [status for _, status in readiness[-3:]] == [503] * 3, readiness[-4:]
        failed = [r for r in results if r[1] != 200]
        assert failed == [], failed[:5]
        assert sum(1 for sent, _ in results if sent > stopped_at) > 0  # requests kept flowing during the drain
        # Then the listener closes: new connections are refused (bounded poll) and the process exits in time.
        give_up = time.monotonic() + drain + grace + 5
        while _accepts(port):
            assert time.monotonic() < give_up, "the listener never closed"
            await asyncio.sleep(0.05)
        assert proc.wait(max(0.1, stopped_at + drain + grace + 5 - loop.time())) == 0
    finally:
        proc.stop()


def _accepts(port: int) -> bool:
    try:
        with socket.create_connection(("127.0.0.1", port), timeout=0.5):
            return True
    except OSError:
        return False


async def test_a_request_still_running_after_the_grace_is_released_with_503_draining(
    tmp_path, dynamodb_local, feature_tables, table_suffix, http
):
    """eu-west-1 forwards to a us-east-1 peer that never answers; SIGTERM releases the hanging write."""
    with socket.socket() as blackhole:
        blackhole.bind(("127.0.0.1", 0))
        blackhole.listen(64)
        port, peer_port = free_port(), free_port()
        text = gateway_toml(
            dynamodb_local.endpoint, port, table_suffix, region="eu-west-1", request_timeout=30.0, shutdown_grace=1.0,
            drain_seconds=0.2, peer_listen=f"127.0.0.1:{peer_port}",
        ).replace("[peer]", "")
        text += (
            f'[peer]\ntimeout = 30.0\n[regions.eu-west-1]\ndownstream = "127.0.0.1:{port}"\npeer = "127.0.0.1:{peer_port}"\n'
            f'[regions.us-east-1]\ndownstream = "127.0.0.1:1"\npeer = "127.0.0.1:{blackhole.getsockname()[1]}"\n'
        )
        env = {"FGW_GATEWAY__DRAIN_SECONDS": "0.2"}
        proc = GatewayProcess(write_config(tmp_path, text), log_path=tmp_path / "gw.log", env=env).start()
        try:
            loop = asyncio.get_running_loop()
            hanging = asyncio.create_task(
                http.put(f"{proc.url}/v1/features/items/{unique()}", data=orjson.dumps({"features": {"v": 1}}))
            )
            await asyncio.sleep(0.5)
            assert not hanging.done()
            stopped_at = loop.time()
            proc.signal(signal.SIGTERM)
            async with await asyncio.wait_for(hanging, 10) as resp:
                body = await resp.json()
            assert resp.status == 503 and body["error"]["code"] == "draining" and resp.headers["Retry-After"] == "1"
            assert 0.2 + 1.0 <= loop.time() - stopped_at < 0.2 + 1.0 + 2.0
            assert proc.wait(10) == 0
        finally:
            proc.stop()
