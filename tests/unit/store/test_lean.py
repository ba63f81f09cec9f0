"""LeanStore: retries with backoff, batching and alignment, deadlines, the observer and spans, through a fake transport (gateway/store/lean.py)."""

from __future__ import annotations

import asyncio
from typing import Any

import pytest

from gateway import errors
from gateway.store.base import Condition
from gateway.store.credentials import CredentialSource
from gateway.store.lean import LeanStore, open_lean_store
from tests.fakes import AdvancingSleep, FakeDynamoDB, RecordingSleep

TABLE = "features"
BASE, CAP = 0.02, 1.0


def item(pk: str, **attrs: str) -> dict[str, Any]:
    return {"pk": {"S": pk}, **{name: {"S": value} for name, value in attrs.items()}}


def key(pk: str) -> dict[str, Any]:
    return {"pk": {"S": pk}}


def lean(transport: Any, sleep: RecordingSleep, *, rng: float = 0.5, max_attempts: int = 6, **kw: Any) -> LeanStore:
    return LeanStore(
        "http://dynamodb.invalid",
        "us-east-1",
        CredentialSource.static("AKID", "secret"),
        transport=transport,
        max_attempts=max_attempts,
        backoff_base=BASE,
        backoff_cap=CAP,
        sleep=sleep,
        rng=lambda: rng,
        **kw,
    )


def ceilings(n: int) -> list[float]:
    return [min(CAP, BASE * 2**i) for i in range(n)]


# --- BatchGetItem ---


async def test_unprocessed_keys_are_retried_until_served() -> None:
    ddb, sleep = FakeDynamoDB(), RecordingSleep()
    ddb.put(*(item(f"u{i}", f="v") for i in range(10)))
    ddb.unprocessed.extend([7, 4, 1])  # DynamoDB serves a few more keys on each round
    store = lean(ddb, sleep, rng=0.5)

    result = await store.batch_get_item(TABLE, [key(f"u{i}") for i in range(10)])

    assert result == [item(f"u{i}", f="v") for i in range(10)]
    assert ddb.operations() == ["BatchGetItem"] * 4
    assert sleep.delays == [0.5 * c for c in ceilings(3)]


@pytest.mark.parametrize("rng", [0.0, 0.37, 0.999999])
async def test_backoff_is_full_jitter_within_exponential_bounds(rng: float) -> None:
    ddb, sleep = FakeDynamoDB(), RecordingSleep()
    ddb.put(item("u1"))
    ddb.unprocessed.extend([1] * 7)
    store = lean(ddb, sleep, rng=rng, max_attempts=9)

    assert await store.batch_get_item(TABLE, [key("u1")]) == [item("u1")]

    assert len(sleep.delays) == 7
    for delay, ceiling in zip(sleep.delays, ceilings(7), strict=True):
        assert 0.0 <= delay < ceiling or delay == ceiling == 0.0
        assert delay == pytest.approx(rng * ceiling)
    assert max(ceilings(7)) == CAP  # the cap is reached


async def test_key_unprocessed_past_the_budget_raises_throttled_never_missing() -> None:
    ddb, sleep = FakeDynamoDB(), RecordingSleep()
    ddb.put(item("u1"), item("u2"))
    ddb.always_unprocessed = 1
    store = lean(ddb, sleep, max_attempts=3)

    with pytest.raises(errors.StoreThrottled, match=r"BatchGetItem on table 'features' left 1 keys unprocessed after 3"):
        await store.batch_get_item(TABLE, [key("u1"), key("u2")])
    assert ddb.operations() == ["BatchGetItem"] * 3
    assert len(sleep.delays) == 2


async def test_batch_get_of_more_than_100_keys_is_chunked_and_aligned() -> None:
    ddb, sleep = FakeDynamoDB(), RecordingSleep()
    ddb.put(*(item(f"u{i}", n=str(i)) for i in range(0, 250, 2)))  # odd keys are missing
    store = lean(ddb, sleep)

    result = await store.batch_get_item(TABLE, [key(f"u{i}") for i in range(250)])

    assert result == [item(f"u{i}", n=str(i)) if i % 2 == 0 else None for i in range(250)]
    sizes = sorted(len(payload["RequestItems"][TABLE]["Keys"]) for _, payload in ddb.calls)
    assert sizes == [50, 100, 100]


