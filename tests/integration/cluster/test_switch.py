"""Planned switches, their abort, follow-the-sun schedules and failover on the three-region cluster (DESIGN.md §7).

Writers in all three regions write continuously through their gateways (open
loop, each write with its own idempotency key) while 200 ms of replication lag
is injected between every pair of regions; the convergence checker then proves
nothing acknowledged was lost and no region holds an older value over a newer one.
"""

from __future__ import annotations

import asyncio
import contextlib
import io
import json
import os
import re
import subprocess
import sys
import time
import uuid
from datetime import datetime, timezone

import orjson

from gateway.clock import SystemClock
from gateway.ctl import main as ctl_main
from gateway.local.cluster import LocalCluster
from gateway.peer.auth import PeerSigner
from gateway.peer.routes import WRITE_PATH
from gateway.routing.rules import SINGLE_PRIMARY, Rule, ScheduleEntry
from gateway.switch.coordinator import Outcome
from loadtest.writers import Writers
from tests.support.cluster_http import (
    REGIONS,
    converge,
    eventually,
    metric_sum,
    obeyed_everywhere,
    put,
    routing_of,
    url,
)
from tests.support.convergence import Write

#: Writes per second over the three regions during the switch tests. The issue asks for >= 200; this 2-core
#: machine saturates well below that (README, "Planned switch"): each write is three DynamoDB Local PutItems
#: of ~2.2 ms CPU. At 60/s the switch's own bounds (<= 3 s, no write held past it) hold with margin.
RATE = 60.0
LAG = 0.2


def lag_everywhere(cluster: LocalCluster, seconds: float) -> None:
    assert cluster.emulator is not None
    for source in REGIONS:
        for target in REGIONS:
            if source != target:
                cluster.emulator.set_lag(source, target, seconds)


def gatewayctl(cluster: LocalCluster, *args: str, env: dict[str, str] | None = None) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "gateway.ctl.main", "--local", "--state-dir", str(cluster.state_dir), *args],
        capture_output=True, text=True, timeout=120, env={**os.environ, **(env or {})},
    )


async def new_scope(http, cluster, primary: str = "us-east-1", wait: bool = True, **kw) -> tuple[str, str]:
    """A prefix scope of its own for one test (epoch 1, last changed long ago): (scope, key prefix)."""
    prefix = f"s{uuid.uuid4().hex[:6]}-"
    rule = Rule(f"view#items#prefix#{prefix}", SINGLE_PRIMARY, primary, epoch=1, version=1,
                updated_by="tests", updated_at=int(time.time() * 1000) - 3_600_000, **kw)
    await cluster.put_rules([rule])
    if wait:
        await obeyed_everywhere(http, cluster, rule, 10)
    return rule.scope, prefix


async def under_load(cluster, keys: list[str], action, *, before: float = 1.5, after: float = 1.5):
    """Writers at RATE in all regions; ``await action()`` in the middle; returns (writers, its result, its span)."""
    urls = {r: url(cluster, r) for r in REGIONS if not cluster.regions[r].stopped}
    writers = Writers(urls, view="items", keys=keys, rate=RATE)
    stop = asyncio.Event()
    load = asyncio.create_task(writers.run(stop))
    await asyncio.sleep(before)
    began = time.monotonic()
    result = await action()
    ended = time.monotonic()
    await asyncio.sleep(after)
    stop.set()
    await load
    return writers, result, (began, ended)


async def switch_in_process(cluster: LocalCluster, scope: str, to: str) -> tuple[Outcome, list[tuple[str, float]]]:
    """What ``gatewayctl switch --force`` does, from this process (``gatewayctl`` itself: the other tests)."""
    steps: list[tuple[str, float]] = []
    async with cluster.coordinator(by="tests", report=lambda step, seconds, detail: steps.append((step, seconds))) as c:
        return await c.switch(scope, to, force=True), steps


