"""Replication lag of the global-table emulator at a steady write rate, with no injected lag.

Three DynamoDB Locals (us-east-1, eu-west-1, ap-southeast-1), one feature
table in each, the emulator between them. Writes of gateway-stamped items
(``_ts`` = now in µs, ``_region``) go to the regions in turn, paced at
``--rate`` per second (open loop: the schedule does not slow down when the
emulator does) for ``--seconds``. The emulator records, per (source, target),
the time from each write's ``_ts`` to its apply in the target; the benchmark
prints p50/p99/max per pair and overall, and checks that every write arrived
in every region.

Target (local-cluster issue): p99 <= 200 ms at 500 writes/s.
Run it with ``python -m loadtest.replication_bench``. Only 127.0.0.1 is contacted;
every process started is stopped by PID.
"""

from __future__ import annotations

import argparse
import asyncio
import os
import sys
import tempfile
import time
from pathlib import Path

import uvloop

from gateway.clock import SystemClock
from gateway.local.dynamodb_local import DynamoDBLocal
from gateway.local.emulator import GlobalTableEmulator
from gateway.store.botocore import BotocoreStore
from gateway.store.lean import open_lean_store
from loadtest.stats import percentile

REGIONS = ("us-east-1", "eu-west-1", "ap-southeast-1")
TABLE = "bench_replication"

os.environ.setdefault("AWS_ACCESS_KEY_ID", "bench")
os.environ.setdefault("AWS_SECRET_ACCESS_KEY", "bench")
os.environ.setdefault("AWS_EC2_METADATA_DISABLED", "true")


WARMUP_STEPS = 4


def cpu_seconds(ddbs: dict[str, DynamoDBLocal]) -> dict[str, float]:
    """CPU seconds used so far by each DynamoDB Local (from /proc; Linux) and by this process (emulator + writer)."""
    tick = os.sysconf("SC_CLK_TCK")
    out: dict[str, float] = {}
    for region, ddb in ddbs.items():
        try:
            with open(f"/proc/{ddb.pid}/stat") as f:
                fields = f.read().rsplit(")", 1)[1].split()
            out[f"jvm {region}"] = (int(fields[11]) + int(fields[12])) / tick
        except (OSError, IndexError, ValueError):
            pass
    times = os.times()
    out["bench+emulator"] = times.user + times.system
    return out


