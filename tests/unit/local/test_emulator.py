"""The emulator's decisions without I/O: last writer wins, echoes, unstamped writes, per-item order under reorder."""

from __future__ import annotations

import asyncio
import random
from collections.abc import AsyncIterator, Callable
from typing import Any

import pytest

from gateway.errors import ConditionFailed, StoreError, StoreUnavailable, StoreValidation, TableNotFound
from gateway.local.emulator import GlobalTableEmulator
from gateway.local.replication import (
    Change,
    Kind,
    classify,
    delete_condition,
    interleave,
    newer,
    put_condition,
    should_apply,
    stamp_condition,
    version_of,
)
from gateway.store.base import Condition


def item(key: str, ts: int | None = None, region: str | None = None, **features: str) -> dict[str, Any]:
    out: dict[str, Any] = {"pk": {"S": key}}
    if ts is not None:
        out["_ts"] = {"N": str(ts)}
    if region is not None:
        out["_region"] = {"S": region}
    out.update({name: {"S": value} for name, value in features.items()})
    return out


def record(event: str, key: str, new: dict[str, Any] | None = None, old: dict[str, Any] | None = None, seq: str = "1") -> dict[str, Any]:
    data: dict[str, Any] = {"Keys": {"pk": {"S": key}}, "SequenceNumber": seq, "ApproximateCreationDateTime": 1.7e9}
    if new is not None:
        data["NewImage"] = new
    if old is not None:
        data["OldImage"] = old
    return {"eventName": event, "dynamodb": data}


def change(kind: Kind, key: str, version: tuple[int, str] | None, source: str = "a") -> Change:
    image = item(key, *version) if kind is Kind.PUT and version else None
    return Change(kind, source, "t", {"pk": {"S": key}}, image, version, "1", 0.0)


# --- last writer wins ---


def test_higher_ts_wins_whatever_the_region() -> None:
    assert newer((2, "a"), (1, "z"))
    assert not newer((1, "z"), (2, "a"))


def test_equal_ts_is_broken_by_region_string_order() -> None:
    assert newer((5, "us-west-2"), (5, "us-east-1"))
    assert not newer((5, "us-east-1"), (5, "us-west-2"))
    assert not newer((5, "eu"), (5, "eu")), "a version never beats itself: applying twice is a no-op"


def test_unstamped_is_older_than_any_stamped_version() -> None:
    assert newer((0, ""), None)
    assert not newer(None, (0, ""))
    assert not newer(None, None)


def test_put_applies_only_over_an_older_or_missing_item() -> None:
    put = change(Kind.PUT, "k", (10, "b"))
    assert should_apply(put, None)
    assert should_apply(put, item("k"))  # an unstamped item loses
    assert should_apply(put, item("k", 9, "z"))
    assert should_apply(put, item("k", 10, "a"))
    assert not should_apply(put, item("k", 10, "b")), "the same change twice"
    assert not should_apply(put, item("k", 10, "c"))
    assert not should_apply(put, item("k", 11, "a"))


def test_delete_removes_only_a_copy_that_is_not_newer_than_the_deleted_item() -> None:
    delete = change(Kind.DELETE, "k", (10, "b"))
    assert should_apply(delete, item("k", 10, "b"))
    assert should_apply(delete, item("k", 3, "z"))
    assert should_apply(delete, item("k"))
    assert not should_apply(delete, item("k", 10, "c")), "a newer put survives the delete"
    assert not should_apply(delete, item("k", 11, "a"))
    unstamped_delete = change(Kind.DELETE, "k", None)
    assert should_apply(unstamped_delete, item("k"))
    assert not should_apply(unstamped_delete, item("k", 1, "a"))


def test_stamp_applies_only_while_the_item_is_still_the_one_the_record_saw() -> None:
    stamp = change(Kind.STAMP, "k", None)
    assert should_apply(stamp, item("k", x="1"))
    assert not should_apply(stamp, None), "a deleted item is not recreated by its stamp"
    assert not should_apply(stamp, item("k", 7, "b")), "a replicated write came first: the unstamped one lost"
    restamp = change(Kind.STAMP, "k", (7, "b"))
    assert should_apply(restamp, item("k", 7, "b"))
    assert not should_apply(restamp, item("k", 8, "b"))


