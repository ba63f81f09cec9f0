"""Running the gateway: one uvloop worker per process, N processes sharing the port with SO_REUSEPORT.

The parent of a multi-worker gateway only supervises: it forks the workers
before any event loop exists, forwards SIGTERM/SIGINT to them, and exits
with the worst exit code once all have stopped. If one worker dies on its
own, the parent stops the others and exits non-zero, so the orchestrator
restarts the pod whole rather than leaving it at reduced capacity unseen.

A worker's life: open the store, load the routing rules, listen on the
downstream and the peer port, serve until SIGTERM/SIGINT, then drain
(``drain()``): readiness false while still serving for ``drain_seconds``,
stop accepting, let in-flight requests finish within ``shutdown_grace``,
release the rest with 503 ``draining``; close the store and the peer pools,
exit 0. With several workers, metrics go through prometheus-client's
multiprocess mode in a directory the parent creates and removes.
"""

from __future__ import annotations

import asyncio
import contextlib
import gc
import logging
import multiprocessing
import os
import signal
import sys
from collections.abc import AsyncIterator, Awaitable, Callable
from dataclasses import dataclass

import uvloop
from aiohttp import web
from opentelemetry.sdk.trace import TracerProvider

from gateway.api.admin import AdminApi
from gateway.api.auth import TokenAuthority
from gateway.api.downstream import DownstreamApi
from gateway.api.frontend import Frontend, create_server
from gateway.api.health import Health
from gateway.api.overload import ConcurrencyLimit
from gateway.api.peer import PeerApi
from gateway.api.protocol import GatewayServer, give_memory_back
from gateway.api.status import StatusReport
from gateway.background import background
from gateway.clock import SystemClock
from gateway.config import Config, require_peer_secret
from gateway.consensus.acceptor import Acceptor
from gateway.consensus.proposer import Proposer
from gateway.deadlines import Deadlines
from gateway.dispatcher import Dispatcher
from gateway.errors import GatewayError
from gateway.lease.book import PromiseBook
from gateway.lease.keeper import LeaseKeeper
from gateway.members import Membership
from gateway.obs import tracing
from gateway.obs.logs import AccessLog, setup_logging
from gateway.obs.metrics import Metrics, multiprocess_dir, use_multiprocess, worker_gone
from gateway.peer.auth import PeerSigner, PeerVerifier
from gateway.peer.client import PeerClient
from gateway.peer.nonces import NonceTable
from gateway.peer.routes import ROUTING_PATH
from gateway.peer.tls import tls_context
from gateway.routing.control_table import ControlTable
from gateway.routing.loader import RoutingLoader
from gateway.routing.rules import RuleError, rule_from_json
from gateway.store.lean import LeanStore, open_lean_store
from gateway.store.read_coalescer import ReadCoalescer
from gateway.switch.coordinator import SwitchCoordinator
from gateway.switch.fence import AckLog
from gateway.switch.participant import SwitchParticipant
from gateway.switch.scheduler import Scheduler
from gateway.switch.write_buffer import WriteBuffer

log = logging.getLogger(__name__)


@dataclass(frozen=True, slots=True)
class Gateway:
    """One worker's parts, alive for the duration of ``open_gateway``."""

    api: DownstreamApi
    peer_api: PeerApi
    #: Only with ``gateway.admin_listen``.
    admin_api: AdminApi | None
    health: Health
    deadlines: Deadlines
    metrics: Metrics


