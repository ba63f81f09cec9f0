"""Single-key read benchmark: the lean client, aiobotocore, and a client through the gateway, side by side.

One run, one warmed DynamoDB Local, three arms measured in interleaved rounds
so that drift (JIT, other load on the machine) hits all arms alike:

- ``lean``:        LeanStore.get_item straight to DynamoDB Local, on the HTTP/1.1 pool wire (the default);
- ``lean-aiohttp``: the same on the aiohttp ClientSession wire (DESIGN.md §11's first choice, kept for comparison);
- ``aiobotocore``: aiobotocore's get_item straight to DynamoDB Local;
- ``gateway``:     ``GET /v1/features/{view}/{key}`` on a real gateway process, from a minimal keep-alive
                   HTTP client (what a service in a compiled language would spend);
- ``gw+aiohttp``:  the same through aiohttp's client (what a Python service would spend).

Printed per arm and concurrency: throughput, p50 and p99 latency. Then the two
targets of the foundation issue:

- gateway p50 added latency at low load (concurrency 1) = p50(gateway) − p50(lean), target ≤ 0.5 ms;
- gateway CPU per proxied read = CPU seconds the gateway process used (from
  /proc/PID/stat) ÷ reads it served during the gateway rounds, target ≤ 200 µs.

Run it with ``make bench`` (``python -m loadtest.read_bench --help`` for the knobs).
Only 127.0.0.1 is contacted; every process started is stopped by PID.
"""

from __future__ import annotations

import argparse
import asyncio
import os
import random
import sys
import tempfile
import time
from collections.abc import Awaitable, Callable
from pathlib import Path

import aiohttp
import uvloop
from aiobotocore.config import AioConfig
from aiobotocore.session import get_session

from gateway.config import MembersConfig, RoutingConfig
from gateway.http1.pool import Http1Pool
from gateway.local.dynamodb_local import DynamoDBLocal, free_port
from gateway.local.gateway_process import GatewayProcess
from gateway.routing.rules import DEFAULT_SCOPE, SINGLE_PRIMARY, Rule
from gateway.store.botocore import BotocoreStore
from gateway.store.lean import open_lean_store
from loadtest.stats import percentile

TABLE = "bench_features"
VIEW = "bench"
CLK_TCK = os.sysconf("SC_CLK_TCK")

os.environ.setdefault("AWS_ACCESS_KEY_ID", "bench")
os.environ.setdefault("AWS_SECRET_ACCESS_KEY", "bench")
os.environ.setdefault("AWS_EC2_METADATA_DISABLED", "true")
os.environ.setdefault("FGW_PEER_SECRET", "read-bench-peer-secret-0123456789")

Op = Callable[[str], Awaitable[object]]


def cpu_seconds(pid: int) -> float:
    """User + system CPU of one process, from /proc (fields 14 and 15 of stat)."""
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / CLK_TCK

def cpu_split(pid):
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return int(fields[11]) / CLK_TCK, int(fields[12]) / CLK_TCK


async def drive(op: Op, keys: list[str], concurrency: int, seconds: float) -> tuple[list[float], float]:
    """Run ``op`` from ``concurrency`` closed-loop callers for ``seconds``; latencies and wall time."""
    latencies: list[float] = []
    deadline = time.perf_counter() + seconds
    rng = random.Random(concurrency)

    async def caller() -> None:
        perf = time.perf_counter
        while perf() < deadline:
            key = keys[rng.randrange(len(keys))]
            started = perf()
            await op(key)
            latencies.append(perf() - started)

    started = time.perf_counter()
    await asyncio.gather(*(caller() for _ in range(concurrency)))
    return latencies, time.perf_counter() - started