async def run(args: argparse.Namespace) -> int:
    tmp = Path(tempfile.mkdtemp(prefix="fgw-repl-bench-"))
    ddbs = {r: DynamoDBLocal(heap_mb=512, log_path=tmp / f"dynamodb-{r}.log") for r in REGIONS}
    emulator: GlobalTableEmulator | None = None
    stores = {}
    try:
        await asyncio.gather(*(asyncio.to_thread(d.start) for d in ddbs.values()))
        for region, ddb in ddbs.items():
            admin = await BotocoreStore.open(region, ddb.endpoint)
            await admin.create_table(TABLE)
            await admin.close()
            stores[region] = await open_lean_store(region, ddb.endpoint)
        emulator = GlobalTableEmulator({r: d.endpoint for r, d in ddbs.items()}, [TABLE])
        await emulator.start()
        clock = SystemClock()

        put_latency: list[float] = []

        async def write(i: int) -> None:
            region = REGIONS[i % len(REGIONS)]
            ts = clock.wall_us()
            item = {"pk": {"S": f"k{i:07d}"}, "v": {"N": str(i)}, "_ts": {"N": str(ts)}, "_region": {"S": region}}
            started = time.perf_counter()
            await stores[region].put_item(TABLE, item)
            put_latency.append(time.perf_counter() - started)

        async def paced(first: int, count: int, rate: float) -> None:
            started = time.perf_counter()
            tasks = []
            for i in range(count):
                delay = started + i / rate - time.perf_counter()
                if delay > 0:
                    await asyncio.sleep(delay)
                tasks.append(asyncio.create_task(write(first + i)))
            await asyncio.gather(*tasks)

        # A cold DynamoDB Local answers in seconds until the JIT has compiled its hot paths: warm the
        # JVMs up at a rising rate, so the measured phase sees them warm and not still digging out of
        # a backlog the cold start built.
        print(f"warming up for {args.warmup:g}s ...", flush=True)
        warmup = 0
        for step in range(1, WARMUP_STEPS + 1):
            count = int(args.rate * step / WARMUP_STEPS * args.warmup / WARMUP_STEPS)
            await paced(warmup, count, args.rate * step / WARMUP_STEPS)
            warmup += count
        await emulator.wait_idle(60)
        for s in REGIONS:
            for t in REGIONS:
                if s != t:
                    emulator.stats(s, t).delays.clear()
        put_latency.clear()

        total = int(args.rate * args.seconds)
        print(f"writing {total} items at {args.rate:g}/s across {len(REGIONS)} regions ...", flush=True)
        cpu_before = cpu_seconds(ddbs)
        began = time.perf_counter()
        await paced(warmup, total, args.rate)
        elapsed = time.perf_counter() - began
        achieved = total / elapsed
        cpu = {name: (after - cpu_before[name]) / elapsed for name, after in cpu_seconds(ddbs).items()}
        await emulator.wait_idle(120)

        every: list[float] = []
        print()
        print(f"{'pair':<32} {'applied':>8} {'p50 ms':>8} {'p99 ms':>8} {'max ms':>8}")
        for s in REGIONS:
            for t in REGIONS:
                if s == t:
                    continue
                delays = sorted(emulator.stats(s, t).delays)
                every += delays
                print(
                    f"{s + ' -> ' + t:<32} {len(delays):>8} {percentile(delays, 0.5) * 1e3:>8.1f} "
                    f"{percentile(delays, 0.99) * 1e3:>8.1f} {(delays[-1] if delays else float('nan')) * 1e3:>8.1f}"
                )
        every.sort()
        p50, p99 = percentile(every, 0.5) * 1e3, percentile(every, 0.99) * 1e3

        # Every write of the measured phase must be in every region.
        keys = [{"pk": {"S": f"k{warmup + i:07d}"}} for i in range(total)]
        missing = 0
        for store in stores.values():
            found = await store.batch_get_item(TABLE, keys)
            missing += sum(1 for item in found if item is None)
        put_latency.sort()
        print()
        print(
            f"benchmark PutItem (DynamoDB Local's answer time): p50 {percentile(put_latency, 0.5) * 1e3:.1f} ms, "
            f"p99 {percentile(put_latency, 0.99) * 1e3:.1f} ms"
        )
        print(
            f"CPU while writing (cores of {os.cpu_count()}): "
            + ", ".join(f"{name} {share:.2f}" for name, share in cpu.items())
            + f", total {sum(cpu.values()):.2f}"
        )
        print(f"writes/s achieved: {achieved:.0f}   (asked {args.rate:g})")
        print(f"replication lag over all pairs: p50 {p50:.1f} ms, p99 {p99:.1f} ms   (target p99 <= 200 ms)")
        print(f"writes missing in some region after idle: {missing}")
        ok = p99 <= 200 and missing == 0
        print(f"target: {'met' if ok else 'NOT met'}")
        return 0 if ok or not args.strict else 1
    finally:
        if emulator is not None:
            await emulator.stop()
        for store in stores.values():
            await store.close()
        for ddb in ddbs.values():
            ddb.stop()


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--rate", type=float, default=500.0, help="writes per second, spread over the regions")
    p.add_argument("--seconds", type=float, default=20.0, help="measured seconds")
    p.add_argument("--warmup", type=float, default=12.0, help="seconds of writes at a rising rate before measuring")
    p.add_argument("--strict", action="store_true", help="exit 1 when the target is not met")
    return uvloop.run(run(p.parse_args(argv)))


if __name__ == "__main__":
    sys.exit(main())
