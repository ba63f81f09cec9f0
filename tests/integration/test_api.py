"""The downstream API of DESIGN.md §4 against a real gateway process and DynamoDB Local."""

from __future__ import annotations

import asyncio

import orjson
import pytest

from tests.integration.conftest import MAX_BODY_BYTES, unique


async def call(http, method, url, body=None, headers=None, raw=None):
    data = raw if raw is not None else (orjson.dumps(body) if body is not None else None)
    async with http.request(method, url, data=data, headers=headers) as resp:
        payload = await resp.read()
        return resp.status, orjson.loads(payload) if payload else None, resp.headers


def assert_error(status, body, expected_status, code):
    assert status == expected_status, body
    assert set(body) == {"error"}
    assert body["error"]["code"] == code
    assert isinstance(body["error"]["message"], str) and body["error"]["message"].endswith(".")
    assert isinstance(body["error"]["retryable"], bool)


async def put(http, gateway, view, key, features, event_time=None, idem=None):
    headers = {"Idempotency-Key": idem} if idem else None
    body = {"features": features}
    if event_time is not None:
        body["event_time"] = event_time
    return await call(http, "PUT", f"{gateway.url}/v1/features/{view}/{key}", body, headers)


async def get(http, gateway, view, key, query=""):
    return await call(http, "GET", f"{gateway.url}/v1/features/{view}/{key}{query}")


ALL_TYPES = {
    "s": "ünïcødé ✓",
    "i_max": 9223372036854775807,
    "i_min": -9223372036854775808,
    "f": 0.1,
    "f_big": 1.7976931348623157e125,
    "f_pi": 3.141592653589793,
    "t": True,
    "n": None,
    "l": [1, "two", 3.5, None, [False]],
    "m": {"a": {"b": [1, {"c": "d"}]}, "e": -0.0001},
}


async def test_put_then_get_round_trips_every_value_type(http, gateway):
    key = unique()
    status, body, _ = await put(http, gateway, "items", key, ALL_TYPES, idem=unique("req"))
    assert status == 200, body
    assert body["applied"] is True and body["primary"] == "us-east-1" and body["forwarded"] is False
    version = body["version"]
    status, body, _ = await get(http, gateway, "items", key)
    assert status == 200
    assert body == {"view": "items", "key": key, "features": ALL_TYPES, "version": version, "region": "us-east-1"}
    assert isinstance(body["features"]["i_max"], int) and isinstance(body["features"]["f"], float)


async def test_put_replaces_the_whole_feature_set(http, gateway):
    key = unique()
    await put(http, gateway, "items", key, {"a": 1, "b": 2})
    await put(http, gateway, "items", key, {"c": 3})
    _, body, _ = await get(http, gateway, "items", key)
    assert body["features"] == {"c": 3}


async def test_get_with_feature_filter_and_strong_consistency(http, gateway):
    key = unique("u")
    await put(http, gateway, "users", key, {"age": 30, "country": "DE", "score": 0.5})
    status, body, _ = await get(http, gateway, "users", key, "?features=age,score&consistency=strong")
    assert status == 200 and body["features"] == {"age": 30, "score": 0.5}


async def test_missing_entity_is_404_not_found(http, gateway):
    status, body, _ = await get(http, gateway, "users", unique("nobody"))
    assert_error(status, body, 404, "not_found")


async def test_batch_read_of_100_keys_keeps_request_order(http, gateway):
    keys = [unique("b") for _ in range(100)]
    present = set(keys[::3])
    records = [{"key": k, "features": {"age": i}, "idempotency_key": unique()} for i, k in enumerate(keys) if k in present]
    for start in range(0, len(records), 25):
        status, body, _ = await call(http, "POST", f"{gateway.url}/v1/write", {"view": "users", "records": records[start:start + 25]})
        assert status == 200 and all(r["applied"] for r in body["results"])
    status, body, _ = await call(http, "POST", f"{gateway.url}/v1/read", {"view": "users", "keys": keys, "features": ["age"]})
    assert status == 200
    assert [r["key"] for r in body["results"]] == keys
    for i, result in enumerate(body["results"]):
        if keys[i] in present:
            assert result["status"] == "PRESENT" and result["features"] == {"age": i} and result["version"]
        else:
            assert result == {"key": keys[i], "status": "NOT_FOUND", "features": None, "version": None}


