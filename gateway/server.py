"""Running the gateway: one uvloop worker per process, N processes sharing the port with SO_REUSEPORT.

The parent of a multi-worker gateway only supervises: it forks the workers
before any event loop exists, forwards SIGTERM/SIGINT to them, and exits
with the worst exit code once all have stopped. If one worker dies on its
own, the parent stops the others and exits non-zero, so the orchestrator
restarts the pod whole rather than leaving it at reduced capacity unseen.

A worker's life: open the store, load the routing rules, listen on the
downstream and the peer port, serve until SIGTERM/SIGINT, then turn
readiness false, stop accepting, let in-flight requests finish within
``shutdown_grace``, close the store and the peer pools, exit 0.
"""

from __future__ import annotations

import asyncio
import contextlib
import gc
import logging
import multiprocessing
import os
import signal
import ssl
import sys
from collections.abc import AsyncIterator
from dataclasses import dataclass

import uvloop
from aiohttp import web

from gateway.api import DownstreamApi
from gateway.background import background
from gateway.clock import SystemClock
from gateway.config import Config, require_peer_secret
from gateway.deadlines import Deadlines
from gateway.dispatcher import Dispatcher
from gateway.errors import GatewayError
from gateway.frontend import create_server
from gateway.health import Health
from gateway.logs import setup_logging
from gateway.members import Membership
from gateway.metrics import Metrics
from gateway.peer import PeerClient
from gateway.peer_api import PeerApi
from gateway.peer_auth import PeerSigner, PeerVerifier
from gateway.read_coalescer import ReadCoalescer
from gateway.routing_loader import RoutingLoader
from gateway.store import open_lean_store

log = logging.getLogger(__name__)


@dataclass(frozen=True, slots=True)
class Gateway:
    """One worker's parts, alive for the duration of ``open_gateway``."""

    api: DownstreamApi
    peer_api: PeerApi
    health: Health


@contextlib.asynccontextmanager
async def open_gateway(config: Config) -> AsyncIterator[Gateway]:
    """Store, coalescer, rules, peers, probes, membership; closed or stopped on exit, in reverse."""
    require_peer_secret(config)
    async with contextlib.AsyncExitStack() as stack:
        store = await open_lean_store(
            config.region,
            config.dynamodb.endpoint_url,
            attempt_timeout=config.dynamodb.attempt_timeout,
            max_attempts=config.dynamodb.max_attempts,
            wire=config.dynamodb.wire,
        )
        stack.push_async_callback(store.close)
        clock = SystemClock()
        reads = ReadCoalescer(
            store, max_in_flight=config.read_max_in_flight, lane_after=config.read_lane_after, clock=clock
        )
        stack.push_async_callback(reads.close)
        metrics = Metrics()
        routing = RoutingLoader(config.routing.table, store, clock, metrics, config.routing.poll_interval)
        with contextlib.suppress(GatewayError):
            await routing.refresh()  # ready sooner; the poller keeps trying (and readiness says why) if it fails
        await stack.enter_async_context(background(routing.run(), "routing-rules"))
        health = Health(config, store, clock, routing)
        await health.probe()
        await stack.enter_async_context(background(health.run(), "readiness-probe"))
        deadlines = Deadlines(clock)
        await stack.enter_async_context(background(deadlines.run(), "deadline-sweeper"))
        membership = Membership(config, store, clock, metrics, routing=routing)
        stack.push_async_callback(membership.leave)
        await stack.enter_async_context(background(membership.run(), "membership"))
        peers = PeerClient(config, PeerSigner(config.peer.secret, clock), clock, metrics, membership.peers)
        stack.push_async_callback(peers.close)
        dispatcher = Dispatcher(config, store, reads, clock, routing, peers, metrics)
        api = DownstreamApi(config, dispatcher, health, metrics, clock, deadlines, membership, routing)
        verifier = PeerVerifier(config.peer.secret, clock, config.peer.max_skew)
        peer_api = PeerApi(config, dispatcher, verifier, metrics, deadlines)
        yield Gateway(api, peer_api, health)


async def run_worker(config: Config, stop: asyncio.Event | None = None) -> None:
    stop = stop or asyncio.Event()
    loop = asyncio.get_running_loop()
    for signum in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(signum, stop.set)
    async with open_gateway(config) as gateway:
        runner = web.ServerRunner(
            create_server(gateway.api, config), handle_signals=False, shutdown_timeout=config.shutdown_grace
        )
        peer_runner = web.ServerRunner(
            create_server(gateway.peer_api, config), handle_signals=False, shutdown_timeout=config.shutdown_grace
        )
        await runner.setup()
        await peer_runner.setup()
        try:
            await web.TCPSite(
                peer_runner, config.peer_listen.host, config.peer_listen.port, reuse_port=True, backlog=2048,
                ssl_context=peer_tls_context(config),
            ).start()
            site = web.TCPSite(runner, config.listen.host, config.listen.port, reuse_port=True, backlog=2048)
            await site.start()
            # Everything alive now lives as long as the process: keep it out of the collector's
            # full scans, which otherwise walk it on every gen-2 collection under load.
            gc.collect()
            gc.freeze()
            log.info("serving", extra={"region": config.region, "listen": str(config.listen), "pid": os.getpid()})
            await stop.wait()
            log.info("stopping", extra={"region": config.region, "pid": os.getpid()})
            gateway.health.draining = True
        finally:
            # Stops listening, lets in-flight requests finish within shutdown_grace, closes connections.
            await asyncio.gather(runner.cleanup(), peer_runner.cleanup())


def peer_tls_context(config: Config) -> ssl.SSLContext | None:
    """The server side of mTLS on the peer listener: a peer must present a certificate of our CA."""
    peer = config.peer
    if not peer.tls_cert:
        return None
    context = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH, cafile=peer.tls_ca)
    context.load_cert_chain(peer.tls_cert, peer.tls_key)
    context.verify_mode = ssl.CERT_REQUIRED
    return context


def _worker_main(config: Config) -> None:
    setup_logging()
    try:
        uvloop.run(run_worker(config))
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
    # fork, not spawn: the config is already loaded and validated, and no loop or thread exists yet.
    ctx = multiprocessing.get_context("fork")
    procs = [ctx.Process(target=_worker_main, args=(config,), name=f"gateway-worker-{i}") for i in range(workers)]
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
            if not stopping:
                log.error("worker exited on its own; stopping the others", extra={"pid": proc.pid, "exitcode": proc.exitcode})
                forward(signal.SIGTERM, None)
                worst = max(worst, 1)
    return worst
