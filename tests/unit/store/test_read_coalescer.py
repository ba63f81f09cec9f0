"""Concurrent reads coalesced into BatchGetItem, each answered once, by its own deadline (gateway/store/read_coalescer.py)."""

import asyncio
from collections.abc import AsyncIterator

import pytest

from gateway import deadlines
from gateway.config import Config
from gateway.errors import StoreThrottled, StoreUnavailable
from gateway.store.credentials import CredentialSource
from gateway.store.lean import LeanStore
from gateway.store.read_coalescer import ReadCoalescer
from tests.fakes import FakeClock, FakeDynamoDB, RecordingSleep


class GatedTransport:
    """FakeDynamoDB whose calls wait until the test opens the gate."""

    def __init__(self, db: FakeDynamoDB) -> None:
        self.db = db
        self.gate = asyncio.Event()
        self.in_flight = 0
        self.most_in_flight = 0

    async def call(self, operation, payload):
        self.in_flight += 1
        self.most_in_flight = max(self.most_in_flight, self.in_flight)
        try:
            await self.gate.wait()
            return await self.db.call(operation, payload)
        finally:
            self.in_flight -= 1


@pytest.fixture(autouse=True)
async def loop_errors() -> AsyncIterator[None]:
    """Fail a test in which the event loop reported an error: the coalescer's flushes and lane timers run as loop
    callbacks, so a flush that raises is only logged, and the reads it should have sent wait for their deadline."""
    loop = asyncio.get_running_loop()
    reported: list[dict] = []
    previous = loop.get_exception_handler()
    loop.set_exception_handler(lambda _, context: reported.append(context))
    try:
        yield
    finally:
        loop.set_exception_handler(previous)
    assert not reported, [f"{c.get('message')}: {c.get('exception')!r}" for c in reported]


def item(key: str) -> dict:
    return {"pk": {"S": key}, "v": {"N": str(len(key))}}


def setup(max_in_flight: int = 1, keys: int = 300, lane_after: float = 0.0, clock=None):
    db = FakeDynamoDB(table="tbl")
    db.put(*(item(f"k{i}") for i in range(keys)))
    transport = GatedTransport(db)
    store = LeanStore(
        "http://127.0.0.1:1", "us-east-1", CredentialSource.static("a", "b"),
        transport=transport, sleep=RecordingSleep(), max_attempts=2,
    )
    return db, transport, ReadCoalescer(store, max_in_flight=max_in_flight, lane_after=lane_after, clock=clock)


async def settle() -> None:
    for _ in range(5):
        await asyncio.sleep(0)


async def test_an_idle_read_goes_out_at_once_as_getitem():
    db, transport, reads = setup()
    transport.gate.set()
    assert await reads.get("tbl", "pk", "k1", False) == item("k1")
    assert db.operations() == ["GetItem"]


async def test_reads_arriving_while_busy_go_out_as_one_batch():
    db, transport, reads = setup(max_in_flight=1)
    first = asyncio.create_task(reads.get("tbl", "pk", "k0", False))
    await settle()
    assert transport.in_flight == 1
    later = [asyncio.create_task(reads.get("tbl", "pk", k, False)) for k in ("k1", "k2", "missing", "k3")]
    await settle()
    assert transport.in_flight == 1  # queued behind the first call, not sent
    transport.gate.set()
    assert await first == item("k0")
    assert [await t for t in later] == [item("k1"), item("k2"), None, item("k3")]
    assert db.operations() == ["GetItem", "BatchGetItem"]
    assert len(db.calls[1][1]["RequestItems"]["tbl"]["Keys"]) == 4


async def test_identical_keys_share_one_slot_and_one_answer():
    db, transport, reads = setup()
    blocker = asyncio.create_task(reads.get("tbl", "pk", "k0", False))
    await settle()
    same = [asyncio.create_task(reads.get("tbl", "pk", "k7", False)) for _ in range(5)]
    await settle()
    transport.gate.set()
    await blocker
    assert [await t for t in same] == [item("k7")] * 5
    assert db.operations() == ["GetItem", "GetItem"]