async def test_a_planned_switch_under_load_costs_latency_not_errors_or_writes(cluster, http):
    scope, prefix = await new_scope(http, cluster)
    keys = [f"{prefix}{i}" for i in range(60)]
    lag_everywhere(cluster, LAG)
    drained_before = await metric_sum(http, cluster, "gateway_buffer_released_total", scope=scope, reason="drained")
    writers, (outcome, steps), (began, ended) = await under_load(
        cluster, keys, lambda: switch_in_process(cluster, scope, "eu-west-1")
    )
    assert outcome.committed, outcome
    seconds = outcome.seconds
    print("switch steps:", [(step, round(t, 3)) for step, t in steps])
    assert seconds <= 3.0, steps
    assert [step for step, _ in steps] == ["preflight", "switching", "push", "fence", "verify", "commit", "push", "drain"]

    assert len(writers.outcomes) >= RATE * 2.5, len(writers.outcomes)
    assert writers.errors() == []
    drained = await metric_sum(http, cluster, "gateway_buffer_released_total", scope=scope, reason="drained") - drained_before
    assert drained > 0
    slowest = sorted(writers.outcomes, key=lambda o: o.seconds)[-5:]
    assert slowest[-1].seconds <= seconds + 0.1, (seconds, [
        (round(o.seconds, 3), round(o.started - began, 3), round(ended - began, 3), o.region, o.body.get("primary"))
        for o in slowest
    ])
    after = [o for o in writers.outcomes if o.applied and o.started > ended + 0.5]
    assert after and all(o.body["primary"] == "eu-west-1" for o in after)

    lag_everywhere(cluster, 0.0)
    acknowledged = [Write(k, v, version) for k, v, version in writers.acknowledged()]
    await converge(http, cluster, acknowledged, keys, 30)


async def test_a_switch_whose_fence_cannot_be_verified_aborts_and_drains_to_the_old_primary(cluster, http):
    assert cluster.emulator is not None
    scope, prefix = await new_scope(http, cluster)
    keys = [f"{prefix}{i}" for i in range(40)]
    cluster.emulator.pause("us-east-1", "ap-southeast-1")
    # The preflight would refuse a pair this far behind; this test is about the fence, so the operator
    # raises the preflight's limit and lets the fence find out.
    writers, done, _ = await under_load(
        cluster, keys,
        lambda: asyncio.to_thread(
            gatewayctl, cluster, "switch", scope, "--to", "ap-southeast-1", "--force", "--max-duration", "1.5", "--yes",
            env={"FGW_SWITCH__MAX_REPLICATION_LAG": "600"},
        ),
        after=1.0,
    )
    assert done.returncode == 1, done.stdout + done.stderr
    assert "switch aborted: the fence timed out" in done.stdout and "us-east-1 stays primary" in done.stdout
    # While it waited on the fence it said so each second: keys verified of total in the new primary's region.
    assert re.search(r"^verify +\d+\.\d s +fence: \d+/\d+ gateway\(s\) of us-east-1 answered; \d+/\d+ key\(s\) verified "
                     r"in ap-southeast-1$", done.stdout, re.M), done.stdout
    rule = json.loads(gatewayctl(cluster, "--json", "rules", "get", scope).stdout)
    assert (rule["primary"], rule["state"], rule["epoch"]) == ("us-east-1", "active", 2)
    assert writers.errors() == []
    held = [o for o in writers.outcomes if o.applied and o.body["version"].startswith("2.")]
    assert held and all(o.body["primary"] == "us-east-1" for o in held)
    cluster.emulator.resume("us-east-1", "ap-southeast-1")
    acknowledged = [Write(k, v, version) for k, v, version in writers.acknowledged()]
    await converge(http, cluster, acknowledged, keys, 30)


def gatewayctl_here(cluster: LocalCluster, *args: str) -> tuple[int, str]:
    """``gatewayctl --local`` in this process (no interpreter start: the scheduler aborts a switch older than
    2 × switch.max_duration, and this machine starts a Python process in seconds); its exit code and stdout."""
    out = io.StringIO()
    with contextlib.redirect_stdout(out):
        code = ctl_main.run(["--local", "--state-dir", str(cluster.state_dir), *args])
    return code, out.getvalue()


