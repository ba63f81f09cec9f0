"""What a primary acknowledged, for a switch's fence (gateway/switch/fence.py)."""

from __future__ import annotations

import asyncio

import pytest

from gateway.switch.fence import AckLog
from tests.fakes import FakeClock


async def test_the_newest_acknowledged_version_of_each_key_is_listed():
    acks = AckLog(FakeClock(), window=60, max_keys=100)
    for key, version in (("a", "1.1.r"), ("b", "1.2.r"), ("a", "1.3.r")):
        acks.begin("s")
        acks.end("s", "items", key, version)
    acks.begin("s")
    acks.end("s", "items", "c", None)  # refused (stale, duplicate): nothing acknowledged
    assert acks.acknowledged("s") == ([("items", "b", "1.2.r"), ("items", "a", "1.3.r")], True)


async def test_keys_older_than_the_window_are_dropped():
    clock = FakeClock()
    acks = AckLog(clock, window=10, max_keys=100)
    acks.begin("s")
    acks.end("s", "items", "old", "1.1.r")
    clock.advance(11)
    acks.begin("s")
    acks.end("s", "items", "new", "1.2.r")
    assert acks.acknowledged("s") == ([("items", "new", "1.2.r")], True)


async def test_past_max_keys_the_log_is_incomplete_until_the_forgotten_leave_the_window():
    clock = FakeClock()
    acks = AckLog(clock, window=10, max_keys=2)
    for key in "abc":
        acks.begin("s")
        acks.end("s", "items", key, f"1.{key}.r")
    listed, complete = acks.acknowledged("s")
    assert [k for _, k, _ in listed] == ["b", "c"] and complete is False
    clock.advance(11)
    assert acks.acknowledged("s") == ([], True)


async def test_quiesce_waits_for_in_flight_writes_and_times_out_otherwise():
    acks = AckLog(FakeClock(), window=60, max_keys=100)
    assert await acks.quiesce("s", 0.01) is True
    acks.begin("s")
    assert await acks.quiesce("s", 0.01) is False
    waiting = asyncio.create_task(acks.quiesce("s", 5))
    await asyncio.sleep(0)
    acks.end("s", "items", "k", "1.1.r")
    assert await waiting is True and acks.in_flight("s") == 0


async def test_quiesce_waits_for_the_last_of_several_writes_in_flight():
    acks = AckLog(FakeClock(), window=60, max_keys=100)
    acks.begin("s")
    acks.begin("s")
    waiting = asyncio.create_task(acks.quiesce("s", 5))
    await asyncio.sleep(0)
    acks.end("s", "items", "a", "1.1.r")
    await asyncio.sleep(0)
    assert not waiting.done() and acks.in_flight("s") == 1  # one write still in flight: nothing proven yet
    acks.end("s", "items", "b", None)
    assert await waiting is True and acks.in_flight("s") == 0 and acks.in_flight("other") == 0


async def test_an_end_without_a_begin_is_a_bug_not_a_negative_count():
    acks = AckLog(FakeClock(), window=60, max_keys=100)
    acks.begin("s")
    acks.end("s", "items", "a", "1.1.r")
    with pytest.raises(AssertionError, match="end\\(\\) without begin\\(\\) for scope s"):
        acks.end("s", "items", "a", "1.1.r")
    assert acks.in_flight("s") == 0


async def test_a_key_acknowledged_exactly_one_window_ago_is_still_listed():
    clock = FakeClock()
    acks = AckLog(clock, window=10, max_keys=100)
    acks.begin("s")
    acks.end("s", "items", "a", "1.1.r")
    clock.advance(10)
    assert acks.acknowledged("s") == ([("items", "a", "1.1.r")], True)
    assert acks.acknowledged("never-written") == ([], True)


async def test_a_log_that_forgot_keys_stays_incomplete_for_a_whole_window_then_proves_again():
    clock = FakeClock()
    acks = AckLog(clock, window=10, max_keys=2)
    for key in "abc":  # a is forgotten for space, at t=0
        acks.begin("s")
        acks.end("s", "items", key, f"1.{key}.r")
    clock.advance(5)
    acks.begin("s")
    acks.end("s", "items", "c", "1.c2.r")  # c again, newer: still two keys, nothing more forgotten
    clock.advance(5)  # a was acknowledged exactly one window ago: it could still matter
    assert acks.acknowledged("s") == ([("items", "b", "1.b.r"), ("items", "c", "1.c2.r")], False)
    clock.advance(0.5)  # now a (and b) are past the window; c is not
    assert acks.acknowledged("s") == ([("items", "c", "1.c2.r")], True)
