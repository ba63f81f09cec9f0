"""``feature-gateway local up`` (what ``make run`` runs) as a developer uses it, on free ports.

One cluster, started in a process group of its own as ``make run`` is from a shell: its progress and
ready line, ``local status`` and ``local fault`` from another terminal, the names its children carry in
``ps``, and a SIGTERM to the group that stops every process it started.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import orjson

from gateway.local.cluster import pid_alive
from gateway.store.botocore import BotocoreStore
from tests.support.local_cluster import local_config

FEATURE_GATEWAY = str(Path(sys.executable).parent / "feature-gateway")


def start(config: Path, state: Path, log: Path) -> subprocess.Popen[bytes]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("AWS_")}
    with open(log, "ab") as out:
        return subprocess.Popen(
            [FEATURE_GATEWAY, "local", "up", "--config", str(config), "--state-dir", str(state)],
            stdout=out, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL, env=env, start_new_session=True,
        )


def local(state: Path, *args: str) -> subprocess.CompletedProcess[str]:
    """``feature-gateway local ARGS`` from another terminal."""
    return subprocess.run([FEATURE_GATEWAY, "local", *args, "--state-dir", str(state)],
                          capture_output=True, text=True, timeout=60)


async def test_local_up_serves_the_readme_examples_and_stops_everything(tmp_path, http):
    config, state, log = local_config(tmp_path), tmp_path / "state", tmp_path / "up.log"
    proc = start(config, state, log)
    pids: list[int] = []
    try:
        cluster_file = state / "cluster.json"
        deadline = time.monotonic() + 90
        while "\nready: " not in log.read_text():
            assert proc.poll() is None, log.read_text()
            assert time.monotonic() < deadline, "cluster did not come up in 90 s"
            time.sleep(0.2)
        cluster = json.loads(cluster_file.read_text())
        pids = cluster["pids"]
        gateway = cluster["regions"]["us-east-1"]["downstream"]

        # Progress, step by step, then one ready line and the endpoint table, last.
        lines = log.read_text().splitlines()
        steps = ["starting DynamoDB Local: us-east-1 on ", "DynamoDB Local ", "tables: ", "global-table emulator: ",
                 "starting gateways: ", "gateway ", "ready: 3 region(s) in "]
        at = [next(i for i, line in enumerate(lines) if line.startswith(step)) for step in steps]
        assert at == sorted(at), lines
        ready = lines.index(next(line for line in lines if line.startswith("ready: ")))
        assert f"status page {cluster['control']}/status" in lines[ready]
        table = lines[ready + 1:]
        assert table[0].split()[:2] == ["region", "gateway"] and [row.split()[0] for row in table[1:]] == [
            "us-east-1", "eu-west-1", "ap-southeast-1"]
        assert all(cluster["regions"][row.split()[0]]["downstream"] in row for row in table[1:])
        admin = await BotocoreStore.open("us-east-1", cluster["regions"]["us-east-1"]["dynamodb"])
        try:
            tables = set(await admin.list_tables())
        finally:
            await admin.close()
        assert {"features_users", "features_items", "feature_gateway_routing", "feature_gateway_members"} <= tables

        # The seeded example entity, then a write and a read, as the README shows them with curl.
        async with http.get(f"{gateway}/v1/features/users/u-1001") as resp:
            assert resp.status == 200 and (await resp.json())["features"]["country"] == "DE"
        body = orjson.dumps({"features": {"age": 41, "country": "FR"}, "event_time": "2026-11-23T10:00:00Z"})
        async with http.put(f"{gateway}/v1/features/users/u-42", data=body, headers={"Idempotency-Key": "w-1"}) as resp:
            assert resp.status == 200 and (await resp.json())["applied"] is True
        async with http.get(f"{gateway}/v1/features/users/u-42") as resp:
            assert (await resp.json())["features"] == {"age": 41, "country": "FR"}

        # A second cluster on the same state directory says so instead of failing obscurely.
        second = subprocess.run(
            [sys.executable, "-m", "gateway.cli", "local", "up", "--config", str(config), "--state-dir", str(state)],
            capture_output=True, text=True, timeout=60,
        )
        assert second.returncode == 1
        assert "already running" in second.stderr and "local down" in second.stderr

        # From another terminal: the cluster's status, a fault command on nothing, a status cut short by its reader.
        status = local(state, "status")
        assert status.returncode == 0, status.stderr
        assert status.stdout.startswith(f"running: local up pid {proc.pid}, 3 region(s); status page ")
        assert "active faults: none" in status.stdout and gateway in status.stdout
        nothing = local(state, "fault", "resume", "--from", "us-east-1", "--to", "eu-west-1")
        assert (nothing.returncode, nothing.stdout) == (0, "nothing to resume: replication us-east-1 -> eu-west-1 "
                                                            "is not paused\n")
        cut = subprocess.run(f"{FEATURE_GATEWAY} local fault status --state-dir {state} | head -1", shell=True,
                             capture_output=True, text=True, timeout=60)
        assert (cut.stdout, cut.stderr) == ("region          state    restarts\n", "")

        # Recognisable in ps: each gateway runs `feature-gateway serve --region R`, each DynamoDB Local says its region.
        for name, region in cluster["regions"].items():
            argv = Path(f"/proc/{region['gateway_pid']}/cmdline").read_bytes().split(b"\0")
            assert argv[1].endswith(b"/feature-gateway") and argv[2:5] == [b"serve", b"--region", name.encode()]
            assert Path(f"/proc/{region['gateway_pid']}/comm").read_text() == "feature-gateway\n"
            java = Path(f"/proc/{region['dynamodb_pid']}/cmdline").read_bytes().split(b"\0")
            assert java[1] == f"-Dfeature-gateway.dynamodb-local={name}".encode()
    finally:
        # A signal to the process group, as a terminal's Ctrl-C or `kill -TERM -PGID` sends it to `make run`'s.
        os.killpg(proc.pid, signal.SIGTERM)
        assert proc.wait(60) == 0, log.read_text()
    assert pids and not [p for p in pids if pid_alive(p)]
    assert not (state / "cluster.json").exists()
