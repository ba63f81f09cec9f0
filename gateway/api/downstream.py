"""The downstream HTTP API of DESIGN.md §4, on aiohttp's low-level server.

Why the low-level server (``aiohttp.web.Server``) and not ``web.Application``:
the application layer (router, match info, per-middleware wrappers, a
``get_event_loop()`` system call per request) costs about a quarter of what a
request costs aiohttp, measured side by side (the README's Performance
section has the figures); the gateway has eight routes and needs none of it. The request path (deadline, error rendering,
metrics) is ``Frontend.handle`` in gateway/api/frontend.py, shared with the peer
API; ``DownstreamApi._route`` (a prefix test and one dict lookup) is this
listener's one routing function.

Handlers translate HTTP to ``Dispatcher`` calls and back; they never route,
retry or buffer. Every failure becomes the JSON error body of §4.
"""

from __future__ import annotations

from typing import Any

import orjson
from aiohttp import web
from prometheus_client import CONTENT_TYPE_LATEST

from gateway.api import openapi
from gateway.api.auth import Principal, TokenAuthority
from gateway.api.frontend import JSON, OUTCOME, Frontend, RouteHandler, json_response
from gateway.api.health import Health
from gateway.api.overload import ConcurrencyLimit
from gateway.clock import Clock
from gateway.config import Config
from gateway.deadlines import Deadlines
from gateway.dispatcher import Dispatcher
from gateway.errors import MethodNotAllowed, NotFound, RequestError, RouteNotFound
from gateway.features import records
from gateway.features.items import Version
from gateway.members import Membership
from gateway.obs.logs import AccessLog
from gateway.obs.metrics import Metrics
from gateway.obs.tracing import Tracer
from gateway.routing.loader import RoutingLoader

API_PREFIX = "/v1/"
FEATURES_PREFIX = "/v1/features/"
#: The caller of a request, with auth on (gateway/api/auth.py).
PRINCIPAL = web.RequestKey("principal", Principal)
#: Route labels of the metrics (aiohttp's canonical form, which dashboards already know).
ROUTE_FEATURES = "/v1/features/{view}/{key}"
#: Status codes a data route commonly answers; their series exist from the start.
DATA_CODES = (200, 400, 404, 429, 503, 504)


