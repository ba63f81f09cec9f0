"""Request deadlines and the sweeper that enforces them (gateway/deadlines.py)."""

import asyncio

from gateway import deadlines as request_deadlines
from gateway.deadlines import EXPIRED, RELEASED, Deadlines
from tests.fakes import FakeClock


async def test_only_late_tasks_are_cancelled_and_told_apart():
    clock = FakeClock(100.0)
    deadlines = Deadlines(clock)
    slow = asyncio.create_task(asyncio.sleep(3600))
    quick = asyncio.create_task(asyncio.sleep(3600))
    slow_deadline = deadlines.track(slow, 1.0)
    quick_deadline = deadlines.track(quick, 5.0)
    assert deadlines.in_flight == 2
    clock.now += 0.99
    deadlines.sweep()
    await asyncio.sleep(0)
    assert not slow.cancelled()
    clock.now += 0.01
    deadlines.sweep()
    await asyncio.sleep(0)
    assert slow.cancelled() and not quick.done()
    assert deadlines.untrack(slow_deadline) == EXPIRED
    assert deadlines.untrack(quick_deadline) is None
    assert deadlines.in_flight == 0
    # Untracked tasks are never cancelled, however late.
    clock.now += 100
    deadlines.sweep()
    await asyncio.sleep(0)
    assert not quick.done()
    quick.cancel()


async def test_untrack_is_idempotent():
    deadlines = Deadlines(FakeClock(100.0))
    task = asyncio.create_task(asyncio.sleep(0))
    deadline = deadlines.track(task, 1.0)
    assert deadlines.untrack(deadline) is None
    assert deadlines.untrack(deadline) is None
    await task


async def test_release_all_cancels_every_tracked_request_as_released():
    deadlines = Deadlines(FakeClock(100.0))
    tasks = [asyncio.create_task(asyncio.sleep(3600)) for _ in range(3)]
    tracked = [deadlines.track(t, 10.0) for t in tasks]
    deadlines.untrack(tracked[2])
    assert deadlines.release_all() == 2
    await asyncio.sleep(0)
    assert [t.cancelled() for t in tasks] == [True, True, False]
    assert [deadlines.untrack(d) for d in tracked] == [RELEASED, RELEASED, None]
    tasks[2].cancel()


async def test_the_current_deadline_tells_the_time_left_inside_the_request_only():
    clock = FakeClock(100.0)
    deadlines = Deadlines(clock)
    seen = []

    async def request():
        request_deadlines.current.set(deadlines.track(asyncio.current_task(), 2.0))
        clock.advance(0.5)
        seen.append(request_deadlines.remaining())

    await asyncio.create_task(request())
    assert seen == [1.5]
    assert request_deadlines.remaining() is None  # set in the request's task, not here
