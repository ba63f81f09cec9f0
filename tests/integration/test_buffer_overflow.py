"""The write buffer's bounds on real gateways: past a bound, 503 primary_switching with Retry-After at once.

A two-region cluster whose gateways hold at most 20 writes for at most 1 s
(``FGW_BUFFER__…``). A switch that cannot finish (replication to the new
primary paused) keeps the scope switching for 4 s while 60 writes arrive at
once: 20 are held, the rest are refused at once, and the held ones are
released with 503 when their window ends; nothing waits longer than the
window + 100 ms.
"""

from __future__ import annotations

import asyncio
import os
import re
import subprocess
import sys
import time
import uuid
from collections.abc import AsyncIterator

import aiohttp
import pytest

from gateway.local.cluster import LocalCluster
from gateway.routing.rules import SINGLE_PRIMARY, Rule
from tests.support.cluster_http import eventually, obeyed_everywhere, put, routing_of, url
from tests.support.local_cluster import local_config

MAX_ENTRIES = 20
WINDOW = 1.0
BURST = 60
BUFFER_ENV = {"FGW_BUFFER__MAX_ENTRIES": str(MAX_ENTRIES), "FGW_BUFFER__WINDOW": str(WINDOW)}


@pytest.fixture(scope="module")
async def cluster(tmp_path_factory: pytest.TempPathFactory) -> AsyncIterator[LocalCluster]:
    tmp = tmp_path_factory.mktemp("buffer-cluster")
    cluster = LocalCluster(str(local_config(tmp)), regions=["us-east-1", "eu-west-1"], state_dir=tmp / "state")
    saved = {k: os.environ.get(k) for k in BUFFER_ENV}
    os.environ.update(BUFFER_ENV)  # the gateway processes inherit it
    try:
        await cluster.up()
    finally:
        for k, v in saved.items():
            if v is None:
                os.environ.pop(k, None)
            else:
                os.environ[k] = v
    try:
        async with aiohttp.ClientSession() as session:
            for i in range(20):
                await put(session, cluster, ("us-east-1", "eu-west-1")[i % 2], f"warm-{i}", {"n": i})
        yield cluster
    finally:
        await cluster.down()


async def test_overflowing_the_buffer_answers_503_at_once_and_nothing_waits_past_the_window(cluster):
    assert cluster.emulator is not None
    prefix = f"o{uuid.uuid4().hex[:6]}-"
    rule = Rule(f"view#items#prefix#{prefix}", SINGLE_PRIMARY, "us-east-1", epoch=1, version=1, updated_at=0)
    async with aiohttp.ClientSession(connector=aiohttp.TCPConnector(limit=0)) as http:
        await cluster.put_rules([rule])
        await obeyed_everywhere(http, cluster, rule, 10)
        cluster.emulator.pause("us-east-1", "eu-west-1")
        await put(http, cluster, "us-east-1", f"{prefix}acked", {"n": 0})  # never reaches eu-west-1: no fence
        switch = asyncio.create_task(asyncio.to_thread(
            subprocess.run,
            [sys.executable, "-m", "gateway.ctl.main", "--local", "--state-dir", str(cluster.state_dir), "switch", rule.scope,
             "--to", "eu-west-1", "--force", "--max-duration", "4", "--yes"],
            capture_output=True, text=True, timeout=60,
            env={**os.environ, "FGW_SWITCH__MAX_REPLICATION_LAG": "600"},
        ))

        async def switching() -> bool:
            states = [(await routing_of(http, cluster, r)).get(rule.scope, {}).get("state") for r in cluster.regions]
            return states == ["switching"] * len(states)

        try:
            await eventually(switching, 10, "every gateway seeing the switch")
        except AssertionError:
            done = await switch
            raise AssertionError(f"the switch did not start: {done.stdout} {done.stderr}") from None

        async def write(i: int) -> tuple[int, float, dict, str | None]:
            started = time.monotonic()
            async with http.put(
                f"{url(cluster, 'eu-west-1')}/v1/features/items/{prefix}{i}", json={"features": {"n": i}},
                headers={"Idempotency-Key": uuid.uuid4().hex},
            ) as resp:
                return resp.status, time.monotonic() - started, await resp.json(), resp.headers.get("Retry-After")

        # Connections first (as a long-running caller has them), so the burst measures the gateway, not connects.
        async def healthz() -> None:
            async with http.get(f"{url(cluster, 'eu-west-1')}/healthz") as resp:
                assert resp.status == 200

        await asyncio.gather(*(healthz() for _ in range(BURST)))
        burst = asyncio.gather(*(write(i) for i in range(BURST)))
        await asyncio.sleep(WINDOW / 2)  # the refused have their answers; the held wait
        held_mid = await buffer_metric(http, cluster, "gateway_buffer_entries", scope=rule.scope)
        answers = await burst
        released = {
            reason: await buffer_metric(http, cluster, "gateway_buffer_released_total", scope=rule.scope, reason=reason)
            for reason in ("refused", "expired", "drained", "evicted")
        }
        held_after = await buffer_metric(http, cluster, "gateway_buffer_entries", scope=rule.scope)
        done = await switch
        cluster.emulator.resume("us-east-1", "eu-west-1")

    assert done.returncode == 1 and "switch aborted" in done.stdout, done.stdout + done.stderr
    assert all(status == 503 for status, *_ in answers), [a for a in answers if a[0] != 503][:3]
    assert all(body["error"]["code"] == "primary_switching" and retry for _, _, body, retry in answers)
    refused = [seconds for _, seconds, body, _ in answers if "full" in body["error"]["message"]]
    expired = [seconds for _, seconds, body, _ in answers if "full" not in body["error"]["message"]]
    # The buffer held exactly its bound; the others were refused without waiting.
    assert len(expired) == MAX_ENTRIES and len(refused) == BURST - MAX_ENTRIES
    assert max(refused) < 0.5, sorted(refused)[-5:]
    assert all(WINDOW - 0.05 <= s <= WINDOW + 0.1 for s in expired), sorted(expired)
    # The metrics say the same: the gauge held the bound, and every write left by its reason.
    assert held_mid == MAX_ENTRIES and held_after == 0
    assert released == {"refused": BURST - MAX_ENTRIES, "expired": MAX_ENTRIES, "drained": 0, "evicted": 0}


async def buffer_metric(http, cluster, name: str, **labels: str) -> float:
    async with http.get(f"{url(cluster, 'eu-west-1')}/metrics") as resp:
        text = await resp.text()
    for line in text.splitlines():
        match = re.match(rf"^{name}\{{(.*)\}} (\S+)$", line)
        if match and all(f'{k}="{v}"' in match.group(1) for k, v in labels.items()):
            return float(match.group(2))
    return 0.0
