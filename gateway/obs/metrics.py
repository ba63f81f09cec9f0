"""Prometheus metrics of DESIGN.md §10.

Label children are cached in plain dicts so the hot path does one dict lookup
instead of prometheus-client's label validation per request, and the label
sets an operator graphs are created up front (``prime``, ``prime_downstream``,
and ``prime_buffer`` for every scope of the rules, which the write buffer
calls as it learns them) so ``rate()`` works from the first event instead of
the second.

Several worker processes: ``serve --workers N`` runs prometheus-client's
multiprocess mode. The parent creates one directory per run and removes it at
exit (``multiprocess_dir``); each worker calls ``use_multiprocess`` before it
builds its ``Metrics``, so every value lives in a per-process mmap file there,
and ``render()`` (any worker's ``/metrics``) merges every process's files:
counters and histograms are summed, gauges take the max over live workers
(``livemax``). An increment then costs a lock, a ``getpid()`` and a
``struct.pack_into`` into the mmap instead of a float add (measured in
README's Operations section). Gauges whose value is computed rather than set
(the snapshot age, in-flight requests) cannot use ``set_function`` there:
they are registered with ``sampled()`` and set by the owned ``run()`` task
every ``interval`` seconds and just before each scrape.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import shutil
import tempfile
from collections.abc import Callable, Iterable, Iterator

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram, generate_latest, values
from prometheus_client import multiprocess as prometheus_multiprocess
from prometheus_client.metrics_core import Metric

LATENCY_BUCKETS = (0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0)
MULTIPROC_ENV = "PROMETHEUS_MULTIPROC_DIR"
#: Holds in the write buffer last up to its window (default 10 s) plus the sweeper's resolution.
BUFFER_WAIT_BUCKETS = (0.01, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 10.5, 30.0, 60.0)

#: DynamoDB operations of the data and control plane, and how one call (retries included) can end.
DYNAMODB_OPS = ("GetItem", "BatchGetItem", "PutItem", "UpdateItem", "DeleteItem", "BatchWriteItem", "Scan")
DYNAMODB_OUTCOMES = ("ok", "condition_failed", "throttled", "unavailable", "timeout", "error")
FORWARD_OUTCOMES = ("ok", "not_primary", "unreachable", "error")
PEER_OPS = ("write", "read")
PEER_OUTCOMES = ("ok", "not_primary", "unreachable", "unauthorized", "error")


def use_multiprocess(directory: str) -> None:
    """Make metrics created from now on in this process live in mmap files under ``directory``.

    prometheus-client picks its value class when it is imported (from ``PROMETHEUS_MULTIPROC_DIR``);
    a forked worker imported it in the parent before the directory existed, so the choice is made
    again here, before any metric of the worker exists.
    """
    os.environ[MULTIPROC_ENV] = directory
    if not getattr(values.ValueClass, "_multiprocess", False):
        values.ValueClass = values.MultiProcessValue()


@contextlib.contextmanager
def multiprocess_dir() -> Iterator[str]:
    """A fresh directory for one run's metric files; removed when the run ends."""
    directory = tempfile.mkdtemp(prefix="feature-gateway-metrics-")
    try:
        yield directory
    finally:
        shutil.rmtree(directory, ignore_errors=True)


def worker_gone(directory: str, pid: int) -> None:
    """A worker exited: its live gauges stop counting (its counters stay in the sums)."""
    prometheus_multiprocess.mark_process_dead(pid, directory)


