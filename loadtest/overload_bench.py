"""More callers than a gateway has slots: every refusal must be a JSON 503 ``overloaded``, and memory comes back.

One DynamoDB Local and one gateway process (``gateway.max_concurrent_requests``
set by ``--slots``), one seeded entity, and ``--callers`` keep-alive callers on
raw loopback sockets reading it in a loop for ``--seconds``. Printed: every
distinct answer with its count (``ok``, ``503 overloaded``; anything else is a
failure: a 500, a non-JSON answer, a 503 without ``Retry-After``), the p50/p99
latency of the answers, and the gateway's RSS before, at the peak and after.
Exit status 1 when any answer was neither ``ok`` nor ``503 overloaded``, or the
RSS after the run is more than 20 MB above the RSS before it.

The callers share the machine's two cores with the gateway and DynamoDB Local:
the figures are about correctness under overload, not the gateway's capacity
(``make bench`` measures that). Run: ``python -m loadtest.overload_bench``
(the issue's figure: ``--callers 2000 --seconds 20``). Only 127.0.0.1 is
contacted; every process started is stopped by PID.
"""

from __future__ import annotations

import argparse
import asyncio
import resource
import secrets
import sys
import tempfile
import time
from collections import Counter
from pathlib import Path

import orjson
import uvloop

from gateway.api.protocol import TRIM_INTERVAL
from gateway.local.cluster import use_local_credentials
from gateway.local.dynamodb_local import DynamoDBLocal, free_port
from gateway.local.gateway_process import GatewayProcess
from gateway.routing.rules import DEFAULT_SCOPE, SINGLE_PRIMARY, Rule
from gateway.store.botocore import BotocoreStore
from loadtest.stats import percentile

#: Most the gateway's RSS may grow over a run and keep afterwards.
RSS_SLACK_KIB = 20 * 1024


def rss_kib(pid: int) -> int:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1])
    raise RuntimeError(f"no VmRSS for pid {pid}")


async def read_answer(reader: asyncio.StreamReader) -> tuple[int, dict[str, str], bytes]:
    """One HTTP/1.1 answer with a Content-Length (the gateway's every answer has one)."""
    head = await reader.readuntil(b"\r\n\r\n")
    lines = head.decode("latin-1").split("\r\n")
    headers = {name.lower(): value for name, _, value in (line.partition(": ") for line in lines[1:] if line)}
    body = await reader.readexactly(int(headers.get("content-length", "0")))
    return int(lines[0].split()[1]), headers, body


def outcome(status: int, headers: dict[str, str], body: bytes, expected: dict) -> str:
    """What one answer was, in a word a summary can count."""
    if status == 200:
        return "ok" if orjson.loads(body).get("features") == expected else "200 with a wrong body"
    if headers.get("content-type") != "application/json":
        return f"{status} not JSON"
    code = orjson.loads(body).get("error", {}).get("code")
    return f"{status} {code}" + ("" if "retry-after" in headers else " without Retry-After")


async def overload(host: str, port: int, path: str, expected: dict, callers: int, seconds: float) -> tuple[Counter, list[float]]:
    """``callers`` keep-alive callers GETting ``path`` in a loop for ``seconds``: the outcomes and latencies."""
    outcomes: Counter = Counter()
    latencies: list[float] = []
    request = f"GET {path} HTTP/1.1\r\nHost: {host}:{port}\r\n\r\n".encode()
    stop = time.monotonic() + seconds

    async def caller() -> None:
        reader, writer = await asyncio.open_connection(host, port)
        try:
            while time.monotonic() < stop:
                started = time.perf_counter()
                writer.write(request)
                status, headers, body = await read_answer(reader)
                latencies.append(time.perf_counter() - started)
                outcomes[outcome(status, headers, body, expected)] += 1
                if headers.get("connection") == "close":
                    return
        finally:
            writer.close()

    await asyncio.wait_for(asyncio.gather(*(caller() for _ in range(callers))), seconds + 60)
    return outcomes, latencies


def gateway_config(endpoint: str, suffix: str, slots: int) -> str:
    return f"""[gateway]
region = "us-east-1"
listen = "127.0.0.1:{free_port()}"
peer_listen = "127.0.0.1:{free_port()}"
max_concurrent_requests = {slots}
[dynamodb]
endpoint_url = "{endpoint}"
[members]
table = "members_{suffix}"
[routing]
table = "routing_{suffix}"
[views.items]
table = "features_items_{suffix}"
"""