async def test_in_flight_bound_and_batches_of_at_most_100():
    db, transport, reads = setup(max_in_flight=2)
    tasks = [asyncio.create_task(reads.get("tbl", "pk", f"k{i}", False)) for i in range(250)]
    await settle()
    assert transport.in_flight == 2
    transport.gate.set()
    results = await asyncio.gather(*tasks)
    assert results == [item(f"k{i}") for i in range(250)]
    assert transport.most_in_flight == 2
    sizes = [len(p["RequestItems"]["tbl"]["Keys"]) for op, p in db.calls if op == "BatchGetItem"]
    assert max(sizes) == 100 and sum(sizes) == 250


async def test_strong_and_eventual_reads_never_share_a_call():
    db, transport, reads = setup(max_in_flight=1)
    blocker = asyncio.create_task(reads.get("tbl", "pk", "k0", False))
    await settle()
    eventual = asyncio.create_task(reads.get("tbl", "pk", "k1", False))
    strong = asyncio.create_task(reads.get("tbl", "pk", "k1", True))
    await settle()
    transport.gate.set()
    await asyncio.gather(blocker, eventual, strong)
    consistent = [p.get("ConsistentRead", False) for op, p in db.calls if op == "GetItem"]
    assert sorted(consistent) == [False, False, True]


async def test_strong_reads_waiting_together_go_out_as_one_consistent_batch():
    db, transport, reads = setup(max_in_flight=1)
    blocker = asyncio.create_task(reads.get("tbl", "pk", "k0", True))
    await settle()
    batch = [asyncio.create_task(reads.get("tbl", "pk", k, True)) for k in ("k1", "k2")]
    await settle()
    transport.gate.set()
    assert [await t for t in (blocker, *batch)] == [item("k0"), item("k1"), item("k2")]
    assert [(op, p.get("ConsistentRead"), p.get("RequestItems", {}).get("tbl", {}).get("ConsistentRead")) for op, p in db.calls] == [
        ("GetItem", True, None), ("BatchGetItem", None, True),
    ]


async def test_a_failed_call_fails_every_waiter_it_carried():
    db, transport, reads = setup()
    db.failures.extend([StoreThrottled("throttled"), StoreThrottled("throttled")])
    transport.gate.set()
    results = await asyncio.gather(
        *(reads.get("tbl", "pk", k, False) for k in ("k1", "k2", "k3")), return_exceptions=True
    )
    assert all(isinstance(r, StoreThrottled) for r in results)
    # The next read is served: the failure did not wedge the queue.
    assert await reads.get("tbl", "pk", "k1", False) == item("k1")


async def test_a_waiter_that_gives_up_does_not_cancel_others_on_the_same_key():
    db, transport, reads = setup()
    impatient = asyncio.create_task(reads.get("tbl", "pk", "k5", False))
    patient = asyncio.create_task(reads.get("tbl", "pk", "k5", False))
    await settle()
    impatient.cancel()
    await settle()
    transport.gate.set()
    assert await patient == item("k5")
    with pytest.raises(asyncio.CancelledError):
        await impatient


async def test_close_releases_waiters_and_refuses_new_reads():
    db, transport, reads = setup()
    waiting = asyncio.create_task(reads.get("tbl", "pk", "k1", False))
    await settle()
    await reads.close()
    with pytest.raises(StoreUnavailable):
        await waiting
    with pytest.raises(StoreUnavailable):
        await reads.get("tbl", "pk", "k1", False)


async def test_a_second_lane_opens_only_once_the_first_has_waited_lane_after():
    clock = FakeClock()
    db, transport, reads = setup(max_in_flight=2, lane_after=10.0, clock=clock)
    first = asyncio.create_task(reads.get("tbl", "pk", "k0", False))
    await settle()
    second = asyncio.create_task(reads.get("tbl", "pk", "k1", False))
    await settle()
    assert transport.in_flight == 1  # the first lane is young: k1 waits to ride with the next batch
    clock.advance(10.0)
    third = asyncio.create_task(reads.get("tbl", "pk", "k2", False))
    await settle()
    assert transport.in_flight == 2  # the first lane is old now: a second one carries k1 and k2
    transport.gate.set()
    assert [await t for t in (first, second, third)] == [item("k0"), item("k1"), item("k2")]
    assert db.operations() == ["GetItem", "BatchGetItem"]
    await reads.close()


