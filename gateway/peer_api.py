"""The peer API (DESIGN.md §6): what other regions' gateways call, on its own listener.

Routes (POST, JSON):
- ``/internal/v1/write``: ``{"view", "scope", "epoch", "origin", "records":
  [{"key", "attributes" (DynamoDB form, null for a delete), "event_ms",
  "idempotency_key"}…]}`` → ``{"results": [...]}`` in order, or 409
  ``not_primary`` with this gateway's rule when it is not the scope's active
  primary at that epoch.
- ``/internal/v1/read``: ``{"view", "keys", "features"}`` → ``{"results":
  [...]}`` read with ConsistentRead, or 409 ``not_primary``.

Invariants: every request is authenticated (gateway/peer_auth.py) before it
is routed, whatever its path: an unsigned, forged, tampered, expired or
replayed request gets 401 and touches nothing. A forwarded write is applied
here or refused; it is never forwarded again.
"""

from __future__ import annotations

from typing import Any

from aiohttp import web

from gateway import records
from gateway.config import Config
from gateway.deadlines import Deadlines
from gateway.dispatcher import Dispatcher
from gateway.errors import MethodNotAllowed, RequestError, RouteNotFound
from gateway.frontend import Frontend, RouteHandler, json_response
from gateway.metrics import Metrics
from gateway.peer import READ_PATH, WRITE_PATH
from gateway.peer_auth import PeerVerifier
from gateway.routing import RuleError, check_scope


class PeerApi(Frontend):
    def __init__(
        self, config: Config, dispatcher: Dispatcher, verifier: PeerVerifier, metrics: Metrics, deadlines: Deadlines
    ) -> None:
        super().__init__(config, metrics, deadlines)
        self._dispatcher = dispatcher
        self._verifier = verifier
        self._views = config.views
        self._routes: dict[str, RouteHandler] = {WRITE_PATH: self.write, READ_PATH: self.read}

    async def _admit(self, request: web.BaseRequest) -> None:
        body = await self._body(request)
        self._verifier.verify(request.method, request.raw_path, request.headers, body)

    def _route(self, method: str, path: str) -> tuple[str, RouteHandler, tuple[str, ...]]:
        handler = self._routes.get(path)
        if handler is None:
            raise RouteNotFound(f"No peer route {method} {path}.")
        if method != "POST":
            raise MethodNotAllowed(f"{method} is not allowed on {path}; use POST.")
        return path, handler, ()

    async def write(self, request: web.BaseRequest) -> web.Response:
        body = await self._json_object(request)
        view = records.view_of(self._views, body.get("view"))
        try:
            scope = check_scope(body.get("scope"))
        except RuleError as exc:
            raise RequestError(f"'scope': {exc}.") from None
        epoch = body.get("epoch")
        if not isinstance(epoch, int) or isinstance(epoch, bool) or epoch < 0:
            raise RequestError("'epoch' must be the integer epoch the write was routed under.")
        raw = body.get("records")
        if not isinstance(raw, list) or not raw or len(raw) > records.MAX_WRITE_RECORDS:
            raise RequestError(f"'records' must be a list of 1 to {records.MAX_WRITE_RECORDS} records.")
        batch = [records.forwarded_record(view, rec, f"records[{i}]") for i, rec in enumerate(raw)]
        results = await self._dispatcher.accept_forwarded(view, scope, epoch, batch)
        return json_response({"results": results})

    async def read(self, request: web.BaseRequest) -> web.Response:
        body: dict[str, Any] = await self._json_object(request)
        view = records.view_of(self._views, body.get("view"))
        keys = body.get("keys")
        if not isinstance(keys, list) or not keys or len(keys) > records.MAX_READ_KEYS:
            raise RequestError(f"'keys' must be a list of 1 to {records.MAX_READ_KEYS} entity keys.")
        for i, key in enumerate(keys):
            records.check_key(key, f"keys[{i}]")
        wanted = records.check_feature_names(view, body.get("features"))
        return json_response({"results": await self._dispatcher.accept_read(view, keys, wanted)})
