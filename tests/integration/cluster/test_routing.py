"""Write routing, forwarding and cross-region reads on the three-region local cluster (DESIGN.md §5, §6).

us-east-1 is the primary of every example view (the cluster's seed rules). Each
test that needs other rules writes them with its own scope (a key prefix of its
own), so tests do not see each other's rules.
"""

from __future__ import annotations

import asyncio
import json
import os
import re
import subprocess
import sys
import uuid

import orjson

from gateway.clock import SystemClock
from gateway.local.cluster import LocalCluster
from gateway.peer.auth import PeerSigner
from gateway.peer.routes import WRITE_PATH
from gateway.routing.rules import ANY_REGION, SINGLE_PRIMARY, Rule
from gateway.store.lean import open_lean_store
from tests.fakes import FakeClock
from tests.support.cluster_http import (
    REGIONS,
    eventually,
    get,
    obeyed_everywhere,
    put,
    url,
)


async def stored(cluster: LocalCluster, region: str, key: str, view: str = "items") -> dict | None:
    """The item as DynamoDB in ``region`` holds it (strongly consistent), bypassing every gateway."""
    config = cluster.configs[region]
    store = await open_lean_store(region, cluster.regions[region].dynamodb.endpoint)
    try:
        return await store.get_item(config.views[view].table, {"pk": {"S": key}}, consistent=True)
    finally:
        await store.close()


def prefix() -> str:
    return f"t{uuid.uuid4().hex[:8]}-"


async def metric(http, cluster, region: str, name: str, **labels: str) -> float:
    async with http.get(f"{url(cluster, region)}/metrics") as resp:
        text = await resp.text()
    wanted = ",".join(f'{k}="{v}"' for k, v in sorted(labels.items()))
    for line in text.splitlines():
        match = re.match(rf"^{name}\{{(.*)\}} (\S+)$", line)
        if match and ",".join(sorted(match.group(1).split(","))) == wanted:
            return float(match.group(2))
    return 0.0


async def test_a_write_anywhere_lands_in_the_primary_first_then_everywhere(cluster, http):
    for origin in ("eu-west-1", "ap-southeast-1", "us-east-1"):
        key = f"fwd-{origin}-{uuid.uuid4().hex[:6]}"
        answer = await put(http, cluster, origin, key, {"from": origin})
        assert answer["primary"] == "us-east-1"
        assert answer["forwarded"] is (origin != "us-east-1")
        assert answer["version"].endswith(".us-east-1")
        # Acknowledged only once the primary's DynamoDB has it: it is there the moment the answer arrives.
        item = await stored(cluster, "us-east-1", key)
        assert item is not None and item["_region"] == {"S": "us-east-1"} and item["from"] == {"S": origin}
        for region in REGIONS:
            got = await eventually(lambda r=region, k=key: get(http, cluster, r, k), 5, f"{key} in {region}")
            assert got["features"] == {"from": origin} and got["version"] == answer["version"]


async def test_a_forward_to_a_stale_primary_gets_409_and_is_rerouted_exactly_once(cluster, http):
    assert cluster.emulator is not None
    p = prefix()
    scope = f"view#items#prefix#{p}"
    old = Rule(scope, SINGLE_PRIMARY, "us-east-1", epoch=1, version=1)
    await cluster.put_rules([old])
    await obeyed_everywhere(http, cluster, old, 5)
    # eu-west-1 stops hearing about rule changes; the scope moves to ap-southeast-1 everywhere else.
    for source in ("us-east-1", "ap-southeast-1"):
        cluster.emulator.pause(source, "eu-west-1")
    new = Rule(scope, SINGLE_PRIMARY, "ap-southeast-1", epoch=2, version=2)
    await cluster.put_rules([new], ["us-east-1", "ap-southeast-1"])
    await obeyed_everywhere(http, cluster, new, 5, ["us-east-1", "ap-southeast-1"])
    assert (await obeyed_everywhere(http, cluster, old, 1, ["eu-west-1"])) is None
    # Moved without a switch's fence, the new primary first outwaits the regions' promises to the old one
    # (at most a lease plus the drift, gateway/lease/): this write, in its own region, waits for that.
    await put(http, cluster, "ap-southeast-1", f"{p}taken-over", {"v": 0})

    refused_before = await metric(http, cluster, "eu-west-1", "gateway_forward_total", to_region="us-east-1", outcome="not_primary")
    key, idem = f"{p}k1", uuid.uuid4().hex
    answer = await put(http, cluster, "eu-west-1", key, {"v": 1}, idem)
    # eu-west-1 forwarded under epoch 1 to us-east-1, which refused (409 not_primary, with its rule);
    # eu-west-1 re-routed to ap-southeast-1 under epoch 2, where it was written.
    assert answer["applied"] is True and answer["forwarded"] is True
    assert answer["primary"] == "ap-southeast-1" and answer["version"].startswith("2.")
    refused_after = await metric(http, cluster, "eu-west-1", "gateway_forward_total", to_region="us-east-1", outcome="not_primary")
    assert refused_after == refused_before + 1
    item = await stored(cluster, "ap-southeast-1", key)
    assert item is not None and item["_req"] == {"S": idem} and item["_epoch"] == {"N": "2"}
    assert await stored(cluster, "us-east-1", key) is None or (await stored(cluster, "us-east-1", key))["_region"] == {"S": "ap-southeast-1"}
    # Exactly once: the caller's retry of the same write is recognised as the one already applied.
    again = await put(http, cluster, "eu-west-1", key, {"v": 1}, idem, must_apply=False)
    assert again["applied"] is False and again["reason"] == "duplicate"


