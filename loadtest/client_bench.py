"""What a Python service pays per call: feature_gateway_client, bare httpx and a raw keep-alive socket, side by side.

One run, one warmed DynamoDB Local, one gateway process; single-key reads of
seeded entities (``GET /v1/features/{view}/{key}``), every arm in interleaved
rounds so that drift hits all arms alike:

- ``raw-sync``:     a blocking keep-alive socket that writes the request and reads the answer by its
                    ``Content-Length``: the floor of what any sync client can spend;
- ``raw-async``:    the gateway's own HTTP/1.1 pool as a minimal keep-alive client, the arm ``loadtest/read_bench.py``
                    calls ``gateway`` (what a service in a compiled language would spend);
- ``httpx-sync``, ``httpx-async``: bare ``httpx.Client.get`` / ``httpx.AsyncClient.get`` and ``json.loads``;
- ``client-sync``, ``client-async``: ``Client.get`` / ``AsyncClient.get`` of feature_gateway_client (deadline
  header, request id, bearer token, retry loop, typed answer);
- ``session-async``: ``AsyncClient.session().get`` (a ``min_version`` looked up and sent, the version kept).

Printed per arm: calls, calls/s, p50/p99 latency, and this process's CPU per call (``time.process_time``,
which counts every thread of this process and none of the gateway's or DynamoDB's). Sync arms run with one
caller (a thread per caller would measure the GIL); async arms with each of ``--concurrency``.

Run it with ``make bench-client`` (``python -m loadtest.client_bench --help`` for the knobs).
Only 127.0.0.1 is contacted; every process started is stopped by PID.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import random
import socket
import sys
import tempfile
import time
from collections.abc import Awaitable, Callable
from pathlib import Path

import httpx
import uvloop
from feature_gateway_client import AsyncClient, Client

from gateway.config import MembersConfig, RoutingConfig
from gateway.http1.pool import Http1Pool
from gateway.local.dynamodb_local import DynamoDBLocal, free_port
from gateway.local.gateway_process import GatewayProcess
from gateway.routing.rules import DEFAULT_SCOPE, SINGLE_PRIMARY, Rule
from gateway.store.botocore import BotocoreStore
from loadtest.stats import percentile

TABLE = "bench_features"
VIEW = "bench"

os.environ.setdefault("AWS_ACCESS_KEY_ID", "bench")
os.environ.setdefault("AWS_SECRET_ACCESS_KEY", "bench")
os.environ.setdefault("AWS_EC2_METADATA_DISABLED", "true")
os.environ.setdefault("FGW_PEER_SECRET", "client-bench-peer-secret-0123456789")

SyncOp = Callable[[str], object]
AsyncOp = Callable[[str], Awaitable[object]]


class RawSocket:
    """A blocking HTTP/1.1 keep-alive client in a few lines: one socket, answers framed by Content-Length only."""

    def __init__(self, address: str) -> None:
        host, port = address.rsplit(":", 1)
        self._host = address
        self._sock = socket.create_connection((host, int(port)))
        self._sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        self._buffer = b""

    def get(self, path: str) -> tuple[int, bytes]:
        self._sock.sendall(f"GET {path} HTTP/1.1\r\nHost: {self._host}\r\n\r\n".encode())
        while b"\r\n\r\n" not in self._buffer:
            self._buffer += self._recv()
        head, _, rest = self._buffer.partition(b"\r\n\r\n")
        length = 0
        for line in head.split(b"\r\n")[1:]:
            name, _, value = line.partition(b":")
            if name.strip().lower() == b"content-length":
                length = int(value)
        while len(rest) < length:
            rest += self._recv()
        self._buffer = rest[length:]
        return int(head[9:12]), rest[:length]

    def _recv(self) -> bytes:
        data = self._sock.recv(65536)
        if not data:
            raise ConnectionError("the gateway closed the connection")
        return data

    def close(self) -> None:
        self._sock.close()


def drive_sync(op: SyncOp, keys: list[str], seconds: float) -> tuple[list[float], float, float]:
    """One caller running ``op`` for ``seconds``: latencies, wall time, CPU seconds of this process."""
    latencies: list[float] = []
    rng = random.Random(1)
    perf = time.perf_counter
    cpu, began = time.process_time(), perf()
    deadline = began + seconds
    while perf() < deadline:
        key = keys[rng.randrange(len(keys))]
        started = perf()
        op(key)
        latencies.append(perf() - started)
    return latencies, perf() - began, time.process_time() - cpu


async def drive_async(op: AsyncOp, keys: list[str], concurrency: int, seconds: float) -> tuple[list[float], float, float]:
    """``concurrency`` closed-loop callers running ``op`` for ``seconds``: latencies, wall time, CPU seconds."""
    latencies: list[float] = []
    rng = random.Random(concurrency)
    perf = time.perf_counter
    cpu, began = time.process_time(), perf()
    deadline = began + seconds

    async def caller() -> None:
        while perf() < deadline:
            key = keys[rng.randrange(len(keys))]
            started = perf()
            await op(key)
            latencies.append(perf() - started)

    await asyncio.gather(*(caller() for _ in range(concurrency)))
    return latencies, perf() - began, time.process_time() - cpu


async def seed(endpoint: str, keys: list[str]) -> None:
    admin = await BotocoreStore.open("us-east-1", endpoint)
    try:
        await admin.create_table(TABLE)
        await admin.create_table(RoutingConfig().table)
        await admin.create_table(MembersConfig().table)
        rule = Rule(DEFAULT_SCOPE, SINGLE_PRIMARY, "us-east-1", epoch=0, version=1, updated_by="client_bench")
        await admin.put_item(RoutingConfig().table, rule.to_item(ts_us=1, region="us-east-1"))
        items = [
            {"pk": {"S": k}, "age": {"N": str(i % 90)}, "country": {"S": "DE"}, "score": {"N": "0.25"},
             "_ts": {"N": "1"}, "_region": {"S": "us-east-1"}, "_epoch": {"N": "0"}}
            for i, k in enumerate(keys)
        ]
        for i in range(0, len(items), 25):
            await admin.batch_write_item(TABLE, puts=items[i:i + 25])
    finally:
        await admin.close()


def checked(status: int, body: bytes) -> bytes:
    if status != 200:
        raise RuntimeError(f"the gateway answered {status}: {body[:200]!r}")
    return body


def run(args: argparse.Namespace) -> int:
    tmp = Path(tempfile.mkdtemp(prefix="fgw-client-bench-"))
    ddb = DynamoDBLocal(heap_mb=512, log_path=tmp / "dynamodb.log").start()
    gateway: GatewayProcess | None = None
    runner = asyncio.Runner(loop_factory=uvloop.new_event_loop)
    try:
        keys = [f"user-{i:06d}" for i in range(args.keys)]
        runner.run(seed(ddb.endpoint, keys))
        config = tmp / "bench.toml"
        config.write_text(
            f'[gateway]\nregion = "us-east-1"\nlisten = "127.0.0.1:{free_port()}"\npeer_listen = "127.0.0.1:{free_port()}"\n'
            f'[dynamodb]\nendpoint_url = "{ddb.endpoint}"\n[views.{VIEW}]\ntable = "{TABLE}"\n'
        )
        gateway = GatewayProcess(config, log_path=tmp / "gateway.log").start()
        address = gateway.url.split("//", 1)[1]
        path = f"/v1/features/{VIEW}/"

        raw_sync = RawSocket(address)
        bare_sync = httpx.Client(base_url=gateway.url)
        client_sync = Client(gateway.url)

        async def open_async() -> tuple[Http1Pool, httpx.AsyncClient, AsyncClient]:
            return Http1Pool(gateway.url), httpx.AsyncClient(base_url=gateway.url), AsyncClient(gateway.url)

        raw_async, bare_async, client_async = runner.run(open_async())
        session_async = client_async.session()
        raw_head = f" HTTP/1.1\r\nHost: {address}\r\n\r\n".encode()

        def raw_sync_get(key: str) -> object:
            return json.loads(checked(*raw_sync.get(path + key)))

        def httpx_sync_get(key: str) -> object:
            resp = bare_sync.get(path + key)
            return json.loads(checked(resp.status_code, resp.content))

        def client_sync_get(key: str) -> object:
            return client_sync.get(VIEW, key)

        async def raw_async_get(key: str) -> object:
            return json.loads(checked(*await raw_async.request(b"GET " + (path + key).encode() + raw_head)))

        async def httpx_async_get(key: str) -> object:
            resp = await bare_async.get(path + key)
            return json.loads(checked(resp.status_code, resp.content))

        async def client_async_get(key: str) -> object:
            return await client_async.get(VIEW, key)

        async def session_async_get(key: str) -> object:
            return await session_async.get(VIEW, key)

        sync_arms: dict[str, SyncOp] = {
            "raw-sync": raw_sync_get, "httpx-sync": httpx_sync_get, "client-sync": client_sync_get,
        }
        async_arms: dict[str, AsyncOp] = {
            "raw-async": raw_async_get, "httpx-async": httpx_async_get, "client-async": client_async_get,
            "session-async": session_async_get,
        }

        print(f"warming DynamoDB Local, the gateway and every arm for {args.warmup:g}s ...", flush=True)
        per_arm = args.warmup / (len(sync_arms) + len(async_arms))
        for op in sync_arms.values():
            drive_sync(op, keys, per_arm)
        for aop in async_arms.values():
            runner.run(drive_async(aop, keys, 8, per_arm))

        results: dict[tuple[str, int], tuple[list[float], float, float]] = {}

        def add(name: str, callers: int, measured: tuple[list[float], float, float]) -> None:
            lat, wall, cpu = results.get((name, callers), ([], 0.0, 0.0))
            results[(name, callers)] = (lat + measured[0], wall + measured[1], cpu + measured[2])

        for _ in range(args.rounds):
            for name, op in sync_arms.items():
                add(name, 1, drive_sync(op, keys, args.seconds))
            for concurrency in args.concurrency:
                for name, aop in async_arms.items():
                    add(name, concurrency, runner.run(drive_async(aop, keys, concurrency, args.seconds)))

        async def close_async() -> None:
            await raw_async.close()
            await bare_async.aclose()
            await client_async.close()

        runner.run(close_async())
        raw_sync.close()
        bare_sync.close()
        client_sync.close()

        print()
        print(f"{'arm':<14} {'callers':>7} {'calls':>8} {'calls/s':>9} {'p50 ms':>8} {'p99 ms':>8} {'CPU/call us':>12}")
        p50: dict[tuple[str, int], float] = {}
        cpu_per_call: dict[tuple[str, int], float] = {}
        for (name, callers), (latencies, wall, cpu) in sorted(results.items(), key=lambda kv: (kv[0][1], kv[0][0])):
            latencies.sort()
            p50[(name, callers)] = percentile(latencies, 0.50)
            cpu_per_call[(name, callers)] = cpu / len(latencies) * 1e6
            print(
                f"{name:<14} {callers:>7} {len(latencies):>8} {len(latencies) / wall:>9.0f} "
                f"{p50[(name, callers)] * 1e3:>8.3f} {percentile(latencies, 0.99) * 1e3:>8.3f} "
                f"{cpu_per_call[(name, callers)]:>12.0f}"
            )
        print()
        for kind, callers in [("sync", 1)] + [("async", c) for c in args.concurrency]:
            raw = f"raw-{kind}"
            for arm in (f"httpx-{kind}", f"client-{kind}"):
                print(
                    f"{arm} over {raw} at {callers} caller(s): "
                    f"{(cpu_per_call[(arm, callers)] - cpu_per_call[(raw, callers)]):+.0f} us CPU per call, "
                    f"{(p50[(arm, callers)] - p50[(raw, callers)]) * 1e3:+.3f} ms at p50"
                )
        return 0
    finally:
        runner.close()
        if gateway is not None:
            gateway.stop()
        ddb.stop()


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--keys", type=int, default=1000, help="entities seeded and read at random")
    p.add_argument("--warmup", type=float, default=20.0, help="seconds of warm-up traffic before measuring")
    p.add_argument("--seconds", type=float, default=3.0, help="seconds per arm per round")
    p.add_argument("--rounds", type=int, default=3, help="interleaved rounds per arm")
    p.add_argument("--concurrency", type=int, nargs="+", default=[1, 16], help="closed-loop callers of the async arms")
    return run(p.parse_args(argv))


if __name__ == "__main__":
    sys.exit(main())