async def test_batch_write_of_25_records_answers_in_order(http, gateway):
    records = [{"key": unique("w"), "features": {"n": i}, "event_time": 1000 + i, "idempotency_key": unique()} for i in range(25)]
    status, body, _ = await call(http, "POST", f"{gateway.url}/v1/write", {"view": "items", "records": records})
    assert status == 200
    assert [r["key"] for r in body["results"]] == [r["key"] for r in records]
    assert all(r["applied"] and r["version"] for r in body["results"])
    for rec in records[::8]:
        _, got, _ = await get(http, gateway, "items", rec["key"])
        assert got["features"] == rec["features"]


async def test_batch_limits(http, gateway):
    status, body, _ = await call(http, "POST", f"{gateway.url}/v1/read", {"view": "users", "keys": [unique() for _ in range(101)]})
    assert_error(status, body, 400, "invalid_request")
    assert "at most 100" in body["error"]["message"]
    records = [{"key": unique(), "features": {"n": 1}} for _ in range(26)]
    status, body, _ = await call(http, "POST", f"{gateway.url}/v1/write", {"view": "items", "records": records})
    assert_error(status, body, 400, "invalid_request")
    assert "at most 25" in body["error"]["message"]


async def test_a_bad_record_rejects_the_whole_batch_and_writes_nothing(http, gateway):
    good, bad = unique(), unique()
    records = [{"key": good, "features": {"age": 1}}, {"key": bad, "features": {"age": "one"}}]
    status, body, _ = await call(http, "POST", f"{gateway.url}/v1/write", {"view": "users", "records": records})
    assert_error(status, body, 400, "invalid_request")
    assert "records[1]" in body["error"]["message"]
    status, _, _ = await get(http, gateway, "users", good)
    assert status == 404


async def test_older_event_time_is_not_applied(http, gateway):
    key = unique()
    _, first, _ = await put(http, gateway, "items", key, {"v": "new"}, event_time="2026-01-02T00:00:00Z")
    status, body, _ = await put(http, gateway, "items", key, {"v": "old"}, event_time="2026-01-01T00:00:00Z")
    assert status == 200
    assert body["applied"] is False and body["reason"] == "stale_event_time"
    assert body["version"] == first["version"]
    _, got, _ = await get(http, gateway, "items", key)
    assert got["features"] == {"v": "new"}
    # Same event time is not older: the later write wins.
    _, body, _ = await put(http, gateway, "items", key, {"v": "same"}, event_time="2026-01-02T00:00:00Z")
    assert body["applied"] is True


async def test_repeated_idempotency_key_is_a_duplicate_and_changes_nothing(http, gateway):
    key, idem = unique(), unique("req")
    _, first, _ = await put(http, gateway, "items", key, {"v": 1}, idem=idem)
    status, body, _ = await put(http, gateway, "items", key, {"v": 2}, idem=idem)
    assert status == 200
    assert body == {"applied": False, "reason": "duplicate", "version": first["version"], "primary": "us-east-1", "forwarded": False}
    _, got, _ = await get(http, gateway, "items", key)
    assert got["features"] == {"v": 1} and got["version"] == first["version"]


async def test_concurrent_retries_of_one_write_apply_once(http, gateway):
    key, idem = unique(), unique("req")
    answers = await asyncio.gather(*(put(http, gateway, "items", key, {"v": 1}, idem=idem) for _ in range(8)))
    applied = [body["applied"] for status, body, _ in answers if status == 200]
    assert len(applied) == 8 and applied.count(True) == 1


async def test_delete(http, gateway):
    key = unique()
    await put(http, gateway, "items", key, {"v": 1}, event_time=1000)
    status, body, _ = await call(http, "DELETE", f"{gateway.url}/v1/features/items/{key}", headers={"Idempotency-Key": unique()})
    assert status == 200 and body["applied"] is True and body["version"]
    status, _, _ = await get(http, gateway, "items", key)
    assert status == 404
    status, body, _ = await call(http, "DELETE", f"{gateway.url}/v1/features/items/{key}")
    assert status == 200 and body["applied"] is False and body["reason"] == "not_found"


