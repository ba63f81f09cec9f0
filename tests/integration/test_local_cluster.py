"""``feature-gateway local up`` (what ``make run`` runs) as a developer uses it, on free ports."""

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


def start(config: Path, state: Path, log: Path) -> subprocess.Popen[bytes]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("AWS_")}
    with open(log, "ab") as out:
        return subprocess.Popen(
            [sys.executable, "-m", "gateway.cli", "local", "up", "--config", str(config), "--state-dir", str(state)],
            stdout=out, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL, env=env, start_new_session=True,
        )


async def test_local_up_serves_the_readme_examples_and_stops_everything(tmp_path, http):
    config, state, log = local_config(tmp_path), tmp_path / "state", tmp_path / "up.log"
    proc = start(config, state, log)
    pids: list[int] = []
    try:
        cluster_file = state / "cluster.json"
        deadline = time.monotonic() + 90
        while not cluster_file.exists():
            assert proc.poll() is None, log.read_text()
            assert time.monotonic() < deadline, "cluster did not come up in 90 s"
            time.sleep(0.2)
        cluster = json.loads(cluster_file.read_text())
        pids = cluster["pids"]
        gateway = cluster["regions"]["us-east-1"]["downstream"]
        assert "us-east-1" in log.read_text()
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
        assert "already running" in second.stderr
    finally:
        proc.send_signal(signal.SIGTERM)
        assert proc.wait(60) == 0, log.read_text()
    assert pids and not [p for p in pids if pid_alive(p)]
    assert not (state / "cluster.json").exists()
