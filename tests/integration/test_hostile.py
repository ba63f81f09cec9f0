"""A real gateway process against hostile and overloaded callers: strangers on the peer port, more callers than slots.

The callers here speak raw HTTP/1.1 over loopback sockets (thousands of them would cost an HTTP client
library more CPU than the gateway under test gets on two cores). Each test bounds its own count and time.
"""

from __future__ import annotations

import asyncio
import hashlib
import os
import subprocess
import sys
import time
from collections import Counter
from pathlib import Path

import orjson

from gateway.clock import SystemClock
from gateway.local.dynamodb_local import free_port
from gateway.local.gateway_process import GatewayProcess
from gateway.peer.auth import PeerSigner
from gateway.peer.routes import ROUTING_PATH
from loadtest.overload_bench import overload, read_answer, rss_kib
from tests.integration.conftest import gateway_toml, unique, write_config
from tests.support.cluster_http import eventually


async def seeded(http, proc: GatewayProcess) -> str:
    """A fresh entity {"v": 1} written through ``proc``; its key."""
    key = unique()
    async with http.put(f"{proc.url}/v1/features/items/{key}", data=orjson.dumps({"features": {"v": 1}})) as resp:
        assert resp.status == 200
    assert proc.pid is not None
    return key


def started(tmp_path: Path, dynamodb_local, table_suffix: str, **gateway: object) -> GatewayProcess:
    path = write_config(tmp_path, gateway_toml(dynamodb_local.endpoint, free_port(), table_suffix, **gateway))
    return GatewayProcess(path, log_path=tmp_path / "gw.log").start()


def held_connections(pid: int, port: int) -> int:
    """TCP connections process ``pid`` holds on its local ``port``, listening sockets aside: its own socket inodes
    (``/proc/PID/fd``) matched against the kernel's table (``/proc/PID/net/tcp``)."""
    inodes = set()
    for fd in os.listdir(f"/proc/{pid}/fd"):
        try:
            target = os.readlink(f"/proc/{pid}/fd/{fd}")
        except OSError:  # closed meanwhile
            continue
        if target.startswith("socket:["):
            inodes.add(target[len("socket:["):-1])
    held = 0
    for line in Path(f"/proc/{pid}/net/tcp").read_text().splitlines()[1:]:
        fields = line.split()
        local_port, state, inode = int(fields[1].rsplit(":", 1)[1], 16), fields[3], fields[9]
        held += local_port == port and state != "0A" and inode in inodes  # 0A: LISTEN
    return held


async def all_closed(pid: int, port: int, what: str, *, kept: int = 0) -> None:
    """Until the gateway holds no more than ``kept`` connections on ``port`` (the test's own keep-alive ones): a
    refused caller's is closed after at most a second of lingering, so 5 s is the bound of a busy machine, not a
    guess at when memory settles."""
    async def closed() -> bool:
        return held_connections(pid, port) <= kept

    await eventually(closed, 5, what)


async def test_strangers_uploading_slowly_to_the_peer_port_take_no_slot_and_no_memory_for_their_bodies(
    tmp_path, dynamodb_local, feature_tables, table_suffix, http
):
    """300 unsigned (well, falsely signed) 1 MiB uploads that never finish, against 8 slots per listener."""
    proc = started(tmp_path, dynamodb_local, table_suffix, max_concurrent_requests=8)
    try:
        key = await seeded(http, proc)
        before = rss_kib(proc.pid)
        peer = proc.config.peer_listen
        head = (
            "POST /internal/v1/write HTTP/1.1\r\nHost: {peer}\r\nContent-Type: application/json\r\n"
            "Content-Length: 1048576\r\nX-Fgw-Timestamp: {ts}\r\nX-Fgw-Nonce: {nonce}\r\n"
            "X-Fgw-Content-Sha256: " + "0" * 64 + "\r\nX-Fgw-Signature: " + "f" * 64 + "\r\n\r\n"
        )
        strangers = []
        for i in range(300):
            reader, writer = await asyncio.open_connection(peer.host, peer.port)
            writer.write(head.format(peer=peer, ts=int(time.time() * 1000), nonce=f"n{i}").encode() + b"x" * 1024)
            strangers.append((reader, writer))
        try:
            answers = await asyncio.wait_for(asyncio.gather(*(read_answer(r) for r, _ in strangers)), 20)
            # Refused on their heads alone: the 1 MiB each announced was never awaited.
            assert Counter(status for status, _, _ in answers) == {401: 300}
            assert all(orjson.loads(body)["error"]["code"] == "unauthorized" for _, _, body in answers)
            # Meanwhile downstream callers are served as if nothing happened.
            for _ in range(20):
                async with http.get(f"{proc.url}/v1/features/items/{key}") as resp:
                    assert resp.status == 200
        finally:
            for _, writer in strangers:
                writer.close()
        await all_closed(proc.pid, peer.port, "every stranger's connection closed by the gateway")
        assert rss_kib(proc.pid) - before < 20 * 1024, (before, rss_kib(proc.pid))
    finally:
        proc.stop()


