"""``feature-gateway serve`` as an operator runs it: workers, signals, bad configs, a DynamoDB that is down or hangs."""

from __future__ import annotations

import asyncio
import signal
import socket
import subprocess
import sys

import orjson

from gateway.local.dynamodb_local import free_port
from gateway.local.gateway_process import GatewayProcess
from tests.integration.conftest import gateway_toml, unique, write_config


async def test_bad_config_exits_nonzero_with_one_clear_line(tmp_path):
    path = write_config(tmp_path, '[gateway]\nregion = "us-east-1"\nworkers = 0\n[views.v]\ntable = "tbl"\n')
    proc = subprocess.run(
        [sys.executable, "-m", "gateway.cli", "serve", "--config", str(path)], capture_output=True, text=True, timeout=60
    )
    assert proc.returncode == 2
    lines = proc.stderr.strip().splitlines()
    assert len(lines) == 1
    assert str(path) in lines[0] and "gateway.workers" in lines[0]


async def test_two_workers_share_the_port_and_stop_on_sigterm(tmp_path, dynamodb_local, feature_tables, table_suffix, http):
    path = write_config(tmp_path, gateway_toml(dynamodb_local.endpoint, free_port(), table_suffix))
    proc = GatewayProcess(path, workers=2, log_path=tmp_path / "gw.log").start()
    try:
        key = unique()
        async with http.put(f"{proc.url}/v1/features/items/{key}", data=orjson.dumps({"features": {"v": 1}})) as resp:
            assert resp.status == 200
        # Fresh connections land on either worker; every one must answer.
        statuses = []
        for _ in range(20):
            async with http.get(f"{proc.url}/v1/features/items/{key}", headers={"Connection": "close"}) as resp:
                statuses.append(resp.status)
        assert statuses == [200] * 20
        log = (tmp_path / "gw.log").read_text()
        assert log.count('"msg": "serving"') + log.count('"msg":"serving"') == 2
    finally:
        proc.signal(signal.SIGTERM)
        assert proc.wait(20) == 0
    status = None
    try:
        async with http.get(f"{proc.url}/healthz") as resp:
            status = resp.status
    except OSError:
        pass
    assert status is None


async def test_dynamodb_down_gives_503_and_unready(tmp_path, table_suffix, http):
    dead = f"http://127.0.0.1:{free_port()}"
    path = write_config(tmp_path, gateway_toml(dead, free_port(), table_suffix))
    proc = GatewayProcess(path, log_path=tmp_path / "gw.log").start(wait_for="/healthz")
    try:
        async with http.get(f"{proc.url}/readyz") as resp:
            body = await resp.json()
            assert resp.status == 503 and body["ready"] is False
            assert "local DynamoDB" in body["reasons"][0]
        async with http.get(f"{proc.url}/v1/features/items/k1") as resp:
            body = await resp.json()
            assert resp.status == 503 and body["error"]["code"] == "upstream_unavailable"
            assert body["error"]["retryable"] is True and "Retry-After" in resp.headers
    finally:
        assert proc.stop() == 0


async def test_dynamodb_that_never_answers_gives_504(tmp_path, table_suffix, http):
    # A listening socket nobody accepts from: connections open, requests are never answered.
    with socket.socket() as blackhole:
        blackhole.bind(("127.0.0.1", 0))
        blackhole.listen(64)
        endpoint = f"http://127.0.0.1:{blackhole.getsockname()[1]}"
        text = gateway_toml(endpoint, free_port(), table_suffix, request_timeout=1.0)
        text = text.replace(f'endpoint_url = "{endpoint}"', f'endpoint_url = "{endpoint}"\nattempt_timeout = 0.3\nmax_attempts = 2')
        proc = GatewayProcess(write_config(tmp_path, text), log_path=tmp_path / "gw.log").start(wait_for="/healthz")
        try:
            loop = asyncio.get_running_loop()
            started = loop.time()
            async with http.get(f"{proc.url}/v1/features/items/k1") as resp:
                body = await resp.json()
            assert resp.status == 504 and body["error"]["code"] == "upstream_timeout"
            assert loop.time() - started < 1.5
        finally:
            assert proc.stop() == 0


async def test_missing_table_is_a_clear_503(tmp_path, dynamodb_local, http):
    path = write_config(tmp_path, gateway_toml(dynamodb_local.endpoint, free_port(), "never_created"))
    proc = GatewayProcess(path, log_path=tmp_path / "gw.log").start(wait_for="/healthz")
    try:
        async with http.get(f"{proc.url}/v1/features/items/k1") as resp:
            body = await resp.json()
        assert resp.status == 503 and body["error"]["code"] == "table_not_found"
        assert "features_items_never_created" in body["error"]["message"]
    finally:
        assert proc.stop() == 0


async def test_a_sidecar_answers_probes_and_scrapes_on_its_admin_port(tmp_path, dynamodb_local, feature_tables, table_suffix, http):
    # A sidecar: the data API on loopback, the probes and metrics on a port of their own.
    admin = f"http://127.0.0.1:{free_port()}"
    path = write_config(tmp_path, gateway_toml(dynamodb_local.endpoint, free_port(), table_suffix))
    env = {"FGW_GATEWAY__ADMIN_LISTEN": admin.removeprefix("http://"), "FGW_GATEWAY__DRAIN_SECONDS": "1.5"}
    proc = GatewayProcess(path, env=env, log_path=tmp_path / "gw.log").start()
    try:
        key = unique()
        async with http.put(f"{proc.url}/v1/features/items/{key}", data=orjson.dumps({"features": {"v": 1}})) as resp:
            assert resp.status == 200
        async with http.get(f"{admin}/readyz") as resp:
            assert resp.status == 200
        async with http.get(f"{admin}/metrics") as resp:
            text = await resp.text()
        assert 'gateway_downstream_rq_total{code="200",route="/v1/features/{view}/{key}"} 1.0' in text
        async with http.get(f"{admin}/v1/features/items/{key}") as resp:
            assert resp.status == 404  # the data API is not on the admin port
        proc.signal(signal.SIGTERM)
        # Draining: the probe on the admin port turns unready while the data API still serves.
        for _ in range(50):
            async with http.get(f"{admin}/readyz") as resp:
                if resp.status == 503:
                    break
            await asyncio.sleep(0.02)
        assert resp.status == 503
        async with http.get(f"{proc.url}/v1/features/items/{key}") as resp:
            assert resp.status == 200
    finally:
        proc.signal(signal.SIGTERM)
        assert proc.wait(20) == 0
