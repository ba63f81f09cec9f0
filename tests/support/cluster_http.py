"""Talking to a running local cluster's gateways from tests: writes, reads, rules, bounded waits.

Every wait is a bounded poll with a deadline; it fails with what it last saw.
"""

from __future__ import annotations

import asyncio
import uuid
from collections.abc import Awaitable, Callable
from typing import Any

import aiohttp
import orjson

from gateway.local.cluster import LocalCluster
from gateway.routing import Rule


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
