"""``feature-gateway local up``: a local cluster of regions on this machine.

For each region: a DynamoDB Local on the region's configured port, every
replicated table (one per view, the control table, the members table), and a
gateway process. It writes ``.local/cluster.json`` (regions,
ports, PIDs) for tools, prints the endpoints, and on Ctrl-C or SIGTERM stops
every process it started, by PID, gateways first.

Invariant: at most one cluster per state directory. A second ``up`` finds the
live PIDs in ``cluster.json`` and refuses with a clear message.
"""

from __future__ import annotations

import asyncio
import json
import os
import signal
import sys
import time
import urllib.request
from dataclasses import dataclass
from pathlib import Path
from urllib.parse import urlsplit

import orjson

from gateway.config import Config
from gateway.config import load as load_config
from gateway.local.dynamodb_local import DynamoDBLocal
from gateway.local.gateway_process import GatewayProcess

#: A few entities so the curl examples of the README answer something.
EXAMPLE_DATA = {
    "users": [
        ("u-1001", {"age": 34, "country": "DE", "score": 0.82, "segments": ["sports", "news"]}),
        ("u-1002", {"age": 27, "country": "US", "score": 0.41, "segments": ["music"]}),
    ],
}


#: DynamoDB Local checks that requests are signed, not by whom (and -sharedDb ignores the key).
#: The cluster and its gateways sign with these so the provider chain never looks further,
#: and a developer's real AWS credentials never sign anything sent to a local process.
LOCAL_CREDENTIALS = {
    "AWS_ACCESS_KEY_ID": "local",
    "AWS_SECRET_ACCESS_KEY": "local",
    "AWS_EC2_METADATA_DISABLED": "true",
}


def use_local_credentials() -> None:
    os.environ.update(LOCAL_CREDENTIALS)
    for name in ("AWS_SESSION_TOKEN", "AWS_PROFILE", "AWS_DEFAULT_PROFILE"):
        os.environ.pop(name, None)


#: The control table (DESIGN.md §3); routing rules live here once the routing issue lands.
CONTROL_TABLE = "feature_gateway_routing"


def cluster_tables(config: Config) -> list[tuple[str, str]]:
    """(table, hash key) of every replicated table: one per view, the control table, the members table."""
    tables = [(view.table, view.key_attribute) for view in config.views.values()]
    return tables + [(CONTROL_TABLE, "pk"), (config.members.table, "pk")]


class ClusterError(RuntimeError):
    """The cluster cannot start (already running, a port taken, a process that did not come up)."""


@dataclass
class RegionProcesses:
    region: str
    dynamodb: DynamoDBLocal
    gateway: GatewayProcess | None = None


def pid_alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


