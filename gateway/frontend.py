"""The request path shared by the gateway's two listeners (downstream API and peer API).

Both run on aiohttp's low-level server (``aiohttp.web.Server``; why, in
gateway/api.py). ``Frontend.handle`` is the whole path of a request: admit it
(the peer API authenticates here, before anything is routed), route it
(``_route``, the listener's one routing function), enforce the deadline, call
the handler, render any failure, count it.

Invariant: every failure becomes the JSON error body of DESIGN.md §4. A
``GatewayError`` renders itself; anything else is logged with its traceback
and answered 500 ``internal`` without one. No request can crash the process
or leak a stack trace to the caller.
"""

from __future__ import annotations

import asyncio
import logging
import time
from typing import Any, Awaitable, Callable

import orjson
from aiohttp import web

from gateway.config import Config
from gateway.deadlines import Deadlines
from gateway.errors import BodyTooLarge, GatewayError, RequestError, StoreTimeout
from gateway.metrics import Metrics

log = logging.getLogger(__name__)

JSON = "application/json"
UNMATCHED = "unmatched"

RouteHandler = Callable[..., Awaitable[web.StreamResponse]]


def json_response(body: Any, status: int = 200) -> web.Response:
    return web.Response(body=orjson.dumps(body), status=status, content_type=JSON)


def error_response(error: GatewayError) -> web.Response:
    return web.Response(body=error.body(), status=error.status, content_type=JSON, headers=error.headers())


class Frontend:
    """Deadline, routing, error rendering and metrics around one listener's handlers."""

    def __init__(self, config: Config, metrics: Metrics, deadlines: Deadlines) -> None:
        self._config = config
        self._metrics = metrics
        self._deadlines = deadlines
        self._timeout = config.request_timeout

    async def handle(self, request: web.BaseRequest) -> web.StreamResponse:
        """The low-level server's request handler: every request of this listener passes here once."""
        started = time.perf_counter()
        task = request.task
        deadline = self._deadlines.track(task, self._timeout)
        route = UNMATCHED
        try:
            await self._admit(request)
            route, handler, params = self._route(request.method, request.path)
            response = await handler(request, *params)
        except GatewayError as error:
            response = error_response(error)
        except asyncio.CancelledError:
            if not self._deadlines.untrack(deadline):
                raise  # shutdown or client gone, not our deadline
            task.uncancel()
            response = error_response(
                StoreTimeout(
                    f"The request did not finish within its {self._timeout:g}s deadline; "
                    "a write may or may not have been applied (retry with the same Idempotency-Key)."
                )
            )
        except Exception:
            log.exception("unhandled error serving %s %s", request.method, request.path)
            response = error_response(GatewayError("The gateway failed unexpectedly; the error is logged. Retrying may help."))
        self._deadlines.untrack(deadline)
        self._metrics.observe_downstream(route, response.status, time.perf_counter() - started)
        return response

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
        try:
            # client_max_size counts the bytes actually received, so a chunked body or one
            # that outgrows its Content-Length is cut off at the limit too.
            return await request.read()
        except web.HTTPRequestEntityTooLarge:
            raise BodyTooLarge(f"The body is larger than the {limit} bytes this gateway accepts.") from None
        except (ConnectionError, asyncio.IncompleteReadError) as exc:
            raise RequestError(f"The body could not be read: {exc}.") from None

    async def _json_object(self, request: web.BaseRequest) -> dict[str, Any]:
        raw = await self._body(request)
        if not raw:
            raise RequestError("The request needs a JSON body.")
        try:
            body = orjson.loads(raw)
        except orjson.JSONDecodeError as exc:
            raise RequestError(f"The body is not valid JSON: {exc}.") from None
        if not isinstance(body, dict):
            raise RequestError("The body must be a JSON object.")
        return body


def create_server(frontend: Frontend, config: Config) -> web.Server:
    """The low-level aiohttp server for ``frontend``; requests carry the body limit of the config."""
    # +1: aiohttp refuses bodies of exactly client_max_size bytes; ours is an inclusive limit.
    max_size = config.max_body_bytes + 1

    def request_factory(message, payload, protocol, writer, task):  # type: ignore[no-untyped-def]
        return web.BaseRequest(message, payload, protocol, writer, task, protocol._loop, client_max_size=max_size)

    return web.Server(frontend.handle, request_factory=request_factory, access_log=None)
