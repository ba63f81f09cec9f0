"""The write buffer (DESIGN.md §7.5): writes held, unacknowledged, while their scope switches primary.

While a scope's rule is ``switching`` nobody may write it: the old primary has
stopped and the new one is not fenced yet. Instead of failing those writes the
dispatcher parks them here and sends them on, routed anew, when the switch
ends::

    slot = await buffer.hold(scope, nbytes)   # waits while the scope is switching
    try:
        ...route the write anew and perform it...
    finally:
        slot.release()                         # frees one drain slot

The switch participant (gateway/switch/participant.py) calls
``switch_started(scope)`` / ``switch_ended(scope)``
whenever a scope's rule enters / leaves ``switching``, synchronously from the
event loop, and the dispatcher calls ``hold`` right after reading the rule with
no await in between, so the buffer never sees a stale decision.

State machine, per scope (the shape of Vitess's vtgate failover buffer)::

                 switch_started / hold
       +------+ ----------------------> +-----------+
       | IDLE |                         | BUFFERING | <-----------------+
       +------+ <---------------------- +-----------+                   |
         ^        switch_ended, nothing       |                         |
         |        held nor outstanding        | switch_ended            | switch_started / hold
         |                                    v                         | (queued entries keep waiting)
         |                              +-----------+                   |
         +----------------------------- | DRAINING  | ------------------+
           queue empty and every        +-----------+
           released slot released

- ``hold`` on an IDLE scope starts BUFFERING even if ``switch_started`` has not
  been called yet (the caller saw the rule switching); on a DRAINING scope it
  means the scope switches again, exactly like ``switch_started``.
- DRAINING releases the queue FIFO to at most ``drain_concurrency`` writes of
  the scope at once: an entry released to its caller holds a *slot* until the
  caller's ``slot.release()``, which lets the next entry go. The bound is per
  scope because each scope drains to its own (new) primary.
- Every transition is made by one function per event (``_on_…_locked``) that
  matches all three states; a fall-through is a bug and raises AssertionError.

Ways out of the buffer, each counted per scope and in
``gateway_buffer_released_total{scope,reason}``:

- ``drained``: released in order to its caller once the switch ended.
- ``expired``: held longer than ``window``; the caller gets 503
  ``primary_switching`` with Retry-After. One owned sweeper task (``run()``,
  like gateway/deadlines.py) checks every ``resolution`` seconds, so an entry
  expires between ``window`` and ``window + resolution`` after it entered; no
  timer handle per entry. Tests call ``sweep()`` with a fake clock.
- ``evicted``: ``evict_all``/``close`` (shutdown; the caller gets 503
  ``draining``), or the caller's task was cancelled while it waited (request
  deadline, client gone); its bytes are freed at once.
- ``refused``: a ``hold`` that would exceed ``max_entries`` or ``max_bytes``
  (all scopes of the process together), or arrives after ``close``, raises at
  once and never waits. A refused write never entered the buffer.

Invariant, per scope, after every event (``BufferStats.balanced``, asserted by
the tests)::

    buffered == drained + evicted + expired + held

and, for the process, ``depth() <= max_entries`` and held bytes ``<= max_bytes``.

Concurrency: the event loop is the lock. Every shared field is touched only
between awaits, and the one await in ``hold`` is outside any update. A
function named ``…_locked`` reads and changes the buffer's state in one
synchronous stretch and leaves the invariant restored when it returns; callers
must not await between deciding and calling it.

Memory: a held write costs its ``nbytes`` (the caller's record, bounded by
``max_bytes``) plus a fixed overhead under 640 bytes: the suspended ``hold``
coroutine, its ``asyncio.Future``, the slotted ``_Entry`` with its timestamp,
and its node in the scope's queue (the caller's own task is not counted;
tests/unit/switch/test_write_buffer.py measures it with tracemalloc). So held
writes take less than ``max_bytes + max_entries * 640 B`` (6.4 MB of overhead
at the default 10 000 entries), plus ``drain_concurrency`` in-flight writes per
draining scope, which no longer count as held.
"""

from __future__ import annotations

import asyncio
import enum
from collections import OrderedDict
from collections.abc import Iterable
from dataclasses import dataclass
from typing import assert_never

from gateway.clock import Clock
from gateway.config import BufferConfig
from gateway.errors import Draining, PrimarySwitching, Unavailable
from gateway.obs.metrics import Metrics

DRAINED = "drained"
EXPIRED = "expired"
EVICTED = "evicted"
REFUSED = "refused"
#: Every way out of the buffer, as ``gateway_buffer_released_total{reason}`` labels.
REASONS = (DRAINED, EXPIRED, EVICTED, REFUSED)


