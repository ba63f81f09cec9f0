"""Talking to a running local cluster's gateways from tests: writes, reads, rules, bounded waits.

Every wait is a bounded poll with a deadline; it fails with what it last saw.
"""

from __future__ import annotations

import asyncio
import contextlib
import re
import uuid
from collections.abc import AsyncIterator, Awaitable, Callable, Iterable
from pathlib import Path
from typing import Any

import aiohttp
import orjson

from gateway.local.cluster import LocalCluster
from gateway.routing.rules import Rule
from tests.support.convergence import Stored, Write, check, lost_count
from tests.support.local_cluster import local_config

REGIONS = ("us-east-1", "eu-west-1", "ap-southeast-1")


@contextlib.asynccontextmanager
async def running_cluster(tmp: Path, *, rules: Iterable[Rule] = (), warm: int = 60) -> AsyncIterator[LocalCluster]:
    """The three-region cluster of config/local.toml on free ports, with ``rules`` obeyed everywhere, warmed.

    Warm before anything is timed: a cold DynamoDB Local answers its first writes in hundreds of
    milliseconds, and the first forward from each region opens its peer connections.
    """
    cluster = LocalCluster(str(local_config(tmp)), state_dir=tmp / "state")
    await cluster.up()
    try:
        async with aiohttp.ClientSession() as session:
            if rules:
                await cluster.put_rules(list(rules))
                for rule in rules:
                    await obeyed_everywhere(session, cluster, rule, 10)
            for i in range(warm):
                await put(session, cluster, REGIONS[i % len(REGIONS)], f"warm-{i}", {"n": i})
        assert cluster.emulator is not None
        await cluster.emulator.wait_idle(60)
        yield cluster
    finally:
        await cluster.down()


async def clear_faults(cluster: LocalCluster) -> None:
    """Leave no fault behind for the next test: no partition, every region running, no lag, no pause."""
    assert cluster.emulator is not None
    await cluster.heal()
    for source in cluster.regions:
        await cluster.start_region(source)
        for target in cluster.regions:
            if source != target:
                cluster.emulator.set_lag(source, target, 0.0)
                cluster.emulator.resume(source, target)


def url(cluster: LocalCluster, region: str) -> str:
    return f"http://{cluster.configs[region].listen}"


async def put(
    http: aiohttp.ClientSession, cluster: LocalCluster, region: str, key: str, features: dict[str, Any],
    idem: str | None = None, *, view: str = "items", must_apply: bool = True,
) -> dict[str, Any]:
    async with http.put(
        f"{url(cluster, region)}/v1/features/{view}/{key}",
        data=orjson.dumps({"features": features}),
        headers={"Idempotency-Key": idem or uuid.uuid4().hex},
    ) as resp:
        body = await resp.json()
        assert resp.status == 200, body
        assert body["applied"] or not must_apply, body
        return body


async def get(
    http: aiohttp.ClientSession, cluster: LocalCluster, region: str, key: str, *, view: str = "items", **params: str
) -> dict[str, Any] | None:
    async with http.get(f"{url(cluster, region)}/v1/features/{view}/{key}", params=params) as resp:
        if resp.status == 404:
            return None
        assert resp.status == 200, await resp.text()
        return await resp.json()


async def eventually(probe: Callable[[], Awaitable[Any]], timeout: float, what: str) -> Any:
    loop = asyncio.get_running_loop()
    deadline = loop.time() + timeout
    last: Any = None
    while loop.time() < deadline:
        last = await probe()
        if last:
            return last
        await asyncio.sleep(0.02)
    raise AssertionError(f"{what} not within {timeout}s; last saw {last!r}")


async def metric_sum(http, cluster, name: str, **labels: str) -> float:
    """A metric summed over every running gateway of the cluster."""
    total = 0.0
    for region, r in cluster.regions.items():
        if r.stopped:
            continue
        async with http.get(f"{url(cluster, region)}/metrics") as resp:
            text = await resp.text()
        for line in text.splitlines():
            match = re.match(rf"^{name}\{{(.*)\}} (\S+)$", line)
            if match and all(f'{k}="{v}"' in match.group(1) for k, v in labels.items()):
                total += float(match.group(2))
    return total


async def routing_of(http: aiohttp.ClientSession, cluster: LocalCluster, region: str) -> dict[str, dict[str, Any]]:
    """The rules a region's gateway routes by right now, by scope."""
    async with http.get(f"{url(cluster, region)}/v1/routing") as resp:
        body = await resp.json()
    return {rule["scope"]: rule for rule in body["rules"]}


async def obeyed_everywhere(
    http: aiohttp.ClientSession, cluster: LocalCluster, rule: Rule, timeout: float, regions: list[str] | None = None
) -> None:
    """Until every gateway (of ``regions``) routes ``rule.scope`` by exactly ``rule``."""
    wanted = rule.to_json()

    async def all_agree() -> bool:
        for region in regions or list(cluster.regions):
            seen = (await routing_of(http, cluster, region)).get(rule.scope)
            if seen is None or {k: seen.get(k) for k in ("primary", "epoch", "mode", "state")} != {
                k: wanted.get(k) for k in ("primary", "epoch", "mode", "state")
            }:
                return False
        return True

    await eventually(all_agree, timeout, f"every gateway routing {rule.scope} by {wanted}")


async def state_of(
    http: aiohttp.ClientSession, cluster: LocalCluster, keys: list[str], *, view: str = "items"
) -> dict[str, dict[str, Stored]]:
    """What every region's gateway serves for ``keys`` (eventual reads, batches of 100)."""
    regions: dict[str, dict[str, Stored]] = {}
    for region in cluster.regions:
        found: dict[str, Stored] = {}
        for i in range(0, len(keys), 100):
            async with http.post(
                f"{url(cluster, region)}/v1/read", data=orjson.dumps({"view": view, "keys": keys[i:i + 100]})
            ) as resp:
                assert resp.status == 200, await resp.text()
                for result in (await resp.json())["results"]:
                    if result["status"] == "PRESENT":
                        found[result["key"]] = Stored(result["features"], result["version"])
        regions[region] = found
    return regions


async def converge(
    http: aiohttp.ClientSession, cluster: LocalCluster, acknowledged: list[Write], keys: list[str], timeout: float,
    *, view: str = "items",
) -> None:
    """Until every region holds the newest acknowledged write of every key; fails naming what is off."""
    loop = asyncio.get_running_loop()
    deadline = loop.time() + timeout
    while True:
        state = await state_of(http, cluster, keys, view=view)
        reports = check(acknowledged, state)
        if all(r.clean for r in reports.values()):
            assert lost_count(reports) == 0
            return
        if loop.time() > deadline:
            off = {
                region: {"lost": r.lost, "stale": r.stale, "divergent": r.divergent}
                for region, r in reports.items() if not r.clean
            }
            bad = {k for r in reports.values() for k in (*r.lost, *r.stale, *r.divergent)}
            seen = {region: {k: state[region].get(k) for k in sorted(bad)} for region in state}
            acked = [w for w in acknowledged if w.key in bad]
            backlog = cluster.status()["backlog"]
            raise AssertionError(f"not converged in {timeout}s: {off}; held {seen}; acknowledged {acked}; backlog {backlog}")
        await asyncio.sleep(0.05)