def test_conditions_bind_the_version_they_compare_with() -> None:
    condition = put_condition((123, "eu-west-1"))
    assert condition.names == {"#ts": "_ts", "#rg": "_region"}
    assert condition.values == {":ts": {"N": "123"}, ":rg": {"S": "eu-west-1"}}
    assert "#rg < :rg" in condition.expression
    assert "#rg <= :rg" in delete_condition((1, "a")).expression
    assert delete_condition(None).expression == "attribute_not_exists(#ts)"
    assert "attribute_not_exists(#ts)" in stamp_condition(change(Kind.STAMP, "k", None)).expression


# --- classifying stream records ---


def test_a_gateway_write_in_the_streams_region_replicates_as_a_put() -> None:
    decided = classify("a", "t", record("INSERT", "k", new=item("k", 5, "a", x="1")), 1.0)
    assert decided is not None
    assert (decided.kind, decided.version, decided.image) == (Kind.PUT, (5, "a"), item("k", 5, "a", x="1"))


def test_a_write_applied_by_replication_is_an_echo() -> None:
    assert classify("b", "t", record("INSERT", "k", new=item("k", 5, "a")), 1.0) is None
    assert classify("b", "t", record("MODIFY", "k", new=item("k", 6, "a"), old=item("k", 5, "b")), 1.0) is None


def test_a_write_without_ts_is_stamped_in_its_own_region() -> None:
    decided = classify("b", "t", record("INSERT", "k", new=item("k", x="1")), 1.0)
    assert decided is not None and (decided.kind, decided.source, decided.version) == (Kind.STAMP, "b", None)


def test_an_update_that_kept_the_old_version_was_not_made_by_a_gateway_and_is_stamped() -> None:
    # e.g. an UpdateItem from the console on a replicated copy: _region says "a", but the change happened in "b".
    decided = classify("b", "t", record("MODIFY", "k", new=item("k", 5, "a", x="2"), old=item("k", 5, "a", x="1")), 1.0)
    assert decided is not None and (decided.kind, decided.source, decided.version) == (Kind.STAMP, "b", (5, "a"))


def test_every_remove_replicates_with_the_deleted_items_version() -> None:
    decided = classify("b", "t", record("REMOVE", "k", old=item("k", 5, "a")), 1.0)
    assert decided is not None and (decided.kind, decided.version) == (Kind.DELETE, (5, "a"))


def test_version_of_reads_ts_and_region() -> None:
    assert version_of(item("k", 1795444000000000, "us-east-1")) == (1795444000000000, "us-east-1")
    assert version_of(item("k")) is None
    assert version_of(None) is None


# --- per-item order under reorder ---


def test_interleave_keeps_each_items_order_and_reorders_different_items() -> None:
    changes = [change(Kind.PUT, f"k{i % 5}", (i, "a")) for i in range(50)]
    reordered_once = False
    for seed in range(20):
        out = interleave(changes, random.Random(seed))
        assert sorted(map(id, out)) == sorted(map(id, changes)), "nothing lost, nothing doubled"
        for key in {c.key["pk"]["S"] for c in changes}:
            assert [c.version for c in out if c.key["pk"]["S"] == key] == [
                c.version for c in changes if c.key["pk"]["S"] == key
            ]
        reordered_once |= [c.version for c in out] != [c.version for c in changes]
    assert reordered_once


def test_changes_of_different_tables_are_different_items() -> None:
    a = Change(Kind.PUT, "a", "t1", {"pk": {"S": "k"}}, None, (1, "a"), "1", 0.0)
    b = Change(Kind.PUT, "a", "t2", {"pk": {"S": "k"}}, None, (1, "a"), "1", 0.0)
    assert a.ident != b.ident


# --- controls ---


def test_fault_controls_name_an_ordered_pair_of_known_regions() -> None:
    emulator = GlobalTableEmulator({"a": "http://127.0.0.1:1", "b": "http://127.0.0.1:2"}, ["t"])
    emulator.set_lag("a", "b", 0.3, jitter=0.1)
    emulator.pause("b", "a")
    emulator.resume("b", "a")
    emulator.set_reorder("a", "b", True)
    assert emulator.backlog("a", "b") == 0
    with pytest.raises(ValueError):
        emulator.pause("a", "a")
    with pytest.raises(ValueError):
        emulator.set_lag("a", "nowhere", 1.0)
    with pytest.raises(ValueError):
        emulator.set_lag("a", "b", -1.0)