class ScopeState(enum.Enum):
    IDLE = "IDLE"
    BUFFERING = "BUFFERING"
    DRAINING = "DRAINING"


@dataclass(frozen=True, slots=True)
class BufferStats:
    """One scope's buffer at one moment; the counters only grow."""

    state: ScopeState
    held: int
    held_bytes: int
    buffered: int
    drained: int
    evicted: int
    expired: int
    refused: int
    #: Drained writes whose caller has not released its slot yet (at most ``drain_concurrency``).
    outstanding: int

    @property
    def balanced(self) -> bool:
        """The buffer's invariant: every write that entered is either still held or left one counted way."""
        return self.buffered == self.drained + self.evicted + self.expired + self.held


class _Entry:
    """One held write. Identity-hashed: it is its own key in the scope's queue."""

    __slots__ = ("enqueued_at", "future", "nbytes", "scope")

    def __init__(self, future: asyncio.Future[Slot], scope: _Scope, nbytes: int, enqueued_at: float) -> None:
        self.future = future
        self.scope = scope
        self.nbytes = nbytes
        self.enqueued_at = enqueued_at


class _Scope:
    """The buffer of one scope. All fields are guarded by the event loop (touched only between awaits)."""

    __slots__ = (
        "buffered",
        "drained",
        "evicted",
        "expired",
        "held_bytes",
        "name",
        "outstanding",
        "queue",
        "refused",
        "state",
    )

    def __init__(self, name: str) -> None:
        self.name = name
        self.state = ScopeState.IDLE
        # Held entries in arrival order, which is also age order (the sweeper only looks at the head).
        # An OrderedDict rather than a deque: a cancelled waiter leaves from the middle in O(1).
        self.queue: OrderedDict[_Entry, None] = OrderedDict()
        self.held_bytes = 0
        self.outstanding = 0
        self.buffered = 0
        self.drained = 0
        self.evicted = 0
        self.expired = 0
        self.refused = 0


class Slot:
    """A drain slot, handed to a released write's caller; ``release()`` lets the next held write go.

    Releasing twice is harmless (the second call does nothing), so ``finally: slot.release()`` is always safe.
    """

    __slots__ = ("_buffer", "_scope")

    def __init__(self, buffer: WriteBuffer, scope: _Scope) -> None:
        self._buffer = buffer
        self._scope: _Scope | None = scope

    def release(self) -> None:
        scope = self._scope
        if scope is None:
            return
        self._scope = None
        self._buffer._on_slot_released_locked(scope)


