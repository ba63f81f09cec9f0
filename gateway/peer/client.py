"""``PeerClient``: calls to other regions' gateways over their peer API (forwarded writes, strong reads).

Peers of a region are its address in the config (``regions.R.peer``, e.g. a
load balancer in front of the region's pool) followed by the peer addresses
live member items advertise for that region. A call tries them in that order
and moves to the next instance when one cannot be reached or does not answer
within ``peer.timeout``; only when none answers is the region unreachable.

Every request is signed (gateway/peer/auth.py) and travels on a keep-alive
HTTP/1.1 pool per address (gateway/http1/pool.py), over mTLS when configured.

Answers: 200 is returned as parsed JSON; 409 raises ``NotPrimary`` carrying
the peer's rule, so the dispatcher can refresh and re-route; 401 means the
two gateways do not share a secret (or their clocks differ) and is reported
as ``PrimaryUnreachable`` with that reason, loudly logged; any other error
answer is passed on as ``PeerError`` with the peer's status and code.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable
from typing import Any

import orjson

from gateway import deadlines
from gateway.clock import Clock
from gateway.config import Config
from gateway.deadlines import TIMEOUT_HEADER
from gateway.errors import NotPrimary, PeerError, PrimaryUnreachable, StoreTimeout
from gateway.http1.parser import Http1ConnectError, Http1Error
from gateway.http1.pool import Http1Pool
from gateway.obs.logs import REQUEST_ID_HEADER, request_id
from gateway.obs.metrics import Metrics
from gateway.obs.tracing import PROPAGATOR, SpanKind, Status, StatusCode, Tracer
from gateway.peer.auth import PeerSigner
from gateway.peer.outlier_detection import OutlierDetector, State
from gateway.peer.routes import READ_PATH, WRITE_PATH
from gateway.peer.tls import tls_context

log = logging.getLogger(__name__)

#: Seconds of the caller's deadline kept back when passing the rest to a peer (the deadline sweeper's
#: resolution), so the peer's answer, even a 504, arrives before the caller gives up.
DEADLINE_MARGIN = 0.05
#: What an unanswered forward means for a write, in the words every such error carries.
MAY_HAVE_LANDED = (
    "A request reached a gateway that gave no answer, so a write may or may not have been applied there "
    "(a gateway drops a forward that reaches it past its deadline); retry with the same Idempotency-Key."
)
#: Error codes with which a peer instance refuses a request it did not process: try the region's next one.
_REFUSALS = (b'"overloaded"', b'"draining"')

#: Request heads kept (address x route); past it the cache starts over.
_HEADS_KEPT = 1024

#: Hosts a member may advertise that nobody else can connect to.
_UNROUTABLE = ("0.0.0.0", "::", "")


class PeerClient:
    def __init__(
        self,
        config: Config,
        signer: PeerSigner,
        clock: Clock,
        metrics: Metrics,
        member_peers: Callable[[str], list[str]] = lambda region: [],
        *,
        tracer: Tracer | None = None,
    ) -> None:
        self._config = config
        self._signer = signer
        self._clock = clock
        self._metrics = metrics
        self._member_peers = member_peers
        self._tracer = tracer
        self._timeout = config.peer.timeout
        peer = config.peer
        self.outliers = OutlierDetector(
            clock,
            consecutive_failures=peer.outlier_consecutive_failures,
            base_ejection=peer.outlier_base_ejection,
            max_ejection=peer.outlier_max_ejection,
            max_ejection_percent=peer.outlier_max_ejection_percent,
            probe_timeout=peer.timeout,
            on_change=self._outlier_changed,
        )
        # Address -> region, for the metrics of ejections (filled as addresses are used).
        self._regions: dict[str, str] = {}
        self._ssl = tls_context(config)
        self._scheme = "https" if self._ssl else "http"
        # Event-loop confined.
        self._pools: dict[str, Http1Pool] = {}
        #: Per region: the member addresses last seen, and the address list made of them.
        self._addresses: dict[str, tuple[list[str], list[str]]] = {}
        #: The constant first lines of a request, by (address, path).
        self._heads: dict[tuple[str, str], str] = {}

    def addresses(self, region: str) -> list[str]:
        """The region's peer addresses, configured first, then live members'; without duplicates."""
        members = self._member_peers(region)
        cached = self._addresses.get(region)
        if cached is not None and cached[0] == members:
            return cached[1]  # the members did not change: the usual case, on every forward
        candidates = []
        configured = self._config.regions.get(region)
        if configured is not None:
            candidates.append(str(configured.peer))
        candidates += members
        addresses = [a for a in dict.fromkeys(candidates) if a.rpartition(":")[0] not in _UNROUTABLE]
        if cached is not None:
            for departed in set(cached[1]).difference(addresses):
                self._forget(departed)
        self._addresses[region] = members, addresses
        return addresses

    def _forget(self, address: str) -> None:
        """An instance left its region's members: close its connections, drop what was kept for it.

        Pods come and go all day; without this, every address ever used would keep a pool.
        Its outlier state stays (a few bytes, and an ejection still counted in the gauge).
        """
        pool = self._pools.pop(address, None)
        if pool is not None:
            pool.shut()
        self._regions.pop(address, None)
        for key in [k for k in self._heads if k[0] == address]:
            del self._heads[key]

    async def write(self, region: str, body: dict[str, Any]) -> dict[str, Any]:
        return await self._call(region, "write", WRITE_PATH, body)

    async def read(self, region: str, body: dict[str, Any]) -> dict[str, Any]:
        return await self._call(region, "read", READ_PATH, body)

    async def call(self, region: str, path: str, body: dict[str, Any]) -> dict[str, Any]:
        """Any peer route at the first answering gateway of ``region``."""
        return await self._call(region, path.rsplit("/", 1)[1], path, body)

    async def call_address(
        self, address: str, path: str, body: dict[str, Any], *, region: str, timeout: float | None = None,
        new_connection: bool = False,
    ) -> dict[str, Any]:
        """A peer route at one gateway address. ``new_connection`` closes the connection after the answer, so the
        next call reaches whichever worker process of that address accepts it (workers share the port)."""
        raw = orjson.dumps(body)
        timeout = timeout or self._timeout
        request = self._request(address, region, path, raw, timeout, close=new_connection)
        started = time.perf_counter()
        op = path.rsplit("/", 1)[1]
        try:
            status, answer = await self._pool(address).request(request, timeout=timeout)
        except (Http1Error, TimeoutError) as exc:
            self._metrics.observe_upstream(f"peer:{region}", op, "unreachable", time.perf_counter() - started)
            landed = "Nothing was sent." if isinstance(exc, Http1ConnectError) else MAY_HAVE_LANDED
            raise PrimaryUnreachable(f"The gateway at {address} did not answer: {str(exc) or 'timeout'}. {landed}") from None
        return self._answer(region, op, address, status, answer, started)

    async def _call(self, region: str, op: str, path: str, body: dict[str, Any]) -> dict[str, Any]:
        if self._tracer is None:
            return await self._forward(region, op, path, body, None)
        with self._tracer.start_as_current_span(
            f"forward {op}", kind=SpanKind.CLIENT, attributes={"gateway.peer.region": region, "url.path": path},
            record_exception=False, set_status_on_exception=False,
        ) as span:
            try:
                return await self._forward(region, op, path, body, span)
            except NotPrimary:
                span.set_attribute("gateway.outcome", "not_primary")
                raise
            except BaseException as exc:
                span.set_status(Status(StatusCode.ERROR, type(exc).__name__))
                raise

    async def _forward(self, region: str, op: str, path: str, body: dict[str, Any], span: Any) -> dict[str, Any]:
        """Try the region's addresses in order, skipping ejected ones; the first answer is the answer."""
        raw = orjson.dumps(body)
        addresses = self.addresses(region)
        if not addresses:
            raise PrimaryUnreachable(f"No gateway address is known for region {region} (not in the config, no live members).")
        started = time.perf_counter()
        problems = []
        refusal: tuple[str, bytes] | None = None
        #: Whether a request left for an instance that then gave no answer: it may have been applied there.
        unanswered = False
        outliers = self.outliers
        for address in addresses:
            if not outliers.allow(address):
                problems.append(f"{address}: ejected after consecutive failures (next probe in {outliers.retry_in(address):.1f}s)")
                continue
            self._regions[address] = region
            timeout, cut_by_deadline = self._attempt_timeout()
            request = self._request(address, region, path, raw, timeout)
            try:
                status, answer = await self._pool(address).request(request, timeout=timeout)
            except (Http1Error, TimeoutError) as exc:
                if not (cut_by_deadline and isinstance(exc, TimeoutError)):
                    outliers.failure(address, addresses)
                unanswered = unanswered or not isinstance(exc, Http1ConnectError)
                problems.append(f"{address}: {str(exc) or f'no answer within {timeout:g}s'}")
                if span is not None:
                    span.add_event("peer failed", {"address": address, "problem": str(exc) or "timeout"})
                continue
            if status == 503 and any(code in answer for code in _REFUSALS):
                # That instance refused without processing (its concurrency bound, or shutting down).
                outliers.failure(address, addresses)
                refusal = address, answer
                continue
            outliers.success(address)
            if span is not None:
                span.set_attribute("server.address", address)
                span.set_attribute("http.response.status_code", status)
            return self._answer(region, op, address, status, answer, started)
        if refusal is not None:  # the region answered, but only with refusals: pass the last one on
            return self._answer(region, op, refusal[0], 503, refusal[1], started)
        self._metrics.observe_upstream(f"peer:{region}", op, "unreachable", time.perf_counter() - started)
        raise PrimaryUnreachable(
            f"No gateway of region {region} answered: {'; '.join(problems)}. "
            + (MAY_HAVE_LANDED if unanswered else "Nothing was sent; retrying is safe.")
        )

    def _attempt_timeout(self) -> tuple[float, bool]:
        """``peer.timeout``, or what is left of the request's deadline if less (and whether it was cut)."""
        left = deadlines.remaining()
        if left is None or left >= self._timeout:
            return self._timeout, False
        if left <= 0:
            raise StoreTimeout("The request's deadline passed before a peer gateway could be asked.")
        return left, True

    def _request(self, address: str, region: str, path: str, raw: bytes, timeout: float, *, close: bool = False) -> bytes:
        """The whole signed HTTP/1.1 request of ``raw`` to ``path`` at ``address`` (a gateway of ``region``)."""
        key = (address, path)
        head = self._heads.get(key)
        if head is None:
            if len(self._heads) >= _HEADS_KEPT:  # members come and go: forget the heads of departed addresses
                self._heads.clear()
            head = self._heads[key] = f"POST {path} HTTP/1.1\r\nHost: {address}\r\nContent-Type: application/json\r\n"
        lines = [head, self._signer.header_lines("POST", path, raw, to=region)]
        # The request id, the remaining deadline and the trace context travel outside the signature
        # (it covers method, path, timestamp, nonce, the receiver's region and the body): a forger could change them, but they
        # steer only logs, how long the peer tries and which trace its spans join, never what is written.
        rid = request_id.get()
        if rid is not None:
            lines.append(f"{REQUEST_ID_HEADER}: {rid}\r\n")
        if deadlines.current.get() is not None:
            lines.append(f"{TIMEOUT_HEADER}: {max(timeout - DEADLINE_MARGIN, 0.001):.3f}\r\n")
        if self._tracer is not None:
            carrier: dict[str, str] = {}
            PROPAGATOR.inject(carrier)
            lines += [f"{name}: {value}\r\n" for name, value in carrier.items()]
        if close:
            lines.append("Connection: close\r\n")
        lines.append(f"Content-Length: {len(raw)}\r\n\r\n")
        return "".join(lines).encode() + raw

    def _outlier_changed(self, address: str, old: State, new: State) -> None:
        upstream = f"peer:{self._regions.get(address, '?')}"
        if new is State.EJECTED:
            self._metrics.outlier_ejections_total.labels(upstream).inc()
            if old is State.HEALTHY:
                self._metrics.outlier_ejected.labels(upstream).inc()
        elif new is State.HEALTHY:
            self._metrics.outlier_ejected.labels(upstream).dec()

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
                f"{self._scheme}://{address}", limit=self._config.peer.pool_size, ssl_context=self._ssl,
                source_address=self._config.source_address,
            )
        return pool

    async def close(self) -> None:
        pools, self._pools = self._pools, {}
        for pool in pools.values():
            await pool.close()