async def test_duplicate_keys_are_sent_once_and_answers_stay_aligned() -> None:
    ddb, sleep = FakeDynamoDB(), RecordingSleep()
    ddb.put(item("a", v="1"), item("b", v="2"))
    store = lean(ddb, sleep)

    result = await store.batch_get_item(TABLE, [key("a"), key("b"), key("a"), key("missing"), key("b")])

    assert result == [item("a", v="1"), item("b", v="2"), item("a", v="1"), None, item("b", v="2")]
    ((_, payload),) = ddb.calls
    assert payload["RequestItems"][TABLE]["Keys"] == [key("a"), key("b"), key("missing")]


async def test_batch_get_projection_keeps_alignment_without_returning_unrequested_keys() -> None:
    ddb, sleep = FakeDynamoDB(), RecordingSleep()
    ddb.put(item("a", _ts="1", other="x"), item("b", other="y"))
    store = lean(ddb, sleep)

    result = await store.batch_get_item(TABLE, [key("b"), key("a"), key("c")], projection=["_ts"])

    assert result == [{}, {"_ts": {"S": "1"}}, None]
    request = ddb.calls[0][1]["RequestItems"][TABLE]
    assert request["ProjectionExpression"] == "#p0,#p1"
    assert request["ExpressionAttributeNames"] == {"#p0": "_ts", "#p1": "pk"}


async def test_empty_batch_get_makes_no_call() -> None:
    ddb = FakeDynamoDB()
    assert await lean(ddb, RecordingSleep()).batch_get_item(TABLE, []) == []
    assert ddb.calls == []



# --- BatchWriteItem ---


async def test_unprocessed_items_are_retried_until_written() -> None:
    ddb, sleep = FakeDynamoDB(), RecordingSleep()
    ddb.put(item("old1"), item("old2"))
    ddb.unprocessed.extend([20, 5, 2, 0, 3])
    store = lean(ddb, sleep)

    await store.batch_write_item(TABLE, puts=[item(f"n{i}") for i in range(30)], deletes=[key("old1"), key("old2")])

    assert sorted(ddb.items) == sorted(((("S", f"n{i}"),) for i in range(30)))
    assert all(len(p["RequestItems"][TABLE]) <= 25 for _, p in ddb.calls)
    assert ddb.operations().count("BatchWriteItem") == 2 + 4  # two chunks, four retry rounds in all


async def test_items_unprocessed_past_the_budget_raise_throttled() -> None:
    ddb, sleep = FakeDynamoDB(), RecordingSleep()
    ddb.always_unprocessed = 2
    store = lean(ddb, sleep, max_attempts=4)

    with pytest.raises(errors.StoreThrottled, match="BatchWriteItem on table 'features' left 2 writes unprocessed"):
        await store.batch_write_item(TABLE, puts=[item("a"), item("b"), item("c")])
    assert ddb.operations() == ["BatchWriteItem"] * 4
    assert sleep.delays == [0.5 * c for c in ceilings(3)]


# --- retries of whole calls ---


async def test_throttling_is_retried_then_served() -> None:
    ddb, sleep = FakeDynamoDB(), RecordingSleep()
    ddb.put(item("u1"))
    ddb.failures.extend([errors.StoreThrottled("throttled"), errors.StoreUnavailable("500")])
    store = lean(ddb, sleep)

    assert await store.get_item(TABLE, key("u1")) == item("u1")
    assert ddb.operations() == ["GetItem"] * 3
    assert sleep.delays == [0.5 * c for c in ceilings(2)]


@pytest.mark.parametrize("error", [errors.StoreThrottled, errors.StoreUnavailable, errors.StoreTimeout])
async def test_retryable_errors_give_up_after_max_attempts(error: type[errors.StoreError]) -> None:
    ddb, sleep = FakeDynamoDB(), RecordingSleep()
    ddb.failures.extend(error("DynamoDB GetItem on table 'features' failed.") for _ in range(10))
    store = lean(ddb, sleep, max_attempts=4)

    with pytest.raises(error, match="Gave up after 4 attempts"):
        await store.get_item(TABLE, key("u1"))
    assert len(ddb.calls) == 4 and len(sleep.delays) == 3


