"""The peer API's replay memory (gateway/peer/nonces.py): once per key, across forked workers, bounded."""

from __future__ import annotations

import multiprocessing
import os
import time

import pytest

from gateway.peer.nonces import LOCK_TIMEOUT, WINDOW, NonceTable, NoRoom

NOW = 1_700_000_000_000


def spread(i: int) -> int:
    """Distinct keys spread over the table, as signatures are."""
    return (i * 0x9E3779B97F4A7C15) % (1 << 64) | 1


def test_a_key_is_new_once_and_seen_until_it_expires():
    table = NonceTable(16)
    assert table.remember(7, NOW + 1000, NOW)
    assert not table.remember(7, NOW + 1000, NOW + 1000)  # live through its last millisecond
    assert table.remember(7, NOW + 5000, NOW + 1001)  # forgotten after it (the timestamp check refuses it by then)
    assert table.remember(8, NOW + 1000, NOW)


def test_a_full_window_refuses_and_keeps_every_live_key_until_one_expires():
    table = NonceTable(1)
    same_window = [5 + table.slots * k for k in range(1, WINDOW + 2)]
    for key in same_window[:WINDOW]:
        assert table.remember(key, NOW + 1000 + key % 7, NOW)
    with pytest.raises(NoRoom, match="live"):
        table.remember(same_window[WINDOW], NOW + 1000, NOW)
    assert all(not table.remember(key, NOW + 1000, NOW) for key in same_window[:WINDOW])
    # The first to expire makes room; the others are still remembered.
    soonest = min(same_window[:WINDOW], key=lambda key: key % 7)
    later = NOW + 1000 + soonest % 7 + 1
    assert table.remember(same_window[WINDOW], later + 1000, later)
    assert not table.remember(same_window[WINDOW], later + 1000, later)


def test_expired_entries_are_reused_and_the_memory_never_grows():
    table = NonceTable(256)
    size = len(table._map)
    for round_ in range(4):
        now = NOW + round_ * 10_000
        for i in range(256):
            assert table.remember(spread(round_ * 1000 + i), now + 1000, now)
        assert table.live(now) == 256
    assert len(table._map) == size == 16 * (table.slots + WINDOW) and table.slots >= 4 * 256


def _remember_in_child(table: NonceTable, keys: list[int], results) -> None:
    results.put([table.remember(key, NOW + 1000, NOW) for key in keys])


def test_forked_workers_share_the_table():
    """What the supervisor's workers do: the table made before the fork is one memory for all of them."""
    table = NonceTable(1024, shared=True)
    assert table.remember(11, NOW + 1000, NOW)
    ctx = multiprocessing.get_context("fork")
    results = ctx.Queue()
    child = ctx.Process(target=_remember_in_child, args=(table, [11, 12], results))
    child.start()
    answer = results.get(timeout=10)
    child.join(10)
    assert child.exitcode == 0
    assert answer == [False, True]  # the parent's key is seen in the child, the child's is new...
    assert not table.remember(12, NOW + 1000, NOW)  # ...and seen in the parent afterwards


def test_two_workers_racing_on_the_same_keys_accept_each_exactly_once():
    table = NonceTable(4096, shared=True)
    keys = [spread(i) for i in range(3000)]
    ctx = multiprocessing.get_context("fork")
    results = ctx.Queue()
    children = [ctx.Process(target=_remember_in_child, args=(table, keys, results)) for _ in range(2)]
    for child in children:
        child.start()
    answers = [results.get(timeout=30) for _ in children]
    for child in children:
        child.join(10)
    assert [a + b for a, b in zip(*answers)] == [1] * len(keys)


def test_memory_is_the_power_of_two_of_slots_at_least_four_times_the_capacity():
    for capacity, slots in ((1, 32), (256, 1024), (257, 2048), (1 << 16, 1 << 18)):
        table = NonceTable(capacity)
        assert (table.slots, len(table._map)) == (slots, 16 * (slots + WINDOW))
    with pytest.raises(AssertionError):
        NonceTable(0)


def test_keys_outside_1_to_2_64_are_refused():
    table = NonceTable(16)
    for key in (0, 1 << 64):
        with pytest.raises(AssertionError):
            table.remember(key, NOW + 1000, NOW)
    assert table.remember((1 << 64) - 1, NOW + 1000, NOW) and table.live(NOW) == 1


def test_a_window_whose_keys_all_expire_now_is_still_full_and_every_key_still_seen():
    table = NonceTable(1)
    same_window = [5 + table.slots * k for k in range(1, WINDOW + 2)]
    for key in same_window[:WINDOW]:
        assert table.remember(key, NOW + 1000, NOW)
    # Live through their last millisecond: none may be overwritten then, or its replay would pass.
    with pytest.raises(NoRoom, match="live"):
        table.remember(same_window[WINDOW], NOW + 2000, NOW + 1000)
    assert table.live(NOW + 1000) == WINDOW and table.live(NOW + 1001) == 0
    assert all(not table.remember(key, NOW + 2000, NOW + 1000) for key in same_window[:WINDOW])


def test_a_new_key_equal_to_another_entrys_expiry_is_not_taken_for_seen():
    # The window is read as keys and expiries together; a key may equal an expiry next to a live key.
    table = NonceTable(1)
    expiry = NOW + 1000 + (5 - (NOW + 1000)) % table.slots  # in the window that starts at slot 5
    assert expiry % table.slots == 5
    assert table.remember(5 + table.slots, expiry, NOW)
    assert table.remember(NOW * table.slots + 5, NOW + 1000, NOW)  # the next entry: a key above NOW
    assert table.remember(expiry, NOW + 1000, NOW)
    assert not table.remember(expiry, NOW + 1000, NOW)


def _hold_the_lock_and_die(table: NonceTable) -> None:
    table._lock.acquire()
    os._exit(0)  # killed inside the critical section: the lock is never released


def test_a_worker_that_died_holding_a_shared_tables_lock_makes_the_others_refuse_not_hang():
    table = NonceTable(16, shared=True)
    child = multiprocessing.get_context("fork").Process(target=_hold_the_lock_and_die, args=(table,))
    child.start()
    child.join(10)
    assert child.exitcode == 0
    started = time.monotonic()
    with pytest.raises(NoRoom) as refused:
        table.remember(7, NOW + 1000, NOW)
    assert str(refused.value) == "the nonce table's lock is held by another worker"  # not "the window is full"
    assert LOCK_TIMEOUT <= time.monotonic() - started < 5
