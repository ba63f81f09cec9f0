import asyncio

from gateway.deadlines import Deadlines
from tests.fakes import FakeClock


async def test_only_late_tasks_are_cancelled_and_told_apart():
    clock = FakeClock(100.0)
    deadlines = Deadlines(clock)
    slow = asyncio.create_task(asyncio.sleep(3600))
    quick = asyncio.create_task(asyncio.sleep(3600))
    slow_token = deadlines.track(slow, 1.0)
    quick_token = deadlines.track(quick, 5.0)
    clock.now += 0.99
    deadlines.sweep()
    await asyncio.sleep(0)
    assert not slow.cancelled()
    clock.now += 0.01
    deadlines.sweep()
    await asyncio.sleep(0)
    assert slow.cancelled() and not quick.done()
    assert deadlines.untrack(slow_token) is True
    assert deadlines.untrack(quick_token) is False
    # Untracked tasks are never cancelled, however late.
    clock.now += 100
    deadlines.sweep()
    await asyncio.sleep(0)
    assert not quick.done()
    quick.cancel()


async def test_untrack_is_idempotent():
    deadlines = Deadlines(FakeClock(100.0))
    task = asyncio.create_task(asyncio.sleep(0))
    token = deadlines.track(task, 1.0)
    assert deadlines.untrack(token) is False
    assert deadlines.untrack(token) is False
    await task