@pytest.mark.parametrize(
    "error",
    [errors.StoreValidation("bad"), errors.TableNotFound("gone"), errors.ItemTooLarge("big"), errors.StoreError("?")],
)
async def test_non_retryable_errors_are_raised_at_once(error: Exception) -> None:
    ddb, sleep = FakeDynamoDB(), RecordingSleep()
    ddb.failures.append(error)
    with pytest.raises(type(error)):
        await lean(ddb, sleep).put_item(TABLE, item("u1"))
    assert len(ddb.calls) == 1 and sleep.delays == []


async def test_an_attempt_that_hangs_times_out_and_is_retried() -> None:
    class Hanging:
        calls = 0

        async def call(self, operation: str, payload: dict[str, Any]) -> dict[str, Any]:
            self.calls += 1
            await asyncio.Event().wait()
            raise AssertionError("unreachable")

    transport, sleep = Hanging(), RecordingSleep()
    store = lean(transport, sleep, max_attempts=3, attempt_timeout=0.01)
    with pytest.raises(errors.StoreTimeout, match=r"GetItem on table 'features' did not answer within 0.01 s") as gave_up:
        await store.get_item(TABLE, key("u1"))
    assert transport.calls == 3
    # The last attempt's timeout is kept as the cause, for the log's traceback.
    assert isinstance(gave_up.value.__cause__, errors.StoreTimeout)
    assert isinstance(gave_up.value.__cause__.__cause__, TimeoutError)


# --- single-item writes: what is sent ---


async def test_conditional_put_asks_for_the_old_item_and_raises_condition_failed() -> None:
    ddb, sleep = FakeDynamoDB(), RecordingSleep()
    ddb.put(item("u1", v="old"))
    store = lean(ddb, sleep)

    with pytest.raises(errors.ConditionFailed) as failed:
        await store.put_item(TABLE, item("u1", v="new"), condition=Condition("attribute_not_exists(pk)"))
    assert failed.value.old_item == item("u1", v="old")
    assert ddb.calls[0][1]["ReturnValuesOnConditionCheckFailure"] == "ALL_OLD"
    assert len(ddb.calls) == 1  # a failed condition is an outcome, not retried


async def test_update_merges_condition_placeholders_and_rejects_conflicts() -> None:
    class Recorder:
        payload: dict[str, Any] = {}

        async def call(self, operation: str, payload: dict[str, Any]) -> dict[str, Any]:
            self.payload = payload
            return {"Attributes": {"v": {"N": "2"}}}

    recorder, sleep = Recorder(), RecordingSleep()
    store = lean(recorder, sleep)
    condition = Condition("#ts < :ts", names={"#ts": "_ts"}, values={":ts": {"N": "5"}})
    result = await store.update_item(
        TABLE, key("u1"), update="SET #v = :v", names={"#v": "v"}, values={":v": {"N": "2"}},
        condition=condition, return_values="UPDATED_NEW",
    )  # fmt: skip
    assert result == {"v": {"N": "2"}}
    assert recorder.payload["ExpressionAttributeNames"] == {"#v": "v", "#ts": "_ts"}
    assert recorder.payload["ExpressionAttributeValues"] == {":v": {"N": "2"}, ":ts": {"N": "5"}}
    assert recorder.payload["ReturnValues"] == "UPDATED_NEW"

    with pytest.raises(errors.StoreValidation, match="placeholder #v is bound to two different"):
        await store.update_item(
            TABLE, key("u1"), update="SET #v = :v", names={"#v": "v"}, values={":v": {"N": "2"}},
            condition=Condition("attribute_exists(#v)", names={"#v": "other"}),
        )  # fmt: skip







class Scripted:
    """A transport that records every request and answers each operation from a script of bodies."""

    def __init__(self, **answers: list[dict[str, Any]]) -> None:
        self.answers = answers
        self.calls: list[tuple[str, dict[str, Any]]] = []

    async def call(self, operation: str, payload: dict[str, Any]) -> dict[str, Any]:
        self.calls.append((operation, payload))
        return self.answers[operation].pop(0)


