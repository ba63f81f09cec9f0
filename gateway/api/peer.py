"""The peer API (DESIGN.md §6): what other regions' gateways call, on its own listener.

Routes (POST, JSON):
- ``/internal/v1/write``: ``{"view", "scope", "epoch", "origin", "records":
  [{"key", "attributes" (DynamoDB form, null for a delete), "event_ms",
  "idempotency_key"}…]}`` → ``{"results": [...]}`` in order, or 409
  ``not_primary`` with this gateway's rule when it is not the scope's active
  primary at that epoch.
- ``/internal/v1/read``: ``{"view", "keys", "features"}`` → ``{"results":
  [...]}`` read with ConsistentRead, or 409 ``not_primary``.

The switch protocol's routes (gateway/switch/coordinator.py drives them,
gateway/switch/participant.py answers them):
- ``/internal/v1/rules``: ``{"rules": [rule…]}`` → this gateway learns the
  rules that are newer than its own (a coordinator's push); answers the
  epochs and states it now routes by.
- ``/internal/v1/routing``: → this gateway's whole snapshot (a gateway that
  starts reads its peers' to catch up before its local replica has).
- ``/internal/v1/fence``: ``{"rule": switching rule, "timeout"}`` → as the
  old primary: stop taking the scope's writes, wait for in-flight ones, list
  the acknowledged ``[view, key, version]`` and whether the list is complete.
- ``/internal/v1/versions``: ``{"view", "keys"}`` → the versions this region's
  replica holds (consistent read), for the fence's verification.
- ``/internal/v1/buffer``: ``{"scope"}`` → how many of the scope's writes this
  gateway still holds or is sending on (a switch ends once every buffer drained).
- ``/internal/v1/openapi.json``: → this API's OpenAPI 3.1 description (gateway/api/openapi.py).
- ``/internal/v1/lease``: ``{"region", "scopes": {scope: epoch}}`` → the scopes this region confirms as that
  region's primacy leases, why it refuses the others, and its rules of those it knows at a higher epoch
  (``newer``: the asker was deposed while it was cut off) (gateway/lease/).

Invariants: every request is authenticated (gateway/peer/auth.py) before it
is routed, whatever its path, and its head before its body is read: an
unsigned, forged, tampered, expired, replayed or other-region request gets
401 and touches nothing; a stranger's body is never read. A request that
arrives after its sender's deadline (``X-Request-Timeout`` from its signed
timestamp, give or take ``CLOCK_ALLOWANCE``) is answered 408 and not applied:
its sender has already told its caller that the write may not have landed,
and the receiver's pause must not turn that into a write landing late. A forwarded write is applied
here or refused; it is never forwarded again.
"""

from __future__ import annotations

from typing import Any

import orjson
from aiohttp import web

from gateway.api import openapi
from gateway.api.frontend import LOG_FIELDS, Frontend, RouteHandler, json_response
from gateway.api.overload import ConcurrencyLimit
from gateway.config import Config
from gateway.deadlines import TIMEOUT_HEADER, Deadlines
from gateway.dispatcher import Dispatcher
from gateway.errors import MethodNotAllowed, RequestError, RequestTimeout, RouteNotFound
from gateway.features import records
from gateway.lease.keeper import LeaseKeeper
from gateway.obs.logs import AccessLog
from gateway.obs.metrics import Metrics
from gateway.obs.tracing import Tracer
from gateway.peer.auth import PeerVerifier
from gateway.peer.routes import (
    BUFFER_PATH,
    FENCE_PATH,
    LEASE_PATH,
    READ_PATH,
    ROUTING_PATH,
    RULES_PATH,
    VERSIONS_PATH,
    WRITE_PATH,
)
from gateway.routing.loader import RoutingLoader
from gateway.routing.rules import RuleError, check_scope, rule_from_json
from gateway.switch.participant import SwitchParticipant

#: Status codes of the peer data routes whose series exist from the start.
PEER_CODES = (200, 400, 401, 409, 503, 504)
#: Seconds the two gateways' clocks may differ when a peer request's deadline is checked on arrival.
CLOCK_ALLOWANCE = 0.5
#: Longest a fence request may wait for the scope's in-flight writes, seconds.
MAX_FENCE_WAIT = 10.0


