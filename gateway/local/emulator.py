"""The global-table emulator: replicates between local DynamoDB instances the way global tables do.

DynamoDB Local has no global tables. Each region of the local cluster is one
DynamoDB Local holding the same table names; for every (region, table) the
emulator reads the table's stream (NEW_AND_OLD_IMAGES) and applies each change
to every other region. It keeps the promises of DESIGN.md §9:

- **Asynchronous, per-item ordered.** One reader per (region, table) turns stream
  records into changes and appends them, in stream order, to one backlog per
  (source, target). An applier per (source, target) drains it; changes to the
  same item are applied one after another in backlog order, changes to different
  items may run concurrently (or deliberately shuffled with ``set_reorder``).
- **Last writer wins on (``_ts``, ``_region``)**, evaluated by DynamoDB: a
  replicated put carries ``ConditionExpression`` "the stored item has no ``_ts``,
  or an older (``_ts``, ``_region``)"; string order of ``_region`` breaks ties.
  Never read-then-write.
- **At-least-once, idempotent.** The reader advances its sequence number only
  after the change is in every target's backlog; re-reading a change (after an
  error, an expired iterator) re-applies it, and the condition makes the second
  apply a no-op (DynamoDB Local writes no stream record for a refused write).
- **No echo loops.** A put arriving in region B by replication keeps the
  ``_region`` of the region that accepted it, so a record in B's stream whose new
  image has ``_region`` != B was written by replication and is not replicated
  again. Gateways always stamp their own region, and the emulator's puts always
  move the version strictly forward, which is what makes the rule sound.
- **Writes that bypassed the gateway** (no ``_ts``, or a write that changed an
  item but kept its old (``_ts``, ``_region``), e.g. an ``UpdateItem`` from the
  console) are *stamped in their own region*: the emulator sets ``_ts`` (its
  clock in µs, above the old ``_ts``) and ``_region`` on the source item with a
  conditional ``UpdateItem`` ("still unstamped" / "still that old version"). The
  stamp is itself a write in that region whose record then replicates like a
  gateway write. The version thus lives in the item, so every region compares the
  same numbers and converges. Stamping only the target copies could not: the
  source's unstamped copy would have no version to compare a concurrent write
  with. An unstamped item is older than any stamped one, so an unstamped write
  overwritten by a replicated one before its stamp landed loses, in every region. (Stream records cannot
  order them instead: DynamoDB Local's ``ApproximateCreationDateTime`` is
  truncated to the minute.) Consequence: such items gain ``_ts``/``_region``.
  Items that carry another region's ``_region`` but were written by a tool
  (e.g. a copy from another region) are taken for replicated copies.
- **Images DynamoDB Local's stream gets wrong.** It renders an empty map as
  ``{}`` (no type), which no DynamoDB accepts back; such a change is applied
  from the item read (consistently) from its source region, if that item is
  still at the change's version (else a later record carries what it became).
- **Deletes without tombstones.** A REMOVE record carries the deleted item's
  version; the target deletes its copy only if that copy is not newer. A put
  newer than the deleted item therefore survives in every region (including,
  once it arrives, the deleting one): the put wins. A racing put that is *older*
  than the deleted item (clock skew) may be resurrected in the regions it reaches
  after the delete: with no tombstone there is nothing to refuse it. Replicated
  deletes produce REMOVE records in the targets, which are replicated again;
  they delete only copies no newer than the original delete did, and stop as
  soon as the item is gone (deleting nothing writes no record).
- **Positions.** Each (region, table) reader keeps, per shard, the sequence
  number of the last record it handed to the backlogs and its shard iterator.
  A record goes into every target's backlog before the position moves past it,
  so the backlog of a (source, target) pair *is* that pair's position: a failed
  GetRecords, an expired iterator (re-read ``AFTER_SEQUENCE_NUMBER``), or an
  unreachable target loses nothing.
- **A durable backlog while a region is down** — durable for the life of this
  process: backlogs are in memory. A target that does not answer keeps its
  changes, in order, retried with backoff; other targets are not held up. A
  source that does not answer is read again when it answers; its stream
  position is kept, and when DynamoDB Local came back as a new process (its
  in-memory stream is gone, the stream ARN changed) the emulator re-discovers
  the stream and reads it from the start. Changes made while a region's own
  DynamoDB was down cannot exist: nothing could write to it. Writes the emulator
  had not yet read from a region's stream when its DynamoDB Local stopped are
  gone with that process's in-memory database (unlike AWS, where they persist).

The decisions (versions, echoes, conditions, per-item order) are pure
functions in gateway/local/replication.py.

Polling: a stream that returned records is read again at once; one that read
empty is polled after ``poll_interval``, doubling up to ``max_poll_interval``.
Each empty GetRecords costs DynamoDB Local CPU: at a flat 20 ms three idle
regions burned ~0.3 of this 2-core machine's cores, at 50 ms ~0.1. The price is
at most ``max_poll_interval`` of extra lag for the first write after a quiet spell.

Fault injection: ``set_lag``, ``pause``/``resume``, ``set_reorder`` per ordered
pair of regions. Stopping a region is the cluster's job (it stops the process).
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import random
from collections import deque
from collections.abc import Awaitable, Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any, Self

from gateway.clock import Clock, SystemClock
from gateway.errors import ConditionFailed, StoreError, StoreThrottled, StoreTimeout, StoreUnavailable, TableNotFound
from gateway.local.replication import (
    NAMES,
    Change,
    Kind,
    classify,
    delete_condition,
    interleave,
    lossy,
    put_condition,
    stamp_condition,
    version_of,
)
from gateway.local.streams import Streams, StreamsClient
from gateway.store.base import Item, Store
from gateway.store.credentials import CredentialSource
from gateway.store.lean import open_lean_store

__all__ = ["GlobalTableEmulator", "PairStats"]

log = logging.getLogger(__name__)

#: Errors after which the same change, sent again later, may succeed (region down, restarting, table not yet created).
RETRYABLE = (StoreUnavailable, StoreTimeout, StoreThrottled, TableNotFound)


def _report_crash(task: asyncio.Task[None]) -> None:
    if not task.cancelled() and task.exception() is not None:
        log.error("emulator task %s stopped: %r", task.get_name(), task.exception(), exc_info=task.exception())


# --- state ---


@dataclass(slots=True)
class PairStats:
    applied: int = 0
    stale: int = 0  # refused by the condition: the target had something at least as new
    failed: int = 0  # dropped after a non-retryable error (logged): the regions differ for that item
    superseded: int = 0  # an image DynamoDB Local's stream rendered lossily, whose item changed again since
    #: Seconds from the write's ``_ts`` to its apply in the target, for puts of stamped items.
    delays: deque[float] = field(default_factory=lambda: deque(maxlen=100_000))


@dataclass(frozen=True, slots=True)
class PairFaults:
    """The faults set on one (source, target): added lag (+ jitter), a pause, out-of-order delivery."""

    lag: float = 0.0
    jitter: float = 0.0
    paused: bool = False
    reorder: bool = False

    @property
    def any(self) -> bool:
        return bool(self.lag or self.jitter or self.paused or self.reorder)


@dataclass(slots=True)
class _Pair:
    """The backlog of one (source, target). Only its applier task pops from it; readers append.

    No lock: every field is touched only from the event loop, and never across an ``await``
    between reading and changing it.
    """

    source: str
    target: str
    backlog: deque[tuple[float, Change]] = field(default_factory=deque)  # (due, change), due non-decreasing
    in_flight: tuple[Change, ...] = ()  # the batch being applied
    lag: float = 0.0
    jitter: float = 0.0
    paused: bool = False
    reorder: bool = False
    wake: asyncio.Event = field(default_factory=asyncio.Event)
    last_error: StoreError | None = None  # why the last change was held, for the log
    stats: PairStats = field(default_factory=PairStats)


@dataclass(slots=True)
class _Shard:
    last_sequence: str | None = None  # of the last record handed to every backlog
    iterator: str | None = None
    done: bool = False  # closed and read to its end


@dataclass(slots=True)
class _Source:
    region: str
    table: str
    stream_arn: str | None = None
    shards: dict[str, _Shard] = field(default_factory=dict)
    parents: dict[str, str] = field(default_factory=dict)
    discovered_at: float = float("-inf")
    #: Monotonic start of the latest full pass over the shards that read nothing (for ``wait_idle``).
    idle_since: float = float("-inf")


class GlobalTableEmulator:
    """Replicates ``tables`` between ``regions`` (region -> DynamoDB endpoint URL). ``start()``, then ``stop()``."""

    def __init__(
        self,
        regions: Mapping[str, str],
        tables: Sequence[str],
        *,
        poll_interval: float = 0.02,
        max_poll_interval: float = 0.05,
        discover_interval: float = 2.0,
        apply_concurrency: int = 8,
        credentials: CredentialSource | None = None,
        open_store: Callable[[str, str], Awaitable[Store]] | None = None,
        open_streams: Callable[[str, str], Awaitable[Streams]] | None = None,
        clock: Clock | None = None,
        rng: random.Random | None = None,
        sleep: Callable[[float], Any] = asyncio.sleep,
    ) -> None:
        if len(regions) < 2:
            raise ValueError("the emulator needs at least two regions")
        self.regions = dict(regions)
        self.tables = list(tables)
        self._poll_interval = poll_interval
        self._max_poll_interval = max(poll_interval, max_poll_interval)
        self._discover_interval = discover_interval
        self._apply_concurrency = apply_concurrency
        self._credentials = credentials
        # Seams (region, endpoint) -> client: tests pass in-memory regions.
        self._open_store = open_store or self._open_lean_store
        self._open_streams = open_streams or self._open_streams_client
        self._clock = clock or SystemClock()
        self._rng = rng or random.Random()
        self._sleep = sleep
        self._stores: dict[str, Store] = {}
        self._streams: dict[str, Streams] = {}
        self._tasks: list[asyncio.Task[None]] = []
        # (source, source) is the stamping lane of a region: stamps are applied in their own region.
        self._pairs = {(s, t): _Pair(s, t) for s in self.regions for t in self.regions}
        self._sources = [_Source(region, table) for region in self.regions for table in self.tables]
        #: When the last change that writes a stream record of its own to replicate (a stamp, a delete) was applied.
        self._chained_at = float("-inf")

    # --- lifecycle ---

    async def start(self) -> None:
        if self._tasks:
            raise RuntimeError("the emulator is already started")
        try:
            for region, endpoint in self.regions.items():
                self._stores[region] = await self._open_store(region, endpoint)
                self._streams[region] = await self._open_streams(region, endpoint)
        except BaseException:
            await self.stop()
            raise
        loop = asyncio.get_running_loop()
        for source in self._sources:
            self._tasks.append(loop.create_task(self._read(source), name=f"emulator-read-{source.region}-{source.table}"))
        for pair in self._pairs.values():
            self._tasks.append(loop.create_task(self._apply(pair), name=f"emulator-apply-{pair.source}-{pair.target}"))
        for task in self._tasks:
            task.add_done_callback(_report_crash)

    async def _lean_credentials(self) -> CredentialSource:
        if self._credentials is None:
            self._credentials = await CredentialSource.from_provider_chain()
        return self._credentials

    async def _open_lean_store(self, region: str, endpoint: str) -> Store:
        # One attempt per call: the appliers retry, keeping the change at the head of its backlog.
        return await open_lean_store(
            region, endpoint, credentials=await self._lean_credentials(), max_attempts=1, attempt_timeout=2.0
        )

    async def _open_streams_client(self, region: str, endpoint: str) -> Streams:
        return StreamsClient(endpoint, region, await self._lean_credentials())

    async def stop(self) -> None:
        tasks, self._tasks = self._tasks, []
        for task in tasks:
            task.cancel()
        # A task that crashed was reported by ``_report_crash`` when it ended; stopping does not raise it again.
        await asyncio.gather(*tasks, return_exceptions=True)
        for client in [*self._stores.values(), *self._streams.values()]:
            await client.close()
        self._stores.clear()
        self._streams.clear()

    async def __aenter__(self) -> Self:
        await self.start()
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.stop()

    # --- fault controls ---

    def _pair(self, source: str, target: str) -> _Pair:
        if source == target or (source, target) not in self._pairs:
            raise ValueError(f"no replication from {source!r} to {target!r}; regions are {sorted(self.regions)}")
        return self._pairs[(source, target)]

    def set_lag(self, source: str, target: str, seconds: float, jitter: float = 0.0) -> None:
        """Hold each change from ``source`` at least ``seconds`` (+ up to ``jitter``) before applying it to ``target``."""
        if seconds < 0 or jitter < 0:
            raise ValueError("lag and jitter must not be negative")
        pair = self._pair(source, target)
        pair.lag, pair.jitter = seconds, jitter
        pair.wake.set()

    def pause(self, source: str, target: str) -> None:
        """Stop applying ``source``'s changes to ``target``; they keep accumulating in the backlog.

        Changes already in flight (at most one batch) still land."""
        self._pair(source, target).paused = True

    def resume(self, source: str, target: str) -> None:
        pair = self._pair(source, target)
        pair.paused = False
        pair.wake.set()

    def set_reorder(self, source: str, target: str, enabled: bool) -> None:
        """Apply changes to different items in a random order (one at a time); each item's changes stay in order.

        Only changes due together are shuffled, so it shows with a backlog (lag, a pause, a burst of writes)."""
        self._pair(source, target).reorder = enabled

    # --- observation ---

    def faults(self, source: str, target: str) -> PairFaults:
        """What is injected between ``source`` and ``target`` now (``local fault status``)."""
        pair = self._pair(source, target)
        return PairFaults(pair.lag, pair.jitter, pair.paused, pair.reorder)

    def backlog(self, source: str, target: str) -> int:
        """Changes from ``source`` not yet applied to ``target`` (queued or in flight)."""
        pair = self._pair(source, target)
        return len(pair.backlog) + len(pair.in_flight)

    def stats(self, source: str, target: str) -> PairStats:
        return self._pair(source, target).stats

    def _pending(self, seen_before: float) -> bool:
        """Whether a change read before ``seen_before`` is still queued or in flight for some target."""
        return any(
            any(change.seen < seen_before for change in pair.in_flight)
            or any(change.seen < seen_before for _, change in pair.backlog)
            for pair in self._pairs.values()
        )

    async def wait_idle(self, timeout: float) -> None:
        """Until every change made before the call is applied in every region it goes to; ``TimeoutError`` after
        ``timeout`` (a paused pair with changes waiting, a target that stays down).

        Not "until nothing happens": the cluster's gateways heartbeat into the replicated members table ten
        times a second, so the streams are never quiet for long, and waiting for a moment when all of them are
        was a lottery of 0.2 to 5 s on a quiet machine and of more than 30 s on a busy one. Instead: once every
        stream has been read empty by a pass that began after ``mark`` (so every record written before it was
        handed to its backlogs), wait until no change read before then is queued or in flight. A stamp or a
        delete writes a new record of its own when applied; if one was applied meanwhile, go round again from
        then, so that record is replicated too.
        """
        mark = self._clock.monotonic()
        async with asyncio.timeout(timeout):
            while True:
                while not all(s.idle_since > mark for s in self._sources):
                    await self._sleep(self._poll_interval)
                read = self._clock.monotonic()
                while self._pending(read):
                    await self._sleep(self._poll_interval)
                if self._chained_at <= mark:
                    return
                mark = self._chained_at

    # --- reading ---

    async def _read(self, source: _Source) -> None:
        failures = 0
        empty = 0  # passes in a row that read nothing
        while True:
            started = self._clock.monotonic()
            try:
                if source.stream_arn is None or started - source.discovered_at >= self._discover_interval:
                    await self._discover(source)
                got = await self._read_pass(source)
                failures = 0
            except RETRYABLE as exc:
                # The source region is down or restarting: keep the position, ask again later.
                failures += 1
                if failures == 1:
                    log.warning("emulator: cannot read %s/%s: %s", source.region, source.table, exc)
                await self._sleep(min(1.0, self._poll_interval * 2**min(failures, 6)))
                continue
            if got > 0:
                empty = 0
                continue
            if got == 0:
                source.idle_since = started
                empty += 1
            # An idle stream is polled less and less often, down to one GetRecords per shard every
            # ``max_poll_interval``: every empty GetRecords costs the region's JVM CPU that its writes need.
            await self._sleep(min(self._max_poll_interval, self._poll_interval * 2 ** min(max(empty - 1, 0), 6)))

    async def _discover(self, source: _Source) -> None:
        streams = self._streams[source.region]
        arn = await streams.latest_stream(source.table)
        source.discovered_at = self._clock.monotonic()
        if arn is None:
            raise TableNotFound(f"table {source.table!r} in {source.region} has no stream (yet)")
        if arn != source.stream_arn:
            if source.stream_arn is not None:
                # A new stream (DynamoDB Local restarted, or the table was recreated): read it from the start.
                log.warning("emulator: %s/%s has a new stream %s", source.region, source.table, arn)
            source.stream_arn, source.shards, source.parents = arn, {}, {}
        for shard in await streams.shards(arn):
            shard_id = shard["ShardId"]
            if shard_id not in source.shards:
                source.shards[shard_id] = _Shard()
                if shard.get("ParentShardId"):
                    source.parents[shard_id] = shard["ParentShardId"]

    async def _read_pass(self, source: _Source) -> int:
        """Records read from every shard, or -1 if some shard must be read again (position kept)."""
        got, complete = 0, True
        for shard_id, shard in list(source.shards.items()):
            parent = source.shards.get(source.parents.get(shard_id, ""))
            if shard.done or (parent is not None and not parent.done):
                continue  # a child shard's records follow its parent's (per-item order)
            n = await self._read_shard(source, shard_id, shard)
            complete &= n >= 0
            got += max(n, 0)
        return got if got or complete else -1

    async def _read_shard(self, source: _Source, shard_id: str, shard: _Shard) -> int:
        streams = self._streams[source.region]
        assert source.stream_arn is not None
        try:
            if shard.iterator is None:
                shard.iterator = await streams.shard_iterator(source.stream_arn, shard_id, shard.last_sequence)
            records, next_iterator = await streams.records(shard.iterator)
        except TableNotFound:
            # The stream is gone (the region restarted as a new process): find its new one.
            source.stream_arn, shard.iterator = None, None
            raise
        except RETRYABLE:
            # The iterator may be gone with the process that issued it; start again from the position.
            shard.iterator = None
            raise
        except StoreError as exc:
            # Expired or invalid iterator: iterate again after the last processed record. If even that
            # position is refused (trimmed past it), read the shard from its start: re-applying is a no-op.
            if shard.iterator is None and shard.last_sequence is not None:
                log.warning("emulator: %s/%s shard %s: position refused, reading it from the start", source.region, source.table, shard_id)
                shard.last_sequence = None
            shard.iterator = None
            log.info("emulator: re-reading %s/%s shard %s: %s", source.region, source.table, shard_id, exc)
            return -1
        now = self._clock.monotonic()
        for record in records:
            self._dispatch(classify(source.region, source.table, record, now))
            shard.last_sequence = record["dynamodb"]["SequenceNumber"]
        shard.iterator = next_iterator
        if next_iterator is None:
            shard.done = True
            # A closed shard's child holds what was written since; DynamoDB Local rolls shards over
            # often. Find the child at once rather than at the next periodic discovery, and do not
            # call this pass idle before the child was read.
            source.discovered_at = float("-inf")
            return len(records) if records else -1
        return len(records)

    def _dispatch(self, change: Change | None) -> None:
        if change is None:
            return
        targets: Iterable[str] = (
            (change.source,) if change.kind is Kind.STAMP else (t for t in self.regions if t != change.source)
        )
        for target in targets:
            pair = self._pairs[(change.source, target)]
            due = change.seen + pair.lag + (self._rng.random() * pair.jitter if pair.jitter else 0.0)
            if pair.backlog:
                due = max(due, pair.backlog[-1][0])  # jitter delays, it does not reorder
            pair.backlog.append((due, change))
            pair.wake.set()

    # --- applying ---

    async def _apply(self, pair: _Pair) -> None:
        failures = 0
        while True:
            if pair.paused or not pair.backlog:
                pair.wake.clear()
                await pair.wake.wait()
                continue
            wait = pair.backlog[0][0] - self._clock.monotonic()
            if wait > 0:
                pair.wake.clear()
                with contextlib.suppress(TimeoutError):
                    async with asyncio.timeout(wait):
                        await pair.wake.wait()
                continue
            batch = self._take_due(pair)
            pair.in_flight = tuple(batch)
            try:
                left = await self._apply_batch(pair, batch)
            finally:
                pair.in_flight = ()
            if any(change.kind is not Kind.PUT for change in batch):
                self._chained_at = self._clock.monotonic()
            if left:
                # Put back what was not applied, ahead of newer changes and in its original order.
                pair.backlog.extendleft(reversed([(0.0, change) for change in left]))
                failures += 1
                if failures == 1:
                    log.warning(
                        "emulator: %s -> %s: %d changes held, retrying: %s",
                        pair.source, pair.target, len(pair.backlog), pair.last_error,
                    )
                await self._sleep(min(1.0, 0.02 * 2**min(failures, 6)))
            else:
                failures = 0

    def _take_due(self, pair: _Pair) -> list[Change]:
        now = self._clock.monotonic()
        batch: list[Change] = []
        limit = self._apply_concurrency * 4
        while pair.backlog and pair.backlog[0][0] <= now and len(batch) < limit:
            batch.append(pair.backlog.popleft()[1])
        return batch

    async def _apply_batch(self, pair: _Pair, batch: list[Change]) -> list[Change]:
        """Applies ``batch``; returns the changes not applied because the target is unavailable, in batch order."""
        if pair.reorder:
            left: list[Change] = []
            blocked: set[tuple[Any, ...]] = set()
            for change in interleave(batch, self._rng):
                if change.ident in blocked or not await self._apply_one(pair, change):
                    blocked.add(change.ident)
                    left.append(change)
            position = {id(change): i for i, change in enumerate(batch)}
            return sorted(left, key=lambda change: position[id(change)])
        lanes: dict[tuple[Any, ...], list[Change]] = {}
        for change in batch:
            lanes.setdefault(change.ident, []).append(change)
        gate = asyncio.Semaphore(self._apply_concurrency)
        unapplied: set[int] = set()

        async def run(lane: list[Change]) -> None:
            async with gate:
                for i, change in enumerate(lane):
                    if not await self._apply_one(pair, change):
                        unapplied.update(id(c) for c in lane[i:])
                        return

        await asyncio.gather(*(run(lane) for lane in lanes.values()))
        return [change for change in batch if id(change) in unapplied]

    async def _apply_one(self, pair: _Pair, change: Change) -> bool:
        """Applies one change to ``pair.target``; ``False`` if the target could not be reached (retry later)."""
        store = self._stores[pair.target]
        stats = pair.stats
        try:
            if change.kind is Kind.PUT:
                assert change.image is not None and change.version is not None
                image = change.image
                if lossy(image):
                    image = await self._source_image(change)
                    if image is None:  # the item changed again: its later record replicates that
                        stats.superseded += 1
                        return True
                await store.put_item(change.table, image, condition=put_condition(change.version))
                stats.delays.append(self._clock.wall_us() / 1e6 - change.version[0] / 1e6)
            elif change.kind is Kind.DELETE:
                await store.delete_item(change.table, change.key, condition=delete_condition(change.version))
            else:
                # Above the old version, so the stamped write is newer than what it changed.
                ts = max(self._clock.wall_us(), change.version[0] + 1 if change.version else 0)
                await store.update_item(
                    change.table,
                    change.key,
                    update="SET #ts = :ts, #rg = :rg",
                    names=NAMES,
                    values={":ts": {"N": str(ts)}, ":rg": {"S": change.source}},
                    condition=stamp_condition(change),
                )
            stats.applied += 1
        except ConditionFailed:
            stats.stale += 1
        except RETRYABLE as exc:
            pair.last_error = exc
            return False
        except StoreError as exc:
            # A change the target refuses as such (validation) would block its item forever: report and drop it.
            # Regions now differ for that item: `fault status` and the cluster's /metrics count it.
            stats.failed += 1
            log.error("emulator: dropped %s of %s/%s to %s: %s", change.kind.value, change.source, change.table, pair.target, exc)
        return True

    async def _source_image(self, change: Change) -> Item | None:
        """The item of a change whose stream image lost a type, read from its source; ``None`` if it moved on."""
        item = await self._stores[change.source].get_item(change.table, change.key, consistent=True)
        return item if item is not None and version_of(item) == change.version else None
