"""The benchmarks keep working: each runs briefly end to end and prints every figure it promises.

Speed itself is judged from a full `make bench` run (figures in the README), never here.
"""

from __future__ import annotations

import re
import subprocess
import sys

from loadtest.partition_timeline import Timeline
from loadtest.writers import Outcome


def test_read_bench_runs_and_prints_its_figures():
    proc = subprocess.run(
        [sys.executable, "-m", "loadtest.read_bench", "--warmup", "1", "--seconds", "0.3", "--rounds", "1",
         "--concurrency", "1", "4", "--keys", "50"],
        capture_output=True, text=True, timeout=180,
    )
    assert proc.returncode == 0, proc.stdout + proc.stderr
    out = proc.stdout
    for arm in ("lean", "lean-aiohttp", "aiobotocore", "gateway", "gw+aiohttp"):
        for callers in (1, 4):
            assert re.search(rf"^{re.escape(arm)}\s+{callers}\s+\d+\s+\d+\s+[\d.]+\s+[\d.]+", out, re.M), out
    assert re.search(r"gateway p50 added latency at 1 caller\(s\): -?[\d.]+ ms", out), out
    assert re.search(r"gateway CPU per proxied read at 4 callers: \d+ us", out), out


def test_replication_bench_runs_and_prints_its_figures():
    proc = subprocess.run(
        [sys.executable, "-m", "loadtest.replication_bench", "--rate", "30", "--seconds", "1", "--warmup", "0.5"],
        capture_output=True, text=True, timeout=240,
    )
    assert proc.returncode == 0, proc.stdout + proc.stderr
    out = proc.stdout
    assert re.search(r"^us-east-1 -> eu-west-1\s+\d+\s+[\d.]+\s+[\d.]+\s+[\d.]+", out, re.M), out
    assert re.search(r"replication lag over all pairs: p50 [\d.]+ ms, p99 [\d.]+ ms", out), out
    # Every write reached every region: the figure is about delay, never about loss.
    assert "writes missing in some region after idle: 0" in out, out


def test_forward_bench_runs_and_prints_its_figures():
    proc = subprocess.run(
        [sys.executable, "-m", "loadtest.forward_bench", "--writes", "40", "--warmup", "5"],
        capture_output=True, text=True, timeout=240,
    )
    assert proc.returncode == 0, proc.stdout + proc.stderr
    out = proc.stdout
    for arm in ("local-primary", "forwarded"):
        assert re.search(rf"^{arm}\s+40\s+[\d.]+\s+[\d.]+\s+[\d.]+", out, re.M), out
    assert re.search(r"forwarding adds at p50: -?[\d.]+ ms", out), out


def test_switch_bench_runs_and_prints_its_figures():
    proc = subprocess.run(
        [sys.executable, "-m", "loadtest.switch_bench", "--rate", "40", "--warmup", "1", "--before", "1", "--after", "1", "--keys", "20"],
        capture_output=True, text=True, timeout=240,
    )
    assert proc.returncode == 0, proc.stdout + proc.stderr
    out = proc.stdout
    for label in ("inside switch", "outside switch"):
        assert re.search(rf"^{label}\s+\d+\s+[\d.]+\s+[\d.]+\s+[\d.]+", out, re.M), out
    # The figures are of a switch that happened: a refused or aborted one prints them too.
    assert re.search(r"^switch duration: [\d.]+ s \(committed\)", out, re.M), out
    assert "switch refused" not in out and "result: clean" in out, out
    assert "errors: 0" in out and "lost: 0" in out, out


def test_hotpath_bench_runs_and_prints_every_arm():
    proc = subprocess.run(
        [sys.executable, "-m", "loadtest.hotpath_bench", "-n", "200", "--rounds", "1", "--cold-calls", "3"],
        capture_output=True, text=True, timeout=120,
    )
    assert proc.returncode == 0, proc.stdout + proc.stderr
    arms = [
        "metrics.observe_downstream, in-memory", "metrics.observe_downstream, multiprocess",
        "Frontend.handle, tracing none", "Frontend.handle, tracing sampled-out", "Frontend.handle, tracing recording",
        *(f"{call}, {when}" for call in ("forward signed + verified (peer/auth.py)", "DynamoDB call signed (store/sigv4.py)")
          for when in ("hot", "cold (2 MiB evicted)", "cold (24 MiB evicted)")),
        "answer parsed, gateway/http1/parser.py", "answer parsed, h11",
        "write body parsed, orjson.loads", "write body parsed, parse_json (numbers checked exact)",
        "downstream auth: token found, view allowed",
    ]
    for arm in arms:
        assert re.search(rf"^{re.escape(arm)}\s+\d+\.\d\d$", proc.stdout, re.M), f"{arm} missing:\n{proc.stdout}"