class PeerApi(Frontend):
    PRIMED = {WRITE_PATH: PEER_CODES, READ_PATH: PEER_CODES}
    # Forwarded values are DynamoDB attribute values (numbers as strings, checked by ``check_attribute``):
    # the exact-number parse would only re-read bodies whose long digit strings it takes for numbers.
    EXACT_NUMBERS = False

    def __init__(
        self,
        config: Config,
        dispatcher: Dispatcher,
        participant: SwitchParticipant,
        verifier: PeerVerifier,
        metrics: Metrics,
        deadlines: Deadlines,
        routing: RoutingLoader,
        instance: str,
        *,
        leases: LeaseKeeper | None = None,
        limit: ConcurrencyLimit | None = None,
        tracer: Tracer | None = None,
        access_log: AccessLog | None = None,
    ) -> None:
        """``leases``: this gateway's lease keeper, which answers the lease route (without it the route is 404)."""
        super().__init__(config, metrics, deadlines, limit=limit, tracer=tracer, access_log=access_log)
        self._leases = leases
        self._dispatcher = dispatcher
        self._participant = participant
        self._verifier = verifier
        self._routing = routing
        self._instance = instance
        self._views = config.views
        self._routes: dict[str, RouteHandler] = {
            WRITE_PATH: self.write, READ_PATH: self.read, RULES_PATH: self.rules, ROUTING_PATH: self.routing,
            FENCE_PATH: self.fence, VERSIONS_PATH: self.versions, BUFFER_PATH: self.buffer,
            openapi.PEER_OPENAPI_PATH: self.openapi,
        }
        if leases is not None:
            self._routes[LEASE_PATH] = self.lease
        self._openapi = orjson.dumps(openapi.peer(config))

    async def _admit(self, request: web.BaseRequest) -> None:
        # The head first: a stranger is refused before a byte of its body is read or kept.
        headers = request.headers
        self._verifier.verify_head(request.method, request.raw_path, headers)
        # A request that waited past its sender's deadline (this process was paused, or the network held it)
        # is dropped unread: its sender has answered its caller already, and must not be proved wrong later.
        age = self._verifier.age(headers)
        if TIMEOUT_HEADER in headers and age > self._timeout_of(headers) + CLOCK_ALLOWANCE:
            raise RequestTimeout(
                f"The peer request arrived {age:.1f}s after it was signed, past its sender's deadline; "
                "it was not applied."
            )
        self._verifier.verify_body(headers, await self._body(request))

    def _route(self, method: str, path: str) -> tuple[str, RouteHandler, tuple[str, ...]]:
        handler = self._routes.get(path)
        if handler is None:
            raise RouteNotFound(f"No peer route {method} {path}.")
        if method != "POST":
            raise MethodNotAllowed(method, path, ("POST",))
        return path, handler, ()

    async def write(self, request: web.BaseRequest) -> web.Response:
        body = await self._json_object(request)
        view = records.view_of(self._views, body.get("view"))
        scope = _field(check_scope, body, "scope")
        epoch = body.get("epoch")
        if not isinstance(epoch, int) or isinstance(epoch, bool) or epoch < 0:
            raise RequestError("'epoch' must be the integer epoch the write was routed under.")
        request[LOG_FIELDS] = {"view": view.name, "scope": scope, "epoch": epoch, "origin": body.get("origin")}
        raw = body.get("records")
        if not isinstance(raw, list) or not raw or len(raw) > records.MAX_WRITE_RECORDS:
            raise RequestError(f"'records' must be a list of 1 to {records.MAX_WRITE_RECORDS} records.")
        batch = [records.forwarded_record(view, rec, f"records[{i}]") for i, rec in enumerate(raw)]
        results = await self._dispatcher.accept_forwarded(view, scope, epoch, batch)
        return json_response({"results": results})

    async def read(self, request: web.BaseRequest) -> web.Response:
        body: dict[str, Any] = await self._json_object(request)
        view = records.view_of(self._views, body.get("view"))
        keys = _keys(body)
        wanted = records.check_feature_names(view, body.get("features"))
        return json_response({"results": await self._dispatcher.accept_read(view, keys, wanted)})

    # -- the switch protocol ---------------------------------------------------------------------

    def _epochs(self) -> dict[str, Any]:
        table = self._routing.table
        rules = table.rules if table is not None else {}
        return {scope: {"epoch": r.epoch, "state": r.state, "primary": r.primary} for scope, r in rules.items()}

    async def rules(self, request: web.BaseRequest) -> web.Response:
        body = await self._json_object(request)
        raw = body.get("rules")
        if not isinstance(raw, list):
            raise RequestError("'rules' must be a list of rules.")
        try:
            parsed = [rule_from_json(r) for r in raw]
        except RuleError as exc:
            raise RequestError(f"A pushed rule is malformed: {exc}.") from None
        learned = self._routing.learn(parsed)
        return json_response(
            {"instance": self._instance, "region": self._config.region, "learned": learned, "rules": self._epochs()}
        )

    async def lease(self, request: web.BaseRequest) -> web.Response:
        """Confirm what this region may confirm of the asker's primacy leases (gateway/lease/)."""
        assert self._leases is not None
        body = await self._json_object(request)
        asker = body.get("region")
        if not isinstance(asker, str) or (self._config.regions and asker not in self._config.regions):
            raise RequestError("'region' must name one of the fleet's regions.")
        if "release" in body:  # a planned switch's handover: the asker gives its leases on these scopes up
            released = body["release"]
            if not isinstance(released, dict) or not all(isinstance(e, int) and not isinstance(e, bool) for e in released.values()):
                raise RequestError("'release' must map scopes to the epochs given up.")
            for scope, epoch in released.items():
                await self._leases.release(asker, _field(check_scope, {"scope": scope}, "scope"), epoch)
            return json_response({"region": self._config.region, "released": sorted(released)})
        scopes = body.get("scopes")
        if not isinstance(scopes, dict) or not all(
            isinstance(e, int) and not isinstance(e, bool) and e >= 0 for e in scopes.values()
        ):
            raise RequestError("'scopes' must map scopes to their epochs (integers from 0).")
        for scope in scopes:
            _field(check_scope, {"scope": scope}, "scope")
        granted, refused = await self._leases.confirm(asker, scopes)
        newer = [rule.to_json() for rule in self._leases.newer({s: scopes[s] for s in refused})]
        return json_response({"region": self._config.region, "granted": granted, "refused": refused, "newer": newer})

    async def openapi(self, request: web.BaseRequest) -> web.Response:
        return web.Response(body=self._openapi, content_type="application/json")

    async def routing(self, request: web.BaseRequest) -> web.Response:
        table = self._routing.table
        return json_response(
            {"instance": self._instance, "region": self._config.region, "rules": table.describe() if table else []}
        )

    async def fence(self, request: web.BaseRequest) -> web.Response:
        body = await self._json_object(request)
        rule = _field(rule_from_json, body, "rule")
        timeout = body.get("timeout", 2.0)
        if not isinstance(timeout, (int, float)) or isinstance(timeout, bool) or not 0 < timeout <= MAX_FENCE_WAIT:
            raise RequestError(f"'timeout' must be seconds between 0 and {MAX_FENCE_WAIT:g}.")
        acknowledged, complete = await self._participant.accept_fence(rule, float(timeout))
        return json_response(
            {"instance": self._instance, "region": self._config.region, "acknowledged": acknowledged, "complete": complete}
        )

    async def buffer(self, request: web.BaseRequest) -> web.Response:
        body = await self._json_object(request)
        scope = _field(check_scope, body, "scope")
        stats = self._participant.buffer_stats(scope)
        return json_response(
            {"instance": self._instance, "state": stats.state.name, "held": stats.held, "outstanding": stats.outstanding}
        )

    async def versions(self, request: web.BaseRequest) -> web.Response:
        body = await self._json_object(request)
        view = records.view_of(self._views, body.get("view"))
        keys = _keys(body)
        return json_response({"region": self._config.region, "versions": await self._participant.versions(view, keys)})


def _field(parse: Any, body: dict[str, Any], name: str) -> Any:
    """``parse(body[name])``, a malformed value answered as 400 naming the field."""
    try:
        return parse(body.get(name))
    except RuleError as exc:
        raise RequestError(f"'{name}': {exc}.") from None


def _keys(body: dict[str, Any]) -> list[str]:
    keys = body.get("keys")
    if not isinstance(keys, list) or not keys or len(keys) > records.MAX_READ_KEYS:
        raise RequestError(f"'keys' must be a list of 1 to {records.MAX_READ_KEYS} entity keys.")
    for i, key in enumerate(keys):
        records.check_key(key, f"keys[{i}]")
    return keys