class Metrics:
    def __init__(self, registry: CollectorRegistry | None = None) -> None:
        self.registry = registry or CollectorRegistry()
        multiprocess = getattr(values.ValueClass, "_multiprocess", False)
        #: The multiprocess directory when this process writes its values there, else None.
        self.multiprocess_dir: str | None = os.environ.get(MULTIPROC_ENV) if multiprocess else None
        self.downstream_rq_total = Counter(
            "gateway_downstream_rq_total", "Downstream requests by route and status code.",
            ("route", "code"), registry=self.registry,
        )
        self.downstream_rq_seconds = Histogram(
            "gateway_downstream_rq_seconds", "Downstream request latency.",
            ("route",), buckets=LATENCY_BUCKETS, registry=self.registry,
        )
        self.downstream_rq_active = Gauge(
            "gateway_downstream_rq_active", "Requests being served (both listeners), sampled.",
            registry=self.registry, multiprocess_mode="livesum",
        )
        self.replication_lag_seconds = Gauge(
            "gateway_replication_lag_seconds",
            "Replication lag from another region, measured from its gateways' heartbeats in the local replica.",
            ("from_region",), registry=self.registry, multiprocess_mode="livemax",
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
        self.outlier_ejections_total = Counter(
            "gateway_outlier_ejections_total", "Peer addresses ejected by outlier detection (circuit opened).",
            ("upstream",), registry=self.registry,
        )
        self.outlier_ejected = Gauge(
            "gateway_outlier_ejected", "Peer addresses ejected right now.",
            ("upstream",), registry=self.registry, multiprocess_mode="livesum",
        )
        self.routing_epoch = Gauge(
            "gateway_routing_epoch", "Epoch of each scope's rule in this gateway's routing snapshot.",
            ("scope",), registry=self.registry, multiprocess_mode="livemax",
        )
        self.routing_snapshot_age_seconds = Gauge(
            "gateway_routing_snapshot_age_seconds", "Seconds since the routing snapshot was read from the control table.",
            registry=self.registry, multiprocess_mode="livemax",
        )
        self.routing_rules_rejected_total = Counter(
            "gateway_routing_rules_rejected_total", "Malformed rule items ignored (the scope's last good rule is kept).",
            registry=self.registry,
        )
        self.buffer_entries = Gauge(
            "gateway_buffer_entries", "Writes held in the write buffer now, by scope.",
            ("scope",), registry=self.registry, multiprocess_mode="livesum",
        )
        self.buffer_wait_seconds = Histogram(
            "gateway_buffer_wait_seconds", "How long each write that left the write buffer was held, whatever the reason.",
            buckets=BUFFER_WAIT_BUCKETS, registry=self.registry,
        )
        self.buffer_released_total = Counter(
            "gateway_buffer_released_total",
            "Writes that left (or never entered) the write buffer, by reason: drained, expired, evicted, refused.",
            ("scope", "reason"), registry=self.registry,
        )
        self._buffer_entries: dict[str, object] = {}
        self._buffer_released: dict[tuple[str, str], object] = {}
        self._rq_total: dict[tuple[str, int], object] = {}
        self._upstream: dict[tuple[str, str, str], object] = {}
        self._upstream_seconds: dict[tuple[str, str], object] = {}
        self._forward: dict[tuple[str, str], object] = {}
        self._rq_seconds: dict[str, object] = {}
        self._sampled: list[tuple[Gauge, Callable[[], float]]] = []

    # -- label sets created up front -----------------------------------------------------------

    def prime(self, region: str, regions: Iterable[str]) -> None:
        """Every forward and upstream series this gateway can produce, at zero."""
        for op in DYNAMODB_OPS:
            for outcome in DYNAMODB_OUTCOMES:
                self._upstream_child("dynamodb", op, outcome)
            self._upstream_histogram("dynamodb", op)
        for other in regions:
            if other == region:
                continue
            for outcome in FORWARD_OUTCOMES:
                self._forward_child(other, outcome)
            upstream = f"peer:{other}"
            for op in PEER_OPS:
                for outcome in PEER_OUTCOMES:
                    self._upstream_child(upstream, op, outcome)
                self._upstream_histogram(upstream, op)
            self.outlier_ejections_total.labels(upstream)
            self.outlier_ejected.labels(upstream).set(0)

    def prime_buffer(self, scope: str, reasons: Iterable[str]) -> None:
        """``scope``'s write-buffer series at zero: its depth, and each way out (the buffer names them)."""
        self.buffer_held(scope, 0)
        for reason in reasons:
            if (scope, reason) not in self._buffer_released:
                self._buffer_released[(scope, reason)] = self.buffer_released_total.labels(scope, reason)

    def prime_downstream(self, routes: dict[str, Iterable[int]]) -> None:
        """``{route: status codes}`` at zero, and each route's latency histogram."""
        for route, codes in routes.items():
            for code in codes:
                self._rq_child(route, code)
            self._rq_histogram(route)

    # -- hot path ------------------------------------------------------------------------------

    def observe_downstream(self, route: str, status: int, seconds: float) -> None:
        counter = self._rq_total.get((route, status)) or self._rq_child(route, status)
        counter.inc()  # type: ignore[attr-defined]
        histogram = self._rq_seconds.get(route) or self._rq_histogram(route)
        histogram.observe(seconds)  # type: ignore[attr-defined]

    def observe_upstream(self, upstream: str, op: str, outcome: str, seconds: float) -> None:
        counter = self._upstream.get((upstream, op, outcome)) or self._upstream_child(upstream, op, outcome)
        counter.inc()  # type: ignore[attr-defined]
        histogram = self._upstream_seconds.get((upstream, op)) or self._upstream_histogram(upstream, op)
        histogram.observe(seconds)  # type: ignore[attr-defined]

    def observe_dynamodb(self, op: str, outcome: str, seconds: float) -> None:
        """``LeanStore``'s observer: one DynamoDB call (retries included) ended with ``outcome``."""
        self.observe_upstream("dynamodb", op, outcome, seconds)

    def forwarded(self, to_region: str, outcome: str) -> None:
        counter = self._forward.get((to_region, outcome)) or self._forward_child(to_region, outcome)
        counter.inc()  # type: ignore[attr-defined]

    def buffer_held(self, scope: str, entries: int) -> None:
        gauge = self._buffer_entries.get(scope)
        if gauge is None:
            gauge = self._buffer_entries[scope] = self.buffer_entries.labels(scope)
        gauge.set(entries)  # type: ignore[attr-defined]

    def buffer_released(self, scope: str, reason: str, held_seconds: float | None) -> None:
        """One write left the write buffer after ``held_seconds``, or was refused at the door (``None``)."""
        counter = self._buffer_released.get((scope, reason))
        if counter is None:
            counter = self._buffer_released[(scope, reason)] = self.buffer_released_total.labels(scope, reason)
        counter.inc()  # type: ignore[attr-defined]
        if held_seconds is not None:
            self.buffer_wait_seconds.observe(held_seconds)

    def replication_lag(self, from_region: str) -> Gauge:
        return self.replication_lag_seconds.labels(from_region)  # type: ignore[return-value]

    def _rq_child(self, route: str, status: int) -> object:
        child = self._rq_total[(route, status)] = self.downstream_rq_total.labels(route, str(status))
        return child

    def _rq_histogram(self, route: str) -> object:
        child = self._rq_seconds[route] = self.downstream_rq_seconds.labels(route)
        return child

    def _upstream_child(self, upstream: str, op: str, outcome: str) -> object:
        child = self._upstream[(upstream, op, outcome)] = self.upstream_rq_total.labels(upstream, op, outcome)
        return child

    def _upstream_histogram(self, upstream: str, op: str) -> object:
        child = self._upstream_seconds[(upstream, op)] = self.upstream_rq_seconds.labels(upstream, op)
        return child

    def _forward_child(self, to_region: str, outcome: str) -> object:
        child = self._forward[(to_region, outcome)] = self.forward_total.labels(to_region, outcome)
        return child

    # -- computed gauges and exposition --------------------------------------------------------

    def sampled(self, gauge: Gauge, value: Callable[[], float]) -> None:
        """Set ``gauge`` to ``value()`` at every sample (works in multiprocess mode, unlike ``set_function``)."""
        self._sampled.append((gauge, value))
        gauge.set(value())

    def sample(self) -> None:
        for gauge, value in self._sampled:
            gauge.set(value())

    async def run(self, interval: float = 1.0) -> None:
        """Keep the sampled gauges fresh for scrapes served by other workers."""
        while True:
            await asyncio.sleep(interval)
            self.sample()

    async def scrape(self) -> bytes:
        """The Prometheus text exposition; in multiprocess mode, merged from every worker's files."""
        self.sample()
        if self.multiprocess_dir is None:
            return generate_latest(self.registry)
        # Reads one file per process: off the event loop.
        return await asyncio.to_thread(self._merged, self.multiprocess_dir)

    async def forward_counts(self) -> dict[str, dict[str, int]]:
        """``gateway_forward_total`` as ``{to_region: {outcome: count}}`` (the status page); merged over workers."""
        if self.multiprocess_dir is None:
            families = list(self.forward_total.collect())
        else:
            families = await asyncio.to_thread(self._merged_families, self.multiprocess_dir)
        counts: dict[str, dict[str, int]] = {}
        for family in families:
            if family.name != "gateway_forward":
                continue
            for sample in family.samples:
                if sample.name == "gateway_forward_total":
                    to_region, outcome = sample.labels["to_region"], sample.labels["outcome"]
                    counts.setdefault(to_region, {})[outcome] = int(sample.value)
        return counts

    @staticmethod
    def _merged_families(directory: str) -> list[Metric]:
        registry = CollectorRegistry()
        prometheus_multiprocess.MultiProcessCollector(registry, path=directory)
        return list(registry.collect())

    @staticmethod
    def _merged(directory: str) -> bytes:
        registry = CollectorRegistry()
        prometheus_multiprocess.MultiProcessCollector(registry, path=directory)
        return generate_latest(registry)
