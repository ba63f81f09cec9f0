"""``feature-gateway local up``: a local cluster of regions on this machine (DESIGN.md §9).

For each region: a DynamoDB Local on the region's configured port, every
replicated table (one per view, the control table, the members table), and a
gateway process; between the regions, the global-table emulator
(gateway/local/emulator.py), in this process. It writes ``.local/cluster.json``
(regions, ports, PIDs, the fault-control URL) for tools, prints the endpoints,
and on Ctrl-C or SIGTERM stops everything it started, by PID: gateways first,
then the emulator, then DynamoDB.

Faults (``feature-gateway local fault …``, or the methods below from tests):
replication lag, pause/resume and out-of-order delivery between an ordered pair
of regions are the emulator's; stopping a region is the cluster's; a network
partition is the kernel's (nftables rules on the regions' loopback addresses,
gateway/local/partitions.py) plus the emulator's pause of the cut pairs, both
ways, since the emulator is the global table's own replication. A stopped
region's gateway is stopped and its DynamoDB Local is *frozen* (SIGSTOP), not
killed: DynamoDB Local keeps its data in memory, and a real region outage does
not lose the region's data either. Starting it thaws DynamoDB (SIGCONT) and
starts a new gateway; the emulator then delivers the backlog it held.

Supervision: a gateway process that dies (``kill -9``, a crash) is started
again within about a second, as Kubernetes restarts a pod's container; one
stopped by ``stop-region`` is not.

Invariants: at most one cluster per state directory (a second ``up`` finds the
live PIDs in ``cluster.json`` and refuses with a clear message); the cluster's
nftables table exists only while it runs (``down`` deletes it, and ``up``
deletes those of clusters that died without).
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import os
import re
import secrets
import signal
import sys
import time
from collections.abc import AsyncIterator, Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

import aiohttp
import orjson
from aiohttp import web
from prometheus_client import CONTENT_TYPE_LATEST, CollectorRegistry, generate_latest
from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily, Metric

from gateway.clock import SystemClock
from gateway.config import MIN_SECRET_BYTES, Config, PeerConfig
from gateway.config import load as load_config
from gateway.local import faults
from gateway.local.dynamodb_local import DynamoDBLocal, free_port
from gateway.local.emulator import GlobalTableEmulator
from gateway.local.gateway_process import GatewayProcess, GatewayProcessError
from gateway.local.partitions import Endpoint, PartitionError, Partitions, remove_stale
from gateway.obs.status_page import render as render_status_page
from gateway.routing.rules import DEFAULT_SCOPE, SINGLE_PRIMARY, Rule, view_scope

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

#: The cluster's peer secret, beside cluster.json (mode 0600), for `gatewayctl --local switch`.
PEER_SECRET_FILE = "peer-secret"

#: Who the cluster's example rules name as their author.
SEEDED_BY = "feature-gateway local up"


def use_local_credentials() -> None:
    os.environ.update(LOCAL_CREDENTIALS)
    for name in ("AWS_SESSION_TOKEN", "AWS_PROFILE", "AWS_DEFAULT_PROFILE"):
        os.environ.pop(name, None)


def cluster_tables(config: Config) -> list[tuple[str, str]]:
    """(table, hash key) of every replicated table: one per view, the control table, the members table."""
    tables = [(view.table, view.key_attribute) for view in config.views.values()]
    return tables + [(config.routing.table, "pk"), (config.members.table, "pk")]


def example_rules(config: Config, primary: str, now_ms: int) -> list[Rule]:
    """DESIGN.md §9: ``primary`` (the first region) is the primary of every example view, and of ``default``."""
    scopes = [DEFAULT_SCOPE] + [view_scope(name) for name in config.views]
    return [Rule(s, SINGLE_PRIMARY, primary, epoch=0, version=1, updated_by=SEEDED_BY, updated_at=now_ms) for s in scopes]


def use_peer_secret() -> None:
    """Gateways of one cluster share a peer secret: the caller's ``FGW_PEER_SECRET``, or a fresh one per run."""
    if len(os.environ.get(PeerConfig().secret_env, "")) < MIN_SECRET_BYTES:
        os.environ[PeerConfig().secret_env] = secrets.token_hex(32)


