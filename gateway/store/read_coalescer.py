"""Coalescing of concurrent single-key reads into BatchGetItem (DESIGN.md §8).

Reads of one (table, consistency) queue up; the queue is flushed on the next
turn of the event loop, so a read waits at most one loop iteration when the
gateway is idle (one GetItem, no added delay). Reads that arrive while a call
is in flight wait for it and go out together as one BatchGetItem of up to
100 keys: the busier the gateway, the larger the batches, and the per-item
cost of the client and of DynamoDB falls as load rises (DESIGN.md §11).

Lanes: up to ``max_in_flight`` calls per queue may be outstanding, but a new
lane opens only once every open one has been waiting ``lane_after`` seconds.
Against a fast upstream (DynamoDB Local, ~1 ms) one lane carries everything
in large batches, which is what keeps the gateway's CPU per read low; against
a slow one (a throttled table, a cross-AZ hiccup) more lanes open, so no read
waits more than about ``lane_after`` behind a slow call for its turn.

Invariants:
- Every waiter gets exactly one outcome: the item, ``None`` (DynamoDB said it
  does not exist), or the exception of the call that carried its key. A key
  DynamoDB left unprocessed is retried by the store, never answered ``None``.
- Identical keys waiting at once share one slot in the batch, each waiter
  with its own future, so a caller that gives up (deadline) cancels only itself.
- ``in_flight[q] <= max_in_flight`` for every queue, and ``len(started[q]) ==
  in_flight[q]``; every fetch task and lane timer is owned and cancelled by ``close()``.
- A batch runs under the latest deadline of the reads it carries (none if one of
  them has none), never under whichever read happened to schedule it: DynamoDB
  retries stop at that deadline (gateway/deadlines.py), and a caller with a short
  ``X-Request-Timeout`` must not cut the time of the others in its batch. Each
  read still answers by its own deadline: its request's task is cancelled then.
"""

from __future__ import annotations

import asyncio
import contextvars
from typing import Any

from gateway import deadlines
from gateway.clock import Clock, SystemClock
from gateway.errors import StoreUnavailable
from gateway.store.base import BATCH_GET_LIMIT, Item, Store

_QueueKey = tuple[str, str, bool]  # (table, key attribute, consistent)


