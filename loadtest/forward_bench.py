"""Write latency through the gateway: a write in the primary region against a forwarded one, side by side.

A two-region local cluster (us-east-1, eu-west-1 from config/local.toml, on
free ports; DynamoDB Local per region, one gateway per region; us-east-1 is the
primary of every view; no emulator: replication is not on a write's path). One caller with a minimal keep-alive
HTTP client sends PUTs of fresh keys:

- ``local-primary``: to the us-east-1 gateway, which writes to its own DynamoDB;
- ``forwarded``:     to the eu-west-1 gateway, which forwards over the signed peer API
                     to the us-east-1 gateway, which writes.

The arms alternate write by write, so drift (JIT, other load on the machine)
hits both alike. Printed: p50/p99/max per arm, and the forward's added latency at
p50 (forwarded − local-primary); target: <= 1 ms on loopback.

Run it with ``make bench-forward`` (``python -m loadtest.forward_bench --help``).
Only 127.0.0.1 is contacted; every process started is stopped by PID.
"""

from __future__ import annotations

import argparse
import sys
import tempfile
import time
import uuid
from pathlib import Path

import orjson
import uvloop

from gateway.http1.pool import Http1Pool
from gateway.local.cluster import LocalCluster, relocated_config, use_local_credentials
from loadtest.stats import percentile

REPO = Path(__file__).resolve().parents[1]
ARMS = {"local-primary": "us-east-1", "forwarded": "eu-west-1"}


async def run(args: argparse.Namespace) -> int:
    use_local_credentials()
    tmp = Path(tempfile.mkdtemp(prefix="fgw-forward-bench-"))
    config = relocated_config(REPO / "config/local.toml", tmp / "local.toml")
    # No replication between the two regions: it is not on a write's path, and on two cores its
    # JVM and emulator CPU would drown the ~0.5 ms this benchmark is about.
    cluster = LocalCluster(str(config), regions=list(ARMS.values()), state_dir=tmp / "state", replicate=False)
    pools: dict[str, Http1Pool] = {}
    try:
        print("starting a two-region cluster ...", flush=True)
        await cluster.up()
        for arm, region in ARMS.items():
            pools[arm] = Http1Pool(f"http://{cluster.configs[region].listen}", limit=4)
        run_id = uuid.uuid4().hex[:6]
        counter = iter(range(10**9))

        async def put(arm: str) -> float:
            pool = pools[arm]
            body = orjson.dumps({"features": {"score": 0.5, "country": "NZ"}})
            key = f"fw-{run_id}-{next(counter)}"
            request = (
                f"PUT /v1/features/items/{key} HTTP/1.1\r\nHost: {pool.host}:{pool.port}\r\n"
                f"Content-Type: application/json\r\nIdempotency-Key: {key}\r\nContent-Length: {len(body)}\r\n\r\n"
            ).encode() + body
            started = time.perf_counter()
            status, answer = await pool.request(request)
            elapsed = time.perf_counter() - started
            if status != 200 or not orjson.loads(answer)["applied"]:
                raise RuntimeError(f"{arm} write failed: HTTP {status} {answer[:200]!r}")
            return elapsed

        print(f"warming up ({args.warmup} writes per arm) ...", flush=True)
        for _ in range(args.warmup):
            for arm in ARMS:
                await put(arm)
        samples: dict[str, list[float]] = {arm: [] for arm in ARMS}
        for _ in range(args.writes):
            for arm in ARMS:
                samples[arm].append(await put(arm))

        print()
        print(f"{'arm':<16} {'writes':>7} {'p50 ms':>8} {'p99 ms':>8} {'max ms':>8}")
        p50 = {}
        for arm, values in samples.items():
            values.sort()
            p50[arm] = percentile(values, 0.5) * 1e3
            print(
                f"{arm:<16} {len(values):>7} {p50[arm]:>8.2f} {percentile(values, 0.99) * 1e3:>8.2f} {values[-1] * 1e3:>8.2f}"
            )
        added = p50["forwarded"] - p50["local-primary"]
        print()
        print(f"forwarding adds at p50: {added:.2f} ms   (target <= 1 ms)")
        print(f"target: {'met' if added <= 1.0 else 'NOT met'}")
        return 0 if added <= 1.0 or not args.strict else 1
    finally:
        for pool in pools.values():
            await pool.close()
        await cluster.down()


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--writes", type=int, default=3000, help="measured writes per arm")
    p.add_argument("--warmup", type=int, default=300, help="writes per arm before measuring")
    p.add_argument("--strict", action="store_true", help="exit 1 when the target is not met")
    return uvloop.run(run(p.parse_args(argv)))


if __name__ == "__main__":
    sys.exit(main())