async def test_prefix_scopes_send_two_tenants_to_two_primaries_and_any_region_writes_locally(cluster, http):
    a, b, c = prefix(), prefix(), prefix()
    rules = [
        Rule(f"view#items#prefix#{a}", SINGLE_PRIMARY, "eu-west-1", epoch=1, version=1),
        Rule(f"view#items#prefix#{b}", SINGLE_PRIMARY, "ap-southeast-1", epoch=1, version=1),
        Rule(f"view#items#prefix#{c}", ANY_REGION, None, epoch=1, version=1),
    ]
    await cluster.put_rules(rules)
    for rule in rules:
        await obeyed_everywhere(http, cluster, rule, 5)
    tenant_a = await put(http, cluster, "us-east-1", f"{a}user", {"t": "a"})
    tenant_b = await put(http, cluster, "us-east-1", f"{b}user", {"t": "b"})
    assert (tenant_a["primary"], tenant_a["forwarded"]) == ("eu-west-1", True)
    assert (tenant_b["primary"], tenant_b["forwarded"]) == ("ap-southeast-1", True)
    assert (await stored(cluster, "eu-west-1", f"{a}user"))["_region"] == {"S": "eu-west-1"}
    assert (await stored(cluster, "ap-southeast-1", f"{b}user"))["_region"] == {"S": "ap-southeast-1"}
    # The view's own rule still applies to keys outside both prefixes.
    other = await put(http, cluster, "eu-west-1", f"x{a}user", {"t": "x"})
    assert other["primary"] == "us-east-1"
    # any_region: each region applies its own writes.
    for region in REGIONS:
        local = await put(http, cluster, region, f"{c}{region}", {"t": region})
        assert local["forwarded"] is False and local["primary"] == region and local["version"].endswith(f".{region}")


async def test_forged_tampered_expired_and_replayed_peer_requests_are_refused(cluster, http):
    primary = f"http://{cluster.configs['us-east-1'].peer_listen}"
    secret = os.environ["FGW_PEER_SECRET"].encode()
    key = f"auth-{uuid.uuid4().hex[:6]}"

    def body(value: int) -> bytes:
        record = {"key": key, "attributes": {"v": {"N": str(value)}}, "event_ms": 1_000 + value, "idempotency_key": f"{key}-{value}"}
        return orjson.dumps({"view": "items", "scope": "view#items", "epoch": 0, "origin": "eu-west-1", "records": [record]})

    async def send(raw: bytes, headers: dict[str, str], path: str = WRITE_PATH) -> tuple[int, dict]:
        async with http.post(primary + path, data=raw, headers={"Content-Type": "application/json", **headers}) as resp:
            return resp.status, await resp.json()

    refusals = {
        "unsigned": await send(body(1), {}),
        "unsigned, unknown path": await send(body(1), {}, "/internal/v1/anything"),
        "forged": await send(body(1), PeerSigner(b"another-secret-of-enough-bytes", SystemClock()).headers("POST", WRITE_PATH, body(1), to="us-east-1")),
        "tampered": await send(body(2), PeerSigner(secret, SystemClock()).headers("POST", WRITE_PATH, body(1), to="us-east-1")),
        "expired": await send(body(1), PeerSigner(secret, FakeClock(SystemClock().wall_ms() / 1000 - 60)).headers("POST", WRITE_PATH, body(1), to="us-east-1")),
    }
    for what, (status, answer) in refusals.items():
        assert status == 401 and answer["error"]["code"] == "unauthorized", (what, status, answer)
    assert await stored(cluster, "us-east-1", key) is None

    # A correctly signed request is applied once; sent again, it is a replay.
    signed = PeerSigner(secret, SystemClock()).headers("POST", WRITE_PATH, body(3), to="us-east-1")
    status, answer = await send(body(3), signed)
    assert status == 200 and answer["results"][0]["applied"] is True, answer
    async with http.delete(f"{url(cluster, 'us-east-1')}/v1/features/items/{key}", params={"event_time": "1004"}) as resp:
        assert (await resp.json())["applied"] is True
    status, answer = await send(body(3), signed)
    assert status == 401 and "replayed" in answer["error"]["message"]
    # Had the replay been accepted, the deleted entity would be back (deletes keep no tombstone).
    assert await stored(cluster, "us-east-1", key) is None


