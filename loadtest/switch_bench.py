"""The planned-switch scenario as a benchmark: what callers see while a scope's primary moves.

A three-region local cluster (config/local.toml on free ports). Writers in all
three regions write continuously through their gateways (open loop, ``--rate``
writes/s in total, each with its own idempotency key) to the keys of one
scope, with ``--lag`` seconds of replication lag injected between every pair
of regions. After ``--before`` seconds, ``gatewayctl switch`` moves the scope's
primary from us-east-1 to eu-west-1 (the coordinator of ``gatewayctl switch``,
run in this process); writing goes on for ``--after`` seconds.

Printed: the switch's steps and duration; the error count; the lost count
(the convergence checker of tests/support, after replication settles); and
write latency p50/p99/max for writes that started inside the switch and
outside it.

Run it with ``make bench-switch`` (``python -m loadtest.switch_bench --help``).
Only 127.0.0.1 is contacted; every process started is stopped by PID.
"""

from __future__ import annotations

import argparse
import asyncio
import sys
import tempfile
import time
import uuid
from pathlib import Path

import aiohttp
import uvloop

from gateway.local.cluster import LocalCluster, relocated_config, use_local_credentials
from gateway.routing.control_table import ControlTableError
from gateway.routing.rules import SINGLE_PRIMARY, Rule
from gateway.switch.coordinator import SwitchError
from loadtest.stats import percentile
from loadtest.writers import Writers, warm_up
from tests.support.cluster_http import obeyed_everywhere, state_of, url
from tests.support.convergence import Write, check, lost_count

REPO = Path(__file__).resolve().parents[1]
REGIONS = ("us-east-1", "eu-west-1", "ap-southeast-1")


def figures(label: str, seconds: list[float]) -> str:
    seconds = sorted(seconds)
    if not seconds:
        return f"{label:<16} {0:>7}"
    return (
        f"{label:<16} {len(seconds):>7} {percentile(seconds, 0.5) * 1e3:>8.1f} {percentile(seconds, 0.99) * 1e3:>8.1f} "
        f"{seconds[-1] * 1e3:>8.1f}"
    )


async def run(args: argparse.Namespace) -> int:
    use_local_credentials()
    tmp = Path(tempfile.mkdtemp(prefix="fgw-switch-bench-"))
    cluster = LocalCluster(str(relocated_config(REPO / "config/local.toml", tmp / "local.toml")), state_dir=tmp / "state")
    try:
        print("starting a three-region cluster ...", flush=True)
        await cluster.up()
        assert cluster.emulator is not None
        prefix = f"b{uuid.uuid4().hex[:6]}-"
        rule = Rule(f"view#items#prefix#{prefix}", SINGLE_PRIMARY, "us-east-1", epoch=1, version=1, updated_at=0)
        await cluster.put_rules([rule])
        async with aiohttp.ClientSession() as http:
            await obeyed_everywhere(http, cluster, rule, 10)
        keys = [f"{prefix}{i}" for i in range(args.keys)]

        # Warm the JVMs, gateways and peer connections at the same rate first (a cold DynamoDB Local answers
        # in hundreds of milliseconds), then let replication settle.
        print(f"warming up for {args.warmup:g}s ...", flush=True)
        await warm_up({r: url(cluster, r) for r in REGIONS}, args.rate, args.warmup, cluster.emulator)
        for s in REGIONS:
            for t in REGIONS:
                if s != t:
                    cluster.emulator.set_lag(s, t, args.lag)

        writers = Writers({r: url(cluster, r) for r in REGIONS}, view="items", keys=keys, rate=args.rate)
        stop = asyncio.Event()
        print(f"writing {args.rate:g}/s over {len(REGIONS)} regions, {args.lag * 1e3:g} ms replication lag ...", flush=True)
        load = asyncio.create_task(writers.run(stop))
        await asyncio.sleep(args.before)
        print()

        def report(step: str, seconds: float, detail: str) -> None:
            print(f"{step:<10} {seconds * 1000:>8.0f} ms  {detail}", flush=True)

        # The coordinator of `gatewayctl switch`, run from this process: an interpreter starting in the
        # middle of the measured window would cost the two cores a second of CPU that is not the switch's.
        async with cluster.coordinator(by="switch_bench", report=report) as coordinator:
            began = time.monotonic()
            try:
                outcome = await coordinator.switch(rule.scope, "eu-west-1", force=True)
            except (SwitchError, ControlTableError) as exc:  # refused, or the control plane decided nothing
                outcome = None
                print(f"switch refused: {exc}")
            ended = time.monotonic()
        await asyncio.sleep(args.after)
        stop.set()
        await load

        for s in REGIONS:
            for t in REGIONS:
                if s != t:
                    cluster.emulator.set_lag(s, t, 0.0)
        await cluster.emulator.wait_idle(60)
        acknowledged = [Write(k, v, version) for k, v, version in writers.acknowledged()]
        async with aiohttp.ClientSession() as http:
            reports = check(acknowledged, await state_of(http, cluster, keys))
        lost = lost_count(reports)
        stale = sum(len(r.stale) + len(r.divergent) for r in reports.values())

        inside = [o.seconds for o in writers.outcomes if began <= o.started <= ended]
        outside = [o.seconds for o in writers.outcomes if not began <= o.started <= ended]
        errors = writers.errors()
        print()
        print(f"{'writes':<16} {'count':>7} {'p50 ms':>8} {'p99 ms':>8} {'max ms':>8}")
        print(figures("inside switch", inside))
        print(figures("outside switch", outside))
        print()
        print(f"switch duration: {ended - began:.2f} s ({'committed' if outcome and outcome.committed else 'NOT committed'})")
        print(f"errors: {len(errors)}" + (f"   first: {errors[0].status} {errors[0].body}" if errors else ""))
        print(f"lost: {lost}   stale or divergent after settling: {stale}")
        ok = outcome is not None and outcome.committed and not errors and lost == 0 and stale == 0
        print(f"result: {'clean' if ok else 'NOT clean'}")
        return 0 if ok or not args.strict else 1
    finally:
        await cluster.down()


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--rate", type=float, default=200.0, help="writes per second over all regions")
    p.add_argument("--lag", type=float, default=0.2, help="replication lag injected between every pair, seconds")
    p.add_argument("--keys", type=int, default=100, help="keys of the scope the writers cycle through")
    p.add_argument("--warmup", type=float, default=10.0, help="seconds of writing (other keys) before measuring")
    p.add_argument("--before", type=float, default=3.0, help="seconds of writing before the switch")
    p.add_argument("--after", type=float, default=3.0, help="seconds of writing after it")
    p.add_argument("--strict", action="store_true", help="exit 1 unless the run is clean")
    return uvloop.run(run(p.parse_args(argv)))


if __name__ == "__main__":
    sys.exit(main())
