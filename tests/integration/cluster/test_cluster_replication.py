"""The three-region local cluster: real DynamoDB Locals, real gateways, the emulator between them.

Every wait is a bounded poll with a deadline; a test fails with what it last saw.
"""

from __future__ import annotations

import asyncio
import re
import uuid
from collections.abc import AsyncIterator

import aiohttp
import pytest

from gateway.local.cluster import LocalCluster
from gateway.routing.rules import ANY_REGION, Rule
from tests.support.cluster_http import (
    REGIONS,
    converge,
    eventually,
    get,
    obeyed_everywhere,
    put,
    url,
)
from tests.support.convergence import Write


#: These tests are about replication between regions that all accept writes, as global tables do on their own:
#: every key they write starts with this prefix, whose items scope is any_region, so writes are applied where they
#: arrive (the session's cluster keeps its default rules for the other modules).
P = "repl-"
EVERYWHERE = Rule(f"view#items#prefix#{P}", ANY_REGION, None, epoch=1, version=1, updated_by="tests")


@pytest.fixture(scope="module")
async def cluster(cluster: LocalCluster) -> AsyncIterator[LocalCluster]:
    """The package's cluster (tests/integration/cluster/conftest.py), obeying EVERYWHERE."""
    await cluster.put_rules([EVERYWHERE])
    async with aiohttp.ClientSession() as http:
        await obeyed_everywhere(http, cluster, EVERYWHERE, 10)
    yield cluster


async def test_a_write_in_each_region_appears_in_the_other_two(cluster, http):
    keys = {region: f"{P}rep-{region}-{uuid.uuid4().hex[:6]}" for region in REGIONS}
    for region, key in keys.items():
        await put(http, cluster, region, key, {"from": region})
    for region, key in keys.items():
        for other in REGIONS:
            got = await eventually(lambda o=other, k=key: get(http, cluster, o, k), 5, f"{key} in {other}")
            assert got["features"] == {"from": region}


async def test_concurrent_writes_to_one_key_converge_to_the_last_writer(cluster, http):
    acknowledged = []
    keys = [f"{P}lww-{uuid.uuid4().hex[:6]}" for _ in range(10)]
    for key in keys:
        answers = await asyncio.gather(
            put(http, cluster, "us-east-1", key, {"v": "us"}, must_apply=False),
            put(http, cluster, "ap-southeast-1", key, {"v": "ap"}, must_apply=False),
        )
        # Each write's event time is its arrival; when the other region's newer write has already
        # replicated, a region correctly refuses its own as stale_event_time. Only applied writes
        # are acknowledged values; at least one per key is.
        assert any(a["applied"] for a in answers), answers
        for value, answer in zip(("us", "ap"), answers):
            if answer["applied"]:
                acknowledged.append(Write(key, {"v": value}, answer["version"]))
            else:
                assert answer["reason"] == "stale_event_time", answer
    await converge(http, cluster, acknowledged, keys, 20)


async def test_a_paused_pair_catches_up_after_resume_with_nothing_lost(cluster, http):
    assert cluster.emulator is not None
    cluster.emulator.pause("us-east-1", "eu-west-1")
    keys = [f"{P}pause-{i}-{uuid.uuid4().hex[:6]}" for i in range(40)]
    acknowledged = []
    for key in keys:
        answer = await put(http, cluster, "us-east-1", key, {"n": key})
        acknowledged.append(Write(key, {"n": key}, answer["version"]))
    # ap-southeast-1 gets them; eu-west-1 does not while paused.
    await eventually(lambda: get(http, cluster, "ap-southeast-1", keys[-1]), 5, "replication to ap-southeast-1")
    assert await get(http, cluster, "eu-west-1", keys[0]) is None
    assert cluster.emulator.backlog("us-east-1", "eu-west-1") > 0
    cluster.emulator.resume("us-east-1", "eu-west-1")
    await converge(http, cluster, acknowledged, keys, 20)


