"""The write buffer: its state machine, bounds, window, drain order, evictions, invariant and metrics."""

from __future__ import annotations

import asyncio
import random

import pytest

from gateway.config import BufferConfig
from gateway.errors import Draining, PrimarySwitching
from gateway.obs.metrics import Metrics
from gateway.switch.write_buffer import BufferStats, ScopeState, Slot, WriteBuffer
from tests.fakes import FakeClock

IDLE, BUFFERING, DRAINING = ScopeState.IDLE, ScopeState.BUFFERING, ScopeState.DRAINING


def make(
    *, window: float = 10.0, max_entries: int = 100, max_bytes: int = 10_000, drain_concurrency: int = 2
) -> tuple[WriteBuffer, FakeClock, Metrics]:
    clock = FakeClock(1000.0)
    metrics = Metrics()
    config = BufferConfig(
        window=window, max_entries=max_entries, max_bytes=max_bytes, drain_concurrency=drain_concurrency
    )
    return WriteBuffer(config, clock, metrics), clock, metrics


async def settle() -> None:
    """Let every ready task run until it blocks again (woken waiters pick up their slot or error)."""
    for _ in range(5):
        await asyncio.sleep(0)


async def hold(buffer: WriteBuffer, scope: str = "s", nbytes: int = 10) -> asyncio.Task[Slot]:
    task = asyncio.create_task(buffer.hold(scope, nbytes))
    await settle()
    return task


def assert_balanced(stats: BufferStats) -> None:
    assert stats.buffered == stats.drained + stats.evicted + stats.expired + stats.held, stats


def sample(metrics: Metrics, name: str, **labels: str) -> float:
    return metrics.registry.get_sample_value(name, labels) or 0.0


async def test_full_cycle_idle_buffering_draining_idle():
    buffer, _, _ = make(drain_concurrency=2)
    assert buffer.state("s") is IDLE
    buffer.switch_started("s")
    assert buffer.state("s") is BUFFERING
    first, second = await hold(buffer), await hold(buffer)
    assert not first.done() and not second.done()
    assert buffer.stats("s").held == 2 and buffer.depth() == 2
    buffer.switch_ended("s")
    assert buffer.state("s") is DRAINING
    await settle()
    slots = [first.result(), second.result()]
    # Released but not finished: still draining until the writes release their slots.
    assert buffer.state("s") is DRAINING and buffer.stats("s").outstanding == 2
    slots[0].release()
    assert buffer.state("s") is DRAINING
    slots[1].release()
    stats = buffer.stats("s")
    assert stats.state is IDLE and stats.held == 0 and stats.outstanding == 0
    assert (stats.buffered, stats.drained) == (2, 2)
    assert_balanced(stats)


async def test_hold_on_idle_scope_starts_buffering_without_switch_started():
    buffer, _, _ = make()
    task = await hold(buffer)
    assert buffer.state("s") is BUFFERING and not task.done()
    buffer.switch_ended("s")
    await settle()
    task.result().release()
    assert buffer.state("s") is IDLE


async def test_switch_ended_with_nothing_held_goes_straight_to_idle():
    buffer, _, _ = make()
    buffer.switch_started("s")
    buffer.switch_ended("s")
    assert buffer.state("s") is IDLE
    buffer.switch_ended("s")  # a repeated end changes nothing
    assert buffer.state("s") is IDLE
    assert buffer.stats("other") == BufferStats(IDLE, 0, 0, 0, 0, 0, 0, 0, 0)


async def test_new_switch_during_draining_goes_back_to_buffering_and_queued_entries_wait():
    buffer, _, _ = make(drain_concurrency=1)
    tasks = [await hold(buffer) for _ in range(3)]
    buffer.switch_ended("s")
    await settle()
    assert [t.done() for t in tasks] == [True, False, False]
    buffer.switch_started("s")
    assert buffer.state("s") is BUFFERING
    tasks[0].result().release()
    await settle()
    # The freed slot lets nothing go: the scope switches again.
    assert [t.done() for t in tasks] == [True, False, False]
    assert buffer.state("s") is BUFFERING and buffer.stats("s").held == 2
    buffer.switch_ended("s")
    await settle()
    assert [t.done() for t in tasks] == [True, True, False]
    tasks[1].result().release()
    await settle()
    tasks[2].result().release()
    assert buffer.state("s") is IDLE
    assert_balanced(buffer.stats("s"))


