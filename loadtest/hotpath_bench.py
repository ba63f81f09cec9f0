"""Per-request cost of the operations features on the hot path, measured side by side in one run.

- ``metrics``: ``Metrics.observe_downstream`` (one counter increment and one histogram
  observation per request) with prometheus-client's in-memory values (one worker) and
  with its multiprocess mmap values (``serve --workers N``); each arm runs in a fresh
  interpreter, since prometheus-client chooses its value class per process.
- ``frontend``: ``Frontend.handle`` around a handler that answers at once (request id,
  deadline, concurrency bound, metrics, access-log sampling), with tracing ``none`` (no
  tracer: no span object is ever made), with a tracer whose sampler drops every trace,
  and with a tracer recording every span into a batch processor (export is a no-op).

- ``signatures``: what a request signs with hashlib's SHA-256 and a keyed ``hmac`` copied
  per message: a forward of a 300-byte body signed and verified (gateway/peer/auth.py),
  and a DynamoDB call signed (gateway/store/sigv4.py); hot (best of ``--rounds`` tight
  loops) and cold: each call after evicting the caches by writing a buffer of 2 MiB
  (the per-core caches) or 24 MiB (most of the shared one), the arms alternating call
  by call; the median is printed. A gateway signs with its caches cooled by the
  processes that ran in between, so the cold figures are the ones a request pays.
- ``parser``: one DynamoDB answer read by the pool's parser (gateway/http1/parser.py)
  and by h11, the kept parser its tests hold it to.
- ``auth``: what bearer-token auth adds to a request (gateway/api/auth.py): the token's
  SHA-256, a lookup, and the view's permission; target under 5 µs.
- ``body``: a typical write body through ``orjson.loads`` and through ``parse_json``
  (gateway/features/values.py), which adds the check that every number is exact.

Prints microseconds per call (best of ``--rounds``). Run: ``python -m loadtest.hotpath_bench``.
"""

from __future__ import annotations

import argparse
import asyncio
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable

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


#: A typical DynamoDB GetItem answer, headers as DynamoDB sends them.
ANSWER = (
    b"HTTP/1.1 200 OK\r\nServer: Server\r\nDate: Tue, 01 Dec 2026 20:00:00 GMT\r\n"
    b"Content-Type: application/x-amz-json-1.0\r\nContent-Length: 120\r\nConnection: keep-alive\r\n"
    b"x-amzn-RequestId: 7K0EXAMPLE0EXAMPLE0EXAMPLE0EXAMPLE0EXAMPLE0EXAMPLE\r\nx-amz-crc32: 2745614147\r\n\r\n"
    + b"x" * 120
)


def best_of(call: Callable[[], object], calls: int, rounds: int) -> float:
    """Microseconds per call: the best of ``rounds`` tight loops of ``calls`` calls."""
    best = float("inf")
    for _ in range(rounds):
        started = time.perf_counter()
        for _ in range(calls):
            call()
        best = min(best, (time.perf_counter() - started) / calls)
    return best * 1e6


def signature_calls() -> dict[str, Callable[[], object]]:
    """What one request signs: a forward (signed by one gateway, verified by the other) and a DynamoDB call."""
    from gateway.clock import SystemClock
    from gateway.peer.auth import PeerSigner, PeerVerifier
    from gateway.store.sigv4 import Credentials, SigV4Signer

    body = bytes(range(256)) + b"x" * 44
    clock = SystemClock()
    signer = PeerSigner(b"peer-secret-of-the-benchmark-0123", clock)
    verifier = PeerVerifier(b"peer-secret-of-the-benchmark-0123", clock, 30.0, region="us-east-1")
    sigv4 = SigV4Signer("http://127.0.0.1:8000", "us-east-1")
    credentials = Credentials("AKIDEXAMPLE", "wJalrXUtnFEMI/K7MDENG+bPxRfiCYEXAMPLEKEY")

    def forward() -> object:
        headers = signer.headers("POST", "/internal/v1/write", body, to="us-east-1")
        verifier.verify("POST", "/internal/v1/write", headers, body)
        return headers

    return {
        "forward signed + verified (peer/auth.py)": forward,
        "DynamoDB call signed (store/sigv4.py)": lambda: sigv4.sign("DynamoDB_20120810.GetItem", body, credentials),
    }


