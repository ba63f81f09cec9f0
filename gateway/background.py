"""Owned background tasks: started inside an ``async with``, cancelled and awaited when it exits.

Nothing in the gateway is fire-and-forget: every long-lived task is entered
into the worker's exit stack through ``background()``, so shutdown stops it,
and an exception that ends it early is logged rather than lost.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import AsyncIterator, Coroutine
from typing import Any

log = logging.getLogger(__name__)


@contextlib.asynccontextmanager
async def background(coro: Coroutine[Any, Any, None], name: str) -> AsyncIterator[asyncio.Task[None]]:
    task = asyncio.get_running_loop().create_task(coro, name=name)

    def report(done: asyncio.Task[None]) -> None:
        if not done.cancelled() and done.exception() is not None:
            log.error("background task %s stopped: %r", name, done.exception(), exc_info=done.exception())

    task.add_done_callback(report)
    try:
        yield task
    finally:
        task.cancel()
        # Its outcome was reported by the callback; stopping must not raise it again.
        await asyncio.gather(task, return_exceptions=True)