async def test_a_stopped_region_catches_up_after_it_starts_again(cluster, http):
    await cluster.stop_region("ap-southeast-1")
    keys = [f"{P}down-{i}-{uuid.uuid4().hex[:6]}" for i in range(20)]
    acknowledged = []
    for i, key in enumerate(keys):
        region = "us-east-1" if i % 2 else "eu-west-1"
        answer = await put(http, cluster, region, key, {"n": i})
        acknowledged.append(Write(key, {"n": i}, answer["version"]))
    await cluster.start_region("ap-southeast-1")
    await converge(http, cluster, acknowledged, keys, 30)


async def lag_gauge(http, cluster, region: str, from_region: str) -> float | None:
    async with http.get(f"{url(cluster, region)}/metrics") as resp:
        text = await resp.text()
    match = re.search(rf'^gateway_replication_lag_seconds\{{from_region="{from_region}"\}} (\S+)$', text, re.M)
    return float(match.group(1)) if match else None


async def test_injected_lag_shows_in_the_replication_lag_gauge(cluster, http):
    assert cluster.emulator is not None
    cluster.emulator.set_lag("us-east-1", "eu-west-1", 0.3)
    samples: list[float] = []

    async def steady():
        value = await lag_gauge(http, cluster, "eu-west-1", "us-east-1")
        if value is not None:
            samples.append(value)
        # The gauge is read every ~20 ms; judge half a second of readings at a time by their median,
        # so one slow apply on a busy machine does not decide the verdict either way.
        window = sorted(samples[-25:])
        return len(window) == 25 and 0.15 <= window[12] <= 0.45 and window

    window = await eventually(steady, 15, "the lag gauge to settle between 150 and 450 ms")
    assert 0.15 <= window[12] <= 0.45, window
    # A pair without injected lag stays below it: the lag is per pair, not global.
    others = []
    for _ in range(25):
        others.append(await lag_gauge(http, cluster, "ap-southeast-1", "us-east-1"))
        await asyncio.sleep(0.02)
    assert sorted(others)[12] < 0.3, others


#: One value of every kind the API accepts, edge cases included.
EVERY_KIND = {
    "empty_map": {}, "empty_list": [], "empty_string": "", "null": None, "true": True, "false": False,
    "int64_max": 9223372036854775807, "int64_min": -9223372036854775808, "float": 0.1, "tiny": 1e-130,
    "huge": 9.99e125, "negative_zero": -0.0,
    "nested": {"a": {"b": [{}, [], {"c": [1, 2.5, "x", None, {"d": {}}]}]}},
    "binary_looking": "AAECAwQFBgcICQ==", "number_looking": "12345678901234567890", "unicode": "ünïcødé ✓ 𝄞",
}


async def test_every_kind_of_value_and_the_largest_item_reach_every_region(cluster, http):
    keys, acknowledged = [], []
    for i, region in enumerate(REGIONS):
        key = f"{P}kinds-{region}-{uuid.uuid4().hex[:6]}"
        answer = await put(http, cluster, region, key, EVERY_KIND)
        keys.append(key)
        acknowledged.append(Write(key, EVERY_KIND, answer["version"]))
    # The largest item a write may hold: one string feature filling the 400 KB with the system attributes.
    big = f"{P}big-{uuid.uuid4().hex[:6]}"
    value = {"blob": "x" * (400 * 1024 - 64 - 256 - 4 - len(big) - 2 - 4)}
    answer = await put(http, cluster, "eu-west-1", big, value)
    keys.append(big)
    acknowledged.append(Write(big, value, answer["version"]))
    await converge(http, cluster, acknowledged, keys, 30)
    assert all(n == 0 for n in cluster.status()["dropped"].values()), cluster.status()
    async with http.get(f"{cluster.control_url}/metrics") as resp:
        text = await resp.text()
    applied = re.findall(r'^emulator_changes_applied_total\{source="eu-west-1",target="[a-z0-9-]+"\} (\S+)$', text, re.M)
    dropped = re.findall(r"^emulator_changes_dropped_total\{.*\} (\S+)$", text, re.M)
    assert len(applied) == 2 and all(float(n) > 0 for n in applied), text
    assert len(dropped) == 6 and all(float(n) == 0 for n in dropped), text
