"""Prometheus metrics of DESIGN.md §10 (downstream requests and replication lag so far; more arrive with their features).

Label children are cached in plain dicts so the hot path does one dict lookup
instead of prometheus-client's label validation per request.
"""

from __future__ import annotations

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram

LATENCY_BUCKETS = (0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0)


class Metrics:
    def __init__(self, registry: CollectorRegistry | None = None) -> None:
        self.registry = registry or CollectorRegistry()
        self.downstream_rq_total = Counter(
            "gateway_downstream_rq_total", "Downstream requests by route and status code.",
            ("route", "code"), registry=self.registry,
        )
        self.downstream_rq_seconds = Histogram(
            "gateway_downstream_rq_seconds", "Downstream request latency.",
            ("route",), buckets=LATENCY_BUCKETS, registry=self.registry,
        )
        self.replication_lag_seconds = Gauge(
            "gateway_replication_lag_seconds",
            "Replication lag from another region, measured from its gateways' heartbeats in the local replica.",
            ("from_region",), registry=self.registry,
        )
        self._rq_total: dict[tuple[str, int], object] = {}
        self._rq_seconds: dict[str, object] = {}

    def observe_downstream(self, route: str, status: int, seconds: float) -> None:
        counter = self._rq_total.get((route, status))
        if counter is None:
            counter = self._rq_total[(route, status)] = self.downstream_rq_total.labels(route, str(status))
        counter.inc()  # type: ignore[attr-defined]
        histogram = self._rq_seconds.get(route)
        if histogram is None:
            histogram = self._rq_seconds[route] = self.downstream_rq_seconds.labels(route)
        histogram.observe(seconds)  # type: ignore[attr-defined]

    def replication_lag(self, from_region: str) -> Gauge:
        return self.replication_lag_seconds.labels(from_region)  # type: ignore[return-value]