async def run(args: argparse.Namespace) -> int:
    tmp = Path(tempfile.mkdtemp(prefix="fgw-bench-"))
    ddb = DynamoDBLocal(heap_mb=1024, log_path=tmp / "dynamodb.log").start()
    gateway: GatewayProcess | None = None
    try:
        admin = await BotocoreStore.open("us-east-1", ddb.endpoint)
        await admin.create_table(TABLE)
        # The gateway's own tables: rules (it is the primary of everything) and members.
        await admin.create_table(RoutingConfig().table)
        await admin.create_table(MembersConfig().table)
        rule = Rule(DEFAULT_SCOPE, SINGLE_PRIMARY, "us-east-1", epoch=0, version=1, updated_by="read_bench")
        await admin.put_item(RoutingConfig().table, rule.to_item(ts_us=1, region="us-east-1"))
        keys = [f"user-{i:06d}" for i in range(args.keys)]
        items = [
            {"pk": {"S": k}, "age": {"N": str(i % 90)}, "country": {"S": "DE"}, "score": {"N": "0.25"},
             "_ts": {"N": "1"}, "_region": {"S": "us-east-1"}, "_epoch": {"N": "0"}}
            for i, k in enumerate(keys)
        ]
        await admin.batch_write_item(TABLE, puts=items)
        await admin.close()

        config = tmp / "bench.toml"
        config.write_text(
            f'[gateway]\nregion = "us-east-1"\nlisten = "127.0.0.1:{free_port()}"\npeer_listen = "127.0.0.1:{free_port()}"\n'
            f'[dynamodb]\nendpoint_url = "{ddb.endpoint}"\n[views.{VIEW}]\ntable = "{TABLE}"\n'
        )
        gateway = GatewayProcess(config, log_path=tmp / "gateway.log").start()

        lean = await open_lean_store("us-east-1", ddb.endpoint)
        lean_aiohttp = await open_lean_store("us-east-1", ddb.endpoint, wire="aiohttp")
        session = get_session()
        # aiobotocore pools 10 connections by default; give it one per caller so the arm measures the client.
        pool_config = AioConfig(max_pool_connections=max(args.concurrency))
        async with session.create_client(
            "dynamodb", region_name="us-east-1", endpoint_url=ddb.endpoint, config=pool_config
        ) as botocore_client, \
                aiohttp.ClientSession(connector=aiohttp.TCPConnector(limit=0)) as http:

            async def lean_get(key: str) -> object:
                return await lean.get_item(TABLE, {"pk": {"S": key}})

            async def lean_aiohttp_get(key: str) -> object:
                return await lean_aiohttp.get_item(TABLE, {"pk": {"S": key}})

            async def botocore_get(key: str) -> object:
                return await botocore_client.get_item(TableName=TABLE, Key={"pk": {"S": key}})

            base = f"{gateway.url}/v1/features/{VIEW}/"
            path = f"/v1/features/{VIEW}/"
            # The gateway's own HTTP/1.1 pool doubles as a minimal keep-alive client: what a service in a
            # compiled language would spend, so this arm measures what the gateway adds, not aiohttp's client.
            raw = Http1Pool(gateway.url)
            host = gateway.url.split("//", 1)[1]

            async def gateway_get(key: str) -> object:
                status, body = await raw.request(f"GET {path}{key} HTTP/1.1\r\nHost: {host}\r\n\r\n".encode())
                if status != 200:
                    raise RuntimeError(f"gateway answered {status}: {body[:200]!r}")
                return body

            async def gateway_aiohttp_get(key: str) -> object:
                async with http.get(base + key) as resp:
                    body = await resp.read()
                    if resp.status != 200:
                        raise RuntimeError(f"gateway answered {resp.status}: {body[:200]!r}")
                    return body

            arms: dict[str, Op] = {
                "lean": lean_get, "lean-aiohttp": lean_aiohttp_get, "aiobotocore": botocore_get,
                "gateway": gateway_get, "gw+aiohttp": gateway_aiohttp_get,
            }

            print(f"warming DynamoDB Local and every arm for {args.warmup:g}s ...", flush=True)
            per_arm = args.warmup / len(arms)
            for op in arms.values():
                await drive(op, keys, 8, per_arm)

            results: dict[tuple[str, int], tuple[list[float], float]] = {}
            gateway_cpu: dict[int, float] = {}
            for concurrency in args.concurrency:
                for _ in range(args.rounds):
                    for name, op in arms.items():
                        cpu_before = cpu_seconds(gateway.pid)
                        latencies, wall = await drive(op, keys, concurrency, args.seconds)
                        if name == "gateway":
                            used = cpu_seconds(gateway.pid) - cpu_before
                            gateway_cpu[concurrency] = gateway_cpu.get(concurrency, 0.0) + used
                        lat, total = results.get((name, concurrency), ([], 0.0))
                        results[(name, concurrency)] = (lat + latencies, total + wall)
            await raw.close()
        await lean.close()
        await lean_aiohttp.close()

        print()
        print(f"{'arm':<12} {'callers':>7} {'reads':>8} {'reads/s':>9} {'p50 ms':>8} {'p99 ms':>8} {'gw CPU/read':>12}")
        p50: dict[tuple[str, int], float] = {}
        cpu_per_read: dict[int, float] = {}
        for (name, concurrency), (latencies, wall) in results.items():
            latencies.sort()
            p50[(name, concurrency)] = percentile(latencies, 0.50)
            cpu = ""
            if name == "gateway":
                cpu_per_read[concurrency] = gateway_cpu[concurrency] / len(latencies) * 1e6
                cpu = f"{cpu_per_read[concurrency]:.0f} us"
            print(
                f"{name:<12} {concurrency:>7} {len(latencies):>8} {len(latencies) / wall:>9.0f} "
                f"{percentile(latencies, 0.50) * 1e3:>8.3f} {percentile(latencies, 0.99) * 1e3:>8.3f} {cpu:>12}"
            )
        low, high = min(args.concurrency), max(args.concurrency)
        added_ms = (p50[("gateway", low)] - p50[("lean", low)]) * 1e3
        print()
        print(f"gateway p50 added latency at {low} caller(s): {added_ms:.3f} ms   (target <= 0.5 ms)")
        print(f"gateway CPU per proxied read at {high} callers: {cpu_per_read[high]:.0f} us   (target <= 200 us)")
        ok = added_ms <= 0.5 and cpu_per_read[high] <= 200
        print(f"targets: {'met' if ok else 'NOT met'}")
        return 0 if ok or not args.strict else 1
    finally:
        if gateway is not None:
            gateway.stop()
        ddb.stop()


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--keys", type=int, default=1000, help="entities seeded and read at random")
    p.add_argument("--warmup", type=float, default=30.0, help="seconds of warm-up traffic before measuring")
    p.add_argument("--seconds", type=float, default=3.0, help="seconds per arm per round")
    p.add_argument("--rounds", type=int, default=3, help="interleaved rounds per arm")
    p.add_argument("--concurrency", type=int, nargs="+", default=[1, 16, 64], help="closed-loop callers")
    p.add_argument("--strict", action="store_true", help="exit 1 when a target is not met")
    return uvloop.run(run(p.parse_args(argv)))


if __name__ == "__main__":
    sys.exit(main())
