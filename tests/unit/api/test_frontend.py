"""Frontend.handle, the request path of both listeners: bound, request id, deadline header, drain, logs, spans."""

from __future__ import annotations

import asyncio
import logging
from collections.abc import AsyncIterator
from dataclasses import replace

import aiohttp
import orjson
import pytest
from aiohttp import web
from opentelemetry.sdk.trace import TracerProvider
from opentelemetry.sdk.trace.export import SimpleSpanProcessor
from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter
from opentelemetry.trace import SpanKind

from gateway import deadlines as request_deadlines
from gateway.api.frontend import Frontend, RouteHandler, create_server, json_response
from gateway.api.overload import ConcurrencyLimit
from gateway.background import background
from gateway.clock import SystemClock
from gateway.config import LogsConfig, from_dict
from gateway.deadlines import Deadlines
from gateway.obs.logs import AccessLog, request_id
from gateway.obs.metrics import Metrics

CONFIG = from_dict(
    {"gateway": {"region": "eu-west-1", "request_timeout": 5.0, "max_concurrent_requests": 2}, "views": {"v": {"table": "tbl"}}}
)


class Scripted(Frontend):
    """Three routes: /slow waits for ``release``, /ok answers at once, /healthz is not bounded."""

    UNBOUNDED = frozenset({"/healthz"})
    PRIMED = {"/ok": (200, 503)}

    def __init__(self, *args, **kw) -> None:
        super().__init__(*args, **kw)
        self.release = asyncio.Event()
        self.started = 0
        self.seen: list[tuple[str | None, float | None]] = []

    def _route(self, method: str, path: str) -> tuple[str, RouteHandler, tuple[str, ...]]:
        return path, {"/slow": self.slow, "/ok": self.ok, "/healthz": self.ok}[path], ()

    async def slow(self, request: web.BaseRequest) -> web.Response:
        self.started += 1
        await self.release.wait()
        return json_response({"slow": True})

    async def ok(self, request: web.BaseRequest) -> web.Response:
        self.seen.append((request_id.get(), request_deadlines.remaining()))
        return json_response({"ok": True})


class Served:
    def __init__(self, frontend: Scripted, deadlines: Deadlines, metrics: Metrics, base: str, session) -> None:
        self.frontend, self.deadlines, self.metrics, self.base, self.session = frontend, deadlines, metrics, base, session

    async def get(self, path: str, **kw):
        async with self.session.get(self.base + path, **kw) as resp:
            return resp.status, resp.headers, await resp.read()

    async def until_started(self, n: int) -> None:
        give_up = asyncio.get_running_loop().time() + 5
        while self.frontend.started < n:
            assert asyncio.get_running_loop().time() < give_up
            await asyncio.sleep(0.005)


@pytest.fixture
async def make() -> AsyncIterator:
    runners = []

    async def start(config=CONFIG, **kw) -> Served:
        clock = SystemClock()
        deadlines, metrics = Deadlines(clock), Metrics()
        frontend = Scripted(config, metrics, deadlines, **kw)
        runner = web.ServerRunner(create_server(frontend, config))
        await runner.setup()
        await web.TCPSite(runner, "127.0.0.1", 0).start()
        runners.append(runner)
        port = runner.addresses[0][1]
        stack.append(background(deadlines.run(), "deadlines"))
        await stack[-1].__aenter__()
        session = aiohttp.ClientSession()
        sessions.append(session)
        return Served(frontend, deadlines, metrics, f"http://127.0.0.1:{port}", session)

    stack: list = []
    sessions: list = []
    yield start
    for served in runners:
        await served.cleanup()
    for session in sessions:
        await session.close()
    for entered in stack:
        await entered.__aexit__(None, None, None)


async def test_past_the_bound_requests_get_503_overloaded_at_once_and_probes_still_answer(make):
    served = await make()
    slow = [asyncio.create_task(served.get("/slow")) for _ in range(2)]
    await served.until_started(2)
    status, headers, body = await served.get("/ok")
    assert status == 503 and headers["Retry-After"] == "1"
    error = orjson.loads(body)["error"]
    assert error["code"] == "overloaded" and error["retryable"] is True and "2 concurrent" in error["message"]
    assert (await served.get("/healthz"))[0] == 200  # not counted
    served.frontend.release.set()
    assert [(await t)[0] for t in slow] == [200, 200]
    assert (await served.get("/ok"))[0] == 200
    assert served.metrics.registry.get_sample_value("gateway_downstream_rq_total", {"route": "/ok", "code": "503"}) == 1


async def test_frontends_given_one_limit_share_its_slots(make):
    # The server gives each listener a limit of its own (gateway/server.py); this is the mechanism.
    limit = ConcurrencyLimit(1)
    one, other = await make(limit=limit), await make(limit=limit)
    task = asyncio.create_task(one.get("/slow"))
    await one.until_started(1)
    assert (await other.get("/ok"))[0] == 503
    one.frontend.release.set()
    assert (await task)[0] == 200 and limit.in_flight == 0


