"""The request path shared by the gateway's two listeners (downstream API and peer API).

Both run on aiohttp's low-level server (``aiohttp.web.Server``; why, in
gateway/api/downstream.py). ``Frontend.handle`` is the whole path of a request: take its
request id, deadline and trace context from the headers, bound the worker's
concurrency, admit it (the peer API authenticates here, before anything is
routed), route it (``_route``, the listener's one routing function), call the
handler, render any failure, count it, log it.

Headers read on both listeners (and sent on across the peer hop by ``PeerClient``):
- ``X-Request-Id``: the caller's id (≤ 128 ASCII characters) or a generated
  one; returned on every answer and written on every log line of the request.
- ``X-Request-Timeout``: seconds the caller will wait (a decimal number > 0).
  The request's deadline is the smaller of it and ``gateway.request_timeout``;
  a forward passes on what is left of it, so the receiver gives up in time.
- ``traceparent`` (W3C Trace Context): the parent of the request's span.

Invariant: every failure becomes the JSON error body of DESIGN.md §4. A
``GatewayError`` renders itself; anything else is logged with its traceback
and answered 500 ``internal`` without one. No request can crash the process
or leak a stack trace to the caller. A request cancelled by its deadline
answers 504, or 408 ``request_timeout`` if its body was still arriving (the
caller was slow, nothing was applied); one released at shutdown past
``shutdown_grace`` answers 503 ``draining``.
"""

from __future__ import annotations

import asyncio
import logging
import re
import time
from collections.abc import Iterable
from typing import Any, Awaitable, Callable

import orjson
from aiohttp import web
from aiohttp.http_exceptions import HttpProcessingError
from aiohttp.web_protocol import RequestPayloadError
from opentelemetry import context as otel_context
from opentelemetry import trace

from gateway import deadlines as request_deadlines
from gateway.api.overload import ConcurrencyLimit
from gateway.api.protocol import GatewayServer
from gateway.config import Config
from gateway.deadlines import RELEASED, TIMEOUT_HEADER, TIMEOUT_PATTERN, Deadline, Deadlines
from gateway.errors import BodyTooLarge, Draining, GatewayError, Overloaded, RequestError, RequestTimeout, StoreTimeout
from gateway.features.values import parse_json
from gateway.obs.logs import REQUEST_ID_HEADER, AccessLog, accept_request_id, request_id
from gateway.obs.metrics import Metrics
from gateway.obs.tracing import PROPAGATOR, SpanKind, Status, StatusCode, Tracer

log = logging.getLogger(__name__)

JSON = "application/json"
UNMATCHED = "unmatched"

RouteHandler = Callable[..., Awaitable[web.StreamResponse]]

#: What a handler may tell the access log: the request's outcome ("applied", "duplicate", …) and extra fields.
OUTCOME = web.RequestKey("outcome", str)
LOG_FIELDS = web.RequestKey("log_fields", dict)
_TIMEOUT = re.compile(TIMEOUT_PATTERN)
#: Set while the body is being read: a deadline that passes then is the caller's slowness (408), not an upstream's.
READING_BODY = web.RequestKey("reading_body", bool)


def json_response(body: Any, status: int = 200) -> web.Response:
    return web.Response(body=orjson.dumps(body), status=status, content_type=JSON)


def error_response(error: GatewayError) -> web.Response:
    return web.Response(body=error.body(), status=error.status, content_type=JSON, headers=error.headers())