async def test_switch_status_shows_a_running_switch_and_an_abort_from_another_terminal_stops_it(cluster, http):
    assert cluster.emulator is not None
    scope, prefix = await new_scope(http, cluster)
    cluster.emulator.pause("us-east-1", "ap-southeast-1")
    await put(http, cluster, "us-east-1", f"{prefix}acked", {"n": 0})  # never reaches ap-southeast-1: the fence waits
    running = asyncio.create_task(asyncio.to_thread(
        gatewayctl, cluster, "switch", scope, "--to", "ap-southeast-1", "--force", "--max-duration", "30", "--yes",
        "--by", "ann@ops", env={"FGW_SWITCH__MAX_REPLICATION_LAG": "600"},
    ))

    async def switching() -> bool:
        return (await routing_of(http, cluster, "eu-west-1")).get(scope, {}).get("state") == "switching"

    await eventually(switching, 20, "the switch under way")
    # A caller's write in eu-west-1 while the scope switches: held there, not refused.
    held_write = asyncio.create_task(put(http, cluster, "eu-west-1", f"{prefix}held", {"n": 1}))

    async def held() -> bool:
        return await metric_sum(http, cluster, "gateway_buffer_entries", scope=scope) == 1

    await eventually(held, 3, "the write held")

    async def verifying() -> str:
        code, out = await asyncio.to_thread(gatewayctl_here, cluster, "switch", "status", scope)
        return out if code == 0 and "\nstep: verify " in out else ""

    shown = (await eventually(verifying, 3, "switch status showing the fence being verified")).splitlines()
    assert re.fullmatch(rf"{re.escape(scope)}: switching us-east-1 -> ap-southeast-1 \(switch_id \w+, by ann@ops\), "
                        r"\d+\.\d s elapsed", shown[0]), shown
    assert re.fullmatch(r"step: verify \(reported at \d+\.\d s\); fence: 1/1 gateway\(s\) of us-east-1 answered; "
                        r"0/1 key\(s\) verified in ap-southeast-1", shown[1]), shown
    assert shown[2] == "buffered writes per gateway:" and shown[3].split() == ["region", "instance", "held", "outstanding"]
    assert sorted(line.split()[0] + " " + line.split()[2] for line in shown[4:]) == [
        "ap-southeast-1 0", "eu-west-1 1", "us-east-1 0"], shown

    code, out = await asyncio.to_thread(gatewayctl_here, cluster, "switch", "abort", scope, "--yes", "--by", "bob@ops")
    assert code == 0, out
    done = await running
    assert done.returncode == 1, done.stdout + done.stderr
    assert done.stdout.splitlines()[-1] == (
        f"switch aborted by bob@ops while it ran; {scope} is active with us-east-1 primary at epoch 2 (version 3); "
        "nothing more was written"
    )
    answer = await held_write  # released by the abort, to the primary that stayed
    assert answer["applied"] and answer["primary"] == "us-east-1"
    code, out = await asyncio.to_thread(gatewayctl_here, cluster, "switch", "status", scope)
    after = out.splitlines()
    assert after[0] == f"{scope} is not switching: active, us-east-1 primary at epoch 2 (version 3)"
    # How it ended: told by the abort's record or by ann's coordinator noticing it, whichever wrote last.
    assert after[1].startswith("last switch ") and "aborted by bob@ops" in after[1], after
    assert "us-east-1" in after[1] and "epoch 2" in after[1], after
    cluster.emulator.resume("us-east-1", "ap-southeast-1")


async def test_a_scheduled_switch_happens_once_with_three_gateways_contending_for_the_lease(cluster, http):
    now = datetime.now(timezone.utc)
    entry = ScheduleEntry(now.strftime("%H:%M"), "ap-southeast-1")
    # The entry is due already: the scheduler may act before every gateway has even seen the rule.
    scope, prefix = await new_scope(http, cluster, wait=False, schedule=(entry,))
    # No operator: the lease holder among the three gateways notices the due entry and switches.
    switched = Rule(scope, SINGLE_PRIMARY, "ap-southeast-1", epoch=2)
    await obeyed_everywhere(http, cluster, switched, 15)
    rule = json.loads(gatewayctl(cluster, "--json", "rules", "get", scope).stdout)
    assert rule["updated_by"].startswith("scheduler ")
    # Exactly once: two rule writes (switching, commit), and nothing more while the entry stays due.
    assert (rule["epoch"], rule["version"]) == (2, 3)
    await asyncio.sleep(3)
    again = json.loads(gatewayctl(cluster, "--json", "rules", "get", scope).stdout)
    assert (again["epoch"], again["version"], again["primary"]) == (2, 3, "ap-southeast-1")
    answer = await put(http, cluster, "us-east-1", f"{prefix}after", {"v": 1})
    assert answer["primary"] == "ap-southeast-1"


