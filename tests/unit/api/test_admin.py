"""The admin listener answers the probes, the metrics and the status page, and nothing of the data API
(gateway/api/admin.py)."""

from __future__ import annotations

import aiohttp
import orjson
import pytest
from aiohttp import web

from gateway.api.admin import AdminApi
from gateway.api.frontend import create_server
from tests.unit.api.test_downstream import CONFIG, ScriptedStore, downstream_api
from tests.unit.api.test_status import status_report


@pytest.fixture
async def admin():
    store = ScriptedStore()
    api, health, deadlines, metrics = downstream_api(store)
    await health.probe()
    status, _ = status_report()
    runner = web.ServerRunner(create_server(AdminApi(CONFIG, api, status, metrics, deadlines), CONFIG))
    await runner.setup()
    await web.TCPSite(runner, "127.0.0.1", 0).start()
    async with aiohttp.ClientSession(f"http://127.0.0.1:{runner.addresses[0][1]}") as session:
        yield session, health
    await runner.cleanup()


async def test_probes_and_metrics_answer_as_on_the_downstream_listener(admin):
    session, health = admin
    async with session.get("/healthz") as r:
        assert r.status == 200 and (await r.json())["region"] == CONFIG.region
        assert r.headers["X-Request-Id"]
    async with session.get("/readyz") as r:
        assert r.status == 200 and (await r.json())["ready"] is True  # probed, rules loaded, not draining
    health.draining = True
    async with session.get("/readyz") as r:
        assert r.status == 503 and "draining" in " ".join((await r.json())["reasons"])
    async with session.get("/metrics") as r:
        text = await r.text()
    assert r.status == 200 and r.headers["Content-Type"].startswith("text/plain")
    # The probes just served are counted, under the same route labels as on the downstream port.
    assert 'gateway_downstream_rq_total{code="200",route="/healthz"} 1.0' in text
    assert 'gateway_downstream_rq_total{code="200",route="/readyz"} 1.0' in text
    assert 'gateway_downstream_rq_total{code="503",route="/readyz"} 1.0' in text


@pytest.mark.parametrize(
    "method, path, status, code",
    [
        ("GET", "/v1/features/items/k1", 404, "route_not_found"),
        ("PUT", "/v1/features/items/k1", 404, "route_not_found"),
        ("POST", "/v1/write", 404, "route_not_found"),
        ("GET", "/v1/routing", 404, "route_not_found"),
        ("POST", "/metrics", 405, "method_not_allowed"),
    ],
)
async def test_the_data_api_is_not_served_there(admin, method, path, status, code):
    session, _ = admin
    async with session.request(method, path, data=b"{}") as r:
        assert r.status == status
        assert orjson.loads(await r.read())["error"]["code"] == code


async def test_the_status_page_and_its_data_are_served_there(admin):
    session, _ = admin
    async with session.get("/status") as r:
        assert r.status == 200 and r.headers["Content-Type"] == "text/html; charset=utf-8"
        assert "view#items" in await r.text()
    async with session.get("/status.json") as r:
        assert r.status == 200 and (await r.json())["rules"][0]["scope"] == "view#items"