@contextlib.asynccontextmanager
async def open_gateway(
    config: Config, *, tracer_provider: TracerProvider | None = None, nonces: NonceTable | None = None
) -> AsyncIterator[Gateway]:
    """Store, coalescer, rules, peers, probes, membership; closed or stopped on exit, in reverse.

    ``tracer_provider``: this gateway's spans go there (tests inject one per gateway); without it,
    ``[tracing]`` decides, and the provider made here is flushed and shut down on exit.
    ``nonces``: the peer API's replay memory, shared by the workers of a multi-worker gateway.
    """
    require_peer_secret(config)
    async with contextlib.AsyncExitStack() as stack:
        provider = tracer_provider
        if provider is None:
            provider = tracing.tracer_provider(config)
            if provider is not None:
                stack.push_async_callback(asyncio.to_thread, provider.shutdown)
        tracer = tracing.tracer_of(provider)
        metrics = Metrics()
        metrics.prime(config.region, config.regions)
        store = await open_lean_store(
            config.region,
            config.dynamodb.endpoint_url,
            attempt_timeout=config.dynamodb.attempt_timeout,
            max_attempts=config.dynamodb.max_attempts,
            wire=config.dynamodb.wire,
            observer=metrics.observe_dynamodb,
            tracer=tracer,
            source_address=config.source_address,
        )
        stack.push_async_callback(store.close)
        clock = SystemClock()
        reads = ReadCoalescer(
            store, max_in_flight=config.read_max_in_flight, lane_after=config.read_lane_after, clock=clock
        )
        stack.push_async_callback(reads.close)
        routing = RoutingLoader(config.routing.table, store, clock, metrics, config.routing.poll_interval)
        metrics.sampled(metrics.routing_snapshot_age_seconds, routing.age)
        with contextlib.suppress(GatewayError):
            await routing.refresh()  # ready sooner; the poller keeps trying (and readiness says why) if it fails
        await stack.enter_async_context(background(routing.run(), "routing-rules"))
        health = Health(config, store, clock, routing)
        await health.probe()
        await stack.enter_async_context(background(health.run(), "readiness-probe"))
        deadlines = Deadlines(clock)
        await stack.enter_async_context(background(deadlines.run(), "deadline-sweeper"))
        metrics.sampled(metrics.downstream_rq_active, lambda: deadlines.in_flight)
        await stack.enter_async_context(background(metrics.run(), "metrics-sampler"))
        buffer = WriteBuffer(config.buffer, clock, metrics)
        # Closed before the listeners stop: held writes are released with 503 draining, never dropped silently.
        stack.callback(buffer.close)
        await stack.enter_async_context(background(buffer.run(), "write-buffer-sweeper"))
        membership = Membership(config, store, clock, metrics, epochs=routing.epochs, buffer_depth=buffer.depth)
        stack.push_async_callback(membership.leave)
        await stack.enter_async_context(background(membership.run(), "membership"))
        peers = PeerClient(config, PeerSigner(config.peer.secret, clock), clock, metrics, membership.peers, tracer=tracer)
        stack.push_async_callback(peers.close)
        acks = AckLog(clock, config.switch.fence_window, config.switch.fence_max_keys)
        lease, drift = config.routing.lease, config.routing.max_drift
        book = PromiseBook(store, config.routing.table, config.region, clock, lease, drift)
        keeper = LeaseKeeper(
            config.region, list(config.regions) or [config.region], book, peers.call,
            lambda: routing.table.rules if routing.table is not None else {}, clock, lease, drift, learn=routing.learn,
        )
        routing.on_change(keeper.rules_changed)
        await stack.enter_async_context(background(keeper.run(), "lease-keeper"))
        dispatcher = Dispatcher(config, store, reads, clock, routing, peers, metrics, buffer, acks, leases=keeper)
        participant = SwitchParticipant(config.region, routing, store, acks, buffer, leases=keeper)
        # Catch up with the fleet before taking writes: a region back from an outage may hold stale rules
        # (e.g. still think it is primary after a failover) until replication delivers the new ones.
        await learn_from_peers(config, routing, peers)
        await stack.enter_async_context(background(
            (await open_scheduler(config, store, stack, peers, clock, membership.instance)).run(), "scheduler"
        ))
        # One access log per worker, shared by the listeners; a concurrency bound per listener, so that peers
        # (or strangers on the peer port) can never take the slots of downstream callers, nor these theirs.
        access_log = AccessLog(config.logs.access_sample, config.region)
        listener = {"tracer": tracer, "access_log": access_log}
        auth = None
        if config.auth.mode == "tokens" and config.auth.tokens_file:
            auth = await asyncio.to_thread(TokenAuthority, config.auth.tokens_file)  # reads the file
            await stack.enter_async_context(background(auth.run(), "tokens-reload"))
        api = DownstreamApi(
            config, dispatcher, health, metrics, clock, deadlines, membership, routing,
            auth=auth, limit=ConcurrencyLimit(config.max_concurrent_requests), **listener,
        )
        verifier = PeerVerifier(
            config.peer.secret, clock, config.peer.max_skew, region=config.region,
            nonces=nonces, max_nonces=config.peer.max_nonces,
        )
        peer_api = PeerApi(
            config, dispatcher, participant, verifier, metrics, deadlines, routing, membership.instance,
            leases=keeper, limit=ConcurrencyLimit(config.peer.max_concurrent_requests), **listener,
        )
        admin_api = None
        if config.admin_listen is not None:
            # The status page reads switch progress from this region's replica of the control table.
            status = StatusReport(
                config, health, routing, membership, buffer, metrics,
                ControlTable(store, config.region, store.endpoint, config, clock), clock,
            )
            admin_api = AdminApi(config, api, status, metrics, deadlines, tracer=tracer, access_log=access_log)
        yield Gateway(api, peer_api, admin_api, health, deadlines, metrics)