class DownstreamApi(Frontend):
    """The downstream API of one worker: its routes and handlers (the request path is ``Frontend.handle``)."""

    UNBOUNDED = frozenset({"/healthz", "/readyz", "/metrics"})
    PRIMED = {
        ROUTE_FEATURES: DATA_CODES,
        "/v1/read": DATA_CODES,
        "/v1/write": DATA_CODES,
        "/healthz": (200,),
        "/readyz": (200, 503),
    }

    def __init__(
        self,
        config: Config,
        dispatcher: Dispatcher,
        health: Health,
        metrics: Metrics,
        clock: Clock,
        deadlines: Deadlines,
        membership: Membership,
        routing: RoutingLoader,
        *,
        auth: TokenAuthority | None = None,
        limit: ConcurrencyLimit | None = None,
        tracer: Tracer | None = None,
        access_log: AccessLog | None = None,
    ) -> None:
        super().__init__(config, metrics, deadlines, limit=limit, tracer=tracer, access_log=access_log)
        #: ``None``: every caller is admitted (auth.mode "off", or a loopback sidecar).
        self._auth = auth
        self._membership = membership
        self._routing = routing
        self._views = config.views
        self._dispatcher = dispatcher
        self._health = health
        self._clock = clock
        self._feature_methods: dict[str, RouteHandler] = {
            "GET": self.get_features, "PUT": self.put_features, "DELETE": self.delete_features,
        }
        self._exact: dict[str, dict[str, RouteHandler]] = {
            "/v1/read": {"POST": self.read},
            "/v1/write": {"POST": self.write},
            "/v1/routing": {"GET": self.routing},
            "/healthz": {"GET": self.healthz},
            "/readyz": {"GET": self.readyz},
            "/metrics": {"GET": self.metrics},
            "/v1/members": {"GET": self.members},
            openapi.OPENAPI_PATH: {"GET": self.openapi},
        }
        # Built once: the configuration it describes does not change while the process runs.
        self._openapi = orjson.dumps(openapi.downstream(config))

    async def _admit(self, request: web.BaseRequest) -> None:
        """With auth on, every ``/v1/`` request names its caller (probes and scrapes do not)."""
        if self._auth is not None and request.path.startswith(API_PREFIX):
            request[PRINCIPAL] = self._auth.authenticate(request.headers.get("Authorization"))

    def _allow(self, request: web.BaseRequest, action: str, view: str) -> None:
        """Before a view is read or written: 403 unless the caller's token may (a no-op with auth off)."""
        if self._auth is not None:
            self._auth.authorize(request[PRINCIPAL], action, view)

    def _route(self, method: str, path: str) -> tuple[str, RouteHandler, tuple[str, ...]]:
        """The one place that maps (method, path) to a handler; raises 404/405 from the error tree."""
        if path.startswith(FEATURES_PREFIX):
            view, sep, key = path[len(FEATURES_PREFIX):].partition("/")
            if not (sep and view and key):
                raise RouteNotFound(f"No route {method} {path}; feature paths are /v1/features/{{view}}/{{key}}.")
            handler = self._feature_methods.get(method)
            if handler is None:
                raise MethodNotAllowed(method, path, tuple(self._feature_methods))
            return ROUTE_FEATURES, handler, (view, key)
        methods = self._exact.get(path)
        if methods is None:
            raise RouteNotFound(f"No route {method} {path}; see the API table in the README.")
        handler = methods.get(method)
        if handler is None:
            raise MethodNotAllowed(method, path, tuple(methods))
        return path, handler, ()

    # -- reads ---------------------------------------------------------------------------------

    async def get_features(self, request: web.BaseRequest, view_name: str, key: str) -> web.Response:
        view = records.view_of(self._views, view_name)
        self._allow(request, "read", view.name)
        key = records.check_key(key)
        query = request.query
        wanted = None
        strong = False
        min_version = None
        if query:
            names = query.get("features")
            if names is not None:
                wanted = records.check_feature_names(view, [n for n in names.split(",") if n])
            strong = records.check_consistency(query.get("consistency"))
            token = query.get("min_version")
            if token is not None:
                try:
                    min_version = Version.parse(token)
                except ValueError as exc:
                    raise RequestError(f"min_version: {exc}.") from None
        found = await self._dispatcher.read(view, key, wanted, strong, min_version)
        if found is None:
            raise NotFound(f"View {view.name!r} has no entity with key {key[:128]!r}.")
        return web.Response(body=orjson.dumps(found), content_type=JSON)

    async def read(self, request: web.BaseRequest) -> web.Response:
        body = await self._json_object(request)
        view = records.view_of(self._views, body.get("view"))
        self._allow(request, "read", view.name)
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
        self._allow(request, "write", view.name)
        body = await self._json_object(request)
        record = records.write_record(
            view,
            key,
            body.get("features"),
            body.get("event_time"),
            request.headers.get("Idempotency-Key"),
            self._clock.wall_ms(),
        )
        return self._write_answer(request, await self._dispatcher.write(record))

    async def delete_features(self, request: web.BaseRequest, view_name: str, key: str) -> web.Response:
        view = records.view_of(self._views, view_name)
        self._allow(request, "write", view.name)
        event_time = records.event_time_of_query(request.query.get("event_time"))
        record = records.delete_record(
            view, key, event_time, request.headers.get("Idempotency-Key"), self._clock.wall_ms()
        )
        return self._write_answer(request, await self._dispatcher.write(record))

    @staticmethod
    def _write_answer(request: web.BaseRequest, answer: dict[str, Any]) -> web.Response:
        request[OUTCOME] = "applied" if answer.get("applied") else answer.get("reason", "not_applied")
        return json_response(answer)

    async def write(self, request: web.BaseRequest) -> web.Response:
        body = await self._json_object(request)
        view = records.view_of(self._views, body.get("view"))
        self._allow(request, "write", view.name)
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

    async def routing(self, request: web.BaseRequest) -> web.Response:
        table = self._routing.table
        return json_response(
            {
                "region": self._config.region,
                "loaded": table is not None,
                "snapshot_age_seconds": None if table is None else round(self._routing.age(), 3),
                "rules": [] if table is None else table.describe(),
            }
        )

    async def members(self, request: web.BaseRequest) -> web.Response:
        return json_response(self._membership.describe())

    async def openapi(self, request: web.BaseRequest) -> web.Response:
        return web.Response(body=self._openapi, content_type=JSON)

    async def metrics(self, request: web.BaseRequest) -> web.Response:
        return web.Response(body=await self._metrics.scrape(), headers={"Content-Type": CONTENT_TYPE_LATEST})

    def _log_fields(self, request: web.BaseRequest, route: str, params: tuple[str, ...]) -> dict[str, Any]:
        if route != ROUTE_FEATURES:
            return {}
        view, key = params
        fields: dict[str, Any] = {"view": view}
        table = self._routing.table
        rule = table.rule_for(view, key) if table is not None else None
        if rule is not None:
            # The rule now, which is the one the request was routed by unless it changed meanwhile.
            fields["scope"], fields["epoch"] = rule.scope, rule.epoch
        return fields
