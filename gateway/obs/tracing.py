"""OpenTelemetry tracing (DESIGN.md §10): a span per downstream request, per DynamoDB call and per forward.

Each gateway instance has its own ``TracerProvider`` (``tracer_provider()``
from ``[tracing]``, or one injected into ``open_gateway``), never only the
global one, so two gateways in one process (tests) keep their spans apart.
The W3C ``traceparent`` header is extracted by both listeners and injected
into every peer request, so a forwarded write is one trace across regions.

Invariant: with ``exporter = "none"`` there is no provider and no tracer:
every instrumented place tests ``tracer is None`` once and creates no span
object, context or header (the cost is measured in README's Operations).
"""

from __future__ import annotations

from typing import Any

from opentelemetry import trace
from opentelemetry.sdk.resources import Resource
from opentelemetry.sdk.trace import TracerProvider
from opentelemetry.sdk.trace.export import BatchSpanProcessor, ConsoleSpanExporter, SpanExporter
from opentelemetry.sdk.trace.sampling import ParentBased, TraceIdRatioBased
from opentelemetry.trace import SpanKind, Status, StatusCode, Tracer
from opentelemetry.trace.propagation.tracecontext import TraceContextTextMapPropagator

from gateway.config import Config

__all__ = ["PROPAGATOR", "SpanKind", "Status", "StatusCode", "Tracer", "tracer_of", "tracer_provider"]

#: W3C Trace Context (``traceparent``/``tracestate``); an instance, not the global propagator.
PROPAGATOR = TraceContextTextMapPropagator()
INSTRUMENTATION = "feature-gateway"


def tracer_provider(config: Config) -> TracerProvider | None:
    """The provider ``[tracing]`` asks for; ``None`` for ``exporter = "none"``. The caller shuts it down."""
    settings = config.tracing
    if settings.exporter == "none":
        return None
    exporter: SpanExporter
    if settings.exporter == "console":
        exporter = ConsoleSpanExporter()
    else:
        # Imported only when used: it brings requests and protobuf.
        from opentelemetry.exporter.otlp.proto.http.trace_exporter import OTLPSpanExporter

        kw: dict[str, Any] = {"endpoint": settings.endpoint} if settings.endpoint else {}
        exporter = OTLPSpanExporter(**kw)
    provider = TracerProvider(
        resource=Resource.create({"service.name": "feature-gateway", "cloud.region": config.region}),
        # A request that arrives with a sampled parent (another region's forward) is recorded here too.
        sampler=ParentBased(TraceIdRatioBased(settings.sample_ratio)),
    )
    provider.add_span_processor(BatchSpanProcessor(exporter))
    return provider


def tracer_of(provider: trace.TracerProvider | None) -> Tracer | None:
    return None if provider is None else provider.get_tracer(INSTRUMENTATION)