async def open_scheduler(
    config: Config, store: LeanStore, stack: contextlib.AsyncExitStack, peers: PeerClient, clock: SystemClock, instance: str
) -> Scheduler:
    """The scheduler (follow-the-sun, automatic failover): its lease in this region's replica, its rule changes
    decided by a majority of the regions, every region's promise book read in that region's replica."""
    stores = {config.region: store}
    for region in config.regions:
        if region not in stores:
            stores[region] = await open_lean_store(
                region, config.regions[region].dynamodb_endpoint, attempt_timeout=config.dynamodb.attempt_timeout,
                max_attempts=config.dynamodb.max_attempts, source_address=config.source_address,
            )
            stack.push_async_callback(stores[region].close)
    table, lease, drift = config.routing.table, config.routing.lease, config.routing.max_drift
    proposer = None
    if len(stores) > 1:
        # Its switches are decided by a majority of the regions (gateway/consensus/), like gatewayctl's edits.
        proposer = Proposer({r: Acceptor(stores[r], table, r) for r in stores}, clock, f"scheduler-{instance}")
    control = ControlTable(store, config.region, store.endpoint, config, clock, proposer=proposer,
                           replicas=stores if proposer is not None else None)
    coordinator = SwitchCoordinator(config, control, peers, clock, by=f"scheduler {instance}")
    books = {r: PromiseBook(stores[r], table, r, clock, lease, drift) for r in stores}
    return Scheduler(config, store, control, coordinator, clock, instance, books=books)


async def learn_from_peers(config: Config, routing: RoutingLoader, peers: PeerClient, timeout: float = 1.0) -> int:
    """Learn every rule other regions' gateways hold that is newer than ours; how many regions answered."""

    async def one(region: str) -> bool:
        try:
            async with asyncio.timeout(timeout):
                answer = await peers.call(region, ROUTING_PATH, {})
            routing.learn(rule_from_json(r) for r in answer.get("rules", []))
        except (GatewayError, RuleError, TimeoutError) as exc:
            log.info("rules not learned from %s at start: %s", region, getattr(exc, "message", exc))
            return False
        return True

    answered = await asyncio.gather(*(one(r) for r in config.regions if r != config.region))
    return sum(answered)


@dataclass(frozen=True, slots=True)
class Listeners:
    """The downstream, peer and (optional) admin listeners of one worker."""

    runners: tuple[web.ServerRunner, ...]

    async def stop_accepting(self) -> None:
        """Close the listening sockets and idle keep-alive connections; requests being served go on."""
        for runner in self.runners:
            for site in list(runner.sites):
                await site.stop()
            if runner.server is not None:
                runner.server.pre_shutdown()


#: The peer listener's head limits: 32 header lines of at most 4 KiB (aiohttp's defaults are 128 of 8 KiB).
PEER_HEAD_LIMITS = {"max_headers": 32, "max_field_size": 4096}

#: Seconds the listeners' cleanup waits for answers already decided (e.g. released with 503) to be written.
RELEASE_WAIT = 1.0


@contextlib.asynccontextmanager
async def listening(gateway: Gateway, config: Config) -> AsyncIterator[Listeners]:
    """Serve ``gateway`` on its downstream, peer (and admin) addresses until exit; on exit, close them (no drain)."""

    def runner(frontend: Frontend, **limits: int) -> web.ServerRunner:
        server = create_server(frontend, config, **limits)
        return web.ServerRunner(server, handle_signals=False, shutdown_timeout=RELEASE_WAIT)

    # The peer listener's callers are gateways, whose request heads are a dozen short lines: a stranger's
    # connection holds at most PEER_HEAD_LIMITS' worth of head, and its body is never read (gateway/api/peer.py).
    downstream = runner(gateway.api)
    peer = runner(gateway.peer_api, max_connections=config.peer.max_connections, **PEER_HEAD_LIMITS)
    admin = runner(gateway.admin_api) if gateway.admin_api is not None else None
    runners = (downstream, peer) if admin is None else (downstream, peer, admin)
    for each in runners:
        await each.setup()
    try:
        await web.TCPSite(
            peer, config.peer_listen.host, config.peer_listen.port, reuse_port=True, backlog=2048,
            ssl_context=tls_context(config, server=True),
        ).start()
        if admin is not None and config.admin_listen is not None:
            await web.TCPSite(admin, config.admin_listen.host, config.admin_listen.port, reuse_port=True).start()
        # Last: a caller that can connect finds every other listener up.
        await web.TCPSite(downstream, config.listen.host, config.listen.port, reuse_port=True, backlog=2048).start()
        yield Listeners(runners)
    finally:
        await asyncio.gather(*(runner.cleanup() for runner in runners))