# --- the reader and appliers against in-memory regions ---


class FakeRegion:
    """One region's table and its stream, in memory: a ``Store`` and a ``Streams`` (gateway/local/streams.py).

    Conditions are evaluated on their own (not through ``should_apply``), the way DynamoDB would, and a
    write that changes nothing writes no stream record, as DynamoDB Local does.
    """

    def __init__(self, name: str) -> None:
        self.name = name
        self.items: dict[str, dict[str, Any]] = {}
        self.stream: list[dict[str, Any]] = []
        self.arn = f"arn:{name}:1"
        self.down = False
        self.expire_next_read = False
        self.refuse_position = False  # GetShardIterator refuses an AFTER_SEQUENCE_NUMBER once (trimmed)
        self.applied: list[tuple[str, str]] = []  # (key, value) of every put, in order
        self.iterator_requests: list[str | None] = []

    def check(self) -> None:
        if self.down:
            raise StoreUnavailable(f"{self.name} is down")

    @staticmethod
    def holds(condition: Condition | None, stored: dict[str, Any] | None) -> bool:
        if condition is None:
            return True
        values = condition.values
        ts = int(stored["_ts"]["N"]) if stored and "_ts" in stored else None
        region = stored["_region"]["S"] if stored and "_region" in stored else ""
        expression = condition.expression
        if expression.startswith("attribute_exists(#k)"):
            return stored is not None and ts is None
        if expression.startswith("#ts = :ots"):
            return ts == int(values[":ots"]["N"]) and region == values[":org"]["S"]
        if expression == "attribute_not_exists(#ts)":
            return ts is None
        incoming = (int(values[":ts"]["N"]), values[":rg"]["S"])
        if ts is None:
            return True
        return (ts, region) < incoming or ("<= :rg" in expression and (ts, region) == incoming)

    def write(self, key: str, new: dict[str, Any] | None, condition: Condition | None = None) -> None:
        self.check()
        old = self.items.get(key)
        if not self.holds(condition, old):
            raise ConditionFailed(old)
        if new == old:
            return
        data: dict[str, Any] = {"Keys": {"pk": {"S": key}}, "SequenceNumber": f"{len(self.stream) + 1:021d}"}
        if old is not None:
            data["OldImage"] = old
        if new is None:
            self.items.pop(key, None)
            if old is None:
                return
        else:
            self.items[key] = new
            data["NewImage"] = new
            self.applied.append((key, new.get("v", {}).get("S", "")))
        event = "REMOVE" if new is None else ("INSERT" if old is None else "MODIFY")
        self.stream.append({"eventName": event, "dynamodb": data})

    def restart(self) -> None:
        """A new process: empty table, a new stream."""
        self.items.clear()
        self.stream.clear()
        self.arn = self.arn.rsplit(":", 1)[0] + f":{int(self.arn.rsplit(':', 1)[1]) + 1}"

    # Store
    async def put_item(self, table: str, item: dict[str, Any], *, condition: Condition | None = None) -> None:
        self.write(item["pk"]["S"], item, condition)

    async def delete_item(self, table: str, key: dict[str, Any], *, condition: Condition | None = None, return_old: bool = False) -> None:
        self.write(key["pk"]["S"], None, condition)

    async def update_item(self, table: str, key: dict[str, Any], *, update: str, names: Any, values: Any, condition: Condition | None = None, return_values: str = "NONE") -> None:
        stored = self.items.get(key["pk"]["S"])
        self.write(key["pk"]["S"], {**(stored or key), "_ts": values[":ts"], "_region": values[":rg"]}, condition)

    async def close(self) -> None:
        pass

    # Streams
    async def latest_stream(self, table: str) -> str | None:
        self.check()
        return self.arn

    async def shards(self, stream_arn: str) -> list[dict[str, Any]]:
        self.check()
        if stream_arn != self.arn:
            raise TableNotFound("no such stream")
        return [{"ShardId": "shard-1"}]

    async def shard_iterator(self, stream_arn: str, shard_id: str, after_sequence: str | None) -> str:
        self.check()
        if stream_arn != self.arn:
            raise TableNotFound("no such stream")
        self.iterator_requests.append(after_sequence)
        if after_sequence is not None and self.refuse_position:
            self.refuse_position = False
            raise StoreValidation("TrimmedDataAccessException")
        return f"{stream_arn}|{int(after_sequence) if after_sequence else 0}"

    async def records(self, iterator: str, limit: int = 1000) -> tuple[list[dict[str, Any]], str | None]:
        self.check()
        arn, position = iterator.rsplit("|", 1)
        if arn != self.arn:
            raise StoreValidation("Invalid ShardIterator")
        if self.expire_next_read:
            self.expire_next_read = False
            raise StoreError("ExpiredIteratorException: Iterator expired")
        start = int(position)
        got = self.stream[start : start + limit]
        return got, f"{arn}|{start + len(got)}"