class Frontend:
    """Deadline, concurrency bound, routing, error rendering, metrics, logs and spans around one listener's handlers."""

    #: Paths answered even past the concurrency bound (probes and scrapes).
    UNBOUNDED: frozenset[str] = frozenset()
    #: ``{route: status codes}`` whose series exist from the start.
    PRIMED: dict[str, Iterable[int]] = {}
    #: Whether JSON bodies carry feature values, whose numbers must be exact (``parse_json``); the peer API's
    #: carry them as DynamoDB strings, and its own numbers are checked as ints by its handlers.
    EXACT_NUMBERS = True

    def __init__(
        self,
        config: Config,
        metrics: Metrics,
        deadlines: Deadlines,
        *,
        limit: ConcurrencyLimit | None = None,
        tracer: Tracer | None = None,
        access_log: AccessLog | None = None,
    ) -> None:
        self._config = config
        self._metrics = metrics
        self._deadlines = deadlines
        self._timeout = config.request_timeout
        self._limit = limit or ConcurrencyLimit(config.max_concurrent_requests)
        self._tracer = tracer
        self._access = access_log or AccessLog(config.logs.access_sample, config.region)
        #: Set at SIGTERM: answers ask the client to close its connection (so it reconnects elsewhere).
        self.draining = False
        metrics.prime_downstream(self.PRIMED)

    async def handle(self, request: web.BaseRequest) -> web.StreamResponse:
        """The low-level server's request handler: every request of this listener passes here once."""
        started = time.perf_counter()
        task = request.task
        headers = request.headers
        rid = accept_request_id(headers.get(REQUEST_ID_HEADER))
        request_id.set(rid)
        span = None
        if self._tracer is not None:
            span, token = self._start_span(request)
        route = UNMATCHED
        params: tuple[str, ...] = ()
        deadline: Deadline | None = None
        acquired = False
        try:
            deadline = self._deadlines.track(task, self._timeout_of(headers))
            request_deadlines.current.set(deadline)
            if request.path not in self.UNBOUNDED:
                if not self._limit.acquire():
                    route, params = self._route_label(request)
                    raise Overloaded(
                        f"This gateway worker is serving its maximum of {self._limit.limit} concurrent requests; "
                        "retry shortly (or elsewhere)."
                    )
                acquired = True
            await self._admit(request)
            route, handler, params = self._route(request.method, request.path)
            response = await handler(request, *params)
        except GatewayError as error:
            response = error_response(error)
        except asyncio.CancelledError:
            reason = None if deadline is None else self._deadlines.untrack(deadline)
            if reason is None:
                # Shutdown or client gone, not ours: nobody reads an answer.
                if acquired:
                    self._limit.release()
                if span is not None:
                    self._end_span(span, token, request.method, route, 499)
                raise
            task.uncancel()
            if reason == RELEASED:
                response = error_response(
                    Draining(
                        "The gateway is shutting down and this request did not finish within its grace period; "
                        "a write may or may not have been applied (retry with the same Idempotency-Key)."
                    )
                )
            elif request.get(READING_BODY):
                # The caller was slow, not an upstream: nothing was routed, so nothing was applied.
                response = error_response(
                    RequestTimeout(
                        f"The request's body did not arrive within its {self._timeout_of(headers):g}s deadline; "
                        "nothing was applied. Send the body at once (or with a larger X-Request-Timeout)."
                    )
                )
            else:
                response = error_response(
                    StoreTimeout(
                        f"The request did not finish within its {self._timeout_of(headers):g}s deadline; "
                        "a write may or may not have been applied (retry with the same Idempotency-Key)."
                    )
                )
        except Exception:
            log.exception("unhandled error serving %s %s", request.method, request.path)
            response = error_response(GatewayError("The gateway failed unexpectedly; the error is logged. Retrying may help."))
        if acquired:
            self._limit.release()
        if deadline is not None:
            self._deadlines.untrack(deadline)
        response.headers[REQUEST_ID_HEADER] = rid
        if self.draining or request.get(READING_BODY):
            # Draining: the client should reconnect elsewhere. A body read that broke off: the rest of it
            # may still arrive, and must not be read as the next request.
            response.force_close()
        status = response.status
        elapsed = time.perf_counter() - started
        self._metrics.observe_downstream(route, status, elapsed)
        if self._access.wanted(status):
            try:
                self._access_log(request, route, params, response, elapsed)
            except Exception:  # a log line is never worth the answer: the caller still gets it
                log.exception("access log failed for %s %s", request.method, request.path)
        if span is not None:
            self._end_span(span, token, request.method, route, status)
        return response

    def _route_label(self, request: web.BaseRequest) -> tuple[str, tuple[str, ...]]:
        """The route and params of a request refused before routing (for its metrics and log line only)."""
        try:
            route, _, params = self._route(request.method, request.path)
        except GatewayError:
            return UNMATCHED, ()
        return route, params

    def _timeout_of(self, headers: Any) -> float:
        """The request's timeout: ``gateway.request_timeout``, or less if the caller (or a peer) asked."""
        wanted = headers.get(TIMEOUT_HEADER)
        if wanted is None:
            return self._timeout
        if _TIMEOUT.fullmatch(wanted) is None:
            raise RequestError(f"{TIMEOUT_HEADER} must be a number of seconds greater than 0, got {wanted[:32]!r}.")
        return min(float(wanted), self._timeout)

    # -- tracing -------------------------------------------------------------------------------

    def _start_span(self, request: web.BaseRequest) -> tuple[Any, object]:
        assert self._tracer is not None
        parent = PROPAGATOR.extract(request.headers)
        span = self._tracer.start_span(
            request.method,
            context=parent,
            kind=SpanKind.SERVER,
            attributes={"http.request.method": request.method, "url.path": request.path, "gateway.region": self._config.region},
        )
        return span, otel_context.attach(trace.set_span_in_context(span, parent))

    @staticmethod
    def _end_span(span: Any, token: object, method: str, route: str, status: int) -> None:
        if span.is_recording():
            span.update_name(f"{method} {route}")
            span.set_attribute("http.route", route)
            span.set_attribute("http.response.status_code", status)
            if status >= 500:
                span.set_status(Status(StatusCode.ERROR))
        span.end()
        otel_context.detach(token)  # type: ignore[arg-type]

    # -- access log ----------------------------------------------------------------------------

    def _access_log(
        self, request: web.BaseRequest, route: str, params: tuple[str, ...], response: web.StreamResponse, elapsed: float
    ) -> None:
        fields: dict[str, Any] = {
            "method": request.method,
            "route": route,
            "status": response.status,
            "outcome": request.get(OUTCOME) or ("ok" if response.status < 400 else _error_code(response)),
            "duration_ms": round(elapsed * 1000, 3),
        }
        fields.update(self._log_fields(request, route, params))
        self._access.write(fields)

    def _log_fields(self, request: web.BaseRequest, route: str, params: tuple[str, ...]) -> dict[str, Any]:
        """The listener's own access-log fields (view, scope, epoch) of one request."""
        return request.get(LOG_FIELDS) or {}

    # -- per listener --------------------------------------------------------------------------

    async def _admit(self, request: web.BaseRequest) -> None:
        """Refuse a request before it is routed (the peer API authenticates here)."""

    def _route(self, method: str, path: str) -> tuple[str, RouteHandler, tuple[str, ...]]:
        raise NotImplementedError

    async def _body(self, request: web.BaseRequest) -> bytes:
        """The request body, at most ``max_body_bytes`` (aiohttp caches it: a second call is free)."""
        limit = self._config.max_body_bytes
        declared = request.content_length
        if declared is not None and declared > limit:
            raise BodyTooLarge(f"The body is {declared} bytes; this gateway accepts at most {limit}.")
        request[READING_BODY] = True
        try:
            # client_max_size counts the bytes actually received, so a chunked body or one
            # that outgrows its Content-Length is cut off at the limit too.
            body = await request.read()
        except web.HTTPRequestEntityTooLarge:
            raise BodyTooLarge(f"The body is larger than the {limit} bytes this gateway accepts.") from None
        except (RequestPayloadError, HttpProcessingError) as exc:
            # e.g. Content-Encoding: gzip on a body that is not gzip, or chunks that break off.
            problem = " ".join(str(exc).split()).removeprefix("400, message: ")
            raise RequestError(f"The body could not be read: {problem[:200]}.") from None
        except (ConnectionError, asyncio.IncompleteReadError) as exc:
            raise RequestError(f"The body could not be read: {exc}.") from None
        request[READING_BODY] = False  # only a body read whole clears it: after a failed read the framing is lost
        return body


    async def _json_object(self, request: web.BaseRequest) -> dict[str, Any]:
        raw = await self._body(request)
        if not raw:
            raise RequestError("The request needs a JSON body.")
        try:
            body = parse_json(raw) if self.EXACT_NUMBERS else orjson.loads(raw)
        except orjson.JSONDecodeError as exc:
            raise RequestError(f"The body is not valid JSON: {exc}.") from None
        if not isinstance(body, dict):
            raise RequestError("The body must be a JSON object.")
        return body


