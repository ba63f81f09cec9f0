"""The downstream HTTP API of DESIGN.md §4, on aiohttp's low-level server.

Why the low-level server (``aiohttp.web.Server``) and not ``web.Application``:
the application layer (router, match info, per-middleware wrappers, a
``get_event_loop()`` system call per request) cost ~27 µs of the ~105 µs a
request costs aiohttp here, measured side by side; the gateway has eight
routes and needs none of it. ``DownstreamApi.handle`` is the whole request
path: route (``_route``, a prefix test and one dict lookup), enforce the
deadline, call the handler, render any failure, count it.

Handlers translate HTTP to ``Dispatcher`` calls and back; they never route,
retry or buffer. Every failure becomes the JSON error body of §4: a
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
from prometheus_client import CONTENT_TYPE_LATEST, generate_latest

from gateway import records
from gateway.clock import Clock
from gateway.config import Config
from gateway.deadlines import Deadlines
from gateway.dispatcher import Dispatcher
from gateway.errors import (
    BodyTooLarge,
    GatewayError,
    MethodNotAllowed,
    NotFound,
    RequestError,
    RouteNotFound,
    StoreTimeout,
)
from gateway.health import Health
from gateway.members import Membership
from gateway.metrics import Metrics

log = logging.getLogger(__name__)

JSON = "application/json"

RouteHandler = Callable[..., Awaitable[web.StreamResponse]]

FEATURES_PREFIX = "/v1/features/"
#: Route labels of the metrics (aiohttp's canonical form, which dashboards already know).
ROUTE_FEATURES = "/v1/features/{view}/{key}"
UNMATCHED = "unmatched"


def json_response(body: Any, status: int = 200) -> web.Response:
    return web.Response(body=orjson.dumps(body), status=status, content_type=JSON)


def error_response(error: GatewayError) -> web.Response:
    return web.Response(body=error.body(), status=error.status, content_type=JSON, headers=error.headers())


class DownstreamApi:
    """The downstream API of one worker: routing, deadlines, error rendering and the handlers."""

    def __init__(
        self,
        config: Config,
        dispatcher: Dispatcher,
        health: Health,
        metrics: Metrics,
        clock: Clock,
        deadlines: Deadlines,
        membership: Membership,
    ) -> None:
        self._config = config
        self._membership = membership
        self._deadlines = deadlines
        self._views = config.views
        self._dispatcher = dispatcher
        self._health = health
        self._metrics = metrics
        self._clock = clock
        self._timeout = config.request_timeout
        self._feature_methods: dict[str, RouteHandler] = {
            "GET": self.get_features, "PUT": self.put_features, "DELETE": self.delete_features,
        }
        self._exact: dict[str, dict[str, RouteHandler]] = {
            "/v1/read": {"POST": self.read},
            "/v1/write": {"POST": self.write},
            "/healthz": {"GET": self.healthz},
            "/readyz": {"GET": self.readyz},
            "/metrics": {"GET": self.metrics},
            "/v1/members": {"GET": self.members},
        }

    # -- the request path ------------------------------------------------------------------------

    async def handle(self, request: web.BaseRequest) -> web.StreamResponse:
        """The low-level server's request handler: every downstream request passes here once."""
        started = time.perf_counter()
        task = request.task
        deadline = self._deadlines.track(task, self._timeout)
        route = UNMATCHED
        try:
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

    def _route(self, method: str, path: str) -> tuple[str, RouteHandler, tuple[str, ...]]:
        """The one place that maps (method, path) to a handler; raises 404/405 from the error tree."""
        if path.startswith(FEATURES_PREFIX):
            view, sep, key = path[len(FEATURES_PREFIX):].partition("/")
            if not (sep and view and key):
                raise RouteNotFound(f"No route {method} {path}; feature paths are /v1/features/{{view}}/{{key}}.")
            handler = self._feature_methods.get(method)
            if handler is None:
                raise MethodNotAllowed(f"{method} is not allowed on {path}; use GET, PUT or DELETE.")
            return ROUTE_FEATURES, handler, (view, key)
        methods = self._exact.get(path)
        if methods is None:
            raise RouteNotFound(f"No route {method} {path}; see the API table in the README.")
        handler = methods.get(method)
        if handler is None:
            raise MethodNotAllowed(f"{method} is not allowed on {path}; use {', '.join(methods)}.")
        return path, handler, ()

    # -- reads ---------------------------------------------------------------------------------

    async def get_features(self, request: web.BaseRequest, view_name: str, key: str) -> web.Response:
        view = records.view_of(self._views, view_name)
        key = records.check_key(key)
        query = request.query
        wanted = None
        strong = False
        if query:
            names = query.get("features")
            if names is not None:
                wanted = records.check_feature_names(view, [n for n in names.split(",") if n])
            strong = records.check_consistency(query.get("consistency"))
        found = await self._dispatcher.read(view, key, wanted, strong)
        if found is None:
            raise NotFound(f"View {view.name!r} has no entity with key {key[:128]!r}.")
        return web.Response(body=orjson.dumps(found), content_type=JSON)

    async def read(self, request: web.BaseRequest) -> web.Response:
        body = await self._json_object(request)
        view = records.view_of(self._views, body.get("view"))
        keys = body.get("keys")
        if not isinstance(keys, list) or not keys:
            raise RequestError("'keys' must be a non-empty list of entity keys.")
        if len(keys) > records.MAX_READ_KEYS:
            raise RequestError(f"A read takes at most {records.MAX_READ_KEYS} keys (DynamoDB's BatchGetItem limit); got {len(keys)}.")
        for i, key in enumerate(keys):
            records.check_key(key, f"keys[{i}]")
        wanted = records.check_feature_names(view, body.get("features"))
        strong = records.check_consistency(body.get("consistency"))
        results = await self._dispatcher.read_many(view, keys, wanted, strong)
        return json_response({"view": view.name, "results": results})

    # -- writes --------------------------------------------------------------------------------

    async def put_features(self, request: web.BaseRequest, view_name: str, key: str) -> web.Response:
        view = records.view_of(self._views, view_name)
        body = await self._json_object(request)
        record = records.write_record(
            view,
            key,
            body.get("features"),
            body.get("event_time"),
            request.headers.get("Idempotency-Key"),
            self._clock.wall_ms(),
        )
        return json_response(await self._dispatcher.write(record))

    async def delete_features(self, request: web.BaseRequest, view_name: str, key: str) -> web.Response:
        view = records.view_of(self._views, view_name)
        event_time: Any = request.query.get("event_time")
        if event_time is not None and event_time.isdigit():
            event_time = int(event_time)
        record = records.delete_record(
            view, key, event_time, request.headers.get("Idempotency-Key"), self._clock.wall_ms()
        )
        return json_response(await self._dispatcher.write(record))

    async def write(self, request: web.BaseRequest) -> web.Response:
        body = await self._json_object(request)
        view = records.view_of(self._views, body.get("view"))
        raw = body.get("records")
        if not isinstance(raw, list) or not raw:
            raise RequestError("'records' must be a non-empty list of {key, features, event_time, idempotency_key}.")
        if len(raw) > records.MAX_WRITE_RECORDS:
            raise RequestError(f"A write takes at most {records.MAX_WRITE_RECORDS} records; got {len(raw)}.")
        now_ms = self._clock.wall_ms()
        batch = []
        for i, rec in enumerate(raw):
            if not isinstance(rec, dict):
                raise RequestError(f"records[{i}] must be a JSON object.")
            batch.append(
                records.write_record(
                    view, rec.get("key"), rec.get("features"), rec.get("event_time"), rec.get("idempotency_key"),
                    now_ms, where=f"records[{i}].",
                )
            )
        return json_response({"view": view.name, "results": await self._dispatcher.write_many(batch)})

    # -- operations ----------------------------------------------------------------------------

    async def healthz(self, request: web.BaseRequest) -> web.Response:
        return json_response({"status": "ok", "region": self._config.region})

    async def readyz(self, request: web.BaseRequest) -> web.Response:
        if self._health.ready:
            return json_response({"ready": True, "region": self._config.region})
        return json_response({"ready": False, "region": self._config.region, "reasons": self._health.reasons()}, status=503)

    async def members(self, request: web.BaseRequest) -> web.Response:
        return json_response(self._membership.describe())

    async def metrics(self, request: web.BaseRequest) -> web.Response:
        return web.Response(body=generate_latest(self._metrics.registry), headers={"Content-Type": CONTENT_TYPE_LATEST})

    # -- helpers -------------------------------------------------------------------------------

    async def _json_object(self, request: web.BaseRequest) -> dict[str, Any]:
        limit = self._config.max_body_bytes
        declared = request.content_length
        if declared is not None and declared > limit:
            raise BodyTooLarge(f"The body is {declared} bytes; this gateway accepts at most {limit}.")
        try:
            # client_max_size counts the bytes actually received, so a chunked body or one
            # that outgrows its Content-Length is cut off at the limit too.
            raw = await request.read()
        except web.HTTPRequestEntityTooLarge:
            raise BodyTooLarge(f"The body is larger than the {limit} bytes this gateway accepts.") from None
        except (ConnectionError, asyncio.IncompleteReadError) as exc:
            raise RequestError(f"The body could not be read: {exc}.") from None
        if not raw:
            raise RequestError("The request needs a JSON body.")
        try:
            body = orjson.loads(raw)
        except orjson.JSONDecodeError as exc:
            raise RequestError(f"The body is not valid JSON: {exc}.") from None
        if not isinstance(body, dict):
            raise RequestError("The body must be a JSON object.")
        return body


def create_server(api: DownstreamApi, config: Config) -> web.Server:
    """The low-level aiohttp server for ``api``; requests carry the body limit of the config."""
    # +1: aiohttp refuses bodies of exactly client_max_size bytes; ours is an inclusive limit.
    max_size = config.max_body_bytes + 1

    def request_factory(message, payload, protocol, writer, task):  # type: ignore[no-untyped-def]
        return web.BaseRequest(message, payload, protocol, writer, task, protocol._loop, client_max_size=max_size)

    return web.Server(api.handle, request_factory=request_factory, access_log=None)