@pytest.fixture
async def regions() -> AsyncIterator[tuple[dict[str, FakeRegion], GlobalTableEmulator]]:
    fakes = {name: FakeRegion(name) for name in ("a", "b", "c")}

    async def open_fake(region: str, endpoint: str) -> FakeRegion:
        return fakes[region]

    emulator = GlobalTableEmulator(
        {name: f"fake://{name}" for name in fakes},
        ["t"],
        poll_interval=0.001,
        discover_interval=0.05,
        open_store=open_fake,
        open_streams=open_fake,
        rng=random.Random(7),
    )
    async with emulator:
        yield fakes, emulator


def gw_put(region: FakeRegion, key: str, ts: int, value: str) -> None:
    region.write(key, {"pk": {"S": key}, "_ts": {"N": str(ts)}, "_region": {"S": region.name}, "v": {"S": value}})


async def until(check: Callable[[], bool], timeout: float = 5.0) -> None:
    async with asyncio.timeout(timeout):
        while not check():
            await asyncio.sleep(0.001)


def same(fakes: dict[str, FakeRegion]) -> bool:
    return fakes["a"].items == fakes["b"].items == fakes["c"].items


async def test_a_down_target_keeps_its_backlog_in_order_and_others_are_not_held_up(regions: Any) -> None:
    fakes, emulator = regions
    fakes["b"].down = True
    for version in range(5):
        gw_put(fakes["a"], "k", 100 + version, f"v{version}")
    gw_put(fakes["a"], "other", 200, "x")
    await until(lambda: fakes["c"].items == fakes["a"].items)
    assert emulator.backlog("a", "b") == 6 and fakes["b"].items == {}
    fakes["b"].down = False
    await emulator.wait_idle(5.0)
    assert same(fakes)
    assert [v for k, v in fakes["b"].applied if k == "k"] == ["v0", "v1", "v2", "v3", "v4"]


async def test_reorder_mode_reorders_items_but_never_one_items_changes(regions: Any) -> None:
    fakes, emulator = regions
    emulator.pause("a", "b")
    emulator.set_reorder("a", "b", True)
    for version in range(10):
        for key in ("k1", "k2", "k3"):
            gw_put(fakes["a"], key, 1000 + version * 10 + int(key[1]), f"{key}-{version}")
    await until(lambda: emulator.backlog("a", "b") == 30)
    emulator.resume("a", "b")
    await emulator.wait_idle(5.0)
    assert same(fakes)
    order = fakes["b"].applied
    for key in ("k1", "k2", "k3"):
        assert [v for k, v in order if k == key] == [f"{key}-{version}" for version in range(10)]
    assert [k for k, _ in order] != ["k1", "k2", "k3"] * 10, "different items were delivered out of order"


async def test_an_expired_iterator_reads_again_after_the_last_processed_record(regions: Any) -> None:
    fakes, emulator = regions
    gw_put(fakes["a"], "k1", 1, "one")
    await emulator.wait_idle(5.0)
    fakes["a"].expire_next_read = True
    gw_put(fakes["a"], "k2", 2, "two")
    await emulator.wait_idle(5.0)
    assert same(fakes) and set(fakes["b"].items) == {"k1", "k2"}
    assert fakes["a"].iterator_requests[-1] == f"{1:021d}", "resumed after the last processed sequence number"
    assert [k for k, _ in fakes["b"].applied] == ["k1", "k2"], "nothing lost, nothing applied twice"