async def test_hold_during_draining_means_the_scope_switches_again():
    buffer, _, _ = make(drain_concurrency=1)
    first, second = await hold(buffer), await hold(buffer)
    buffer.switch_ended("s")
    await settle()
    assert first.done() and buffer.state("s") is DRAINING
    third = await hold(buffer)
    assert buffer.state("s") is BUFFERING
    first.result().release()
    await settle()
    assert not second.done() and not third.done()
    buffer.switch_ended("s")
    await settle()
    second.result().release()
    await settle()
    third.result().release()
    assert buffer.state("s") is IDLE


async def test_drain_is_fifo_with_bounded_concurrency():
    buffer, _, _ = make(drain_concurrency=2)
    order: list[int] = []

    async def write(i: int) -> None:
        slot = await buffer.hold("s", 10)
        order.append(i)
        await release_gate[i].wait()
        slot.release()

    release_gate = [asyncio.Event() for _ in range(5)]
    tasks = [asyncio.create_task(write(i)) for i in range(5)]
    await settle()
    assert buffer.stats("s").held == 5
    buffer.switch_ended("s")
    await settle()
    # Exactly two released while no slot is given back.
    assert order == [0, 1] and buffer.stats("s").outstanding == 2 and buffer.stats("s").held == 3
    await settle()
    assert order == [0, 1]
    release_gate[1].set()
    await settle()
    assert order == [0, 1, 2] and buffer.stats("s").outstanding == 2
    for i in (0, 2, 3, 4):
        release_gate[i].set()
        await settle()
    assert order == [0, 1, 2, 3, 4]
    await asyncio.gather(*tasks)
    stats = buffer.stats("s")
    assert stats.state is IDLE and stats.drained == 5 and stats.outstanding == 0
    assert_balanced(stats)


async def test_slot_release_is_idempotent():
    buffer, _, _ = make(drain_concurrency=1)
    first, second, third = await hold(buffer), await hold(buffer), await hold(buffer)
    buffer.switch_ended("s")
    await settle()
    slot = first.result()
    slot.release()
    slot.release()  # must not free a second slot
    await settle()
    assert second.done() and not third.done()
    assert buffer.stats("s").outstanding == 1
    second.result().release()
    await settle()
    third.result().release()
    assert buffer.state("s") is IDLE


async def test_full_by_entries_refuses_at_once_with_retry_after():
    buffer, _, metrics = make(max_entries=2)
    held = [await hold(buffer, "a"), await hold(buffer, "b")]
    coro = buffer.hold("a", 1)
    # The first step of the coroutine raises: the refused write never waits.
    with pytest.raises(PrimarySwitching) as refused:
        coro.send(None)
    assert refused.value.status == 503 and refused.value.code == "primary_switching"
    assert refused.value.retry_after == 1.0 and refused.value.headers() == {"Retry-After": "1"}
    assert "buffer is full" in refused.value.message
    stats = buffer.stats("a")
    assert stats.refused == 1 and stats.buffered == 1 and stats.held == 1
    assert_balanced(stats)
    assert sample(metrics, "gateway_buffer_released_total", scope="a", reason="refused") == 1
    assert buffer.depth() == 2
    buffer.evict_all("test over")
    await asyncio.gather(*held, return_exceptions=True)


async def test_full_by_bytes_refuses_at_once():
    buffer, _, _ = make(max_bytes=100)
    first = await hold(buffer, nbytes=60)
    with pytest.raises(PrimarySwitching, match="buffer is full"):
        buffer.hold("s", 41).send(None)
    second = await hold(buffer, nbytes=40)  # exactly max_bytes fits
    assert buffer.held_bytes() == 100 and buffer.stats("s").held_bytes == 100
    with pytest.raises(PrimarySwitching):
        buffer.hold("other", 1).send(None)  # the bound is per process, not per scope
    assert buffer.stats("s").refused == 1 and buffer.stats("other").refused == 1
    buffer.evict_all("test over")
    await asyncio.gather(first, second, return_exceptions=True)


async def test_window_expiry_by_sweep():
    buffer, clock, metrics = make(window=10.0)
    old = await hold(buffer)
    clock.advance(4.0)
    young = await hold(buffer)
    clock.advance(5.99)
    assert buffer.sweep() == 0
    await settle()
    assert not old.done()
    clock.advance(0.01)  # old has been held exactly the window
    assert buffer.sweep() == 1
    await settle()
    with pytest.raises(PrimarySwitching, match=r"longer than 10 s; retry") as expired:
        old.result()
    assert expired.value.retry_after == 1.0
    assert not young.done()
    stats = buffer.stats("s")
    assert (stats.expired, stats.held, stats.state) == (1, 1, BUFFERING)
    assert_balanced(stats)
    assert sample(metrics, "gateway_buffer_released_total", scope="s", reason="expired") == 1
    assert sample(metrics, "gateway_buffer_wait_seconds_count") == 1
    assert sample(metrics, "gateway_buffer_wait_seconds_sum") == pytest.approx(10.0)
    clock.advance(4.0)
    assert buffer.sweep() == 1
    await settle()
    with pytest.raises(PrimarySwitching):
        young.result()
    assert buffer.depth() == 0


