"""Per-request cost of the operations features on the hot path, measured side by side in one run.

- ``metrics``: ``Metrics.observe_downstream`` (one counter increment and one histogram
  observation per request) with prometheus-client's in-memory values (one worker) and
  with its multiprocess mmap values (``serve --workers N``); each arm runs in a fresh
  interpreter, since prometheus-client chooses its value class per process.
- ``frontend``: ``Frontend.handle`` around a handler that answers at once (request id,
  deadline, concurrency bound, metrics, access-log sampling), with tracing ``none`` (no
  tracer: no span object is ever made), with a tracer whose sampler drops every trace,
  and with a tracer recording every span into a batch processor (export is a no-op).

- ``digests``: SHA-256 of a 300-byte body (what signing a forward or a DynamoDB call
  hashes) through hashlib (OpenSSL) and through gateway/digests.py (CPython's own),
  hot (best of ``--rounds`` tight loops) and cold: each call after evicting the
  caches by writing a buffer of 2 MiB (the per-core caches) or 24 MiB (most of the
  shared one), the two implementations alternating call by call; the median is printed.
  A gateway signs once per request with its caches cooled by the processes that ran
  in between, so the cold figures are the ones a request pays.

Prints microseconds per call (best of ``--rounds``). Run: ``python -m loadtest.hotpath_bench``.
"""

from __future__ import annotations

import argparse
import asyncio
import subprocess
import sys
import tempfile
import time

METRICS_ARM = """
import sys, time
from gateway.obs.metrics import Metrics, use_multiprocess
if sys.argv[1] == "multiprocess":
    use_multiprocess(sys.argv[2])
m = Metrics()
m.prime_downstream({"/v1/features/{view}/{key}": (200,)})
n, best = int(sys.argv[3]), float("inf")
for _ in range(int(sys.argv[4])):
    started = time.perf_counter()
    for _ in range(n):
        m.observe_downstream("/v1/features/{view}/{key}", 200, 0.0012)
    best = min(best, (time.perf_counter() - started) / n)
print(best * 1e6)
"""


def metrics_arm(mode: str, n: int, rounds: int) -> float:
    with tempfile.TemporaryDirectory() as directory:
        out = subprocess.run(
            [sys.executable, "-c", METRICS_ARM, mode, directory, str(n), str(rounds)],
            capture_output=True, text=True, check=True,
        )
    return float(out.stdout)


class _Request:
    """What ``Frontend.handle`` reads of an aiohttp request."""

    method = "GET"
    path = "/v1/features/users/u1"

    def __init__(self, task: asyncio.Task) -> None:
        from multidict import CIMultiDict, CIMultiDictProxy

        self.task = task
        self.headers = CIMultiDictProxy(CIMultiDict({"Host": "127.0.0.1"}))

    def get(self, key, default=None):
        return default


async def frontend_arm(tracing: str, n: int, rounds: int) -> float:
    from aiohttp import web
    from opentelemetry.sdk.trace import TracerProvider
    from opentelemetry.sdk.trace.export import BatchSpanProcessor, SpanExporter, SpanExportResult
    from opentelemetry.sdk.trace.sampling import ALWAYS_OFF, ALWAYS_ON

    from gateway.api.frontend import Frontend
    from gateway.clock import SystemClock
    from gateway.config import from_dict
    from gateway.deadlines import Deadlines
    from gateway.obs.metrics import Metrics

    class Discard(SpanExporter):
        def export(self, spans):  # type: ignore[no-untyped-def]
            return SpanExportResult.SUCCESS

    answer = web.Response(body=b"{}", content_type="application/json")

    class Bench(Frontend):
        def _route(self, method, path):  # type: ignore[no-untyped-def]
            return "/v1/features/{view}/{key}", self.ok, ()

        async def ok(self, request):  # type: ignore[no-untyped-def]
            return answer

    tracer = provider = None
    if tracing != "none":
        provider = TracerProvider(sampler=ALWAYS_ON if tracing == "recording" else ALWAYS_OFF)
        provider.add_span_processor(BatchSpanProcessor(Discard()))
        tracer = provider.get_tracer("bench")
    config = from_dict({"gateway": {"region": "us-east-1"}, "logs": {"access_sample": 0.0}, "views": {"v": {"table": "tbl"}}})
    frontend = Bench(config, Metrics(), Deadlines(SystemClock()), tracer=tracer)
    request = _Request(asyncio.current_task())  # type: ignore[arg-type]
    best = float("inf")
    for _ in range(rounds):
        started = time.perf_counter()
        for _ in range(n):
            answer.headers.popall("X-Request-Id", None)
            await frontend.handle(request)  # type: ignore[arg-type]
        best = min(best, (time.perf_counter() - started) / n)
    if provider is not None:
        provider.shutdown()
    return best * 1e6


def digest_arms(n: int, rounds: int, cold_calls: int) -> list[tuple[str, float]]:
    import hashlib
    import statistics

    from gateway import digests

    body = bytes(range(256)) + b"x" * 44
    arms = {"hashlib (OpenSSL)": hashlib.sha256, "gateway.digests": digests.sha256}
    rows = []
    for name, sha256 in arms.items():
        best = float("inf")
        for _ in range(rounds):
            started = time.perf_counter()
            for _ in range(n):
                sha256(body).hexdigest()
            best = min(best, (time.perf_counter() - started) / n)
        rows.append((f"sha256, {name}, hot", best * 1e6))
    for megabytes in (2, 24):
        evict = bytearray(megabytes << 20)
        ones = b"\x01" * (len(evict) // 64)
        samples: dict[str, list[int]] = {name: [] for name in arms}
        for _ in range(cold_calls):
            for name, sha256 in arms.items():
                evict[::64] = ones  # one write per cache line
                started_ns = time.perf_counter_ns()
                sha256(body).hexdigest()
                samples[name].append(time.perf_counter_ns() - started_ns)
        for name in arms:
            rows.append((f"sha256, {name}, cold ({megabytes} MiB evicted)", statistics.median(samples[name]) / 1e3))
    return rows


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("-n", type=int, default=50_000, help="calls per round")
    parser.add_argument("--rounds", type=int, default=5)
    parser.add_argument("--cold-calls", type=int, default=2000, help="cold calls per digest arm and eviction size")
    args = parser.parse_args()
    print(f"{'arm':52} {'us/call':>8}")
    for mode in ("in-memory", "multiprocess"):
        print(f"{'metrics.observe_downstream, ' + mode:52} {metrics_arm(mode, args.n, args.rounds):8.2f}")
    import uvloop

    for tracing in ("none", "sampled-out", "recording"):
        cost = uvloop.run(frontend_arm(tracing, args.n, args.rounds))
        print(f"{'Frontend.handle, tracing ' + tracing:52} {cost:8.2f}")
    for name, cost in digest_arms(args.n, args.rounds, args.cold_calls):
        print(f"{name:52} {cost:8.2f}")


if __name__ == "__main__":
    main()