class ReadCoalescer:
    __slots__ = ("_store", "_max_in_flight", "_lane_after", "_clock", "_queues", "_in_flight", "_started",
                 "_timers", "_scheduled", "_tasks", "_closed", "_loop", "_latest")

    def __init__(
        self, store: Store, *, max_in_flight: int = 4, lane_after: float = 0.002, clock: Clock | None = None
    ) -> None:
        assert max_in_flight >= 1 and lane_after >= 0
        self._store = store
        self._max_in_flight = max_in_flight
        self._lane_after = lane_after
        self._clock = clock or SystemClock()
        # All fields below are touched only from the event loop thread, never across an await.
        self._queues: dict[_QueueKey, dict[str, list[asyncio.Future[Item | None]]]] = {}
        self._in_flight: dict[_QueueKey, int] = {}
        #: Start times (clock.monotonic) of the calls in flight per queue.
        self._started: dict[_QueueKey, list[float]] = {}
        #: A pending wake-up per queue, set when a lane may open later.
        self._timers: dict[_QueueKey, asyncio.TimerHandle] = {}
        self._scheduled: set[_QueueKey] = set()
        #: Per queue, the latest deadline among the reads queued since it was last emptied (None: no deadline).
        self._latest: dict[_QueueKey, deadlines.Deadline | None] = {}
        #: Fetch tasks in flight and the waiters each carries.
        self._tasks: dict[asyncio.Task[None], dict[str, list[asyncio.Future[Item | None]]]] = {}
        self._closed = False
        # Bound on first use; cached because asyncio.get_running_loop() makes a getpid() system call.
        self._loop: asyncio.AbstractEventLoop | None = None

    async def get(self, table: str, key_attribute: str, key: str, consistent: bool) -> Item | None:
        if self._closed:
            raise _shutting_down()
        qkey = (table, key_attribute, consistent)
        queue = self._queues.get(qkey)
        if queue is None:
            queue = self._queues[qkey] = {}
            self._in_flight[qkey] = 0
            self._started[qkey] = []
        loop = self._loop
        if loop is None:
            loop = self._loop = asyncio.get_running_loop()
        future: asyncio.Future[Item | None] = loop.create_future()
        mine = deadlines.current.get()
        if not queue:
            self._latest[qkey] = mine
        else:
            latest = self._latest[qkey]
            if latest is not None and (mine is None or mine.at > latest.at):
                self._latest[qkey] = mine
        waiters = queue.get(key)
        if waiters is None:
            queue[key] = [future]
        else:
            waiters.append(future)
        if qkey not in self._scheduled:
            self._scheduled.add(qkey)
            loop.call_soon(self._flush, qkey)
        return await future

    def _flush(self, qkey: _QueueKey) -> None:
        self._scheduled.discard(qkey)
        if self._closed:
            return  # a flush scheduled before close() ran after it: close() fails what is queued, sends nothing
        queue = self._queues[qkey]
        started = self._started[qkey]
        while queue and self._in_flight[qkey] < self._max_in_flight:
            if started:
                now = self._clock.monotonic()
                wait = started[-1] + self._lane_after - now
                if wait > 0:
                    # Every lane is young: the next batch rides the first to come back,
                    # unless they are all still out after lane_after.
                    if qkey not in self._timers:
                        assert self._loop is not None
                        self._timers[qkey] = self._loop.call_later(wait, self._on_timer, qkey)
                    break
            if len(queue) <= BATCH_GET_LIMIT:
                batch, self._queues[qkey] = queue, {}
                queue = self._queues[qkey]
            else:
                keys = list(queue)[:BATCH_GET_LIMIT]
                batch = {k: queue.pop(k) for k in keys}
            self._in_flight[qkey] += 1
            started.append(self._clock.monotonic())
            assert self._loop is not None
            context = contextvars.copy_context()
            context.run(deadlines.current.set, self._latest[qkey])
            task = self._loop.create_task(self._fetch(qkey, batch, started[-1]), context=context)
            self._tasks[task] = batch
            task.add_done_callback(self._tasks.pop)
        assert self._in_flight[qkey] <= self._max_in_flight and len(started) == self._in_flight[qkey]

    def _on_timer(self, qkey: _QueueKey) -> None:
        del self._timers[qkey]
        if self._queues[qkey] and qkey not in self._scheduled:
            self._flush(qkey)

    async def _fetch(
        self, qkey: _QueueKey, batch: dict[str, list[asyncio.Future[Item | None]]], began: float
    ) -> None:
        table, key_attribute, consistent = qkey
        try:
            if len(batch) == 1:
                (key,) = batch
                items: list[Item | None] = [
                    await self._store.get_item(table, {key_attribute: {"S": key}}, consistent=consistent)
                ]
            else:
                items = await self._store.batch_get_item(
                    table, [{key_attribute: {"S": k}} for k in batch], consistent=consistent
                )
        except asyncio.CancelledError:
            _fail(batch, _shutting_down())
            raise
        except BaseException as exc:  # noqa: BLE001 - every waiter must learn the outcome
            _fail(batch, exc)
        else:
            for waiters, item in zip(batch.values(), items):
                for future in waiters:
                    if not future.done():
                        future.set_result(item)
        finally:
            self._in_flight[qkey] -= 1
            self._started[qkey].remove(began)
            if self._queues[qkey] and qkey not in self._scheduled:
                self._flush(qkey)

    async def close(self) -> None:
        self._closed = True
        for timer in self._timers.values():
            timer.cancel()
        self._timers.clear()
        batches = list(self._tasks.items())
        for task, _ in batches:
            task.cancel()
        await asyncio.gather(*(task for task, _ in batches), return_exceptions=True)
        # A task cancelled before its first step never ran its body: fail its waiters here,
        # and those still queued.
        for _, batch in batches:
            _fail(batch, _shutting_down())
        for queue in self._queues.values():
            _fail(queue, _shutting_down())
            queue.clear()


def _shutting_down() -> StoreUnavailable:
    return StoreUnavailable("The gateway is shutting down; retry on another instance.")


def _fail(batch: dict[str, list[asyncio.Future[Any]]], exc: BaseException) -> None:
    for waiters in batch.values():
        for future in waiters:
            if not future.done():
                future.set_exception(exc)