async def test_expiry_while_draining_ends_the_drain():
    buffer, clock, _ = make(window=10.0, drain_concurrency=1)
    first, second = await hold(buffer), await hold(buffer)
    buffer.switch_ended("s")
    await settle()
    slot = first.result()
    clock.advance(10.0)
    assert buffer.sweep() == 1  # the one still queued; the released one is not held any more
    await settle()
    assert isinstance(second.exception(), PrimarySwitching)
    assert buffer.state("s") is DRAINING
    slot.release()
    assert buffer.state("s") is IDLE
    stats = buffer.stats("s")
    assert (stats.drained, stats.expired) == (1, 1)
    assert_balanced(stats)


async def test_cancelled_waiter_frees_its_bytes_and_counts_evicted():
    buffer, _, metrics = make(max_bytes=100)
    first = await hold(buffer, nbytes=60)
    with pytest.raises(PrimarySwitching):
        buffer.hold("s", 60).send(None)
    first.cancel()
    await settle()
    assert first.cancelled()
    stats = buffer.stats("s")
    assert (stats.held, stats.held_bytes, stats.evicted) == (0, 0, 1)
    assert_balanced(stats)
    assert buffer.held_bytes() == 0
    assert sample(metrics, "gateway_buffer_released_total", scope="s", reason="evicted") == 1
    second = await hold(buffer, nbytes=60)
    assert not second.done()
    buffer.switch_ended("s")
    await settle()
    second.result().release()
    assert buffer.state("s") is IDLE


async def test_waiter_cancelled_after_its_release_gives_the_slot_back():
    buffer, _, _ = make(drain_concurrency=1)
    first, second = await hold(buffer), await hold(buffer)
    buffer.switch_ended("s")
    first.cancel()  # the slot is already on its way to first, which will never use it
    await settle()
    assert first.cancelled()
    assert second.done()
    second.result().release()
    stats = buffer.stats("s")
    assert stats.state is IDLE and stats.outstanding == 0
    assert_balanced(stats)


async def test_waiter_cancelled_before_its_turn_counts_evicted_not_drained():
    buffer, _, _ = make(drain_concurrency=2)
    first, second = await hold(buffer), await hold(buffer)
    second.cancel()  # cancelled, but its except clause has not run yet
    buffer.switch_ended("s")
    await settle()
    assert second.cancelled()
    first.result().release()
    stats = buffer.stats("s")
    assert (stats.state, stats.drained, stats.evicted, stats.outstanding) == (IDLE, 1, 1, 0)
    assert_balanced(stats)


async def test_evict_all_answers_draining_and_close_refuses_later_writes():
    buffer, _, metrics = make()
    tasks = [await hold(buffer, "a"), await hold(buffer, "b"), await hold(buffer, "b")]
    assert buffer.close() == 3
    await settle()
    for task in tasks:
        error = task.exception()
        assert isinstance(error, Draining) and error.status == 503 and error.code == "draining"
        assert error.retry_after == 1.0
    assert buffer.depth() == 0 and buffer.held_bytes() == 0
    assert buffer.stats("b").evicted == 2
    assert_balanced(buffer.stats("a"))
    assert_balanced(buffer.stats("b"))
    assert sample(metrics, "gateway_buffer_released_total", scope="b", reason="evicted") == 2
    assert sample(metrics, "gateway_buffer_entries", scope="b") == 0
    with pytest.raises(Draining):
        buffer.hold("a", 1).send(None)
    assert buffer.stats("a").refused == 1


async def test_metrics_follow_the_buffer():
    buffer, clock, metrics = make(drain_concurrency=1)
    tasks = [await hold(buffer, "s") for _ in range(3)]
    assert sample(metrics, "gateway_buffer_entries", scope="s") == 3
    clock.advance(2.0)
    buffer.switch_ended("s")
    await settle()
    assert sample(metrics, "gateway_buffer_entries", scope="s") == 2
    assert sample(metrics, "gateway_buffer_released_total", scope="s", reason="drained") == 1
    assert sample(metrics, "gateway_buffer_wait_seconds_count") == 1
    assert sample(metrics, "gateway_buffer_wait_seconds_sum") == pytest.approx(2.0)
    tasks[0].result().release()
    await settle()
    tasks[1].result().release()
    await settle()
    tasks[2].result().release()
    assert sample(metrics, "gateway_buffer_entries", scope="s") == 0
    assert sample(metrics, "gateway_buffer_released_total", scope="s", reason="drained") == 3
    assert sample(metrics, "gateway_buffer_wait_seconds_count") == 3
    # Every hold of 2 s lands in the 2.5 s bucket and not in the 1 s one.
    assert sample(metrics, "gateway_buffer_wait_seconds_bucket", le="1.0") == 0
    assert sample(metrics, "gateway_buffer_wait_seconds_bucket", le="2.5") == 3