def signature_arms(n: int, rounds: int, cold_calls: int) -> list[tuple[str, float]]:
    """Hot: best of ``rounds`` tight loops. Cold: the median call after evicting 2 MiB or 24 MiB of cache."""
    import statistics

    calls = signature_calls()
    rows = [(f"{name}, hot", best_of(call, n // 10, rounds)) for name, call in calls.items()]
    for megabytes in (2, 24):
        evict = bytearray(megabytes << 20)
        ones = b"\x01" * (len(evict) // 64)
        samples: dict[str, list[int]] = {name: [] for name in calls}
        for _ in range(cold_calls):
            for name, call in calls.items():
                evict[::64] = ones  # one write per cache line
                started_ns = time.perf_counter_ns()
                call()
                samples[name].append(time.perf_counter_ns() - started_ns)
        for name in calls:
            rows.append((f"{name}, cold ({megabytes} MiB evicted)", statistics.median(samples[name]) / 1e3))
    return rows


def parser_arms(n: int, rounds: int) -> list[tuple[str, float]]:
    """One DynamoDB answer through the pool's parser and through h11 (the parser tests' oracle)."""
    import h11

    from gateway.http1.parser import ResponseParser

    parser = ResponseParser()

    def ours() -> object:
        return parser.feed(ANSWER)

    def theirs() -> object:
        conn = h11.Connection(h11.CLIENT)
        conn.send(h11.Request(method="POST", target="/", headers=[("Host", "x"), ("Content-Length", "0")]))
        conn.send(h11.EndOfMessage())
        conn.receive_data(ANSWER)
        while not isinstance(event := conn.next_event(), h11.EndOfMessage):
            pass
        return event

    return [("answer parsed, gateway/http1/parser.py", best_of(ours, n // 10, rounds)),
            ("answer parsed, h11", best_of(theirs, n // 10, rounds))]


def body_arms(n: int, rounds: int) -> list[tuple[str, float]]:
    """A typical write body parsed by orjson alone and by ``parse_json`` (orjson plus the exact-number check)."""
    import orjson

    from gateway.features.values import parse_json

    body = orjson.dumps({"features": {"age": 41, "country": "FR", "score": 0.93, "segments": ["a", "b"], "ok": True},
                         "event_time": "2026-12-01T20:00:00Z"})
    return [("write body parsed, orjson.loads", best_of(lambda: orjson.loads(body), n, rounds)),
            ("write body parsed, parse_json (numbers checked exact)", best_of(lambda: parse_json(body), n, rounds))]


def auth_arms(n: int, rounds: int) -> list[tuple[str, float]]:
    """What auth adds to a request: the bearer token found (one SHA-256 and a lookup) and its view allowed."""
    import hashlib
    import os

    from gateway.api.auth import TokenAuthority

    with tempfile.NamedTemporaryFile("w", suffix=".toml", delete=False) as file:
        token = "a-token-of-the-benchmark-0123456789abcdef"
        file.write(f'[tokens.bench]\nsha256 = "{hashlib.sha256(token.encode()).hexdigest()}"\nread = ["users"]\n')
    try:
        authority = TokenAuthority(file.name)
    finally:
        os.unlink(file.name)
    header = f"Bearer {token}"

    def check() -> object:
        principal = authority.authenticate(header)
        authority.authorize(principal, "read", "users")
        return principal

    return [("downstream auth: token found, view allowed", best_of(check, n, rounds))]


def lease_arms(n: int, rounds: int) -> list[tuple[str, float]]:
    """What primacy leases add to a single-primary write: the dispatcher asks whether the lease is valid before
    the write and again after DynamoDB answered (gateway/dispatcher.py), both against the keeper's holder."""
    from gateway.clock import SystemClock
    from gateway.lease.keeper import LeaseKeeper

    clock = SystemClock()
    regions = ["us-east-1", "eu-west-1", "ap-southeast-1"]
    keeper = LeaseKeeper("us-east-1", regions, None, None, lambda: {}, clock, 3600.0, 0.5)  # type: ignore[arg-type]
    round_id = keeper.holder.ask({"view#users": 4}, clock.monotonic())
    for region in regions:
        keeper.holder.confirmed(round_id, region, ["view#users"])

    def both() -> object:
        return keeper.valid("view#users", 4) and keeper.valid("view#users", 4)

    assert both()
    return [("primacy lease: a held lease checked before and after a write", best_of(both, n, rounds))]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("-n", type=int, default=50_000, help="calls per round")
    parser.add_argument("--rounds", type=int, default=5)
    parser.add_argument("--cold-calls", type=int, default=2000, help="cold calls per signature arm and eviction size")
    args = parser.parse_args()
    print(f"{'arm':64} {'us/call':>8}")
    for mode in ("in-memory", "multiprocess"):
        print(f"{'metrics.observe_downstream, ' + mode:64} {metrics_arm(mode, args.n, args.rounds):8.2f}")
    import uvloop

    for tracing in ("none", "sampled-out", "recording"):
        cost = uvloop.run(frontend_arm(tracing, args.n, args.rounds))
        print(f"{'Frontend.handle, tracing ' + tracing:64} {cost:8.2f}")
    rows = [
        *signature_arms(args.n, args.rounds, args.cold_calls), *parser_arms(args.n, args.rounds),
        *body_arms(args.n, args.rounds), *auth_arms(args.n, args.rounds), *lease_arms(args.n, args.rounds),
    ]
    for name, cost in rows:
        print(f"{name:64} {cost:8.2f}")


if __name__ == "__main__":
    main()