async def forward_under_epoch(http, cluster, region: str, scope: str, epoch: int, key: str) -> tuple[int, dict]:
    """A correctly signed forwarded write to ``region``'s peer API, routed under ``epoch``."""
    raw = orjson.dumps({
        "view": "items", "scope": scope, "epoch": epoch, "origin": "us-east-1",
        "records": [{"key": key, "attributes": {"n": {"N": "-7"}}, "event_ms": int(time.time() * 1000),
                     "idempotency_key": uuid.uuid4().hex}],
    })
    headers = PeerSigner(os.environ["FGW_PEER_SECRET"].encode(), SystemClock()).headers("POST", WRITE_PATH, raw, to=region)
    async with http.post(f"http://{cluster.configs[region].peer_listen}{WRITE_PATH}", data=raw, headers=headers) as resp:
        return resp.status, await resp.json()


async def test_failover_while_the_primary_is_down_and_its_old_epoch_is_refused_when_it_returns(cluster, http):
    scope, prefix = await new_scope(http, cluster, primary="ap-southeast-1")
    keys = [f"{prefix}{i}" for i in range(20)]
    acknowledged = []
    for i, key in enumerate(keys):
        answer = await put(http, cluster, REGIONS[i % 3], key, {"n": i})
        acknowledged.append(Write(key, {"n": i}, answer["version"]))
    assert cluster.emulator is not None
    await cluster.emulator.wait_idle(30)
    await cluster.stop_region("ap-southeast-1")

    # The primary is gone: writes for the scope fail (no gateway of ap-southeast-1 answers).
    async with http.put(f"{url(cluster, 'us-east-1')}/v1/features/items/{keys[0]}", json={"features": {"n": -1}}) as resp:
        assert resp.status == 503 and (await resp.json())["error"]["code"] == "primary_unreachable"

    began = time.monotonic()
    done = gatewayctl(cluster, "failover", scope, "--to", "eu-west-1", "--yes")
    assert done.returncode == 0, done.stdout + done.stderr
    # The primary's gateways do not answer, so no --force is needed; the loss window is the lag sampled at its
    # last heartbeat, not the (growing) age of that heartbeat.
    assert re.search(r"possible loss window: \d+\.\d{3}s \(the replication lag from ap-southeast-1 to eu-west-1 "
                     r"measured at ap-southeast-1's last heartbeat, just before it stopped answering\)$",
                     done.stdout, re.M), done.stdout

    async def writable() -> bool:
        async with http.put(
            f"{url(cluster, 'us-east-1')}/v1/features/items/{keys[1]}", json={"features": {"n": 100}},
            headers={"Idempotency-Key": uuid.uuid4().hex},
        ) as resp:
            body = await resp.json()
            if resp.status == 200 and body["applied"]:
                acknowledged.append(Write(keys[1], {"n": 100}, body["version"]))
                return True
            return False

    await eventually(writable, 5, "writes succeeding after the failover")
    assert time.monotonic() - began <= 5 + 5  # the command itself, then at most 5 s

    # The old primary returns; it learns the new rule before it takes writes, so its old epoch is over.
    await cluster.start_region("ap-southeast-1")
    rules = await routing_of(http, cluster, "ap-southeast-1")
    assert rules[scope]["primary"] == "eu-west-1" and rules[scope]["epoch"] == 2
    # A write still routed under the old epoch is refused by every gateway, the old primary's included.
    for region in ("ap-southeast-1", "eu-west-1"):
        status, body = await forward_under_epoch(http, cluster, region, scope, 1, keys[3])
        assert status == 409 and body["error"]["code"] == "not_primary" and body["rule"]["epoch"] == 2, (region, body)
    answer = await put(http, cluster, "ap-southeast-1", keys[2], {"n": 200})
    assert answer["primary"] == "eu-west-1" and answer["forwarded"] is True
    acknowledged.append(Write(keys[2], {"n": 200}, answer["version"]))
    await converge(http, cluster, acknowledged, keys, 30)