class WriteBuffer:
    __slots__ = (
        "_clock",
        "_closed",
        "_concurrency",
        "_held_bytes",
        "_held_entries",
        "_max_bytes",
        "_max_entries",
        "_metrics",
        "_resolution",
        "_retry_after",
        "_scopes",
        "_window",
    )

    def __init__(
        self,
        config: BufferConfig,
        clock: Clock,
        metrics: Metrics | None = None,
        *,
        resolution: float = 0.05,
        retry_after: float = 1.0,
    ) -> None:
        self._clock = clock
        self._metrics = metrics
        self._window = config.window
        self._max_entries = config.max_entries
        self._max_bytes = config.max_bytes
        self._concurrency = config.drain_concurrency
        self._resolution = resolution
        #: Retry-After of the 503s this buffer answers with (full, expired, evicted).
        self._retry_after = retry_after
        # Guarded by the event loop. Scopes are few (one per routing rule) and kept once seen.
        self._scopes: dict[str, _Scope] = {}
        # Guarded by the event loop: sums over every scope's queue, checked against the bounds.
        self._held_entries = 0
        self._held_bytes = 0
        # Guarded by the event loop: set by close(); every later hold() is refused with Draining.
        self._closed = False

    # -- the dispatcher's and the routing layer's API --------------------------------------------

    async def hold(self, scope: str, nbytes: int) -> Slot:
        """Hold a write of ``nbytes`` until ``scope``'s switch ends; return its drain slot.

        Raises ``PrimarySwitching`` at once if the buffer is full, later if the
        write was held longer than ``window``; ``Draining`` if the buffer was
        evicted (shutdown). If the caller is cancelled while waiting, the write
        leaves the buffer (counted evicted) and its bytes are free at once.
        """
        entry = self._admit_locked(self._scope(scope), nbytes)
        try:
            return await entry.future
        except asyncio.CancelledError:
            self._abandon_locked(entry)
            raise

    def switch_started(self, scope: str) -> None:
        self._on_switch_started_locked(self._scope(scope))

    def switch_ended(self, scope: str) -> None:
        self._on_switch_ended_locked(self._scope(scope))

    def evict_all(self, reason: str) -> int:
        """Release every held write with 503 ``draining`` (``reason`` in its message); return how many."""
        evicted = 0
        for sc in self._scopes.values():
            if not sc.queue:
                continue
            while sc.queue:
                entry = next(iter(sc.queue))
                self._leave_locked(entry, EVICTED, Draining(
                    f"write held for the switch of scope {sc.name!r} was evicted: {reason}",
                    retry_after=self._retry_after,
                ))
                evicted += 1
            self._on_entry_left_locked(sc)
        return evicted

    def close(self) -> int:
        """Shutdown: evict every held write and refuse every later one with 503 ``draining``."""
        self._closed = True
        return self.evict_all("the gateway is shutting down")

    def sweep(self) -> int:
        """Expire every write held ``window`` seconds or longer; return how many."""
        if not self._held_entries:
            return 0
        now = self._clock.monotonic()
        expired = 0
        for sc in self._scopes.values():
            queue = sc.queue
            if not queue:
                continue
            before = expired
            # FIFO means oldest first: stop at the first entry still inside its window.
            while queue:
                entry = next(iter(queue))
                if entry.enqueued_at + self._window > now:
                    break
                self._leave_locked(entry, EXPIRED, PrimarySwitching(
                    f"write held for the switch of scope {sc.name!r} longer than {self._window:g} s; retry",
                    retry_after=self._retry_after,
                ))
                expired += 1
            if expired > before:
                self._on_entry_left_locked(sc)
        return expired

    def next_expiry(self) -> float | None:
        """When the oldest held write's window ends (monotonic), or ``None`` when nothing is held."""
        heads = [next(iter(sc.queue)).enqueued_at for sc in self._scopes.values() if sc.queue]
        return min(heads) + self._window if heads else None

    async def run(self) -> None:
        """The sweeper: one owned task (aiohttp ``cleanup_ctx``), cancelled on shutdown.

        It wakes when the oldest held write's window ends (so a write waits its window, not a
        sweep period more), and at least every ``resolution`` seconds to see newly held ones.
        """
        while True:
            expiry = self.next_expiry()
            delay = self._resolution if expiry is None else max(0.0, min(self._resolution, expiry - self._clock.monotonic()))
            await asyncio.sleep(delay)
            self.sweep()

    def stats(self, scope: str) -> BufferStats:
        sc = self._scopes.get(scope) or _Scope(scope)
        return BufferStats(
            state=sc.state, held=len(sc.queue), held_bytes=sc.held_bytes, buffered=sc.buffered,
            drained=sc.drained, evicted=sc.evicted, expired=sc.expired, refused=sc.refused,
            outstanding=sc.outstanding,
        )

    def state(self, scope: str) -> ScopeState:
        sc = self._scopes.get(scope)
        return ScopeState.IDLE if sc is None else sc.state

    def depth(self) -> int:
        """Writes held now, all scopes (the member item's ``buffer_depth``)."""
        return self._held_entries

    def held_bytes(self) -> int:
        return self._held_bytes

    # -- internals -------------------------------------------------------------------------------

    def track(self, scopes: Iterable[str]) -> None:
        """Know these scopes (every scope of the rules) before any of them switches: their series start at zero."""
        for name in scopes:
            self._scope(name)

    def _scope(self, name: str) -> _Scope:
        sc = self._scopes.get(name)
        if sc is None:
            sc = self._scopes[name] = _Scope(name)
            if self._metrics is not None:
                self._metrics.prime_buffer(name, REASONS)
        return sc

    def _admit_locked(self, sc: _Scope, nbytes: int) -> _Entry:
        """Enter a write into ``sc``'s queue, or refuse it at once; never waits."""
        if nbytes < 0:
            raise ValueError(f"nbytes must be >= 0, not {nbytes}")
        refusal: Unavailable | None = None
        if self._closed:
            refusal = Draining("the gateway is shutting down", retry_after=self._retry_after)
        elif self._held_entries + 1 > self._max_entries or self._held_bytes + nbytes > self._max_bytes:
            refusal = PrimarySwitching(
                f"scope {sc.name!r} is switching primary and the write buffer is full "
                f"({self._held_entries} writes, {self._held_bytes} bytes held); retry",
                retry_after=self._retry_after,
            )
        if refusal is not None:
            sc.refused += 1
            if self._metrics is not None:
                self._metrics.buffer_released(sc.name, REFUSED, None)
            raise refusal
        entry = _Entry(asyncio.get_running_loop().create_future(), sc, nbytes, self._clock.monotonic())
        sc.queue[entry] = None
        sc.held_bytes += nbytes
        sc.buffered += 1
        self._held_entries += 1
        self._held_bytes += nbytes
        if self._metrics is not None:
            self._metrics.buffer_held(sc.name, len(sc.queue))
        self._on_hold_locked(sc)
        return entry

    def _leave_locked(self, entry: _Entry, reason: str, error: Exception | None) -> None:
        """Take ``entry`` out of its queue, count why, and answer its waiter (``error``, or a slot if drained).

        A waiter whose task was cancelled (its future is cancelled) but has not
        run its ``except`` yet counts as evicted, whatever the reason asked for.
        The caller runs the scope's transition afterwards.
        """
        sc = entry.scope
        del sc.queue[entry]
        sc.held_bytes -= entry.nbytes
        self._held_entries -= 1
        self._held_bytes -= entry.nbytes
        future = entry.future
        if future.done():
            reason = EVICTED
        elif error is not None:
            future.set_exception(error)
        else:
            sc.outstanding += 1
            future.set_result(Slot(self, sc))
        if reason == DRAINED:
            sc.drained += 1
        elif reason == EXPIRED:
            sc.expired += 1
        elif reason == EVICTED:
            sc.evicted += 1
        else:
            raise AssertionError(f"BUG: unknown reason {reason!r} for a write leaving the buffer")
        if self._metrics is not None:
            self._metrics.buffer_held(sc.name, len(sc.queue))
            self._metrics.buffer_released(sc.name, reason, self._clock.monotonic() - entry.enqueued_at)

    def _abandon_locked(self, entry: _Entry) -> None:
        """The waiter was cancelled: leave the queue if still in it, or give back a slot it will never release."""
        sc = entry.scope
        if entry in sc.queue:
            self._leave_locked(entry, EVICTED, None)
            self._on_entry_left_locked(sc)
            return
        future = entry.future
        if future.cancelled():
            return  # left the queue already, counted evicted by whoever removed it
        if future.exception() is None:  # also marks an error as retrieved: nobody else will read it
            future.result().release()

    def _drain_locked(self, sc: _Scope) -> None:
        """DRAINING only: release the queue FIFO into free slots; IDLE once nothing is held nor outstanding."""
        queue = sc.queue
        while queue and sc.outstanding < self._concurrency:
            self._leave_locked(next(iter(queue)), DRAINED, None)
        if not queue and sc.outstanding == 0:
            sc.state = ScopeState.IDLE

    # One transition function per event; each matches every state, and a fall-through is a bug.

    def _on_switch_started_locked(self, sc: _Scope) -> None:
        match sc.state:
            case ScopeState.IDLE | ScopeState.BUFFERING:
                sc.state = ScopeState.BUFFERING
            case ScopeState.DRAINING:
                # The scope switches again: entries not yet released wait for this switch too;
                # the ones already released finish and release their slots.
                sc.state = ScopeState.BUFFERING
            case _:
                assert_never(sc.state)

    def _on_hold_locked(self, sc: _Scope) -> None:
        # The caller just read the scope's rule as switching, so a hold means what switch_started means.
        self._on_switch_started_locked(sc)

    def _on_switch_ended_locked(self, sc: _Scope) -> None:
        match sc.state:
            case ScopeState.IDLE | ScopeState.DRAINING:
                pass  # nothing held, or already draining: a repeated end changes nothing
            case ScopeState.BUFFERING:
                sc.state = ScopeState.DRAINING
                self._drain_locked(sc)
            case _:
                assert_never(sc.state)

    def _on_entry_left_locked(self, sc: _Scope) -> None:
        """Writes left the queue without a slot (expired, evicted, cancelled)."""
        match sc.state:
            case ScopeState.IDLE:
                raise AssertionError(f"BUG: a write left the buffer of scope {sc.name!r} while it was IDLE")
            case ScopeState.BUFFERING:
                pass
            case ScopeState.DRAINING:
                self._drain_locked(sc)
            case _:
                assert_never(sc.state)

    def _on_slot_released_locked(self, sc: _Scope) -> None:
        if sc.outstanding <= 0:
            raise AssertionError(f"BUG: slot released in scope {sc.name!r} with none outstanding")
        sc.outstanding -= 1
        match sc.state:
            case ScopeState.IDLE:
                raise AssertionError(f"BUG: slot released in scope {sc.name!r} while it was IDLE")
            case ScopeState.BUFFERING:
                pass  # switching again: the queue waits for switch_ended
            case ScopeState.DRAINING:
                self._drain_locked(sc)
            case _:
                assert_never(sc.state)
