"""Prometheus metrics of DESIGN.md §10 (the buffer's arrive with the buffer).

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
        self.upstream_rq_total = Counter(
            "gateway_upstream_rq_total", "Upstream calls (DynamoDB, peer gateways) by operation and outcome.",
            ("upstream", "op", "outcome"), registry=self.registry,
        )
        self.upstream_rq_seconds = Histogram(
            "gateway_upstream_rq_seconds", "Upstream call latency, retries included.",
            ("upstream", "op"), buckets=LATENCY_BUCKETS, registry=self.registry,
        )
        self.forward_total = Counter(
            "gateway_forward_total", "Writes forwarded to a primary region's gateway, by outcome.",
            ("to_region", "outcome"), registry=self.registry,
        )
        self.routing_epoch = Gauge(
            "gateway_routing_epoch", "Epoch of each scope's rule in this gateway's routing snapshot.",
            ("scope",), registry=self.registry,
        )
        self.routing_snapshot_age_seconds = Gauge(
            "gateway_routing_snapshot_age_seconds", "Seconds since the routing snapshot was read from the control table.",
            registry=self.registry,
        )
        self.routing_rules_rejected_total = Counter(
            "gateway_routing_rules_rejected_total", "Malformed rule items ignored (the scope's last good rule is kept).",
            registry=self.registry,
        )
        self._rq_total: dict[tuple[str, int], object] = {}
        self._upstream: dict[tuple[str, str, str], object] = {}
        self._upstream_seconds: dict[tuple[str, str], object] = {}
        self._forward: dict[tuple[str, str], object] = {}
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

    def observe_upstream(self, upstream: str, op: str, outcome: str, seconds: float) -> None:
        counter = self._upstream.get((upstream, op, outcome))
        if counter is None:
            counter = self._upstream[(upstream, op, outcome)] = self.upstream_rq_total.labels(upstream, op, outcome)
        counter.inc()  # type: ignore[attr-defined]
        histogram = self._upstream_seconds.get((upstream, op))
        if histogram is None:
            histogram = self._upstream_seconds[(upstream, op)] = self.upstream_rq_seconds.labels(upstream, op)
        histogram.observe(seconds)  # type: ignore[attr-defined]

    def forwarded(self, to_region: str, outcome: str) -> None:
        counter = self._forward.get((to_region, outcome))
        if counter is None:
            counter = self._forward[(to_region, outcome)] = self.forward_total.labels(to_region, outcome)
        counter.inc()  # type: ignore[attr-defined]