def relocated_config(source: str | Path, target: Path) -> Path:
    """A copy of a cluster config with every fixed loopback port replaced by a free one (addresses kept).

    For tests and benchmarks, so they never collide with a `make run` cluster (or each other).
    """
    text = Path(source).read_text()
    text = re.sub(r"(127\.\d+\.\d+\.\d+):\d+", lambda m: f"{m[1]}:{free_port()}", text)
    target.write_text(text)
    return target


class ClusterError(RuntimeError):
    """The cluster cannot start or obey (already running, a port taken, a process that did not come up)."""


@dataclass
class Region:
    name: str
    config: Config
    dynamodb: DynamoDBLocal
    gateway: GatewayProcess | None = None
    stopped: bool = False
    #: Times the supervisor started this region's gateway again after it died.
    restarts: int = 0


def pid_alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


class _EmulatorFigures:
    """A Prometheus collector of the cluster's emulator, read at every scrape."""

    def __init__(self, cluster: LocalCluster) -> None:
        self._cluster = cluster

    def collect(self) -> Iterator[Metric]:
        """Changes applied and dropped, and the backlog, per (source, target)."""
        if self._cluster.emulator is None:
            return
        labels = ["source", "target"]
        applied = CounterMetricFamily("emulator_changes_applied", "Changes applied in the target region.", labels=labels)
        dropped = CounterMetricFamily(
            "emulator_changes_dropped", "Changes the target refused for good: the regions differ for those items.",
            labels=labels,
        )
        backlog = GaugeMetricFamily("emulator_backlog", "Changes waiting to be applied in the target.", labels=labels)
        for source in self._cluster.regions:
            for target in self._cluster.regions:
                if source != target:
                    stats = self._cluster.emulator.stats(source, target)
                    applied.add_metric([source, target], stats.applied)
                    dropped.add_metric([source, target], stats.failed)
                    backlog.add_metric([source, target], self._cluster.emulator.backlog(source, target))
        yield from (applied, dropped, backlog)