async def test_strong_reads_go_to_the_primary_and_min_version_reads_get_your_write(cluster, http):
    assert cluster.emulator is not None
    key = f"rd-{uuid.uuid4().hex[:6]}"
    first = await put(http, cluster, "us-east-1", key, {"v": 1})
    await eventually(lambda: get(http, cluster, "eu-west-1", key), 5, "the first value in eu-west-1")
    cluster.emulator.pause("us-east-1", "eu-west-1")
    second = await put(http, cluster, "eu-west-1", key, {"v": 2})  # forwarded to the primary
    assert second["primary"] == "us-east-1"

    eventual = await get(http, cluster, "eu-west-1", key)
    assert eventual["features"] == {"v": 1} and eventual["version"] == first["version"]
    strong = await get(http, cluster, "eu-west-1", key, consistency="strong")
    assert strong["features"] == {"v": 2} and strong["region"] == "us-east-1"
    mine = await get(http, cluster, "eu-west-1", key, min_version=second["version"])
    assert mine["features"] == {"v": 2} and mine["version"] == second["version"]
    # An older min_version is already satisfied locally.
    local = await get(http, cluster, "eu-west-1", key, min_version=first["version"])
    assert local["features"] == {"v": 1} and local["region"] == "eu-west-1"
    # Batch strong reads too.
    async with http.post(
        f"{url(cluster, 'ap-southeast-1')}/v1/read",
        data=orjson.dumps({"view": "items", "keys": [key, "absent-" + key], "consistency": "strong"}),
    ) as resp:
        results = (await resp.json())["results"]
    assert [r["status"] for r in results] == ["PRESENT", "NOT_FOUND"] and results[0]["features"] == {"v": 2}


async def test_a_bad_min_version_is_a_clear_400(cluster, http):
    async with http.get(f"{url(cluster, 'eu-west-1')}/v1/features/items/k", params={"min_version": "yesterday"}) as resp:
        body = await resp.json()
    assert resp.status == 400 and body["error"]["code"] == "invalid_request" and "min_version" in body["error"]["message"]


def gatewayctl(cluster: LocalCluster, *args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "gateway.ctl.main", "--local", "--state-dir", str(cluster.state_dir), *args],
        capture_output=True, text=True, timeout=60,
    )


async def test_gatewayctl_moves_a_primary_every_gateway_obeys_within_2s_and_a_conflicting_edit_is_refused(cluster, http):
    scope = f"view#items#prefix#{prefix()}"
    created = gatewayctl(cluster, "rules", "set", scope, "--primary", "us-east-1", "--yes")
    assert created.returncode == 0, created.stderr
    rule = Rule(scope, SINGLE_PRIMARY, "us-east-1", epoch=json.loads(gatewayctl(cluster, "--json", "rules", "get", scope).stdout)["epoch"])
    await obeyed_everywhere(http, cluster, rule, 5)

    moved = gatewayctl(cluster, "rules", "set", scope, "--primary", "eu-west-1", "--yes")
    assert moved.returncode == 0, moved.stderr
    assert re.search(r"primary:\s+us-east-1 -> eu-west-1", moved.stdout), moved.stdout
    after = json.loads(gatewayctl(cluster, "--json", "rules", "get", scope).stdout)
    assert after["primary"] == "eu-west-1" and after["epoch"] == rule.epoch + 1
    started = asyncio.get_running_loop().time()
    await obeyed_everywhere(http, cluster, Rule(scope, SINGLE_PRIMARY, "eu-west-1", epoch=rule.epoch + 1), 2.0)
    assert asyncio.get_running_loop().time() - started <= 2.0
    answer = await put(http, cluster, "ap-southeast-1", scope.rsplit("#", 1)[1] + "k", {"v": 1})
    assert answer["primary"] == "eu-west-1" and answer["forwarded"] is True

    # Two operators edit from the same version: one edit lands, the other is refused and writes nothing.
    version = str(after["version"])
    first, second = await asyncio.gather(
        asyncio.to_thread(gatewayctl, cluster, "rules", "set", scope, "--primary", "ap-southeast-1", "--expect-version", version, "--yes"),
        asyncio.to_thread(gatewayctl, cluster, "rules", "set", scope, "--primary", "us-east-1", "--expect-version", version, "--yes"),
    )
    assert sorted([first.returncode, second.returncode]) == [0, 1], (first, second)
    loser = first if first.returncode else second
    # Refused whichever way it lost: read before the other edit landed (the race) or after (a stale version).
    assert f"expected version {version}, found version {int(version) + 1}" in loser.stderr, loser.stderr
    assert "nothing was written" in loser.stderr
    final = json.loads(gatewayctl(cluster, "--json", "rules", "get", scope).stdout)
    winner_primary = "ap-southeast-1" if first.returncode == 0 else "us-east-1"
    assert final["primary"] == winner_primary and final["version"] == after["version"] + 1


async def test_gatewayctl_refuses_an_unknown_region_with_a_clear_line(cluster):
    refused = gatewayctl(cluster, "rules", "set", "view#items", "--primary", "us-west-2", "--yes")
    assert refused.returncode == 1 and refused.stderr.count("\n") == 1
    assert "'us-west-2' is not a known region" in refused.stderr