@pytest.mark.parametrize("seed", range(8))
async def test_invariant_holds_after_every_step_of_a_random_run(seed: int):
    rng = random.Random(seed)
    concurrency = rng.randint(1, 3)
    buffer, clock, metrics = make(window=5.0, max_entries=12, max_bytes=600, drain_concurrency=concurrency)
    scopes = ("a", "b", "c")
    waiting: list[asyncio.Task[Slot]] = []
    slots: list[Slot] = []

    def check() -> None:
        total_held = total_bytes = 0
        for scope in scopes:
            stats = buffer.stats(scope)
            assert_balanced(stats)
            assert stats.outstanding <= concurrency
            if stats.state is IDLE:
                assert stats.held == 0 and stats.outstanding == 0
            assert sample(metrics, "gateway_buffer_entries", scope=scope) == stats.held
            total_held += stats.held
            total_bytes += stats.held_bytes
        assert buffer.depth() == total_held <= 12
        assert buffer.held_bytes() == total_bytes <= 600

    async def step() -> None:
        op = rng.choice(("hold", "hold", "hold", "cancel", "sweep", "start", "end", "end", "release", "release"))
        scope = rng.choice(scopes)
        if op == "hold":
            nbytes = rng.randint(0, 120)
            if buffer.depth() + 1 > 12 or buffer.held_bytes() + nbytes > 600:
                with pytest.raises(PrimarySwitching):
                    buffer.hold(scope, nbytes).send(None)
            else:
                waiting.append(asyncio.create_task(buffer.hold(scope, nbytes)))
        elif op == "cancel" and waiting:
            rng.choice(waiting).cancel()
        elif op == "sweep":
            clock.advance(rng.uniform(0.0, 3.0))
            buffer.sweep()
        elif op == "start":
            buffer.switch_started(scope)
        elif op == "end":
            buffer.switch_ended(scope)
        elif op == "release" and slots:
            slots.pop(rng.randrange(len(slots))).release()
        await settle()
        for task in [t for t in waiting if t.done()]:
            waiting.remove(task)
            if not task.cancelled() and task.exception() is None:
                slots.append(task.result())

    for _ in range(300):
        await step()
        check()

    # Wind down: every switch ends, every write finishes, and every scope is IDLE again.
    for scope in scopes:
        buffer.switch_ended(scope)
    for _ in range(1000):
        if not (waiting or slots):
            break
        await settle()
        for task in [t for t in waiting if t.done()]:
            waiting.remove(task)
            if not task.cancelled() and task.exception() is None:
                slots.append(task.result())
        if slots:
            slots.pop(0).release()
        check()
    assert not waiting and not slots, "the drain stalled"
    for scope in scopes:
        stats = buffer.stats(scope)
        assert stats.state is IDLE and stats.held == 0
        assert_balanced(stats)
        released = sum(
            sample(metrics, "gateway_buffer_released_total", scope=scope, reason=reason)
            for reason in ("drained", "expired", "evicted")
        )
        assert released == stats.buffered
    assert sample(metrics, "gateway_buffer_wait_seconds_count") == sum(
        buffer.stats(scope).buffered for scope in scopes
    )


async def test_the_sweeper_expires_a_held_write_when_its_window_ends(monkeypatch: pytest.MonkeyPatch):
    buffer, clock, _ = make(window=1.02)  # not a multiple of the 0.05 s resolution
    task = await hold(buffer)
    held_at = clock.now
    delays: list[float] = []

    async def sleep(delay: float) -> None:  # the time the sweeper asks for passes at once
        delays.append(delay)
        if buffer.stats("s").expired:
            raise asyncio.CancelledError  # stop the sweeper one wake-up after the expiry
        clock.advance(delay)

    monkeypatch.setattr("gateway.switch.write_buffer.asyncio.sleep", sleep)
    with pytest.raises(asyncio.CancelledError):
        await buffer.run()
    monkeypatch.undo()
    await settle()
    assert isinstance(task.exception(), PrimarySwitching)
    # Expired by the sweep that ended its window, not a sweep period later, and not before.
    assert clock.now - held_at == pytest.approx(1.02) and sum(delays[:-1]) == pytest.approx(1.02)
    assert max(delays) == pytest.approx(0.05)  # woken at least every resolution
    assert delays[-1] == pytest.approx(0.05)  # nothing held: back to the resolution