async def test_a_lane_timer_opens_the_lane_without_further_traffic():
    db, transport, reads = setup(max_in_flight=2, lane_after=0.01)
    first = asyncio.create_task(reads.get("tbl", "pk", "k0", False))
    await settle()
    second = asyncio.create_task(reads.get("tbl", "pk", "k1", False))
    # Nothing else arrives: the timer alone must open the second lane. (Bounded wait, not a sleep-then-assert.)
    async with asyncio.timeout(5):
        while transport.in_flight < 2:
            await asyncio.sleep(0.005)
    transport.gate.set()
    assert [await first, await second] == [item("k0"), item("k1")]
    await reads.close()


async def test_close_fails_waiters_of_batches_that_never_started():
    db, transport, reads = setup(max_in_flight=1)
    waiting = asyncio.create_task(reads.get("tbl", "pk", "k1", False))
    await asyncio.sleep(0)  # queued and flushed: the fetch task exists but has not run its first step
    await reads.close()
    with pytest.raises(StoreUnavailable):
        await waiting


async def test_close_fails_reads_in_flight_started_and_queued_and_answers_none_of_them_not_found():
    db, transport, reads = setup(max_in_flight=2, lane_after=0.0)
    in_flight = asyncio.create_task(reads.get("tbl", "pk", "k0", False))
    await settle()
    assert transport.in_flight == 1  # k0's GetItem is at DynamoDB
    not_started = asyncio.create_task(reads.get("tbl", "pk", "k1", False))
    await asyncio.sleep(0)  # k1 queued, its flush scheduled
    queued = [asyncio.create_task(reads.get("tbl", "pk", k, False)) for k in ("k2", "k3")]
    # One turn: the flush puts k1 in the second lane (its fetch task exists and has not run its first step),
    # then k2 and k3 queue behind both busy lanes.
    await asyncio.sleep(0)
    assert (len(reads._tasks), transport.in_flight, db.operations()) == (2, 1, [])
    await reads.close()
    assert transport.in_flight == 0  # close() returns once the call in flight is cancelled and over
    outcomes = await asyncio.gather(in_flight, not_started, *queued, return_exceptions=True)
    assert [type(o) for o in outcomes] == [StoreUnavailable] * 4, outcomes  # never None: that would say "not found"
    assert {str(o) for o in outcomes} == {"The gateway is shutting down; retry on another instance."}
    assert db.operations() == []  # and nothing was sent after it


class DeadlineRecordingStore:
    """Records how much of the request deadline each call runs under (``None``: no deadline)."""

    def __init__(self) -> None:
        self.remaining: list[float | None] = []

    async def get_item(self, table, key, *, consistent=False, projection=None):
        self.remaining.append(deadlines.remaining())
        return None

    async def batch_get_item(self, table, keys, *, consistent=False, projection=None):
        self.remaining.append(deadlines.remaining())
        return [None] * len(keys)


@pytest.mark.parametrize("timeouts, expected", [((0.1, 5.0), 5.0), ((5.0, 0.1), 5.0), ((0.1, None), None)])
async def test_a_batch_runs_under_the_latest_deadline_of_its_reads(timeouts, expected):
    clock = FakeClock()
    store = DeadlineRecordingStore()
    reads = ReadCoalescer(store, clock=clock)

    async def read(key: str, timeout: float | None) -> None:
        if timeout is not None:
            deadlines.current.set(deadlines.Deadline(None, clock.monotonic() + timeout, clock))
        await reads.get("tbl", "pk", key, False)

    # Both reads queue in the same loop turn, so they go out as one batch, scheduled by the first.
    await asyncio.gather(*(read(f"k{i}", t) for i, t in enumerate(timeouts)))
    assert len(store.remaining) == 1
    assert store.remaining[0] == expected
    await reads.close()


