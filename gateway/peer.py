"""``PeerClient``: calls to other regions' gateways over their peer API (forwarded writes, strong reads).

Peers of a region are its address in the config (``regions.R.peer``, e.g. a
load balancer in front of the region's pool) followed by the peer addresses
live member items advertise for that region. A call tries them in that order
and moves to the next instance when one cannot be reached or does not answer
within ``peer.timeout``; only when none answers is the region unreachable.

Every request is signed (gateway/peer_auth.py) and travels on a keep-alive
HTTP/1.1 pool per address (gateway/http1.py), over mTLS when configured.

Answers: 200 is returned as parsed JSON; 409 raises ``NotPrimary`` carrying
the peer's rule, so the dispatcher can refresh and re-route; 401 means the
two gateways do not share a secret (or their clocks differ) and is reported
as ``PrimaryUnreachable`` with that reason, loudly logged; any other error
answer is passed on as ``PeerError`` with the peer's status and code.
"""

from __future__ import annotations

import asyncio
import logging
import ssl
import time
from collections.abc import Callable
from typing import Any

import orjson

from gateway.clock import Clock
from gateway.config import Config
from gateway.errors import NotPrimary, PeerError, PrimaryUnreachable
from gateway.http1 import Http1Error, Http1Pool
from gateway.metrics import Metrics
from gateway.peer_auth import PeerSigner

log = logging.getLogger(__name__)

WRITE_PATH = "/internal/v1/write"
READ_PATH = "/internal/v1/read"

#: Hosts a member may advertise that nobody else can connect to.
_UNROUTABLE = ("0.0.0.0", "::", "")


def tls_context(config: Config) -> ssl.SSLContext | None:
    """The client side of mTLS between peers, or ``None`` when it is not configured."""
    peer = config.peer
    if not peer.tls_cert:
        return None
    context = ssl.create_default_context(ssl.Purpose.SERVER_AUTH, cafile=peer.tls_ca)
    context.load_cert_chain(peer.tls_cert, peer.tls_key)
    # Peers are reached by address, not by a name on their certificate; the private CA is the trust.
    context.check_hostname = False
    return context


class PeerClient:
    def __init__(
        self,
        config: Config,
        signer: PeerSigner,
        clock: Clock,
        metrics: Metrics,
        member_peers: Callable[[str], list[str]] = lambda region: [],
    ) -> None:
        self._config = config
        self._signer = signer
        self._clock = clock
        self._metrics = metrics
        self._member_peers = member_peers
        self._timeout = config.peer.timeout
        self._ssl = tls_context(config)
        self._scheme = "https" if self._ssl else "http"
        # Event-loop confined.
        self._pools: dict[str, Http1Pool] = {}

    def addresses(self, region: str) -> list[str]:
        """The region's peer addresses, configured first, then live members'; without duplicates."""
        candidates = []
        configured = self._config.regions.get(region)
        if configured is not None:
            candidates.append(str(configured.peer))
        candidates += self._member_peers(region)
        return [a for a in dict.fromkeys(candidates) if a.rpartition(":")[0] not in _UNROUTABLE]

    async def write(self, region: str, body: dict[str, Any]) -> dict[str, Any]:
        return await self._call(region, "write", WRITE_PATH, body)

    async def read(self, region: str, body: dict[str, Any]) -> dict[str, Any]:
        return await self._call(region, "read", READ_PATH, body)

    async def _call(self, region: str, op: str, path: str, body: dict[str, Any]) -> dict[str, Any]:
        raw = orjson.dumps(body)
        addresses = self.addresses(region)
        if not addresses:
            raise PrimaryUnreachable(f"No gateway address is known for region {region} (not in the config, no live members).")
        started = time.perf_counter()
        problems = []
        for address in addresses:
            headers = {"Host": address, "Content-Type": "application/json", **self._signer.headers("POST", path, raw)}
            try:
                async with asyncio.timeout(self._timeout):
                    status, answer = await self._pool(address).post(headers, raw, path)
            except (Http1Error, TimeoutError) as exc:
                problems.append(f"{address}: {exc or 'no answer within %gs' % self._timeout}")
                continue
            return self._answer(region, op, address, status, answer, started)
        self._metrics.observe_upstream(f"peer:{region}", op, "unreachable", time.perf_counter() - started)
        raise PrimaryUnreachable(f"No gateway of region {region} answered: {'; '.join(problems)}.")

    def _answer(self, region: str, op: str, address: str, status: int, answer: bytes, started: float) -> dict[str, Any]:
        upstream = f"peer:{region}"
        elapsed = time.perf_counter() - started
        try:
            body = orjson.loads(answer) if answer else {}
        except orjson.JSONDecodeError:
            body = {}
        if status == 200 and isinstance(body, dict):
            self._metrics.observe_upstream(upstream, op, "ok", elapsed)
            return body
        error = body.get("error") if isinstance(body, dict) else None
        if not isinstance(error, dict):
            self._metrics.observe_upstream(upstream, op, "error", elapsed)
            raise PeerError(502, "upstream_error", f"The {region} gateway at {address} answered HTTP {status} without an error body.", True)
        code = str(error.get("code", "upstream_error"))
        message = str(error.get("message", ""))
        if status == 409 and code == "not_primary":
            self._metrics.observe_upstream(upstream, op, "not_primary", elapsed)
            raise NotPrimary(f"The {region} gateway is not primary: {message}", rule=body.get("rule"))
        if status == 401:
            self._metrics.observe_upstream(upstream, op, "unauthorized", elapsed)
            log.error("the %s gateway at %s refused our signature: %s", region, address, message)
            raise PrimaryUnreachable(
                f"The {region} gateway refused this gateway's signed request ({message}); "
                "check that both use the same peer secret and that their clocks agree."
            )
        self._metrics.observe_upstream(upstream, op, "error", elapsed)
        retry_after = None
        if status in (429, 503):
            retry_after = 1.0
        raise PeerError(status, code, f"The {region} gateway answered: {message}", bool(error.get("retryable")), retry_after)

    def _pool(self, address: str) -> Http1Pool:
        pool = self._pools.get(address)
        if pool is None:
            pool = self._pools[address] = Http1Pool(
                f"{self._scheme}://{address}", limit=self._config.peer.pool_size, ssl_context=self._ssl
            )
        return pool

    async def close(self) -> None:
        pools, self._pools = self._pools, {}
        for pool in pools.values():
            await pool.close()
