"""The primary-partition scenario as a benchmark: what callers in every region see while the primary is cut off.

A three-region local cluster (config/local.toml on free ports; each region on its own loopback address, so
nftables can cut one off). Writers in all three regions write through their gateways (open loop, ``--rate``
writes/s in total; every fourth write to a key of its own, the others cycling over ``--keys`` keys, so both a
dropped write and an older value over a newer one would show) to one scope whose primary is us-east-1, the
control region too. After ``--before`` seconds us-east-1 is partitioned from the other two regions; ``--delay``
seconds later ``gatewayctl --region eu-west-1 failover SCOPE --to eu-west-1 --yes`` runs (gateway/ctl/main.py,
in a thread of this process, so no interpreter start-up lands in the timeline) and waits out the old primary's
lease; ``--after`` seconds after it returned the partition heals, and writing goes on for ``--after`` seconds more.

Printed: per region and per 250 ms, the writes acknowledged (by the epoch of their version) and refused, with
the cut, the old primary's last acknowledgement (where its lease ended, as its callers saw it), the failover's
commit, the first acknowledgement of the new primary ("writes resumed") and the heal; the same as a PNG
(``--png``); the no-overlap check (per region that applied writes as primary, [first send, last answer]: no two
overlap); and the convergence checker's lost and stale counts after every region settled. Exit 1 when two
primaries overlapped, the failover failed, or anything was lost or stale.

Run it with ``make bench-partition`` (``python -m loadtest.partition_bench --help``). Only loopback addresses
are contacted and cut; every process started is stopped by PID, and the cluster's nftables table is removed.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import io
import itertools
import re
import shutil
import sys
import tempfile
import time
import uuid
from collections import Counter
from collections.abc import Iterator
from dataclasses import asdict
from pathlib import Path

import aiohttp
import orjson
import uvloop

from gateway.ctl import main as ctl_main
from gateway.features.items import Version
from gateway.local.cluster import LocalCluster, relocated_config, use_local_credentials
from gateway.routing.rules import SINGLE_PRIMARY, Rule
from loadtest.partition_timeline import Timeline
from loadtest.stats import percentile
from loadtest.writers import Outcome, Writers, warm_up
from tests.support.cluster_http import converge, obeyed_everywhere, state_of, url
from tests.support.convergence import Write, check, lost_count

REPO = Path(__file__).resolve().parents[1]
REGIONS = ("us-east-1", "eu-west-1", "ap-southeast-1")
OLD, NEW = "us-east-1", "eu-west-1"


def scope_keys(prefix: str, cycled: int) -> Iterator[str]:
    """Every fourth key written once, the others cycling over ``cycled`` keys (the writers take them in turn)."""
    for n in itertools.count():
        yield f"{prefix}once-{n}" if n % 4 == 0 else f"{prefix}cycled-{n % cycled}"


class SaidLines(io.TextIOBase):
    """What gatewayctl prints, line by line, each with the ``time.monotonic()`` it was printed at."""

    def __init__(self) -> None:
        self.lines: list[tuple[float, str]] = []
        self._partial = ""

    def write(self, text: str) -> int:
        *done, self._partial = (self._partial + text).split("\n")
        now = time.monotonic()
        self.lines.extend((now, line) for line in done)
        return len(text)

    def first(self, pattern: str) -> tuple[float, str] | None:
        return next(((at, line) for at, line in self.lines if re.match(pattern, line)), None)


def gatewayctl(cluster: LocalCluster, said: SaidLines, *args: str) -> int:
    """``gatewayctl --local`` in this process (stdout and stderr into ``said``; nothing else prints meanwhile)."""
    with contextlib.redirect_stdout(said), contextlib.redirect_stderr(said):
        return ctl_main.run(["--local", "--state-dir", str(cluster.state_dir), *args])


def applied_by(o: Outcome) -> Version | None:
    return Version.parse(o.body["version"]) if o.applied else None


def answered(o: Outcome) -> float:
    return o.started + o.seconds


async def run(args: argparse.Namespace) -> int:
    use_local_credentials()
    tmp = Path(tempfile.mkdtemp(prefix="fgw-partition-bench-"))
    ok = False
    config = relocated_config(REPO / "config/local.toml", tmp / "local.toml")
    cluster = LocalCluster(str(config), state_dir=tmp / "state")
    try:
        print("starting a three-region cluster ...", flush=True)
        await cluster.up()
        assert cluster.emulator is not None
        routing = cluster.configs[OLD].routing
        delay = routing.lease + 1.0 if args.delay is None else args.delay
        prefix = f"p{uuid.uuid4().hex[:6]}-"
        rule = Rule(f"view#items#prefix#{prefix}", SINGLE_PRIMARY, OLD, epoch=1, version=1,
                    updated_by="partition_bench")
        await cluster.put_rules([rule])
        async with aiohttp.ClientSession() as http:
            await obeyed_everywhere(http, cluster, rule, 10)
        urls = {r: url(cluster, r) for r in REGIONS}

        # Warm the JVMs, gateways and peer connections at the same rate first (a cold DynamoDB Local answers in
        # hundreds of milliseconds), then let replication settle.
        print(f"warming up for {args.warmup:g}s ...", flush=True)
        await warm_up(urls, args.rate, args.warmup, cluster.emulator)

        writers = Writers(urls, view="items", keys=scope_keys(prefix, args.keys), rate=args.rate)
        stop = asyncio.Event()
        print(f"writing {args.rate:g}/s over {len(REGIONS)} regions to {rule.scope} (primary {OLD}); "
              f"lease {routing.lease:g} s, max drift {routing.max_drift:g} s ...", flush=True)
        began = time.monotonic()
        load = asyncio.create_task(writers.run(stop))
        await asyncio.sleep(args.before)

        cut_pairs = await cluster.partition(OLD)
        cut = time.monotonic()
        timeline = Timeline(list(REGIONS), writers.outcomes, cut, bucket=args.bucket)
        timeline.add(began, "writing", f"{args.rate:g} writes/s in total")
        timeline.add(cut, "cut", f"{OLD} partitioned from {', '.join(b if a == OLD else a for a, b in cut_pairs)}")
        await asyncio.sleep(delay)

        said = SaidLines()
        command = time.monotonic()
        timeline.add(command, "failover", f"gatewayctl --region {NEW} failover --to {NEW}")
        code = await asyncio.to_thread(gatewayctl, cluster, said, "--region", NEW, "failover", rule.scope,
                                       "--to", NEW, "--yes")
        returned = time.monotonic()
        committed = said.first(r"failover\s+\d+ ms")
        if committed:  # when gatewayctl printed it: the majority had accepted a little earlier
            timeline.add(committed[0], "commit", re.sub(r"^failover\s+\d+ ms\s+", "", committed[1]))
        waited = said.first(r"lease\s+\d+ ms")
        if waited:
            timeline.add(waited[0], "lease waited", f"the old primary's lease ({routing.lease:g} s + drift) is over")
        timeline.add(returned, "ctl done", f"exit {code}")
        await asyncio.sleep(args.after)

        await cluster.heal()
        healed = time.monotonic()
        timeline.add(healed, "heal")
        moved = Rule(rule.scope, SINGLE_PRIMARY, NEW, epoch=rule.epoch + 1, version=rule.version + 1)
        async with aiohttp.ClientSession() as http:
            try:
                await obeyed_everywhere(http, cluster, moved, 10, regions=[OLD])
                timeline.add(time.monotonic(), "old primary follows", f"{OLD} routes by epoch {moved.epoch}")
            except AssertionError as exc:
                print(f"{OLD} did not route by the new rule: {exc}")
        await asyncio.sleep(args.after)
        stop.set()
        timeline.add(time.monotonic(), "stop")
        await load

        outcomes = writers.outcomes
        old_acks = [answered(o) for o in outcomes if (v := applied_by(o)) and v.region == OLD]
        last_old = max(old_acks, default=None)
        if last_old is not None:
            timeline.add(last_old, "old primary's last ack",
                         f"{OLD}'s last acknowledgement (its lease end as callers see it)")
        resumed = {r: min((answered(o) for o in outcomes if o.region == r and (v := applied_by(o)) and v.region == NEW
                           and o.started > command), default=None) for r in REGIONS}
        first_new = min((t for r, t in resumed.items() if r != OLD and t is not None), default=None)
        if first_new is not None:
            timeline.add(first_new, "writes resumed", f"first acknowledgement by {NEW} at epoch {moved.epoch}")
        if resumed[OLD] is not None:
            timeline.add(resumed[OLD], f"{OLD} resumed", f"first write sent in {OLD} acknowledged by {NEW}")

        # Converged: every region holds the newest acknowledged write of every key (bounded), then checked.
        acknowledged = [Write(k, v, version) for k, v, version in writers.acknowledged()]
        keys = sorted({o.key for o in outcomes})
        async with aiohttp.ClientSession() as http:
            try:
                await converge(http, cluster, acknowledged, keys, args.converge)
            except AssertionError as exc:
                print(f"not converged: {exc}"[:2000])
            reports = check(acknowledged, await state_of(http, cluster, keys))
        lost = lost_count(reports)
        stale = sum(len(r.stale) for r in reports.values())
        divergent = sum(len(r.divergent) for r in reports.values())

        print()
        print(timeline.text())
        print()
        print("ctl said:")
        for at, line in said.lines:
            print(f"  {at - cut:+7.2f}  {line}")
        print()
        spans = timeline.spans()
        for region, (first, last) in sorted(spans.items(), key=lambda s: s[1][0]):
            print(f"applied as primary by {region:<15} [{first - cut:+.2f}, {last - cut:+.2f}] s from the cut "
                  f"(first send, last answer)")
        overlaps = timeline.overlaps()
        print("no overlap: " + ("yes" if not overlaps else "NO, " + "; ".join(f"{a} and {b}" for a, b in overlaps)))
        if last_old is not None:
            print(f"{OLD}'s last acknowledgement: {last_old - cut:+.2f} s from the cut "
                  f"(lease {routing.lease:g} s; the issue's bound lease + 1 s: "
                  f"{'met' if last_old - cut <= routing.lease + 1.0 else 'NOT met'})")
        others = [r for r in REGIONS if r != OLD]
        after_command = {r: resumed[r] - command for r in others if resumed[r] is not None}
        if len(after_command) == len(others):
            met = max(after_command.values()) <= routing.lease + 2.0
            print("writes resumed " + ", ".join(f"in {r} {secs:.2f} s" for r, secs in after_command.items())
                  + f" after the failover command (the issue's bound lease + 2 s: {'met' if met else 'NOT met'})")
        else:
            print(f"writes did NOT resume in {', '.join(r for r in others if r not in after_command)}")
        counts = {r: sum(1 for o in outcomes if o.region == r) for r in REGIONS}
        kinds = Counter(f"{o.status} {o.body.get('error', {}).get('code')}" if not o.ok
                        else f"200 not applied ({o.body.get('reason')})" for o in outcomes if not o.applied)
        answered_not_ok = ", ".join(f"{n} {k}" for k, n in kinds.most_common()) or "none"
        print(f"writes: {len(outcomes)} sent ({', '.join(f'{r} {n}' for r, n in counts.items())}), "
              f"{len(acknowledged)} acknowledged; not: {answered_not_ok}")
        # Whether the machine carried the rate: the latency of acknowledged writes before the cut.
        steady = sorted(o.seconds for o in outcomes if o.applied and answered(o) < cut)
        if steady:
            print(f"acknowledged before the cut: p50 {percentile(steady, 0.5) * 1e3:.1f} ms, "
                  f"p99 {percentile(steady, 0.99) * 1e3:.1f} ms, max {steady[-1] * 1e3:.1f} ms ({len(steady)} writes)")
        print(f"failover: exit {code}" + ("" if code == 0 else f"; it said: {said.lines[-1][1] if said.lines else ''}"))
        print(f"lost: {lost}   stale: {stale}   divergent: {divergent}   (keys checked: {len(keys)})")
        if args.outcomes:
            with open(args.outcomes, "wb") as out:
                for o in outcomes:
                    out.write(orjson.dumps({**asdict(o), "started": o.started - cut}) + b"\n")
            print(f"outcomes (times from the cut): {Path(args.outcomes).resolve()}")
        if args.png:
            timeline.png(Path(args.png))
            print(f"timeline PNG: {Path(args.png).resolve()}")
        resumed_everywhere = len(after_command) == len(others)
        ok = not overlaps and code == 0 and resumed_everywhere and lost == 0 and stale == 0 and divergent == 0
        print(f"result: {'clean' if ok else 'NOT clean'}")
        return 0 if ok else 1
    finally:
        await cluster.down()
        if ok:
            shutil.rmtree(tmp, ignore_errors=True)
        else:  # the processes' logs, for finding out why
            print(f"logs: {tmp / 'state' / 'logs'}", file=sys.stderr)


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--rate", type=float, default=150.0, help="writes per second over all regions")
    p.add_argument("--keys", type=int, default=100, help="keys the cycled writes go round")
    p.add_argument("--warmup", type=float, default=8.0, help="seconds of writing (other keys) before measuring")
    p.add_argument("--before", type=float, default=3.0, help="seconds of writing before the cut")
    p.add_argument("--delay", type=float, default=None,
                   help="seconds from the cut to the failover (default: lease + 1)")
    p.add_argument("--after", type=float, default=2.0,
                   help="seconds from the failover's end to the heal, and of writing after the heal")
    p.add_argument("--bucket", type=float, default=0.25, help="seconds per row of the timeline")
    p.add_argument("--converge", type=float, default=30.0, help="seconds every region may take to converge")
    p.add_argument("--outcomes", default="", help="also write every write's outcome here, one JSON a line")
    p.add_argument("--png", default="bench-partition.png", help="where to write the timeline's PNG ('' for none)")
    return uvloop.run(run(p.parse_args(argv)))


if __name__ == "__main__":
    sys.exit(main())
