"""Sessions: min_version per key, bounded memory, tokens that resume elsewhere, deletes read from the primary."""

from __future__ import annotations

import json

import httpx
import pytest
from conftest import act, applied, entity, ok
from feature_gateway_client import InvalidSessionToken
from feature_gateway_client.session import SessionState, newer


def min_version_of(request: httpx.Request) -> str | None:
    return request.url.params.get("min_version")


async def test_a_session_sends_the_version_it_wrote_as_min_version_and_a_plain_read_does_not(make, gateway):
    gateway.answers = [applied("3.500.us-east-1"), entity(version="3.500.us-east-1"), entity(version="3.500.us-east-1")]
    client = make()
    session = client.session()
    await act(session.put("users", "u-1", {"age": 2}))
    await act(session.get("users", "u-1"))
    await act(client.get("users", "u-1"))
    assert [min_version_of(r) for r in gateway.requests[1:]] == ["3.500.us-east-1", None]


async def test_a_session_keeps_the_newest_version_it_saw_never_an_older_one(make, gateway):
    gateway.answers = [entity(version="2.900.us-east-1"), applied("1.999.us-east-1"), entity(version="2.900.us-east-1")]
    session = make().session()
    await act(session.get("users", "u-1"))
    # An older version (epoch 1 < 2, whatever the clock says) does not replace it.
    await act(session.put("users", "u-1", {"age": 2}))
    await act(session.get("users", "u-1"))
    assert min_version_of(gateway.requests[2]) == "2.900.us-east-1"


async def test_a_token_resumes_the_session_in_another_client(make, gateway):
    gateway.answers = [applied("0.700.eu-west-1"), entity(version="0.700.eu-west-1")]
    session = make().session()
    await act(session.put("users", "u-1", {"age": 2}))
    token = session.token
    assert token.startswith("fgs1.") and len(token) < 120
    elsewhere = make().session(token=token)
    await act(elsewhere.get("users", "u-1"))
    assert min_version_of(gateway.requests[1]) == "0.700.eu-west-1"


async def test_a_deleted_key_is_read_from_the_primary(make, gateway):
    gateway.answers = [applied("0.800.us-east-1"), httpx.Response(404, json={"error": {"code": "not_found", "message": "none", "retryable": False}})]
    session = make().session()
    await act(session.delete("users", "u-1"))
    with pytest.raises(Exception) as raised:
        await act(session.get("users", "u-1"))
    assert raised.value.code == "not_found"
    assert gateway.requests[1].url.params.get("consistency") == "strong" and min_version_of(gateway.requests[1]) is None


async def test_a_batch_read_reads_again_the_keys_it_answered_older_than_the_session_knows(make, gateway):
    batch = ok({"view": "users", "results": [
        {"key": "a", "status": "PRESENT", "features": {"age": 1}, "version": "0.100.us-east-1"},
        {"key": "b", "status": "PRESENT", "features": {"age": 1}, "version": "0.100.us-east-1"},
        {"key": "c", "status": "NOT_FOUND", "features": None, "version": None}]})
    gateway.answers = [applied("0.300.us-east-1"), applied("0.200.us-east-1"), batch,
                       entity(key="b", version="0.300.us-east-1", age=9), entity(key="c", version="0.200.us-east-1", age=8)]
    session = make().session()
    await act(session.put("users", "b", {"age": 9}))
    await act(session.put("users", "c", {"age": 8}))
    results = await act(session.read("users", ["a", "b", "c"]))
    assert [(r.key, r.found, r.version) for r in results] == [
        ("a", True, "0.100.us-east-1"), ("b", True, "0.300.us-east-1"), ("c", True, "0.200.us-east-1")]
    again = gateway.requests[3:]
    assert [(r.url.path, min_version_of(r)) for r in again] == [
        ("/v1/features/users/b", "0.300.us-east-1"), ("/v1/features/users/c", "0.200.us-east-1")]


def test_memory_is_bounded_least_recently_used_first():
    state = SessionState(max_keys=3)
    for i in range(5):
        state.observe("users", f"k{i}", f"0.{i + 1}.us-east-1")
    state.observe("users", "k2", "0.9.us-east-1")
    state.observe("users", "k5", "0.9.us-east-1")
    assert len(state) == 3
    assert [k for k in ("k0", "k1", "k2", "k3", "k4", "k5") if state.get("users", k)] == ["k2", "k4", "k5"]
    resumed = SessionState.from_token(state.token(), max_keys=2)
    # The token keeps the order of use: resumed into less room, the least recently used go first.
    assert [k for k in ("k2", "k4", "k5") if resumed.get("users", k)] == ["k2", "k5"]


def test_a_token_holds_views_keys_versions_and_deletions():
    state = SessionState()
    state.observe("users", "u-1", "1.100.us-east-1")
    state.observe("items", "i-1", "0.5.eu-west-1", deleted=True)
    state.observe("items", "i-2", None, deleted=True)
    resumed = SessionState.from_token(state.token())
    assert [resumed.get("users", "u-1"), resumed.get("items", "i-1"), resumed.get("items", "i-2")] == [
        state.get("users", "u-1"), state.get("items", "i-1"), state.get("items", "i-2")]
    assert resumed.wanted("users", "u-1") == ("1.100.us-east-1", False) and resumed.wanted("items", "i-1") == (None, True)


@pytest.mark.parametrize("token", ["", "nonsense", "fgs1.", "fgs1.!!!", "fgs1.eJwLSS0u0c3NzMsvykxJBQAiKATq"])
def test_a_damaged_token_is_refused_with_a_clear_error(token):
    with pytest.raises(InvalidSessionToken):
        SessionState.from_token(token)


def test_a_token_cannot_inflate_without_bound():
    import base64
    import zlib
    bomb = "fgs1." + base64.urlsafe_b64encode(zlib.compress(json.dumps({"v": [], "k": []}).encode() + b" " * (32 << 20))).decode()
    with pytest.raises(InvalidSessionToken, match="16 MiB"):
        SessionState.from_token(bomb)


def test_versions_order_by_epoch_then_time():
    assert newer("1.5.us-east-1", "0.900.eu-west-1") and not newer("0.900.eu-west-1", "1.5.us-east-1")
    assert newer("1.6.us-east-1", "1.5.eu-west-1") and not newer("1.5.us-east-1", "1.5.us-east-1")
