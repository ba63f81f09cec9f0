"""The peer API's memory of requests it has accepted, shared by every worker process of one gateway.

Workers share the peer port (``SO_REUSEPORT``): the kernel hands each new
connection to any of them, so a replay sent on a fresh connection lands on
a worker that did not see the original. A per-process cache would let it
through; this table lives in one anonymous shared mapping that the
supervisor creates before it forks the workers, so every worker checks and
records in the same memory.

Layout: ``slots + WINDOW`` entries of two little-endian unsigned 64-bit
words, ``(key, forget_after_ms)``. A request's key is a 64-bit number the
caller derives (gateway/peer/auth.py uses the first 64 bits of the
request's signature, which covers its nonce); 0 is never a key. Its window
is the ``WINDOW`` entries starting at ``key % slots`` (the table is
``WINDOW`` entries longer than ``slots``, so no window wraps). An entry is
live while ``forget_after_ms`` is not yet past; a dead or never-used one
is free.

Invariants:
- A shared table's ``remember`` is one critical section under a lock the
  workers share: two workers handed the same request at the same instant
  cannot both accept it. A table of one process (``shared=False``) takes
  no lock: its only caller is that process's event loop, never across an await.
- A key is refused as seen only if it is live in its window.
- Memory is fixed at creation: ``16 * (slots + WINDOW)`` bytes, with
  ``slots`` at least 4 x ``capacity`` (a quarter full at capacity, where a
  full window is a one-in-a-million event); pages are touched as entries
  are used. When a key's whole window is live the request is refused
  (``NoRoom``), never an entry forgotten early.
- A worker killed inside the critical section would hold the lock for good;
  the others then refuse peer requests after ``LOCK_TIMEOUT`` (the
  supervisor stops them all anyway when a worker dies: gateway/server.py).
"""

from __future__ import annotations

import mmap
import multiprocessing
import struct

#: Entries probed per key: one 256-byte read.
WINDOW = 16
#: Seconds a worker waits for a shared table's lock before refusing the request.
LOCK_TIMEOUT = 0.5

_ENTRY = struct.Struct("<QQ")
_WINDOW = struct.Struct(f"<{2 * WINDOW}Q")


class NoRoom(Exception):
    """Every entry of the key's window holds a live key (or the lock could not be had): refuse, retry later."""


class NonceTable:
    """Fixed-size set of 64-bit keys, each remembered until its own expiry; optionally shared across forks."""

    __slots__ = ("_map", "_lock", "slots")

    def __init__(self, capacity: int, *, shared: bool = False) -> None:
        """Room for ``capacity`` live keys. ``shared``: create it before forking the workers that share it."""
        assert capacity > 0
        self.slots = 1 << max(4 * capacity - 1, WINDOW).bit_length()
        # An anonymous MAP_SHARED mapping: inherited, not copied, by the processes this one forks.
        self._map = mmap.mmap(-1, _ENTRY.size * (self.slots + WINDOW))
        self._lock = multiprocessing.get_context("fork").Lock() if shared else None

    def remember(self, key: int, forget_after: int, now: int) -> bool:
        """Record ``key`` (1 .. 2**64-1) live until ``forget_after`` (ms); False if it is live already."""
        assert 0 < key < 1 << 64
        lock = self._lock
        if lock is not None and not lock.acquire(timeout=LOCK_TIMEOUT):
            raise NoRoom("the nonce table's lock is held by another worker")
        try:
            start = key % self.slots
            window = _WINDOW.unpack_from(self._map, start * _ENTRY.size)
            if key in window:  # rare: then look closer (it may be an expired entry, or equal an expiry)
                for i in range(0, 2 * WINDOW, 2):
                    if window[i] == key and window[i + 1] >= now:
                        return False
            for i in range(1, 2 * WINDOW, 2):
                if window[i] < now:  # never used (0) or expired
                    _ENTRY.pack_into(self._map, (start + i // 2) * _ENTRY.size, key, forget_after)
                    return True
            raise NoRoom(f"all {WINDOW} entries of the key's window are live")
        finally:
            if lock is not None:
                lock.release()

    def live(self, now: int) -> int:
        """How many keys are remembered at ``now`` (a full scan: for tests and operators, not the hot path)."""
        words = struct.unpack_from(f"<{2 * (self.slots + WINDOW)}Q", self._map)
        return sum(1 for expiry in words[1::2] if expiry >= now)