async def test_each_single_item_request_is_exactly_what_dynamodb_documents() -> None:
    transport = Scripted(
        GetItem=[{"Item": item("u1", v="a")}, {}], PutItem=[{}, {}], DeleteItem=[{"Attributes": item("u1")}, {}],
        UpdateItem=[{}, {"Attributes": {"v": {"N": "2"}}}],
    )
    store = lean(transport, RecordingSleep())
    condition = Condition("#ts < :ts", names={"#ts": "_ts"}, values={":ts": {"N": "5"}})
    assert await store.get_item(TABLE, key("u1"), consistent=True, projection=["v", "_ts"]) == item("u1", v="a")
    assert await store.get_item(TABLE, key("u2")) is None
    await store.put_item(TABLE, item("u1", v="b"), condition=condition)
    await store.put_item(TABLE, item("u1", v="c"))
    assert await store.delete_item(TABLE, key("u1"), condition=condition, return_old=True) == item("u1")
    assert await store.delete_item(TABLE, key("u1")) is None
    assert await store.update_item(TABLE, key("u1"), update="SET #v = :v", names={"#v": "v"}, values={":v": {"N": "2"}}) is None
    assert await store.update_item(
        TABLE, key("u1"), update="REMOVE #v", names={"#v": "v"}, values={}, return_values="ALL_NEW"
    ) == {"v": {"N": "2"}}
    cond = {"ConditionExpression": "#ts < :ts", "ReturnValuesOnConditionCheckFailure": "ALL_OLD",
            "ExpressionAttributeNames": {"#ts": "_ts"}, "ExpressionAttributeValues": {":ts": {"N": "5"}}}
    assert transport.calls == [
        ("GetItem", {"TableName": TABLE, "Key": key("u1"), "ConsistentRead": True, "ProjectionExpression": "#p0,#p1",
                     "ExpressionAttributeNames": {"#p0": "v", "#p1": "_ts"}}),
        ("GetItem", {"TableName": TABLE, "Key": key("u2")}),
        ("PutItem", {"TableName": TABLE, **cond, "Item": item("u1", v="b")}),
        ("PutItem", {"TableName": TABLE, "Item": item("u1", v="c")}),
        ("DeleteItem", {"TableName": TABLE, **cond, "Key": key("u1"), "ReturnValues": "ALL_OLD"}),
        ("DeleteItem", {"TableName": TABLE, "Key": key("u1")}),
        ("UpdateItem", {"TableName": TABLE, "ExpressionAttributeNames": {"#v": "v"},
                        "ExpressionAttributeValues": {":v": {"N": "2"}}, "Key": key("u1"), "UpdateExpression": "SET #v = :v"}),
        ("UpdateItem", {"TableName": TABLE, "ExpressionAttributeNames": {"#v": "v"}, "Key": key("u1"),
                        "UpdateExpression": "REMOVE #v", "ReturnValues": "ALL_NEW"}),
    ]


async def test_a_scan_reads_every_page_with_the_same_settings() -> None:
    pages = [{"Items": [item("a"), item("b")], "LastEvaluatedKey": key("b")}, {"Items": [item("c")], "LastEvaluatedKey": key("c")}, {}]
    transport = Scripted(Scan=pages)
    assert await lean(transport, RecordingSleep()).scan(TABLE, consistent=True, page_size=2) == [item("a"), item("b"), item("c")]
    first = {"TableName": TABLE, "ConsistentRead": True, "Limit": 2}
    assert transport.calls == [
        ("Scan", first), ("Scan", {**first, "ExclusiveStartKey": key("b")}), ("Scan", {**first, "ExclusiveStartKey": key("c")}),
    ]
    transport = Scripted(Scan=[{"Items": [item("a")]}])
    assert await lean(transport, RecordingSleep()).scan(TABLE) == [item("a")]
    assert transport.calls == [("Scan", {"TableName": TABLE})]