async def test_a_held_write_costs_under_640_bytes_beside_its_record():
    """The docstring's memory bound: max_bytes + max_entries x 640 B, measured with tracemalloc."""
    import gc
    import tracemalloc

    count = 5000
    buffer, _, _ = make(max_entries=count, max_bytes=count)
    buffer.switch_started("s")
    gc.collect()
    tracemalloc.start()
    try:
        before = tracemalloc.take_snapshot()
        # Each hold suspended at its wait, without a task around it (the caller's task is the caller's).
        waiting = [buffer.hold("s", 1) for _ in range(count)]
        for coroutine in waiting:
            coroutine.send(None)
        after = tracemalloc.take_snapshot()
    finally:
        tracemalloc.stop()
    grown = sum(stat.size_diff for stat in after.compare_to(before, "filename"))
    assert buffer.stats("s").held == count
    assert 100 < grown / count < 640, f"{grown / count:.0f} B per held write"
    for coroutine in waiting:
        coroutine.close()
    buffer.close()


async def test_evictions_reach_every_scope_holding_writes_and_carry_the_buffers_retry_after():
    clock = FakeClock(1000.0)
    buffer = WriteBuffer(BufferConfig(), clock, retry_after=2.5)
    buffer.switch_started("idle")  # a scope with nothing held comes first
    held = [await hold(buffer, "b"), await hold(buffer, "c")]
    assert buffer.evict_all("the rule was deleted") == 2
    await settle()
    messages = [str(task.exception()) for task in held]
    assert messages == [
        "write held for the switch of scope 'b' was evicted: the rule was deleted",
        "write held for the switch of scope 'c' was evicted: the rule was deleted",
    ]
    assert [task.exception().retry_after for task in held] == [2.5, 2.5]
    task = await hold(buffer, "b")
    buffer.close()
    await settle()
    assert str(task.exception()).endswith("was evicted: the gateway is shutting down")


async def test_the_next_expiry_is_the_oldest_held_writes_window_end():
    buffer, clock, _ = make(window=4.0)
    assert buffer.next_expiry() is None
    await hold(buffer, "a")
    clock.advance(1.0)
    await hold(buffer, "b")
    assert buffer.next_expiry() == 1004.0
    buffer.evict_all("test over")
    await settle()


async def test_a_sweep_expires_every_scopes_overdue_writes_with_the_buffers_retry_after():
    clock = FakeClock(1000.0)
    buffer = WriteBuffer(BufferConfig(window=5.0), clock, retry_after=2.5)
    assert buffer.sweep() == 0  # nothing held
    buffer.switch_started("quiet")  # a switching scope holding nothing comes first
    overdue = [await hold(buffer, "s"), await hold(buffer, "s"), await hold(buffer, "t")]
    clock.advance(5.0)
    assert buffer.sweep() == 3
    await settle()
    assert [task.exception().retry_after for task in overdue] == [2.5, 2.5, 2.5]
    assert buffer.stats("s").expired == 2 and buffer.stats("t").expired == 1


async def test_refusals_at_once_carry_the_buffers_retry_after_and_are_all_counted():
    clock = FakeClock(1000.0)
    buffer = WriteBuffer(BufferConfig(max_entries=1), clock, retry_after=2.5)
    buffer.switch_started("s")
    held = await hold(buffer, "s", 0)  # a write of no bytes is held like any other
    for _ in range(2):
        with pytest.raises(PrimarySwitching) as full:
            buffer.hold("s", 1).send(None)
        assert full.value.retry_after == 2.5
    assert buffer.stats("s").refused == 2
    with pytest.raises(ValueError, match="^nbytes must be >= 0, not -1$"):
        buffer.hold("s", -1).send(None)
    buffer.close()
    with pytest.raises(Draining) as closed:
        buffer.hold("s", 1).send(None)
    assert (str(closed.value), closed.value.retry_after) == ("the gateway is shutting down", 2.5)
    await settle()
    assert isinstance(held.exception(), Draining)


async def test_a_held_write_whose_caller_gave_up_counts_as_evicted():
    buffer, _, metrics = make()
    buffer.switch_started("s")
    task = await hold(buffer, "s")
    task.cancel()
    await settle()
    stats = buffer.stats("s")
    assert (stats.held, stats.evicted) == (0, 1) and sample(metrics, "gateway_buffer_released_total", scope="s", reason="evicted") == 1
    assert_balanced(stats)
