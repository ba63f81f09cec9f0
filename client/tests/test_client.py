"""Calls, retries and deadlines of both clients, against httpx's MockTransport on a fake clock."""

from __future__ import annotations

import json

import feature_gateway_client as fgc
import httpx
import pytest
from conftest import act, applied, entity, error, ok
from feature_gateway_client.errors import BY_CODE

#: The gateway's error table (README, API): status, code, retryable, Retry-After, the class a caller catches.
CODES = [
    (400, "invalid_request", False, None, fgc.InvalidRequest),
    (400, "unknown_view", False, None, fgc.UnknownView),
    (400, "unknown_feature", False, None, fgc.UnknownFeature),
    (400, "key_too_long", False, None, fgc.KeyTooLong),
    (400, "item_too_large", False, None, fgc.ItemTooLarge),
    (413, "body_too_large", False, None, fgc.BodyTooLarge),
    (431, "headers_too_large", False, None, fgc.HeadersTooLarge),
    (408, "request_timeout", True, None, fgc.RequestTimeout),
    (404, "route_not_found", False, None, fgc.RouteNotFound),
    (404, "not_found", False, None, fgc.NotFound),
    (405, "method_not_allowed", False, None, fgc.MethodNotAllowed),
    (401, "unauthorized", False, None, fgc.Unauthorized),
    (403, "forbidden", False, None, fgc.Forbidden),
    (429, "throttled", True, 1, fgc.Throttled),
    (502, "upstream_error", False, None, fgc.UpstreamError),
    (503, "upstream_unavailable", True, 1, fgc.UpstreamUnavailable),
    (503, "table_not_found", False, 5, fgc.TableNotFound),
    (504, "upstream_timeout", True, None, fgc.UpstreamTimeout),
    (503, "primary_switching", True, 1, fgc.PrimarySwitching),
    (503, "primary_unreachable", True, 1, fgc.PrimaryUnreachable),
    (503, "no_routing_rule", True, 5, fgc.NoRoutingRule),
    (503, "draining", True, 1, fgc.Draining),
    (503, "overloaded", True, 1, fgc.Overloaded),
    (500, "internal", False, None, fgc.Internal),
]


def test_the_table_names_every_code_the_client_knows():
    assert {code for _, code, *_ in CODES} == set(BY_CODE)


@pytest.mark.parametrize("status,code,retryable,retry_after,cls", CODES, ids=[c[1] for c in CODES])
@pytest.mark.parametrize("op", ["get", "put"])
async def test_each_error_code_is_retried_exactly_when_the_gateway_says_so(make, gateway, clock, op, status, code, retryable, retry_after, cls):
    gateway.answers = [error(status, code, retryable, retry_after, message=f"{code} happened"),
                       entity() if op == "get" else applied()]
    client = make(timeout=10.0)
    call = (lambda: client.get("users", "u-1")) if op == "get" else (lambda: client.put("users", "u-1", {"age": 2}))
    if retryable:
        result = await act(call())
        assert len(gateway.requests) == 2
        assert (result.version if op == "get" else result.applied) in ("0.100.us-east-1", True)
        # Never sooner than the gateway asked.
        assert clock.slept and clock.slept[0] >= (retry_after or 0)
    else:
        with pytest.raises(cls) as raised:
            await act(call())
        assert len(gateway.requests) == 1 and clock.slept == []
        err = raised.value
        assert (err.status, err.code, err.message, err.retryable, err.retry_after, err.request_id) == (
            status, code, f"{code} happened", False, retry_after, "req-1")


async def test_a_retryable_error_that_never_clears_is_raised_within_the_deadline(make, gateway, clock):
    gateway.answers = [error(503, "overloaded", True, 1)]
    client = make(timeout=2.5)
    began = clock.now
    with pytest.raises(fgc.Overloaded) as raised:
        await act(client.get("users", "u-1"))
    # Retry-After 1 s: attempts at 0, ~1, ~2; a fourth would start past the deadline.
    assert len(gateway.requests) == 3 and all(s >= 1.0 for s in clock.slept)
    assert clock.now - began <= 2.5
    assert raised.value.retry_after == 1.0 and raised.value.request_id == "req-1"