async def test_a_batch_get_request_carries_consistency_and_the_projection_with_its_keys() -> None:
    answer = {"Responses": {TABLE: [item("u1", v="1", w="x")]}, "UnprocessedKeys": {}}
    transport = Scripted(BatchGetItem=[answer, {"Responses": {}}])
    store = lean(transport, RecordingSleep())
    assert await store.batch_get_item(TABLE, [key("u1"), key("u2")], consistent=True, projection=["v", "v"]) == [
        {"v": {"S": "1"}, "w": {"S": "x"}}, None,  # the key attribute, not asked for, is dropped again
    ]
    assert transport.calls == [("BatchGetItem", {"RequestItems": {TABLE: {
        "ConsistentRead": True, "ProjectionExpression": "#p0,#p1", "ExpressionAttributeNames": {"#p0": "v", "#p1": "pk"},
        "Keys": [key("u1"), key("u2")],
    }}})]
    transport.answers["BatchGetItem"] = [{}]
    assert await store.batch_get_item(TABLE, [key("u3")]) == [None]  # an answer without Responses: nothing found
    assert transport.calls[1] == ("BatchGetItem", {"RequestItems": {TABLE: {"Keys": [key("u3")]}}})
    with pytest.raises(errors.StoreValidation, match="must name at least one attribute"):
        await store.batch_get_item(TABLE, [key("u3")], projection=[])


async def test_a_store_opened_for_an_endpoint_uses_it_and_the_credentials_given() -> None:
    transport = Scripted(GetItem=[{}])
    store = await open_lean_store(
        "eu-west-1", "http://127.0.0.1:1", credentials=CredentialSource.static("a", "b"), transport=transport,
        max_attempts=2,
    )
    assert (store.endpoint, store.region) == ("http://127.0.0.1:1", "eu-west-1")
    assert await store.get_item(TABLE, key("u1")) is None and transport.calls == [("GetItem", {"TableName": TABLE, "Key": key("u1")})]
    await store.close()


# --- the request's deadline, the observer and spans ---


async def in_request(clock: Any, timeout: float, coro: Any) -> Any:
    """Run ``coro`` in a task with a request deadline ``timeout`` seconds from now."""
    from gateway.deadlines import Deadlines, current

    deadlines = Deadlines(clock)

    async def request() -> Any:
        current.set(deadlines.track(asyncio.current_task(), timeout))
        return await coro

    return await asyncio.create_task(request())


async def test_a_retry_is_not_started_when_the_deadline_ends_before_its_backoff() -> None:
    from tests.fakes import FakeClock

    clock = FakeClock(100.0)
    ddb, sleep = FakeDynamoDB(), AdvancingSleep(clock)
    ddb.failures.extend(errors.StoreThrottled("DynamoDB GetItem on table 'features' was throttled.") for _ in range(10))
    # rng 1.0: backoffs are the ceilings 0.02, 0.04, 0.08, ...; 0.1 s leaves room for the first two only.
    store = lean(ddb, sleep, rng=1.0, max_attempts=10)
    with pytest.raises(errors.StoreThrottled, match="deadline leaves no time for another"):
        await in_request(clock, 0.1, store.get_item(TABLE, key("u1")))
    assert sleep.delays == [0.02, 0.04] and len(ddb.calls) == 3
    # Outside a request (background tasks) the budget is max_attempts, as before.
    ddb.failures.extend(errors.StoreThrottled("throttled") for _ in range(10 - len(ddb.failures)))
    with pytest.raises(errors.StoreThrottled, match="Gave up after 10 attempts"):
        await store.get_item(TABLE, key("u1"))


async def test_unprocessed_keys_are_not_retried_past_the_deadline() -> None:
    from tests.fakes import FakeClock

    clock = FakeClock(100.0)
    ddb, sleep = FakeDynamoDB(), AdvancingSleep(clock)
    ddb.put(item("u1"))
    ddb.always_unprocessed = 1
    store = lean(ddb, sleep, rng=1.0, max_attempts=10)
    with pytest.raises(errors.StoreThrottled, match="deadline leaves no time"):
        await in_request(clock, 0.05, store.batch_get_item(TABLE, [key("u1")]))
    assert sleep.delays == [0.02]