async def drain(
    gateway: Gateway, listeners: Listeners, config: Config, sleep: Callable[[float], Awaitable[None]] = asyncio.sleep
) -> int:
    """What SIGTERM does, in order; returns how many requests had to be released.

    1. Readiness turns false and answers ask clients to close their connections; requests are still
       served for ``drain_seconds``, so load balancers (polling /readyz) move traffic away first.
    2. The listeners stop accepting; idle keep-alive connections close.
    3. Requests being served get ``shutdown_grace`` seconds to finish; those still running are released
       with 503 ``draining`` (a write among them may or may not have been applied; its idempotency key
       makes the caller's retry safe).
    """
    gateway.health.draining = True
    gateway.api.draining = gateway.peer_api.draining = True
    if gateway.admin_api is not None:
        gateway.admin_api.draining = True
    log.info("draining: not ready, still serving", extra={"seconds": config.drain_seconds, "pid": os.getpid()})
    await sleep(config.drain_seconds)
    await listeners.stop_accepting()
    loop = asyncio.get_running_loop()
    give_up = loop.time() + config.shutdown_grace
    while gateway.deadlines.in_flight and loop.time() < give_up:
        await sleep(DRAIN_POLL)
    released = gateway.deadlines.release_all()
    if released:
        log.warning("released requests still running after shutdown_grace with 503 draining", extra={"released": released})
    return released


#: How often the drain looks whether in-flight requests have finished.
DRAIN_POLL = 0.02


async def run_worker(
    config: Config,
    stop: asyncio.Event | None = None,
    *,
    tracer_provider: TracerProvider | None = None,
    nonces: NonceTable | None = None,
) -> None:
    stop = stop or asyncio.Event()
    loop = asyncio.get_running_loop()
    for signum in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(signum, stop.set)
    opened = open_gateway(config, tracer_provider=tracer_provider, nonces=nonces)
    async with opened as gateway, listening(gateway, config) as listeners:
        # Everything alive now lives as long as the process: keep it out of the collector's
        # full scans, which otherwise walk it on every gen-2 collection under load.
        gc.collect()
        gc.freeze()
        servers = [runner.server for runner in listeners.runners if isinstance(runner.server, GatewayServer)]
        log.info("serving", extra={"region": config.region, "listen": str(config.listen), "pid": os.getpid()})
        async with background(give_memory_back(servers), "memory-trim"):
            await stop.wait()
        log.info("stopping", extra={"region": config.region, "pid": os.getpid()})
        await drain(gateway, listeners, config)


def _worker_main(config: Config, metrics_dir: str, nonces: NonceTable) -> None:
    setup_logging()
    use_multiprocess(metrics_dir)
    try:
        uvloop.run(run_worker(config, nonces=nonces))
    except OSError as exc:
        log.error("worker could not start: %s", exc)
        sys.exit(1)


def serve(config: Config, workers: int | None = None) -> int:
    """Run the gateway until SIGTERM/SIGINT; returns the process exit code."""
    setup_logging()
    workers = workers or config.workers
    if workers == 1:
        try:
            uvloop.run(run_worker(config))
        except OSError as exc:
            log.error("gateway could not start on %s: %s", config.listen, exc)
            return 1
        return 0
    # Workers share the port but each has its own metrics: they write them to files of one directory
    # for this run, which any worker's /metrics merges (gateway/obs/metrics.py); removed when all are gone.
    with multiprocess_dir() as metrics_dir:
        return _supervise(config, workers, metrics_dir)


def _supervise(config: Config, workers: int, metrics_dir: str) -> int:
    # fork, not spawn: the config is already loaded and validated, and no loop or thread exists yet;
    # and the workers inherit the one shared mapping of peer nonces made here (gateway/peer/nonces.py).
    ctx = multiprocessing.get_context("fork")
    nonces = NonceTable(config.peer.max_nonces, shared=True)
    procs = [
        ctx.Process(target=_worker_main, args=(config, metrics_dir, nonces), name=f"gateway-worker-{i}")
        for i in range(workers)
    ]
    stopping = False

    def forward(signum: int, _frame: object) -> None:
        nonlocal stopping
        stopping = True
        for proc in procs:
            if proc.pid and proc.exitcode is None:
                os.kill(proc.pid, signal.SIGTERM)

    signal.signal(signal.SIGTERM, forward)
    signal.signal(signal.SIGINT, forward)
    for proc in procs:
        proc.start()
    log.info("supervising workers", extra={"workers": workers, "pids": [p.pid for p in procs]})
    worst = 0
    remaining = list(procs)
    while remaining:
        for proc in list(remaining):
            proc.join(0.2)
            if proc.exitcode is None:
                continue
            remaining.remove(proc)
            worst = max(worst, abs(proc.exitcode))
            worker_gone(metrics_dir, proc.pid)
            if not stopping:
                log.error("worker exited on its own; stopping the others", extra={"pid": proc.pid, "exitcode": proc.exitcode})
                forward(signal.SIGTERM, None)
                worst = max(worst, 1)
    return worst