async def test_the_request_id_is_the_callers_or_a_new_one_and_comes_back(make):
    served = await make()
    _, headers, _ = await served.get("/ok", headers={"X-Request-Id": "caller-7"})
    assert headers["X-Request-Id"] == "caller-7" and served.frontend.seen[-1][0] == "caller-7"
    _, headers, _ = await served.get("/ok")
    generated = headers["X-Request-Id"]
    assert len(generated) == 16 and served.frontend.seen[-1][0] == generated
    _, headers, _ = await served.get("/ok", headers={"X-Request-Id": "x" * 500})
    assert len(headers["X-Request-Id"]) == 16  # unreasonable ids are replaced


async def test_the_callers_timeout_shortens_the_deadline_never_lengthens_it(make):
    served = await make()
    await served.get("/ok", headers={"X-Request-Timeout": "0.5"})
    await served.get("/ok", headers={"X-Request-Timeout": "60"})
    (_, short), (_, capped) = served.frontend.seen
    assert 0.4 < short <= 0.5 and 4.9 < capped <= 5.0
    # Full-width and Arabic-Indic digits, and what float() reads that is not decimal seconds.
    for bad in ("soon", "0", "-1", "inf", "nan", "\uff11", "\u0661.5", "1_0", "1e3", "0.000", "+1"):
        status, _, body = await served.get("/ok", headers={"X-Request-Timeout": bad})
        assert status == 400 and "X-Request-Timeout" in orjson.loads(body)["error"]["message"], bad


async def test_a_request_past_the_callers_deadline_gets_504(make):
    served = await make()
    status, _, body = await served.get("/slow", headers={"X-Request-Timeout": "0.1"})
    assert status == 504 and orjson.loads(body)["error"]["code"] == "upstream_timeout"


async def test_released_requests_answer_503_draining_and_draining_answers_close_the_connection(make):
    served = await make()
    served.frontend.draining = True
    status, headers, _ = await served.get("/ok")
    assert status == 200 and headers["Connection"] == "close"
    task = asyncio.create_task(served.get("/slow"))
    await served.until_started(1)
    assert served.deadlines.release_all() == 1
    status, headers, body = await task
    assert status == 503 and orjson.loads(body)["error"]["code"] == "draining" and headers["Retry-After"] == "1"


async def test_the_access_log_samples_but_always_writes_5xx(make, caplog):
    config = replace(CONFIG, logs=LogsConfig(access_sample=0.0))
    served = await make(config, access_log=AccessLog(0.0, "eu-west-1"))
    with caplog.at_level(logging.INFO, logger="gateway.access"):
        await served.get("/ok")
        task = asyncio.create_task(served.get("/slow", headers={"X-Request-Id": "r-503"}))
        await served.until_started(1)
        served.deadlines.release_all()
        await task
    lines = [r for r in caplog.records if r.name == "gateway.access"]
    assert len(lines) == 1
    line = lines[0]
    assert (line.status, line.outcome, line.route, line.region) == (503, "draining", "/slow", "eu-west-1")
    everything = await make(access_log=AccessLog(1.0, "eu-west-1"))
    with caplog.at_level(logging.INFO, logger="gateway.access"):
        await everything.get("/ok")
    assert [r.outcome for r in caplog.records if r.name == "gateway.access"][-1] == "ok"


async def test_primed_series_exist_at_zero_before_any_request(make):
    served = await make()
    registry = served.metrics.registry
    assert registry.get_sample_value("gateway_downstream_rq_total", {"route": "/ok", "code": "503"}) == 0
    assert registry.get_sample_value("gateway_downstream_rq_seconds_count", {"route": "/ok"}) == 0


async def test_a_span_per_request_joins_the_callers_trace(make):
    exporter = InMemorySpanExporter()
    provider = TracerProvider()
    provider.add_span_processor(SimpleSpanProcessor(exporter))
    served = await make(tracer=provider.get_tracer("test"))
    parent = "00-0af7651916cd43dd8448eb211c80319c-b7ad6b7169203331-01"
    await served.get("/ok", headers={"traceparent": parent})
    (span,) = exporter.get_finished_spans()
    assert span.name == "GET /ok" and span.kind is SpanKind.SERVER
    assert span.context.trace_id == 0x0AF7651916CD43DD8448EB211C80319C and span.parent.span_id == 0xB7AD6B7169203331
    assert span.attributes["http.response.status_code"] == 200


async def test_without_a_tracer_no_span_is_made(make, monkeypatch):
    import opentelemetry.trace

    made = []
    monkeypatch.setattr(opentelemetry.trace, "set_span_in_context", lambda *a, **k: made.append(a))
    served = await make()
    await served.get("/ok", headers={"traceparent": "00-0af7651916cd43dd8448eb211c80319c-b7ad6b7169203331-01"})
    assert made == [] and served.frontend._tracer is None