class LocalCluster:
    def __init__(self, config_path: str, regions: list[str] | None = None, state_dir: str | Path = ".local") -> None:
        self.config_path = config_path
        base = load_config(config_path)
        # Until the global-table emulator replicates between regions, one region by default:
        # independent regions would answer 404 for each other's writes.
        self.region_names = regions or list(base.regions)[:1]
        unknown = [r for r in self.region_names if r not in base.regions]
        if unknown:
            raise ClusterError(f"{config_path} defines no region {unknown[0]!r}; it has {', '.join(base.regions)}")
        self.configs: dict[str, Config] = {r: load_config(config_path, region=r) for r in self.region_names}
        self.state_dir = Path(state_dir)
        self.state_file = self.state_dir / "cluster.json"
        self.processes: list[RegionProcesses] = []

    def check_not_running(self) -> None:
        if not self.state_file.exists():
            return
        try:
            state = json.loads(self.state_file.read_text())
        except (OSError, ValueError):
            return
        live = [p for p in state.get("pids", []) if pid_alive(p)]
        if live:
            raise ClusterError(
                f"a local cluster is already running (PIDs {', '.join(map(str, live))}, see {self.state_file}); "
                "stop it with Ctrl-C in its terminal or `kill` its first PID"
            )

    def up(self) -> None:
        self.check_not_running()
        logs = self.state_dir / "logs"
        logs.mkdir(parents=True, exist_ok=True)
        try:
            for region in self.region_names:
                port = urlsplit(self.configs[region].dynamodb.endpoint_url or "").port
                if port is None:
                    raise ClusterError(f"region {region} has no dynamodb_endpoint with a port in {self.config_path}")
                ddb = DynamoDBLocal(port, log_path=logs / f"dynamodb-{region}.log")
                if ddb.ping():
                    raise ClusterError(f"port {port} already answers as DynamoDB; is another cluster running?")
                self.processes.append(RegionProcesses(region, ddb.start()))
            asyncio.run(self._create_tables())
            for proc in self.processes:
                proc.gateway = GatewayProcess(
                    self.config_path, region=proc.region, log_path=logs / f"gateway-{proc.region}.log"
                ).start()
            self._seed()
            self._write_state()
        except BaseException:
            self.down()
            raise

    async def _create_tables(self) -> None:
        from gateway.store_botocore import BotocoreStore

        for region in self.region_names:
            config = self.configs[region]
            store = await BotocoreStore.open(region, config.dynamodb.endpoint_url)
            try:
                for table, key_attribute in cluster_tables(config):
                    await store.create_table(table, key_attr=key_attribute)
            finally:
                await store.close()

    def _seed(self) -> None:
        config = self.configs[self.region_names[0]]
        for view_name, entities in EXAMPLE_DATA.items():
            if view_name not in config.views:
                continue
            for key, features in entities:
                req = urllib.request.Request(
                    f"http://{config.listen}/v1/features/{view_name}/{key}",
                    data=orjson.dumps({"features": features}),
                    method="PUT",
                    headers={"Content-Type": "application/json", "Idempotency-Key": f"seed-{key}"},
                )
                with urllib.request.urlopen(req, timeout=5.0):
                    pass

    def pids(self) -> list[int]:
        pids = [os.getpid()]
        for proc in self.processes:
            pids += [p for p in (proc.gateway.pid if proc.gateway else None, proc.dynamodb.pid) if p]
        return pids

    def _write_state(self) -> None:
        state = {
            "config": self.config_path,
            "pids": self.pids(),
            "regions": {
                proc.region: {
                    "downstream": f"http://{self.configs[proc.region].listen}",
                    "peer": f"http://{self.configs[proc.region].peer_listen}",
                    "dynamodb": proc.dynamodb.endpoint,
                    "gateway_pid": proc.gateway.pid if proc.gateway else None,
                    "dynamodb_pid": proc.dynamodb.pid,
                }
                for proc in self.processes
            },
        }
        self.state_file.write_text(json.dumps(state, indent=2) + "\n")

    def describe(self) -> str:
        rows = [("region", "gateway", "dynamodb", "gateway pid", "dynamodb pid")]
        for proc in self.processes:
            rows.append(
                (
                    proc.region,
                    f"http://{self.configs[proc.region].listen}",
                    proc.dynamodb.endpoint,
                    str(proc.gateway.pid if proc.gateway else "-"),
                    str(proc.dynamodb.pid),
                )
            )
        widths = [max(len(r[i]) for r in rows) for i in range(len(rows[0]))]
        return "\n".join("  ".join(c.ljust(w) for c, w in zip(row, widths)).rstrip() for row in rows)

    def down(self) -> None:
        # Gateways first (all at once, then wait), so none outlives the DynamoDB it serves from.
        for proc in self.processes:
            if proc.gateway is not None:
                proc.gateway.signal(signal.SIGTERM)
        for proc in self.processes:
            if proc.gateway is not None:
                proc.gateway.stop()
            proc.dynamodb.stop()
        self.processes.clear()
        self.state_file.unlink(missing_ok=True)


def run_until_signalled(cluster: LocalCluster) -> int:
    stop = False

    def on_signal(_signum: int, _frame: object) -> None:
        nonlocal stop
        stop = True

    signal.signal(signal.SIGINT, on_signal)
    signal.signal(signal.SIGTERM, on_signal)
    cluster.up()
    print(cluster.describe(), flush=True)
    print(f"\nstate: {cluster.state_file}   logs: {cluster.state_dir / 'logs'}   stop: Ctrl-C", flush=True)
    try:
        while not stop:
            for proc in cluster.processes:
                if proc.gateway is not None and proc.gateway.returncode is not None:
                    print(f"the {proc.region} gateway exited with code {proc.gateway.returncode}; stopping", file=sys.stderr)
                    stop = True
            time.sleep(0.2)
    finally:
        print("stopping the local cluster", flush=True)
        cluster.down()
    return 0