async def test_an_attempt_gets_at_most_the_time_left() -> None:
    class Hanging:
        async def call(self, operation: str, payload: dict[str, Any]) -> dict[str, Any]:
            await asyncio.Event().wait()
            raise AssertionError("unreachable")

    from gateway.clock import SystemClock

    store = lean(Hanging(), RecordingSleep(), max_attempts=1, attempt_timeout=30.0)
    loop = asyncio.get_running_loop()
    started = loop.time()
    with pytest.raises(errors.StoreTimeout):
        await in_request(SystemClock(), 0.05, store.get_item(TABLE, key("u1")))
    assert loop.time() - started < 1.0


async def test_every_call_is_observed_once_with_its_outcome() -> None:
    ddb, sleep = FakeDynamoDB(), RecordingSleep()
    ddb.put(item("u1"))
    seen: list[tuple[str, str]] = []
    store = lean(ddb, sleep, max_attempts=2, observer=lambda op, outcome, seconds: seen.append((op, outcome)))
    await store.get_item(TABLE, key("u1"))
    ddb.failures.append(errors.StoreThrottled("throttled"))
    await store.get_item(TABLE, key("u1"))  # one call, retried once: observed once
    with pytest.raises(errors.ConditionFailed):
        await store.put_item(TABLE, item("u1"), condition=Condition("attribute_not_exists(pk)"))
    ddb.failures.extend([errors.StoreThrottled("throttled")] * 2)
    with pytest.raises(errors.StoreThrottled):
        await store.get_item(TABLE, key("u1"))
    ddb.failures.extend([errors.StoreUnavailable("down")] * 2)
    with pytest.raises(errors.StoreUnavailable):
        await store.get_item(TABLE, key("u1"))
    ddb.failures.append(errors.TableNotFound("gone"))
    with pytest.raises(errors.TableNotFound):
        await store.get_item(TABLE, key("u1"))
    assert seen == [
        ("GetItem", "ok"), ("GetItem", "ok"), ("PutItem", "condition_failed"),
        ("GetItem", "throttled"), ("GetItem", "unavailable"), ("GetItem", "error"),
    ]


async def test_every_call_is_one_client_span_under_the_current_one() -> None:
    from opentelemetry.sdk.trace import TracerProvider
    from opentelemetry.sdk.trace.export import SimpleSpanProcessor
    from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter
    from opentelemetry.trace import SpanKind, StatusCode

    exporter = InMemorySpanExporter()
    provider = TracerProvider()
    provider.add_span_processor(SimpleSpanProcessor(exporter))
    tracer = provider.get_tracer("test")
    ddb, sleep = FakeDynamoDB(), RecordingSleep()
    store = lean(ddb, sleep, max_attempts=1, tracer=tracer)
    with tracer.start_as_current_span("request"):
        await store.get_item(TABLE, key("u1"))
        ddb.failures.append(errors.StoreThrottled("throttled"))
        with pytest.raises(errors.StoreThrottled):
            await store.get_item(TABLE, key("u1"))
    get_ok, get_throttled, request = exporter.get_finished_spans()
    assert get_ok.name == "DynamoDB GetItem" and get_ok.kind is SpanKind.CLIENT
    assert get_ok.parent.span_id == request.context.span_id and get_ok.attributes["aws.dynamodb.table_names"] == (TABLE,)
    assert get_ok.status.status_code is StatusCode.UNSET
    assert get_throttled.status.status_code is StatusCode.ERROR and get_throttled.attributes["gateway.outcome"] == "throttled"