class LocalCluster:
    def __init__(
        self,
        config_path: str,
        regions: list[str] | None = None,
        state_dir: str | Path = ".local",
        *,
        replicate: bool = True,
        say: Callable[[str], None] = lambda line: None,
    ) -> None:
        self.config_path = str(config_path)
        #: Where ``up`` reports its progress, one line per step (``local up`` prints them; tests stay quiet).
        self._say = say
        #: False: no emulator (benchmarks that measure something else than replication).
        self.replicate = replicate
        base = load_config(self.config_path)
        self.region_names = regions or list(base.regions)
        unknown = [r for r in self.region_names if r not in base.regions]
        if unknown:
            raise ClusterError(f"{config_path} defines no region {unknown[0]!r}; it has {', '.join(base.regions)}")
        self.configs: dict[str, Config] = {r: load_config(self.config_path, region=r) for r in self.region_names}
        self.state_dir = Path(state_dir)
        self.state_file = self.state_dir / "cluster.json"
        self.logs = self.state_dir / "logs"
        self.regions: dict[str, Region] = {}
        self.emulator: GlobalTableEmulator | None = None
        self._control: web.AppRunner | None = None
        self.control_url: str | None = None
        #: Made at the first partition (nft is needed then, not to start a cluster).
        self._partitions: Partitions | None = None
        self._supervisor: asyncio.Task[None] | None = None
        self._restart: asyncio.Future[None] | None = None
        #: The emulator's figures, served at the control endpoint's /metrics (the cluster's own, not a gateway's).
        self._metrics = CollectorRegistry()
        self._metrics.register(_EmulatorFigures(self))

    # -- lifecycle -------------------------------------------------------------------------------

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
                "stop it with Ctrl-C in its terminal or `feature-gateway local down`"
            )

    async def up(self) -> None:
        self.check_not_running()
        use_peer_secret()
        # Reloaded: the configs now carry the cluster's peer secret (for coordinators run in this process).
        self.configs = {r: load_config(self.config_path, region=r) for r in self.region_names}
        self.state_dir.mkdir(parents=True, exist_ok=True)
        secret_file = self.state_dir / PEER_SECRET_FILE
        secret_file.touch(mode=0o600)
        secret_file.write_text(os.environ[PeerConfig().secret_env] + "\n")
        self.logs.mkdir(parents=True, exist_ok=True)
        with contextlib.suppress(PartitionError):  # without nft there are no tables to remove
            await asyncio.to_thread(remove_stale, pid_alive)
        try:
            for name in self.region_names:
                config = self.configs[name]
                endpoint = urlsplit(config.dynamodb.endpoint_url or "")
                if endpoint.port is None or endpoint.hostname is None:
                    raise ClusterError(f"region {name} has no dynamodb_endpoint with a port in {self.config_path}")
                # On the region's own address: a partition cuts what reaches it from the other regions' addresses.
                ddb = DynamoDBLocal(
                    endpoint.port, host=endpoint.hostname, log_path=self.logs / f"dynamodb-{name}.log", name=name
                )
                if await asyncio.to_thread(ddb.ping):
                    raise ClusterError(f"port {endpoint.port} already answers as DynamoDB; is another cluster running?")
                self.regions[name] = Region(name, config, ddb)
            self._say("starting DynamoDB Local: " + ", ".join(
                f"{r.name} on {r.dynamodb.host}:{r.dynamodb.port}" for r in self.regions.values()))
            # JVMs start in parallel: three take about as long as one.
            await asyncio.gather(*(self._start_dynamodb(r) for r in self.regions.values()))
            tables = [t for t, _ in cluster_tables(self.configs[self.region_names[0]])]
            await self._create_tables()
            self._say(f"tables: {', '.join(tables)} in {len(self.regions)} region(s); rules "
                      f"{', '.join(r.scope for r in example_rules(self.configs[self.region_names[0]], '', 0))} "
                      f"with {self.region_names[0]} primary (epoch 0)")
            if len(self.regions) > 1 and self.replicate:
                self.emulator = GlobalTableEmulator(
                    {r.name: r.dynamodb.endpoint for r in self.regions.values()}, tables
                )
                await self.emulator.start()
                self._say(f"global-table emulator: replicating {len(tables)} tables between {len(self.regions)} regions")
            self._say("starting gateways: " + ", ".join(self.regions))
            await asyncio.gather(*(self._start_gateway(r, announce=True) for r in self.regions.values()))
            await self._seed()
            await self._start_control()
            self._supervisor = asyncio.create_task(self._supervise(), name="gateway-supervisor")
            self._write_state()
        except BaseException:
            await self.down()
            raise

    async def down(self) -> None:
        if self._supervisor is not None:
            self._supervisor.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._supervisor
            self._supervisor = None
        if self._restart is not None:
            await asyncio.wait([self._restart])  # a gateway being started again: let it start, then stop it
            self._restart = None
        if self._partitions is not None:
            # First: stopping processes must not wait on connections a partition holds.
            await asyncio.to_thread(self._partitions.remove)
            self._partitions = None
        if self._control is not None:
            await self._control.cleanup()
            self._control = None
        # Gateways first (all at once, then wait), so none outlives the DynamoDB it serves from.
        for region in self.regions.values():
            if region.gateway is not None:
                region.gateway.signal(signal.SIGTERM)
        await asyncio.gather(
            *(asyncio.to_thread(r.gateway.stop) for r in self.regions.values() if r.gateway is not None)
        )
        if self.emulator is not None:
            await self.emulator.stop()
            self.emulator = None
        for region in self.regions.values():
            if region.stopped and region.dynamodb.pid:
                # A frozen process cannot act on SIGTERM; thaw it so it can exit.
                os.kill(region.dynamodb.pid, signal.SIGCONT)
        await asyncio.gather(*(asyncio.to_thread(r.dynamodb.stop) for r in self.regions.values()))
        self.regions.clear()
        self.state_file.unlink(missing_ok=True)
        (self.state_dir / PEER_SECRET_FILE).unlink(missing_ok=True)

    async def _create_tables(self) -> None:
        """Every table in every region, and the example rules written into each region's control table.

        The rules go to every replica directly (same item, same ``_ts``) rather than through the
        emulator, so every gateway finds them on its first read and becomes ready at once.
        """
        from gateway.store.botocore import BotocoreStore

        for region in self.regions.values():
            store = await BotocoreStore.open(region.name, region.dynamodb.endpoint)
            try:
                for table, key_attribute in cluster_tables(region.config):
                    await store.create_table(table, key_attr=key_attribute)
            finally:
                await store.close()
        first = self.region_names[0]
        await self.put_rules(example_rules(self.configs[first], first, time.time_ns() // 1_000_000))

    async def put_rules(self, rules: list[Rule], regions: list[str] | None = None) -> None:
        """Write ``rules`` into the control table of each of ``regions`` (default: all) directly, bypassing replication.

        For the cluster's own seeding, and for tests that need a region's replica to hold a rule
        the others do not (a stale rule). Operators edit rules with ``gatewayctl``.

        Like a replicated write, a copy lands only where it is newer (last writer wins on ``_ts``):
        a rule that moved on meanwhile (a scheduled switch, replicated here already) is never set back.
        """
        from gateway.errors import ConditionFailed
        from gateway.store.base import Condition
        from gateway.store.botocore import BotocoreStore

        now_us = time.time_ns() // 1000
        newer = Condition("attribute_not_exists(pk) OR #ts < :ts", {"#ts": "_ts"}, {":ts": {"N": str(now_us)}})
        names = regions or list(self.regions)
        # One version for every copy (same _ts, same _region): replication of one copy onto another is a no-op.
        origin = names[0]
        for name in names:
            region = self._region(name)
            store = await BotocoreStore.open(region.name, region.dynamodb.endpoint)
            try:
                for rule in rules:
                    with contextlib.suppress(ConditionFailed):
                        item = rule.to_item(ts_us=now_us, region=origin)
                        await store.put_item(region.config.routing.table, item, condition=newer)
            finally:
                await store.close()

    @contextlib.asynccontextmanager
    async def coordinator(self, *, by: str, report: Any = None) -> AsyncIterator[Any]:
        """A switch coordinator on the control region's tables, as ``gatewayctl --local switch`` builds one.

        For tests and benchmarks that time a switch: no interpreter start-up (a second or more
        of CPU on two cores) lands in the window they measure.
        """
        from gateway.consensus.acceptor import Acceptor
        from gateway.consensus.proposer import Proposer
        from gateway.obs.metrics import Metrics
        from gateway.peer.auth import PeerSigner
        from gateway.peer.client import PeerClient
        from gateway.routing.control_table import ControlTable
        from gateway.store.botocore import BotocoreStore
        from gateway.switch.coordinator import SwitchCoordinator

        name = next(iter(self.regions))  # the control region: the first of the config
        config, endpoint = self.configs[name], self._region(name).dynamodb.endpoint
        clock = SystemClock()
        stores = {r: await BotocoreStore.open(r, self._region(r).dynamodb.endpoint) for r in self.regions}
        proposer = Proposer({r: Acceptor(stores[r], config.routing.table, r) for r in stores}, clock, f"local-{by}")
        await proposer.warm()
        peers = PeerClient(config, PeerSigner(config.peer.secret, clock), clock, Metrics())
        try:
            control = ControlTable(stores[name], name, endpoint, config, clock, proposer=proposer, replicas=stores)
            yield SwitchCoordinator(config, control, peers, clock, by=by,
                                    report=report or (lambda step, seconds, detail: None))
        finally:
            await peers.close()
            for store in stores.values():
                await store.close()

    async def _start_dynamodb(self, region: Region) -> None:
        started = time.monotonic()
        await asyncio.to_thread(region.dynamodb.start)
        self._say(f"DynamoDB Local {region.name} answers on {region.dynamodb.endpoint} "
                  f"(pid {region.dynamodb.pid}, {time.monotonic() - started:.1f} s)")

    async def _start_gateway(self, region: Region, *, announce: bool = False) -> None:
        gateway = GatewayProcess(
            self.config_path, region=region.name, log_path=self.logs / f"gateway-{region.name}.log"
        )
        region.gateway = gateway
        started = time.monotonic()
        await asyncio.to_thread(gateway.start)
        if announce:
            self._say(f"gateway {region.name} ready on {gateway.url} (pid {gateway.pid}, {time.monotonic() - started:.1f} s)")

    async def _seed(self) -> None:
        first = self.regions[self.region_names[0]]
        async with aiohttp.ClientSession() as http:
            for view_name, entities in EXAMPLE_DATA.items():
                if view_name not in first.config.views:
                    continue
                for key, features in entities:
                    async with http.put(
                        f"http://{first.config.listen}/v1/features/{view_name}/{key}",
                        data=orjson.dumps({"features": features}),
                        headers={"Idempotency-Key": f"seed-{key}"},
                    ) as resp:
                        if resp.status != 200:
                            raise ClusterError(f"seeding {view_name}/{key} failed: HTTP {resp.status} {await resp.text()}")

    # -- faults ----------------------------------------------------------------------------------

    def _emulator(self) -> GlobalTableEmulator:
        if self.emulator is None:
            raise ClusterError("replication faults need at least two regions")
        return self.emulator

    def _region(self, name: str) -> Region:
        region = self.regions.get(name)
        if region is None:
            raise ClusterError(f"no region {name!r} in this cluster; regions are {', '.join(self.regions)}")
        return region

    async def stop_region(self, name: str) -> None:
        """The region goes dark: its gateway stops, its DynamoDB freezes with its data."""
        region = self._region(name)
        if region.stopped:
            return
        # Stopped first: the supervisor must not take the gateway's exit for a crash and start another.
        region.stopped = True
        if region.gateway is not None:
            await asyncio.to_thread(region.gateway.stop)
        assert region.dynamodb.pid is not None
        os.kill(region.dynamodb.pid, signal.SIGSTOP)
        self._write_state()

    async def start_region(self, name: str) -> None:
        region = self._region(name)
        if not region.stopped:
            return
        assert region.dynamodb.pid is not None
        os.kill(region.dynamodb.pid, signal.SIGCONT)
        await self._start_gateway(region)
        region.stopped = False  # only now may the supervisor watch it
        self._write_state()

    def _endpoints(self) -> dict[str, Endpoint]:
        endpoints: dict[str, Endpoint] = {}
        for name, config in self.configs.items():
            address = config.listen.host
            dynamodb = urlsplit(config.dynamodb.endpoint_url or "")
            if {config.peer_listen.host, dynamodb.hostname, config.source_address} != {address}:
                raise ClusterError(
                    f"region {name} must use one loopback address for its gateway's listeners, its source_address and "
                    f"its DynamoDB Local to be partitioned (config/local.toml shows how)"
                )
            taken = [other for other, e in endpoints.items() if e.address == address]
            if taken:
                raise ClusterError(f"regions {taken[0]} and {name} share the address {address}; give each its own")
            ports = (config.listen.port, config.peer_listen.port, dynamodb.port or 0)
            endpoints[name] = Endpoint(address, ports)
        return endpoints

    async def partition(self, region: str, others: list[str] | None = None) -> list[tuple[str, str]]:
        """Cut ``region`` off from ``others`` (default: all the other regions), network and replication."""
        self._region(region)
        if self._partitions is None:
            self._partitions = await asyncio.to_thread(Partitions, self._endpoints())
        cut = await asyncio.to_thread(self._partitions.cut, region, others)
        if self.emulator is not None:
            for a, b in cut:
                self.emulator.pause(a, b)
                self.emulator.pause(b, a)
        self._write_state()
        return cut

    async def heal(self, region: str | None = None) -> list[tuple[str, str]]:
        """Remove the cuts (all, or ``region``'s); replication between the healed pairs resumes."""
        if region is not None:
            self._region(region)
        if self._partitions is None:
            return []
        healed = await asyncio.to_thread(self._partitions.heal, region)
        if self.emulator is not None:
            for a, b in healed:
                self.emulator.resume(a, b)
                self.emulator.resume(b, a)
        self._write_state()
        return healed

    def status_partitions(self) -> list[tuple[str, str]]:
        """The region pairs cut off from each other now."""
        return self._partitions.cuts if self._partitions is not None else []

    def status(self) -> dict[str, Any]:
        """The cluster's processes and faults (``local fault status``, ``local status``)."""
        backlog = {}
        if self.emulator is not None:
            backlog = {
                f"{s}->{t}": self.emulator.backlog(s, t) for s in self.regions for t in self.regions if s != t
            }
        dropped = {}
        if self.emulator is not None:
            dropped = {
                f"{s}->{t}": self.emulator.stats(s, t).failed for s in self.regions for t in self.regions if s != t
            }
        return {
            "pid": os.getpid(),
            "regions": {
                name: {
                    "stopped": r.stopped, "restarts": r.restarts,
                    "downstream": f"http://{r.config.listen}", "peer": f"http://{r.config.peer_listen}",
                    "admin": f"http://{r.config.admin_listen}" if r.config.admin_listen else None,
                    "dynamodb": r.dynamodb.endpoint,
                    "gateway_pid": r.gateway.pid if r.gateway else None, "dynamodb_pid": r.dynamodb.pid,
                }
                for name, r in self.regions.items()
            },
            "partitions": [list(pair) for pair in self.status_partitions()],
            "faults": faults.active(self),
            "backlog": backlog,
            # Changes a target refused for good: the regions differ for those items until they are written again.
            "dropped": dropped,
            "status_page": f"{self.control_url}/status" if self.control_url else None,
        }

    async def reports(self, timeout: float = 1.0) -> tuple[dict[str, dict[str, Any] | None], dict[str, str]]:
        """Each region's gateway's status report (its admin listener's ``/status.json``), and why one is missing."""
        problems: dict[str, str] = {}

        async def one(http: aiohttp.ClientSession, region: Region) -> dict[str, Any] | None:
            if region.stopped:
                problems[region.name] = "stopped (`feature-gateway local fault start-region` brings it back)"
                return None
            if region.config.admin_listen is None:
                problems[region.name] = f"no admin listener (regions.{region.name}.admin in {self.config_path})"
                return None
            url = f"http://{region.config.admin_listen}/status.json"
            try:
                async with http.get(url, timeout=aiohttp.ClientTimeout(total=timeout)) as resp:
                    if resp.status == 200:
                        return await resp.json()  # type: ignore[no-any-return]
                    problems[region.name] = f"{url} answered HTTP {resp.status}"
            except (aiohttp.ClientError, TimeoutError) as exc:
                problems[region.name] = f"unreachable: {url} ({type(exc).__name__})"
            return None

        async with aiohttp.ClientSession() as http:
            found = await asyncio.gather(*(one(http, r) for r in self.regions.values()))
        return dict(zip(self.regions, found)), problems

    async def _start_control(self) -> None:
        """A loopback endpoint through which other terminals reach this process, and the cluster's status page."""

        async def fault(request: web.Request) -> web.Response:
            try:
                body = await request.json() if request.can_read_body else {}
                outcome = await faults.apply(self, request.match_info["action"], body)
            except (ClusterError, PartitionError, ValueError, KeyError) as exc:
                return web.json_response({"error": str(exc)}, status=400)
            return web.json_response({"changed": outcome.changed, "message": outcome.message, "status": self.status()})

        async def cluster(request: web.Request) -> web.Response:
            return web.json_response(self.status())

        async def metrics(request: web.Request) -> web.Response:
            return web.Response(body=generate_latest(self._metrics), headers={"Content-Type": CONTENT_TYPE_LATEST})

        async def page(request: web.Request) -> web.Response:
            reports, problems = await self.reports()
            body = render_status_page(reports, title="Feature Gateway local cluster", problems=problems)
            return web.Response(text=body, content_type="text/html", charset="utf-8")

        async def page_data(request: web.Request) -> web.Response:
            reports, problems = await self.reports()
            return web.json_response({"reports": reports, "problems": problems})

        app = web.Application()
        app.router.add_post("/fault/{action}", fault)
        app.router.add_get("/cluster", cluster)
        app.router.add_get("/metrics", metrics)
        app.router.add_get("/status", page)
        app.router.add_get("/status.json", page_data)
        self._control = web.AppRunner(app, access_log=None)
        await self._control.setup()
        listen = self.configs[self.region_names[0]].local.control_listen
        host, port = (listen.host, listen.port) if listen is not None else ("127.0.0.1", free_port())
        try:
            await web.TCPSite(self._control, host, port).start()
        except OSError as exc:
            raise ClusterError(f"cannot listen on {host}:{port} (local.control_listen): {exc.strerror}") from None
        self.control_url = f"http://{host}:{port}"

    # -- supervision -----------------------------------------------------------------------------

    async def _supervise(self, every: float = 0.25) -> None:
        """Start again, at once, any gateway that died while its region was not stopped."""
        while True:
            await asyncio.sleep(every)
            for region in self.regions.values():
                gateway = region.gateway
                if region.stopped or gateway is None or gateway.returncode is None:
                    continue
                print(f"the {region.name} gateway exited with code {gateway.returncode}; starting it again",
                      file=sys.stderr, flush=True)
                region.restarts += 1
                # Shielded, and awaited by down(): a restart cut short could leave a process no one stops.
                self._restart = asyncio.ensure_future(self._start_gateway(region))
                try:
                    await asyncio.shield(self._restart)
                except GatewayProcessError as exc:
                    # Tried again at the next turn, like a crash-looping pod; the log says why.
                    print(f"the {region.name} gateway did not come back: {exc}", file=sys.stderr, flush=True)
                self._write_state()

    # -- description -----------------------------------------------------------------------------

    def pids(self) -> list[int]:
        pids = [os.getpid()]
        for region in self.regions.values():
            pids += [p for p in (region.gateway.pid if region.gateway else None, region.dynamodb.pid) if p]
        return pids

    def _write_state(self) -> None:
        state = {
            "config": str(Path(self.config_path).resolve()),
            #: The ``local up`` process: ``local down`` signals it.
            "pid": os.getpid(),
            "pids": self.pids(),
            "control": self.control_url,
            "status_page": f"{self.control_url}/status" if self.control_url else None,
            "regions": {
                r.name: {
                    "downstream": f"http://{r.config.listen}",
                    "peer": f"http://{r.config.peer_listen}",
                    "admin": f"http://{r.config.admin_listen}" if r.config.admin_listen else None,
                    "dynamodb": r.dynamodb.endpoint,
                    "gateway_pid": r.gateway.pid if r.gateway else None,
                    "dynamodb_pid": r.dynamodb.pid,
                    "stopped": r.stopped,
                }
                for r in self.regions.values()
            },
        }
        self.state_file.write_text(json.dumps(state, indent=2) + "\n")

    def describe(self) -> str:
        """The endpoint table ``local up`` ends with (and ``local status`` prints)."""
        return endpoint_table(self.status()["regions"])


def endpoint_table(regions: dict[str, dict[str, Any]]) -> str:
    """Region, gateway, peer and admin addresses, DynamoDB Local, PIDs: one row per region of a status."""
    rows = [("region", "gateway", "peer", "admin (status page)", "dynamodb", "gateway pid", "dynamodb pid")]
    for name, r in regions.items():
        rows.append((name, r["downstream"], r["peer"], r.get("admin") or "-", r["dynamodb"],
                     "stopped" if r.get("stopped") else str(r.get("gateway_pid") or "-"), str(r.get("dynamodb_pid"))))
    widths = [max(len(row[i]) for row in rows) for i in range(len(rows[0]))]
    return "\n".join("  ".join(c.ljust(w) for c, w in zip(row, widths)).rstrip() for row in rows)


#: What stops ``local up``: Ctrl-C, ``kill``/``local down``, and the terminal closing (its children, in sessions of
#: their own, would outlive it otherwise).
STOP_SIGNALS = (signal.SIGINT, signal.SIGTERM, signal.SIGHUP)


async def run_until_signalled(cluster: LocalCluster) -> int:
    """``local up``: start, print the endpoints, run until a stop signal, stop everything it started."""
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for signum in STOP_SIGNALS:
        loop.add_signal_handler(signum, stop.set)
    started = time.monotonic()
    up = asyncio.create_task(cluster.up())
    stopping = asyncio.create_task(stop.wait())
    await asyncio.wait({up, stopping}, return_when=asyncio.FIRST_COMPLETED)
    if not up.done():
        # Ctrl-C while starting: up() cleans up what it started when cancelled.
        up.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await up
        return 0
    stopping.cancel()
    up.result()
    print(f"state: {cluster.state_file}   logs: {cluster.logs}/", flush=True)
    print(f"ready: {len(cluster.regions)} region(s) in {time.monotonic() - started:.1f} s; status page "
          f"{cluster.control_url}/status; stop with Ctrl-C or `feature-gateway local down`", flush=True)
    print(cluster.describe(), flush=True)
    try:
        await stop.wait()  # a gateway that dies meanwhile is restarted by the cluster's supervisor
    finally:
        print("stopping the local cluster", flush=True)
        await cluster.down()
    return 0