async def test_a_replay_on_a_fresh_connection_is_refused_by_whichever_worker_gets_it(
    tmp_path, dynamodb_local, feature_tables, table_suffix
):
    """Two workers share the peer port; the kernel hands each new connection to either. One nonce, one answer."""
    path = write_config(tmp_path, gateway_toml(dynamodb_local.endpoint, free_port(), table_suffix))
    proc = GatewayProcess(path, workers=2, log_path=tmp_path / "gw.log").start()
    signer = PeerSigner(os.environ["FGW_PEER_SECRET"].encode(), SystemClock())
    peer = proc.config.peer_listen

    async def once(headers: dict[str, str]) -> tuple[int, dict]:
        reader, writer = await asyncio.open_connection(peer.host, peer.port)
        try:
            lines = "".join(f"{name}: {value}\r\n" for name, value in headers.items())
            writer.write(
                f"POST {ROUTING_PATH} HTTP/1.1\r\nHost: {peer}\r\nContent-Type: application/json\r\n"
                f"Content-Length: 2\r\nConnection: close\r\n{lines}\r\n{{}}".encode()
            )
            status, _, body = await asyncio.wait_for(read_answer(reader), 10)
            return status, orjson.loads(body)
        finally:
            writer.close()

    try:
        # Fresh signatures on fresh connections reach both workers (each answers with its own instance)...
        instances = set()
        for _ in range(20):
            status, answer = await once(signer.headers("POST", ROUTING_PATH, b"{}", to="us-east-1"))
            assert status == 200, answer
            instances.add(answer["instance"])
        assert len(instances) == 2, instances
        # ... and one signature sent on 20 fresh connections is served once, whichever worker sees it first.
        signed = signer.headers("POST", ROUTING_PATH, b"{}", to="us-east-1")
        answers = [await once(signed) for _ in range(20)]
        assert [status for status, _ in answers].count(200) == 1
        refused = [answer["error"] for status, answer in answers if status != 200]
        assert len(refused) == 19 and all(e["code"] == "unauthorized" and "replayed" in e["message"] for e in refused)
    finally:
        proc.stop()


async def test_past_the_bound_callers_get_json_503_overloaded_and_the_gateway_gives_its_memory_back(
    tmp_path, dynamodb_local, feature_tables, table_suffix, http
):
    """400 callers for 3 s against 16 slots (`loadtest/overload_bench.py` runs the issue's 2000 for 20 s)."""
    proc = started(tmp_path, dynamodb_local, table_suffix, max_concurrent_requests=16)
    try:
        key = await seeded(http, proc)
        before = rss_kib(proc.pid)
        listen = proc.config.listen
        kept = held_connections(proc.pid, listen.port)  # the http session's, which seeded the key
        outcomes, _ = await overload(listen.host, listen.port, f"/v1/features/items/{key}", {"v": 1}, 400, 3.0)
        assert set(outcomes) <= {"ok", "503 overloaded"}, outcomes
        assert outcomes["ok"] > 0 and outcomes["503 overloaded"] > 0, outcomes
        await all_closed(proc.pid, listen.port, "every caller's connection closed", kept=kept)
        assert rss_kib(proc.pid) - before < 20 * 1024, (before, rss_kib(proc.pid))
    finally:
        proc.stop()


async def test_with_auth_on_a_token_without_write_permission_writes_nothing(
    tmp_path, dynamodb_local, feature_tables, table_suffix, http
):
    tokens = tmp_path / "tokens.toml"
    tokens.write_text(
        f'[tokens.reader]\nsha256 = "{hashlib.sha256(b"reader-token").hexdigest()}"\nread = ["items"]\n'
        f'[tokens.writer]\nsha256 = "{hashlib.sha256(b"writer-token").hexdigest()}"\nread = ["*"]\nwrite = ["*"]\n'
    )
    path = write_config(tmp_path, gateway_toml(dynamodb_local.endpoint, free_port(), table_suffix) + f'[auth]\nmode = "tokens"\ntokens_file = "{tokens}"\n')
    proc = GatewayProcess(path, log_path=tmp_path / "gw.log").start(wait_for="/healthz")
    try:
        key = unique()
        reader, writer = {"Authorization": "Bearer reader-token"}, {"Authorization": "Bearer writer-token"}
        async with http.put(f"{proc.url}/v1/features/items/{key}", data=orjson.dumps({"features": {"v": 1}}), headers=reader) as resp:
            assert resp.status == 403 and (await resp.json())["error"]["code"] == "forbidden"
        async with http.get(f"{proc.url}/v1/features/items/{key}", headers=writer) as resp:
            assert resp.status == 404  # nothing was written
        async with http.put(f"{proc.url}/v1/features/items/{key}", data=orjson.dumps({"features": {"v": 1}}), headers=writer) as resp:
            assert resp.status == 200
        async with http.get(f"{proc.url}/v1/features/items/{key}") as resp:
            assert resp.status == 401
    finally:
        proc.stop()


async def test_a_bad_tokens_file_stops_the_gateway_with_one_clear_line(tmp_path, dynamodb_local, table_suffix):
    tokens = tmp_path / "tokens.toml"
    tokens.write_text("[tokens.reader]\nsha256 = 'not hex'\n")
    path = write_config(tmp_path, gateway_toml(dynamodb_local.endpoint, free_port(), table_suffix) + f'[auth]\nmode = "tokens"\ntokens_file = "{tokens}"\n')
    proc = subprocess.run([sys.executable, "-m", "gateway.cli", "serve", "--config", str(path)], capture_output=True, text=True, timeout=60)
    lines = proc.stderr.strip().splitlines()
    assert proc.returncode == 2 and len(lines) == 1, proc.stderr
    assert "auth.tokens_file" in lines[0] and "tokens.reader.sha256: must be the 64 hex digits" in lines[0]
