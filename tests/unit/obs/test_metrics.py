"""Metrics: series primed at zero, sampled gauges, and several worker processes merged (gateway/obs/metrics.py)."""

from __future__ import annotations

import subprocess
import sys
import textwrap

from prometheus_client.parser import text_string_to_metric_families

from gateway.obs.metrics import DYNAMODB_OPS, Metrics, worker_gone


def samples(text: bytes) -> dict[tuple[str, tuple[tuple[str, str], ...]], float]:
    return {
        (s.name, tuple(sorted(s.labels.items()))): s.value
        for family in text_string_to_metric_families(text.decode())
        for s in family.samples
    }


async def test_forward_upstream_and_ejection_series_exist_at_zero_for_every_other_region():
    metrics = Metrics()
    metrics.prime("eu-west-1", ["us-east-1", "eu-west-1", "ap-southeast-1"])
    got = samples(await metrics.scrape())
    for region in ("us-east-1", "ap-southeast-1"):
        for outcome in ("ok", "not_primary", "unreachable", "error"):
            assert got[("gateway_forward_total", (("outcome", outcome), ("to_region", region)))] == 0
        assert got[("gateway_outlier_ejections_total", (("upstream", f"peer:{region}"),))] == 0
    assert not any(k[0] == "gateway_forward_total" and ("to_region", "eu-west-1") in k[1] for k in got)
    for op in DYNAMODB_OPS:
        assert got[("gateway_upstream_rq_total", (("op", op), ("outcome", "throttled"), ("upstream", "dynamodb")))] == 0


async def test_observations_and_sampled_gauges():
    metrics = Metrics()
    metrics.observe_downstream("/v1/read", 200, 0.002)
    metrics.observe_downstream("/v1/read", 200, 0.004)
    metrics.observe_dynamodb("GetItem", "ok", 0.001)
    age = [1.5]
    metrics.sampled(metrics.routing_snapshot_age_seconds, lambda: age[0])
    age[0] = 7.25
    got = samples(await metrics.scrape())  # sampled at scrape time
    assert got[("gateway_downstream_rq_total", (("code", "200"), ("route", "/v1/read")))] == 2
    assert got[("gateway_downstream_rq_seconds_count", (("route", "/v1/read"),))] == 2
    assert got[("gateway_upstream_rq_total", (("op", "GetItem"), ("outcome", "ok"), ("upstream", "dynamodb")))] == 1
    assert got[("gateway_routing_snapshot_age_seconds", ())] == 7.25


WORKER = textwrap.dedent(
    """
    import os, sys
    from gateway.obs.metrics import Metrics, use_multiprocess
    use_multiprocess(sys.argv[1])
    n = int(sys.argv[2])
    m = Metrics()
    m.prime("us-east-1", ["us-east-1", "eu-west-1"])
    for _ in range(n):
        m.observe_downstream("/v1/features/{view}/{key}", 200, 0.003)
    m.forwarded("eu-west-1", "ok")
    m.routing_epoch.labels("view#users").set(n)
    m.sampled(m.routing_snapshot_age_seconds, lambda: 0.5 * n)
    print(os.getpid())
    """
)


def test_several_workers_are_one_set_of_metrics(tmp_path):
    """Two worker processes write their values to one directory; a scrape (any worker's) sums them."""
    pids = []
    for n in (2, 3):
        done = subprocess.run(
            [sys.executable, "-c", WORKER, str(tmp_path), str(n)], capture_output=True, text=True, timeout=60, check=True
        )
        pids.append(int(done.stdout))
    got = samples(Metrics._merged(str(tmp_path)))
    route = (("code", "200"), ("route", "/v1/features/{view}/{key}"))
    assert got[("gateway_downstream_rq_total", route)] == 5
    assert got[("gateway_forward_total", (("outcome", "ok"), ("to_region", "eu-west-1")))] == 2
    assert got[("gateway_forward_total", (("outcome", "not_primary"), ("to_region", "eu-west-1")))] == 0
    # Gauges: the largest value among live workers, not a sum.
    assert got[("gateway_routing_epoch", (("scope", "view#users"),))] == 3
    assert got[("gateway_routing_snapshot_age_seconds", ())] == 1.5
    worker_gone(str(tmp_path), pids[1])
    got = samples(Metrics._merged(str(tmp_path)))
    assert got[("gateway_routing_epoch", (("scope", "view#users"),))] == 2  # the dead worker's gauge is gone
    assert got[("gateway_downstream_rq_total", route)] == 5  # its requests were still served