async def test_delete_with_older_event_time_is_not_applied(http, gateway):
    key = unique()
    await put(http, gateway, "items", key, {"v": 1}, event_time=5000)
    status, body, _ = await call(http, "DELETE", f"{gateway.url}/v1/features/items/{key}?event_time=4000")
    assert status == 200 and body["applied"] is False and body["reason"] == "stale_event_time"
    status, _, _ = await get(http, gateway, "items", key)
    assert status == 200


async def test_key_of_2048_bytes_works_and_2049_is_refused(http, gateway):
    key = "k" * 2048
    status, body, _ = await put(http, gateway, "items", key, {"v": 1})
    assert status == 200 and body["applied"], body
    status, body, _ = await get(http, gateway, "items", key)
    assert status == 200 and body["key"] == key
    status, body, _ = await put(http, gateway, "items", key + "k", {"v": 1})
    assert_error(status, body, 400, "key_too_long")
    status, body, _ = await get(http, gateway, "items", key + "k")
    assert_error(status, body, 400, "key_too_long")
    status, body, _ = await call(http, "POST", f"{gateway.url}/v1/read", {"view": "items", "keys": [key + "k"]})
    assert_error(status, body, 400, "key_too_long")


LEVELS = 31


def nested(kind, levels):
    """A value ``levels`` containers deep (lists or maps), holding 1 at the bottom."""
    value = 1
    for _ in range(levels):
        value = [value] if kind == "list" else {"k": value}
    return value


@pytest.mark.parametrize("kind", ["list", "map"])
async def test_a_value_nested_31_lists_or_maps_deep_round_trips_and_32_is_refused(http, gateway, kind):
    # DynamoDB nests documents 32 levels deep counting the item, so 31 lists or maps in a feature: the deepest value
    # it stores must read back as sent, and one level more must be the gateway's own 400, before DynamoDB is called.
    key = unique()
    status, body, _ = await put(http, gateway, "items", key, {"deep": nested(kind, LEVELS)})
    assert status == 200 and body["applied"], body
    status, body, _ = await get(http, gateway, "items", key)
    assert status == 200 and body["features"] == {"deep": nested(kind, LEVELS)}, body
    status, body, _ = await put(http, gateway, "items", key, {"deep": nested(kind, LEVELS + 1)})
    assert_error(status, body, 400, "invalid_request")
    assert "nests lists and maps more than 31 deep" in body["error"]["message"]
    status, body, _ = await get(http, gateway, "items", key)
    assert body["features"] == {"deep": nested(kind, LEVELS)}, body


async def test_keys_with_slashes_and_unicode(http, gateway):
    key = f"tenant/ü/{unique()}"
    status, _, _ = await put(http, gateway, "items", key.replace("/", "%2F"), {"v": 1})
    assert status == 200
    status, body, _ = await call(http, "POST", f"{gateway.url}/v1/read", {"view": "items", "keys": [key]})
    assert body["results"][0]["status"] == "PRESENT"


async def test_400_kb_item_limit(http, gateway):
    key = unique()
    status, body, _ = await put(http, gateway, "items", key, {"blob": "x" * 399_000})
    assert status == 200 and body["applied"], body
    _, got, _ = await get(http, gateway, "items", key)
    assert len(got["features"]["blob"]) == 399_000
    status, body, _ = await put(http, gateway, "items", unique(), {"blob": "x" * 409_600})
    assert_error(status, body, 400, "item_too_large")