async def run(args: argparse.Namespace) -> int:
    use_local_credentials()
    tmp = Path(tempfile.mkdtemp(prefix="fgw-overload-bench-"))
    # The callers' sockets: one per caller, plus the process's own.
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    resource.setrlimit(resource.RLIMIT_NOFILE, (min(hard, max(soft, args.callers + 256)), hard))
    ddb = DynamoDBLocal(log_path=tmp / "dynamodb-local.log").start()
    proc = None
    try:
        suffix = "ob"
        store = await BotocoreStore.open("us-east-1", ddb.endpoint)
        try:
            for table in (f"features_items_{suffix}", f"members_{suffix}", f"routing_{suffix}"):
                await store.create_table(table)
            rule = Rule(DEFAULT_SCOPE, SINGLE_PRIMARY, "us-east-1", epoch=0, version=1, updated_by="bench")
            await store.put_item(f"routing_{suffix}", rule.to_item(ts_us=1, region="us-east-1"))
        finally:
            await store.close()
        config = tmp / "gateway.toml"
        config.write_text(gateway_config(ddb.endpoint, suffix, args.slots))
        # A gateway needs a peer secret even alone: it refuses to start without one.
        proc = GatewayProcess(config, log_path=tmp / "gateway.log", env={"FGW_PEER_SECRET": secrets.token_hex(16)}).start()
        listen = proc.config.listen
        reader, writer = await asyncio.open_connection(listen.host, listen.port)
        body = orjson.dumps({"features": {"v": 1}})
        writer.write(f"PUT /v1/features/items/hot HTTP/1.1\r\nHost: {listen}\r\nContent-Length: {len(body)}\r\n\r\n".encode() + body)
        status, _, answer = await read_answer(reader)
        writer.close()
        if status != 200:
            raise RuntimeError(f"seeding failed: HTTP {status} {answer[:200]!r}")
        assert proc.pid is not None
        # A warm-up below and just above the bound first: what the first answers and the first refusals
        # allocate once (lazy imports, caches, metric series) is not memory the crowd keeps.
        await overload(listen.host, listen.port, "/v1/features/items/hot", {"v": 1}, args.slots * 2, 1.0)
        await asyncio.sleep(1.0)
        before = rss_kib(proc.pid)
        print(f"{args.callers} callers for {args.seconds:g}s against {args.slots} slots ...", flush=True)
        peak = before

        async def sample_rss() -> None:
            nonlocal peak
            while True:
                peak = max(peak, rss_kib(proc.pid))  # type: ignore[union-attr]
                await asyncio.sleep(0.2)

        sampler = asyncio.create_task(sample_rss())
        outcomes, latencies = await overload(listen.host, listen.port, "/v1/features/items/hot", {"v": 1}, args.callers, args.seconds)
        sampler.cancel()
        # Closed connections freed, and the gateway's memory trim (gateway/api/protocol.py) has run.
        await asyncio.sleep(TRIM_INTERVAL + 1.0)
        after = rss_kib(proc.pid)
        print()
        total = sum(outcomes.values())
        for name, count in outcomes.most_common():
            print(f"{name:40} {count:9}  {count / total:6.1%}")
        latencies.sort()
        print(f"\nanswers: {total} in {args.seconds:g}s; latency p50 {percentile(latencies, 0.5) * 1000:.1f} ms, "
              f"p99 {percentile(latencies, 0.99) * 1000:.1f} ms")
        print(f"gateway RSS: {before / 1024:.1f} MB before, {peak / 1024:.1f} MB at the peak, {after / 1024:.1f} MB after")
        wrong = {name: n for name, n in outcomes.items() if name not in ("ok", "503 overloaded")}
        failed = bool(wrong) or after - before > RSS_SLACK_KIB or not outcomes["ok"]
        print("result:", "FAILED " + (str(wrong) if wrong else "(memory not given back)") if failed else "every refusal was a JSON 503 overloaded; memory given back")
        return 1 if failed else 0
    finally:
        if proc is not None:
            proc.stop()
        ddb.stop()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--callers", type=int, default=2000)
    parser.add_argument("--seconds", type=float, default=20.0)
    parser.add_argument("--slots", type=int, default=64, help="gateway.max_concurrent_requests")
    sys.exit(uvloop.run(run(parser.parse_args())))


if __name__ == "__main__":
    main()