async def test_a_refused_position_reads_the_shard_again_from_its_start(regions: Any) -> None:
    fakes, emulator = regions
    gw_put(fakes["a"], "k1", 1, "one")
    await emulator.wait_idle(5.0)
    fakes["a"].expire_next_read = fakes["a"].refuse_position = True
    gw_put(fakes["a"], "k2", 2, "two")
    await emulator.wait_idle(5.0)
    assert fakes["a"].iterator_requests[-2:] == [f"{1:021d}", None]
    assert same(fakes) and set(fakes["c"].items) == {"k1", "k2"}
    assert [k for k, _ in fakes["c"].applied] == ["k1", "k2"], "re-applying k1 changed nothing"


async def test_a_restarted_source_is_rediscovered_and_read_from_its_new_streams_start(regions: Any) -> None:
    fakes, emulator = regions
    gw_put(fakes["a"], "before", 1, "x")
    await emulator.wait_idle(5.0)
    fakes["a"].down = True
    await asyncio.sleep(0.02)
    fakes["a"].restart()
    fakes["a"].down = False
    gw_put(fakes["a"], "after", 2, "y")
    await until(lambda: "after" in fakes["b"].items and "after" in fakes["c"].items)


async def test_wait_idle_returns_once_earlier_writes_are_applied_while_another_region_never_stops_writing(
    regions: Any,
) -> None:
    """The local cluster's gateways heartbeat into a replicated table ten times a second: the streams are never
    quiet, and waiting for a moment when they all are timed out on a busy machine. Later writes do not count."""
    fakes, emulator = regions
    for n in range(20):
        gw_put(fakes["a"], f"k{n}", 100 + n, f"v{n}")
    stop = asyncio.Event()

    async def heartbeats() -> None:
        beat = 0
        while not stop.is_set():
            beat += 1
            gw_put(fakes["c"], "heartbeat", 1000 + beat, f"beat {beat}")
            await asyncio.sleep(0)  # a write at every turn of the loop: never a pass that reads nothing everywhere

    beating = asyncio.create_task(heartbeats())
    try:
        await emulator.wait_idle(2.0)
        assert all(fakes[r].items.get(f"k{n}") == fakes["a"].items[f"k{n}"] for r in "bc" for n in range(20))
        assert not beating.done()
    finally:
        stop.set()
        await beating


async def test_unstamped_writes_in_two_regions_converge(regions: Any) -> None:
    fakes, emulator = regions
    fakes["a"].write("k", {"pk": {"S": "k"}, "v": {"S": "from a"}})
    fakes["b"].write("k", {"pk": {"S": "k"}, "v": {"S": "from b"}})
    await emulator.wait_idle(5.0)
    assert same(fakes) and "_ts" in fakes["a"].items["k"]


async def test_a_delete_and_its_echoes_settle(regions: Any) -> None:
    fakes, emulator = regions
    gw_put(fakes["c"], "k", 5, "x")
    await emulator.wait_idle(5.0)
    fakes["c"].write("k", None)
    await emulator.wait_idle(5.0)
    assert fakes["a"].items == fakes["b"].items == fakes["c"].items == {}


async def test_lag_holds_one_pair_only_and_pause_loses_nothing(regions: Any) -> None:
    fakes, emulator = regions
    emulator.set_lag("a", "b", 0.2)
    emulator.pause("a", "c")
    started = asyncio.get_running_loop().time()
    for i in range(5):
        gw_put(fakes["a"], f"k{i}", i + 1, "x")
    await until(lambda: emulator.backlog("a", "c") == 5)
    assert fakes["b"].items == {} and fakes["c"].items == {}
    await until(lambda: len(fakes["b"].items) == 5)
    assert asyncio.get_running_loop().time() - started >= 0.2
    assert fakes["c"].items == {}, "paused"
    emulator.resume("a", "c")
    await emulator.wait_idle(5.0)
    assert same(fakes)