def _error_code(response: web.StreamResponse) -> str:
    body = getattr(response, "body", None)
    if isinstance(body, bytes):
        try:
            return str(orjson.loads(body)["error"]["code"])
        except (orjson.JSONDecodeError, KeyError, TypeError):
            pass
    return f"http_{response.status}"


def create_server(
    frontend: Frontend, config: Config, *, max_connections: int | None = None, max_headers: int = 128,
    max_field_size: int = 8190,
) -> GatewayServer:
    """The low-level aiohttp server for ``frontend``: the body limit, idle timeout and connection cap of the config.

    ``max_connections`` defaults to ``gateway.max_connections``; ``max_headers`` and ``max_field_size``
    bound a request head (aiohttp's defaults; the peer listener, whose callers are gateways, takes less).
    """
    # +1: aiohttp refuses bodies of exactly client_max_size bytes; ours is an inclusive limit.
    max_size = config.max_body_bytes + 1

    def request_factory(message, payload, protocol, writer, task):  # type: ignore[no-untyped-def]
        return web.BaseRequest(message, payload, protocol, writer, task, protocol._loop, client_max_size=max_size)

    return GatewayServer(
        frontend.handle, request_factory=request_factory, access_log=None,
        max_connections=max_connections or config.max_connections, idle_timeout=config.idle_timeout,
        max_headers=max_headers, max_field_size=max_field_size,
    )
