"""The admin listener (``gateway.admin_listen``): ``/healthz``, ``/readyz``, ``/metrics`` and the status page.

Why a third listener: a sidecar's downstream port listens on loopback (only
its own pod's application may call it), so the kubelet's HTTP probes and
Prometheus, which connect to the pod's IP, cannot reach the probes and the
metrics there. The admin listener can face the pod network without exposing
the data API: any other path is 404 and any other method 405. The status page
(``/status``, and its data as ``/status.json``: gateway/api/status.py) is here
for the same reason: an operator's browser reaches the pod, not its loopback.
It is read-only, and shows rules and fleet, never feature data.

The handlers are the downstream API's own (``DownstreamApi.healthz`` …), so
both listeners answer alike, and requests pass through the same
``Frontend.handle`` (request id, metrics under the same route labels, access
log). Like on the downstream listener, these paths are never refused by the
concurrency bound. Off by default: DESIGN.md §2 serves ``/metrics`` on the
downstream port, which is enough for a pool.
"""

from __future__ import annotations

from gateway.api.downstream import DownstreamApi
from gateway.api.frontend import Frontend, RouteHandler
from gateway.api.status import StatusReport
from gateway.config import Config
from gateway.deadlines import Deadlines
from gateway.errors import MethodNotAllowed, RouteNotFound
from gateway.obs.logs import AccessLog
from gateway.obs.metrics import Metrics
from gateway.obs.tracing import Tracer


class AdminApi(Frontend):
    #: The operator's paths are never refused by the concurrency bound, like the probes.
    UNBOUNDED = DownstreamApi.UNBOUNDED | {"/status", "/status.json"}

    def __init__(
        self,
        config: Config,
        api: DownstreamApi,
        status: StatusReport,
        metrics: Metrics,
        deadlines: Deadlines,
        *,
        tracer: Tracer | None = None,
        access_log: AccessLog | None = None,
    ) -> None:
        super().__init__(config, metrics, deadlines, tracer=tracer, access_log=access_log)
        self._routes: dict[str, RouteHandler] = {
            "/healthz": api.healthz, "/readyz": api.readyz, "/metrics": api.metrics,
            "/status": status.page, "/status.json": status.json,
        }
        assert set(self._routes) == self.UNBOUNDED, "every admin route must bypass the concurrency bound"

    def _route(self, method: str, path: str) -> tuple[str, RouteHandler, tuple[str, ...]]:
        handler = self._routes.get(path)
        if handler is None:
            raise RouteNotFound(
                f"No route {method} {path} on the admin listener; it serves /healthz, /readyz, /metrics and /status."
            )
        if method != "GET":
            raise MethodNotAllowed(method, path, ("GET",))
        return path, handler, ()
