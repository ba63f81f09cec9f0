"""Owned background tasks (gateway/background.py)."""

import asyncio
import logging

from gateway.background import background


async def test_the_task_runs_inside_and_is_stopped_on_exit():
    ticks = 0

    async def tick():
        nonlocal ticks
        while True:
            ticks += 1
            await asyncio.sleep(0)

    async with background(tick(), "ticker") as task:
        for _ in range(5):
            await asyncio.sleep(0)
        assert not task.done() and ticks > 0
    assert task.cancelled()


async def test_a_task_that_dies_is_logged(caplog):
    async def die():
        raise RuntimeError("probe broke")

    with caplog.at_level(logging.ERROR, logger="gateway.background"):
        async with background(die(), "prober") as task:
            await asyncio.sleep(0)
            await asyncio.sleep(0)
            assert task.done()
    assert "prober" in caplog.text and "probe broke" in caplog.text