def test_overload_bench_runs_and_prints_its_figures():
    proc = subprocess.run(
        [sys.executable, "-m", "loadtest.overload_bench", "--callers", "60", "--seconds", "1", "--slots", "4"],
        capture_output=True, text=True, timeout=180,
    )
    assert proc.returncode == 0, proc.stdout + proc.stderr
    out = proc.stdout
    assert re.search(r"^ok\s+\d+", out, re.M) and re.search(r"^503 overloaded\s+\d+", out, re.M), out
    assert re.search(r"latency p50 [\d.]+ ms, p99 [\d.]+ ms", out), out
    assert re.search(r"gateway RSS: [\d.]+ MB before, [\d.]+ MB at the peak, [\d.]+ MB after", out), out
    assert "every refusal was a JSON 503 overloaded" in out, out


def test_client_bench_runs_and_prints_every_arm_side_by_side():
    proc = subprocess.run(
        [sys.executable, "-m", "loadtest.client_bench", "--warmup", "1", "--seconds", "0.3", "--rounds", "1",
         "--concurrency", "1", "4", "--keys", "50"],
        capture_output=True, text=True, timeout=180,
    )
    assert proc.returncode == 0, proc.stdout + proc.stderr
    out = proc.stdout
    rows = [("raw-sync", 1), ("httpx-sync", 1), ("client-sync", 1)] + [
        (arm, callers) for arm in ("raw-async", "httpx-async", "client-async", "session-async") for callers in (1, 4)]
    for arm, callers in rows:
        assert re.search(rf"^{re.escape(arm)}\s+{callers}\s+\d+\s+\d+\s+[\d.]+\s+[\d.]+\s+\d+$", out, re.M), out
    for kind, callers in (("sync", 1), ("async", 1), ("async", 4)):
        assert re.search(rf"^client-{kind} over raw-{kind} at {callers} caller\(s\): [+-]\d+ us CPU per call", out, re.M), out


def test_partition_bench_shows_no_two_primaries_nothing_lost_and_draws_its_timeline(tmp_path):
    png = tmp_path / "timeline.png"
    proc = subprocess.run(
        [sys.executable, "-m", "loadtest.partition_bench", "--rate", "45", "--keys", "20", "--warmup", "1",
         "--before", "1", "--delay", "2.3", "--after", "0.5", "--png", str(png)],
        capture_output=True, text=True, timeout=240,
    )
    assert proc.returncode == 0, proc.stdout + proc.stderr
    out = proc.stdout
    # The timeline's rows (per region: acknowledged by epoch, refused, other) and its events.
    assert re.search(r"^\s*\+0\.00 (\|(\s+(\d+|\.)){5} ){3}\| \+0\.00 cut: us-east-1 partitioned", out, re.M), out
    for event in ("old primary's last ack", "failover", "commit", "writes resumed", "heal"):
        assert re.search(rf"\| .*[+-]\d+\.\d\d {event}", out), f"{event} missing:\n{out}"
    # What the benchmark promises: the old and the new primary never acknowledged at once, and nothing is lost.
    assert re.search(r"^applied as primary by us-east-1\s+\[-[\d.]+, \+[\d.]+\]", out, re.M), out
    assert re.search(r"^applied as primary by eu-west-1\s+\[\+[\d.]+, \+[\d.]+\]", out, re.M), out
    assert "no overlap: yes" in out and "failover: exit 0" in out, out
    assert re.search(r"^lost: 0\s+stale: 0\s+divergent: 0", out, re.M) and "result: clean" in out, out
    assert png.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n" and png.stat().st_size > 10_000, png.stat()
    assert f"timeline PNG: {png}" in out, out


def test_partition_timeline_sees_two_primaries_at_once_and_not_one_after_the_other():
    def ack(by: str, epoch: int, sent: float, seconds: float) -> Outcome:
        return Outcome("eu-west-1", "k", {}, sent, seconds, 200, {"applied": True, "version": f"{epoch}.1.{by}"})

    one_then_other = [ack("us-east-1", 1, 0.0, 0.1), ack("us-east-1", 1, 1.0, 0.5), ack("eu-west-1", 2, 1.6, 0.1)]
    assert Timeline(["eu-west-1"], one_then_other, cut=0.0).overlaps() == []
    # eu-west-1's first acknowledged write was sent before us-east-1's last one was answered: maybe both at once.
    overlapping = [*one_then_other, ack("eu-west-1", 2, 1.4, 0.5)]
    assert Timeline(["eu-west-1"], overlapping, cut=0.0).overlaps() == [("us-east-1", "eu-west-1")]