async def test_backoff_is_full_jitter_and_every_attempt_is_told_the_time_left(make, gateway, clock):
    gateway.answers = [httpx.ConnectError("refused")] * 5 + [entity()]
    client = make(timeout=3.0, retry=fgc.RetryPolicy(base=0.1, cap=0.4, rng=lambda: 1.0))
    await act(client.get("users", "u-1"))
    # rng 1.0 is the top of each jitter range: base * 2^(n-1), capped.
    assert clock.slept == pytest.approx([0.1, 0.2, 0.4, 0.4, 0.4])
    sent = [float(r.headers["X-Request-Timeout"]) for r in gateway.requests]
    assert sent == sorted(sent, reverse=True) and sent[0] < 3.0 and sent[-1] < 3.0 - sum(clock.slept)
    # One request id for the call, so the gateway's logs tie its attempts together.
    assert len({r.headers["X-Request-Id"] for r in gateway.requests}) == 1


async def test_no_wait_ends_past_the_deadline(make, gateway, clock):
    gateway.answers = [httpx.ConnectError("refused")]
    client = make(timeout=1.0, retry=fgc.RetryPolicy(max_attempts=100, base=0.1, cap=0.3, rng=lambda: 1.0))
    began = clock.now
    with pytest.raises(fgc.ConnectionFailed) as raised:
        await act(client.get("users", "u-1"))
    assert clock.now - began <= 1.0 and raised.value.sent is False and raised.value.may_have_landed is False
    assert len(gateway.requests) >= 4


async def test_one_idempotency_key_and_event_time_per_logical_write_a_new_one_for_the_next(make, gateway, clock):
    gateway.answers = [httpx.RemoteProtocolError("server disconnected"), error(504, "upstream_timeout", True), applied(),
                       applied()]
    client = make()
    first = await act(client.put("users", "u-1", {"age": 2}))
    clock.wall += 5
    await act(client.put("users", "u-1", {"age": 3}))
    keys = [r.headers["Idempotency-Key"] for r in gateway.requests]
    times = [json.loads(r.content)["event_time"] for r in gateway.requests]
    assert keys[0] == keys[1] == keys[2] != keys[3]
    assert times[:3] == [clock.wall - 5] * 3 and times[3] == clock.wall
    assert first.applied and first.idempotency_key == keys[0]


async def test_a_retry_that_finds_its_own_write_reports_it_landed(make, gateway):
    gateway.answers = [httpx.ReadError("reset"), ok({"applied": False, "reason": "duplicate", "version": "0.5.us-east-1",
                                                     "primary": "us-east-1", "forwarded": False})]
    result = await act(make().put("users", "u-1", {"age": 2}))
    assert not result.applied and result.reason == "duplicate" and result.landed


async def test_a_write_whose_fate_is_unknown_says_it_may_have_landed(make, gateway):
    gateway.answers = [error(504, "upstream_timeout", True)]
    with pytest.raises(fgc.UpstreamTimeout) as raised:
        await act(make(timeout=0.2).put("users", "u-1", {"age": 2}))
    assert raised.value.may_have_landed and len(gateway.requests) > 1
    assert len({r.headers["Idempotency-Key"] for r in gateway.requests}) == 1


async def test_primary_unreachable_may_have_landed_only_when_the_gateway_says_a_request_reached_a_peer(make, gateway):
    reached = "No gateway of region us-east-1 answered: x. A request reached a gateway that gave no answer, so a write may or may not have been applied there"
    for message, maybe in ((reached, True), ("No gateway of region us-east-1 answered: x. Nothing was sent; retrying is safe.", False)):
        gateway.requests.clear()
        gateway.answers = [error(503, "primary_unreachable", True, 1, message=message)]
        with pytest.raises(fgc.PrimaryUnreachable) as raised:
            await act(make(timeout=0.5).put("users", "u-1", {"age": 2}))
        assert raised.value.may_have_landed is maybe


async def test_a_proxys_503_with_retry_after_is_retried_and_other_non_gateway_answers_are_not(make, gateway, clock):
    gateway.answers = [httpx.Response(503, text="<html>busy</html>", headers={"Retry-After": "1"}), entity()]
    assert (await act(make().get("users", "u-1"))).key == "u-1"
    gateway.requests.clear()
    gateway.answers = [httpx.Response(502, text="bad gateway")]
    with pytest.raises(fgc.GatewayError) as raised:
        await act(make().get("users", "u-1"))
    assert raised.value.code == "http_502" and not raised.value.retryable and len(gateway.requests) == 1


