"""Coalescing of concurrent single-key reads into BatchGetItem (DESIGN.md §8).

Reads of one (table, consistency) queue up; the queue is flushed on the next
turn of the event loop, so a read waits at most one loop iteration when the
gateway is idle (one GetItem, no added delay). At most ``max_in_flight``
DynamoDB calls per queue are outstanding; reads that arrive while all of them
are busy wait for the next free slot and go out together as one BatchGetItem
of up to 100 keys. The busier the gateway, the larger the batches: the
per-item cost of the client and of DynamoDB falls as load rises (~90 µs to
~5 µs client CPU per item measured, DESIGN.md §11).

Invariants:
- Every waiter gets exactly one outcome: the item, ``None`` (DynamoDB said it
  does not exist), or the exception of the call that carried its key. A key
  DynamoDB left unprocessed is retried by the store, never answered ``None``.
- Identical keys waiting at once share one slot in the batch, each waiter
  with its own future, so a caller that gives up (deadline) cancels only itself.
- ``in_flight[q] <= max_in_flight`` for every queue; every fetch task is owned
  and cancelled by ``close()``.
"""

from __future__ import annotations

import asyncio
from typing import Any

from gateway.errors import StoreUnavailable
from gateway.store import BATCH_GET_LIMIT, Item, Store

_QueueKey = tuple[str, str, bool]  # (table, key attribute, consistent)


class ReadCoalescer:
    __slots__ = ("_store", "_max_in_flight", "_queues", "_in_flight", "_scheduled", "_tasks", "_closed", "_loop")

    def __init__(self, store: Store, *, max_in_flight: int = 4) -> None:
        assert max_in_flight >= 1
        self._store = store
        self._max_in_flight = max_in_flight
        # All fields below are touched only from the event loop thread, never across an await.
        self._queues: dict[_QueueKey, dict[str, list[asyncio.Future[Item | None]]]] = {}
        self._in_flight: dict[_QueueKey, int] = {}
        self._scheduled: set[_QueueKey] = set()
        self._tasks: set[asyncio.Task[None]] = set()
        self._closed = False
        # Bound on first use; cached because asyncio.get_running_loop() makes a getpid() system call.
        self._loop: asyncio.AbstractEventLoop | None = None

    async def get(self, table: str, key_attribute: str, key: str, consistent: bool) -> Item | None:
        if self._closed:
            raise StoreUnavailable("The gateway is shutting down; retry on another instance.")
        qkey = (table, key_attribute, consistent)
        queue = self._queues.get(qkey)
        if queue is None:
            queue = self._queues[qkey] = {}
            self._in_flight[qkey] = 0
        loop = self._loop
        if loop is None:
            loop = self._loop = asyncio.get_running_loop()
        future: asyncio.Future[Item | None] = loop.create_future()
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
        queue = self._queues[qkey]
        while queue and self._in_flight[qkey] < self._max_in_flight:
            if len(queue) <= BATCH_GET_LIMIT:
                batch, self._queues[qkey] = queue, {}
                queue = self._queues[qkey]
            else:
                keys = list(queue)[:BATCH_GET_LIMIT]
                batch = {k: queue.pop(k) for k in keys}
            self._in_flight[qkey] += 1
            assert self._loop is not None
            task = self._loop.create_task(self._fetch(qkey, batch))
            self._tasks.add(task)
            task.add_done_callback(self._tasks.discard)
        assert self._in_flight[qkey] <= self._max_in_flight

    async def _fetch(self, qkey: _QueueKey, batch: dict[str, list[asyncio.Future[Item | None]]]) -> None:
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
            _fail(batch, StoreUnavailable("The gateway is shutting down; retry on another instance."))
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
            if self._queues[qkey] and qkey not in self._scheduled:
                self._flush(qkey)

    async def close(self) -> None:
        self._closed = True
        tasks = list(self._tasks)
        for task in tasks:
            task.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)


def _fail(batch: dict[str, list[asyncio.Future[Any]]], exc: BaseException) -> None:
    for waiters in batch.values():
        for future in waiters:
            if not future.done():
                future.set_exception(exc)
