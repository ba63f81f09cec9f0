"""tracer_provider(): what [tracing] builds (gateway/obs/tracing.py)."""

from __future__ import annotations

import pytest
from opentelemetry.sdk.trace import TracerProvider

from gateway.config import ConfigError, from_dict
from gateway.obs.tracing import tracer_of, tracer_provider


def config(**tracing):
    return from_dict({"gateway": {"region": "eu-west-1"}, "views": {"v": {"table": "tbl"}}, "tracing": tracing})


def test_none_is_the_default_and_makes_no_provider_and_no_tracer():
    assert config().tracing.exporter == "none"
    assert tracer_provider(config()) is None and tracer_of(None) is None


@pytest.mark.parametrize("exporter", ["console", "otlp"])
def test_console_and_otlp_make_a_sampling_provider_of_this_region(exporter):
    provider = tracer_provider(config(exporter=exporter, endpoint="http://127.0.0.1:4318/v1/traces", sample_ratio=0.25))
    try:
        assert isinstance(provider, TracerProvider)
        assert provider.resource.attributes["cloud.region"] == "eu-west-1"
        assert "0.25" in provider.sampler.get_description()
        assert tracer_of(provider) is not None
    finally:
        provider.shutdown()


@pytest.mark.parametrize(
    "tracing, key",
    [({"exporter": "jaeger"}, "tracing.exporter"), ({"sample_ratio": 1.5}, "tracing.sample_ratio"),
     ({"endpoint": "collector:4318"}, "tracing.endpoint")],
)
def test_bad_tracing_settings_are_named(tracing, key):
    with pytest.raises(ConfigError, match=key):
        config(**tracing)