async def test_a_batch_write_sends_again_only_the_records_that_failed_retryably(make, gateway):
    def first(request):
        return ok({"view": "users", "results": [
            {"key": "a", "applied": True, "version": "0.1.us-east-1", "primary": "us-east-1", "forwarded": False},
            {"key": "b", "error": {"status": 503, "code": "upstream_unavailable", "message": "lost", "retryable": True}},
            {"key": "c", "error": {"status": 400, "code": "item_too_large", "message": "big", "retryable": False}},
        ]})

    def second(request):
        records = json.loads(request.content)["records"]
        assert [r["key"] for r in records] == ["b"]
        return ok({"view": "users", "results": [
            {"applied": False, "reason": "duplicate", "version": "0.2.us-east-1", "primary": "us-east-1", "forwarded": False}]})

    gateway.answers = [first, second]
    results = await act(make().write("users", [{"key": k, "features": {"age": 1}} for k in "abc"]))
    assert [r.key for r in results] == ["a", "b", "c"]
    assert results[0].applied and results[1].landed and isinstance(results[2].error, fgc.ItemTooLarge)
    sent = [json.loads(r.content)["records"] for r in gateway.requests]
    assert sent[0][1]["idempotency_key"] == sent[1][0]["idempotency_key"]
    assert sent[0][1]["event_time"] == sent[1][0]["event_time"]


async def test_the_bearer_token_comes_from_the_argument_or_the_environment(make, gateway, monkeypatch):
    gateway.answers = [entity()]
    await act(make(token="from-arg").get("users", "u-1"))
    monkeypatch.setenv("FEATURE_GATEWAY_TOKEN", "from-env")
    await act(make().get("users", "u-1"))
    await act(make(token="wins").get("users", "u-1"))
    monkeypatch.delenv("FEATURE_GATEWAY_TOKEN")
    await act(make().get("users", "u-1"))
    assert [r.headers.get("Authorization") for r in gateway.requests] == [
        "Bearer from-arg", "Bearer from-env", "Bearer wins", None]


async def test_requests_name_views_keys_and_options_as_the_api_does(make, gateway):
    gateway.answers = [entity(key="a/b c"), ok({"view": "users", "results": [
        {"key": "x", "status": "PRESENT", "features": {"age": 3}, "version": "0.1.us-east-1"},
        {"key": "y", "status": "NOT_FOUND", "features": None, "version": None}]}), applied()]
    client = make()
    got = await act(client.get("users", "a/b c", ["age", "score"], "strong", min_version="0.1.us-east-1"))
    results = await act(client.read("users", ["x", "y"]))
    await act(client.delete("users", "x", 1234))
    get_req, read_req, delete_req = gateway.requests
    assert get_req.url.raw_path == b"/v1/features/users/a%2Fb%20c?features=age%2Cscore&consistency=strong&min_version=0.1.us-east-1"
    assert got.key == "a/b c"
    assert json.loads(read_req.content) == {"view": "users", "keys": ["x", "y"]}
    assert [(r.key, r.found, r.features) for r in results] == [("x", True, {"age": 3}), ("y", False, {})]
    assert (delete_req.method, delete_req.url.raw_path) == ("DELETE", b"/v1/features/users/x?event_time=1234")
    assert "Idempotency-Key" in delete_req.headers


async def test_health_answers_whether_the_gateway_is_ready_without_raising(make, gateway):
    gateway.answers = [httpx.Response(503, json={"ready": False, "region": "us-east-1", "reasons": ["rules not loaded"]})]
    assert await act(make().health()) == {"ready": False, "region": "us-east-1", "reasons": ["rules not loaded"]}


async def test_a_value_no_int64_or_float64_holds_is_refused_before_anything_is_sent(make, gateway):
    client = make()
    for features in ({"n": 2**63}, {"n": -(2**63) - 1}, {"n": float("nan")}, {"n": [float("inf")]}, {"n": {1: "x"}},
                     {"n": object()}):
        with pytest.raises(fgc.InvalidRequest):
            await act(client.put("users", "u-1", features))
    assert gateway.requests == []


async def test_health_raises_what_an_answer_other_than_readiness_means(make, gateway):
    gateway.answers = [error(401, "unauthorized", False)]
    with pytest.raises(fgc.Unauthorized):
        await act(make().health())