class HeldStore:
    """A store whose every call waits until the test answers it: ``calls`` holds each call's keys and its answer."""

    def __init__(self) -> None:
        self.calls: list[tuple[list[str], asyncio.Future[list]]] = []

    async def _call(self, keys: list[str]) -> list:
        answer: asyncio.Future[list] = asyncio.get_running_loop().create_future()
        self.calls.append((keys, answer))
        return await answer

    async def get_item(self, table, key, *, consistent=False, projection=None):
        (found,) = await self._call([key["pk"]["S"]])
        return found

    async def batch_get_item(self, table, keys, *, consistent=False, projection=None):
        return await self._call([k["pk"]["S"] for k in keys])

    def answer(self, call: int) -> None:
        keys, answer = self.calls[call]
        answer.set_result([item(k) for k in keys])

    def sent(self) -> list[list[str]]:
        return [keys for keys, _ in self.calls]


async def test_a_coalescer_built_without_settings_has_the_documented_lanes():
    # README: gateway.read_max_in_flight 4, gateway.read_lane_after 0.002 s; a coalescer built without them agrees.
    clock = FakeClock()
    store = HeldStore()
    reads = ReadCoalescer(store, clock=clock)
    defaults = Config(region="us-east-1")
    tasks = [asyncio.create_task(reads.get("tbl", "pk", "k0", False))]
    await settle()
    for lane in range(2, defaults.read_max_in_flight + 2):
        tasks.append(asyncio.create_task(reads.get("tbl", "pk", f"young{lane}", False)))
        await settle()
        assert len(store.calls) == lane - 1  # every open lane is younger than lane_after: the read waits
        clock.advance(defaults.read_lane_after)
        tasks.append(asyncio.create_task(reads.get("tbl", "pk", f"old{lane}", False)))
        await settle()
        assert len(store.calls) == min(lane, defaults.read_max_in_flight)
    for call in range(len(store.calls)):
        store.answer(call)
    await settle()
    assert store.sent()[-1] == ["young5", "old5"]  # the fifth lane never opened: its reads rode the first to return
    store.answer(len(store.calls) - 1)
    keys = ["k0"] + [f"{age}{lane}" for lane in range(2, 6) for age in ("young", "old")]
    assert [await t for t in tasks] == [item(k) for k in keys]
    await reads.close()


async def test_a_coalescer_that_could_never_send_a_read_is_refused_when_built():
    with pytest.raises(AssertionError):
        ReadCoalescer(HeldStore(), max_in_flight=0)
    with pytest.raises(AssertionError):
        ReadCoalescer(HeldStore(), lane_after=-1.0)


async def test_the_in_flight_bound_holds_after_calls_come_back():
    store = HeldStore()
    reads = ReadCoalescer(store, max_in_flight=1, lane_after=0.0)
    first = asyncio.create_task(reads.get("tbl", "pk", "k0", False))
    await settle()
    store.answer(0)
    assert await first == item("k0")
    second = asyncio.create_task(reads.get("tbl", "pk", "k1", False))
    await settle()
    third = asyncio.create_task(reads.get("tbl", "pk", "k2", False))
    await settle()
    assert store.sent() == [["k0"], ["k1"]]  # one lane: k2 waits for k1's call
    store.answer(1)
    await settle()
    store.answer(2)
    assert [await second, await third] == [item("k1"), item("k2")]
    assert store.sent() == [["k0"], ["k1"], ["k2"]]
    await reads.close()


async def test_reads_queued_in_the_turn_a_call_comes_back_go_out_together():
    store = HeldStore()
    reads = ReadCoalescer(store, max_in_flight=1, lane_after=0.0)
    first = asyncio.create_task(reads.get("tbl", "pk", "k0", False))
    await settle()
    # In one turn of the loop: k1 queues, k0's answer comes back, k2 queues. The flush k1 scheduled sends both.
    second = asyncio.create_task(reads.get("tbl", "pk", "k1", False))
    store.answer(0)
    third = asyncio.create_task(reads.get("tbl", "pk", "k2", False))
    await settle()
    assert store.sent() == [["k0"], ["k1", "k2"]]
    store.answer(1)
    assert [await first, await second, await third] == [item("k0"), item("k1"), item("k2")]
    await reads.close()