@pytest.mark.parametrize(
    "method, path, body, status, code",
    [
        ("GET", "/v1/features/nope/k1", None, 400, "unknown_view"),
        ("PUT", "/v1/features/nope/k1", {"features": {}}, 400, "unknown_view"),
        ("POST", "/v1/read", {"view": "nope", "keys": ["a"]}, 400, "unknown_view"),
        ("PUT", "/v1/features/users/k1", {"features": {"height": 1}}, 400, "unknown_feature"),
        ("GET", "/v1/features/users/k1?features=height", None, 400, "unknown_feature"),
        ("POST", "/v1/read", {"view": "users", "keys": ["a"], "features": ["height"]}, 400, "unknown_feature"),
        ("PUT", "/v1/features/users/k1", {"features": {"age": "old"}}, 400, "invalid_request"),
        ("PUT", "/v1/features/users/k1", {"features": {"age": 1}, "event_time": "yesterday"}, 400, "invalid_request"),
        ("PUT", "/v1/features/items/k1", {"features": {"x": 1e200}}, 400, "invalid_request"),
        ("PUT", "/v1/features/items/k1", {"features": "x"}, 400, "invalid_request"),
        ("PUT", "/v1/features/items/k1", [1, 2], 400, "invalid_request"),
        ("POST", "/v1/read", {"view": "items", "keys": "a"}, 400, "invalid_request"),
        ("POST", "/v1/read", {"view": "items", "keys": [1]}, 400, "invalid_request"),
        ("POST", "/v1/read", {"view": "items", "keys": ["a"], "consistency": "sometimes"}, 400, "invalid_request"),
        ("POST", "/v1/write", {"view": "items", "records": [{"key": "a", "features": {}, "idempotency_key": 5}]}, 400, "invalid_request"),
        ("GET", "/v1/nothing", None, 404, "route_not_found"),
        ("PATCH", "/v1/features/items/k1", {}, 405, "method_not_allowed"),
    ],
)
async def test_bad_requests_get_clear_errors(http, gateway, method, path, body, status, code):
    got_status, got, _ = await call(http, method, f"{gateway.url}{path}", body)
    assert_error(got_status, got, status, code)


async def test_malformed_json_and_empty_body(http, gateway):
    status, body, _ = await call(http, "PUT", f"{gateway.url}/v1/features/items/k1", raw=b'{"features": {')
    assert_error(status, body, 400, "invalid_request")
    assert "not valid JSON" in body["error"]["message"]
    status, body, _ = await call(http, "POST", f"{gateway.url}/v1/read", raw=b"")
    assert_error(status, body, 400, "invalid_request")


async def test_body_over_the_limit_is_413_even_without_a_content_length(http, gateway):
    big = orjson.dumps({"features": {"blob": "x" * MAX_BODY_BYTES}})
    status, body, _ = await call(http, "PUT", f"{gateway.url}/v1/features/items/{unique()}", raw=big)
    assert_error(status, body, 413, "body_too_large")

    async def chunks():
        for start in range(0, len(big), 65536):
            yield big[start:start + 65536]

    # Chunked transfer encoding: no Content-Length to check, the gateway must count.
    async with http.put(f"{gateway.url}/v1/features/items/{unique()}", data=chunks()) as resp:
        assert resp.request_info.headers.get("Transfer-Encoding") == "chunked"
        assert_error(resp.status, orjson.loads(await resp.read()), 413, "body_too_large")
    # The gateway is still serving.
    status, _, _ = await call(http, "GET", f"{gateway.url}/healthz")
    assert status == 200


async def test_health_readiness_and_metrics(http, gateway):
    status, body, _ = await call(http, "GET", f"{gateway.url}/healthz")
    assert status == 200 and body["status"] == "ok"
    status, body, _ = await call(http, "GET", f"{gateway.url}/readyz")
    assert status == 200 and body["ready"] is True
    await get(http, gateway, "users", unique())
    async with http.get(f"{gateway.url}/metrics") as resp:
        text = await resp.text()
    assert 'gateway_downstream_rq_total{code="404",route="/v1/features/{view}/{key}"}' in text


async def test_members_lists_this_gateway(http, gateway):
    deadline = asyncio.get_running_loop().time() + 10
    while True:
        async with http.get(f"{gateway.url}/v1/members") as resp:
            body = await resp.json()
        assert resp.status == 200 and body["region"] == "us-east-1"
        if any(m["instance"] == body["instance"] for m in body["members"]):
            break
        assert asyncio.get_running_loop().time() < deadline, body
        await asyncio.sleep(0.1)
    me = next(m for m in body["members"] if m["instance"] == body["instance"])
    assert me["region"] == "us-east-1" and me["downstream"] == gateway.url.removeprefix("http://")