async def test_spans_carry_the_semantic_attributes_and_mark_only_failures_as_errors() -> None:
    from opentelemetry.sdk.trace import TracerProvider
    from opentelemetry.sdk.trace.export import SimpleSpanProcessor
    from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter
    from opentelemetry.trace import StatusCode

    exporter = InMemorySpanExporter()
    provider = TracerProvider()
    provider.add_span_processor(SimpleSpanProcessor(exporter))
    ddb = FakeDynamoDB()
    ddb.put(item("u1"))
    timings: list[tuple[str, str, float]] = []
    store = lean(ddb, RecordingSleep(), max_attempts=1, tracer=provider.get_tracer("test"),
                 observer=lambda op, outcome, seconds: timings.append((op, outcome, seconds)))
    with pytest.raises(errors.ConditionFailed):
        await store.put_item(TABLE, item("u1"), condition=Condition("attribute_not_exists(pk)"))
    ddb.failures.append(errors.StoreTimeout("slow"))
    with pytest.raises(errors.StoreTimeout):
        await store.get_item(TABLE, key("u1"))
    refused, slow = exporter.get_finished_spans()
    assert dict(refused.attributes) == {
        "db.system": "dynamodb", "db.operation": "PutItem", "aws.dynamodb.table_names": (TABLE,),
        "gateway.outcome": "condition_failed",
    }
    assert refused.status.status_code is StatusCode.UNSET  # a refused condition is an answer, not a failure
    assert (slow.attributes["gateway.outcome"], slow.status.status_code, slow.status.description) == (
        "timeout", StatusCode.ERROR, "timeout",
    )
    assert [(op, outcome) for op, outcome, _ in timings] == [("PutItem", "condition_failed"), ("GetItem", "timeout")]
    assert all(0 <= seconds < 1 for _, _, seconds in timings)


async def test_an_attempt_takes_its_whole_timeout_while_the_deadline_leaves_that_much() -> None:
    from tests.fakes import FakeClock

    clock = FakeClock()
    transport = Scripted(GetItem=[{}])
    store = lean(transport, RecordingSleep(), max_attempts=1, attempt_timeout=2.0)
    assert await in_request(clock, 2.0, store.get_item(TABLE, key("u1"))) is None  # exactly the attempt timeout left
    with pytest.raises(errors.StoreTimeout, match="^DynamoDB GetItem on table 'features' was not tried: the request's "
                                                  "deadline had passed"):
        await in_request(clock, 0.0, store.get_item(TABLE, key("u1")))
    assert len(transport.calls) == 1  # the second was never sent


def test_a_store_needs_at_least_one_attempt() -> None:
    with pytest.raises(ValueError, match="^max_attempts must be at least 1$"):
        lean(FakeDynamoDB(), RecordingSleep(), max_attempts=0)


async def test_a_projection_over_more_than_100_keys_drops_the_key_attribute_from_every_batch() -> None:
    ddb = FakeDynamoDB()
    ddb.put(*(item(f"u{i}", f="v", g="w") for i in range(150)))
    result = await lean(ddb, RecordingSleep()).batch_get_item(TABLE, [key(f"u{i}") for i in range(150)], projection=["f"])
    assert result == [{"f": {"S": "v"}}] * 150 and ddb.operations() == ["BatchGetItem"] * 2


async def test_a_store_closes_its_wire_once_however_often_it_is_closed() -> None:
    store = LeanStore("http://127.0.0.1:1", "us-east-1", CredentialSource.static("a", "b"))
    await store.close()
    await store.close()


async def test_a_conflicting_update_is_refused_naming_the_operation_and_table() -> None:
    store = lean(Scripted(), RecordingSleep())
    with pytest.raises(errors.StoreValidation) as refused:
        await store.update_item(
            TABLE, key("u1"), update="SET #v = :v", names={"#v": "v"}, values={},
            condition=Condition("attribute_exists(#v)", names={"#v": "other"}),
        )
    assert str(refused.value).startswith("UpdateItem on table 'features': placeholder #v")


async def test_a_store_left_at_its_defaults_tries_six_times_backing_off_from_20_ms_to_at_most_1_s() -> None:
    # What gatewayctl, the emulator and any other store built without the gateway's [dynamodb] settings get.
    ddb, sleep = FakeDynamoDB(), RecordingSleep()
    ddb.failures.extend(errors.StoreThrottled("slow down.") for _ in range(10))
    store = LeanStore("http://dynamodb.invalid", "us-east-1", CredentialSource.static("AKID", "secret"), transport=ddb,
                      sleep=sleep, rng=lambda: 0.999999)
    with pytest.raises(errors.StoreThrottled, match="Gave up after 6 attempts"):
        await store.get_item(TABLE, key("u1"))
    assert sleep.delays == pytest.approx([0.999999 * min(1.0, 0.02 * 2**i) for i in range(5)])
