"""The global-table emulator between three real DynamoDB Local regions: what a user of global tables relies on."""

from __future__ import annotations

import asyncio
import time
import uuid
from collections.abc import AsyncIterator, Awaitable, Callable
from dataclasses import dataclass
from typing import Any

import pytest

from gateway.local.dynamodb_local import DynamoDBLocal
from gateway.local.emulator import GlobalTableEmulator
from gateway.store.botocore import BotocoreStore
from gateway.store.lean import LeanStore, open_lean_store

REGIONS = ("ap-south-1", "eu-west-1", "us-east-1")
A, B, C = REGIONS


@dataclass
class Cluster:
    ddb: dict[str, DynamoDBLocal]
    stores: dict[str, LeanStore]
    emulator: GlobalTableEmulator
    table: str

    async def put(self, region: str, key: str, ts: int | None = None, origin: str | None = None, **features: Any) -> None:
        item: dict[str, Any] = {"pk": {"S": key}, **{k: {"S": str(v)} for k, v in features.items()}}
        if ts is not None:
            item["_ts"] = {"N": str(ts)}
            item["_region"] = {"S": origin or region}
        await self.stores[region].put_item(self.table, item)

    async def get(self, region: str, key: str) -> dict[str, Any] | None:
        return await self.stores[region].get_item(self.table, {"pk": {"S": key}}, consistent=True)


async def create_table(endpoint: str, table: str) -> None:
    store = await BotocoreStore.open("us-east-1", endpoint)
    try:
        await store.create_table(table)
    finally:
        await store.close()


@pytest.fixture(scope="module")
async def cluster(tmp_path_factory: pytest.TempPathFactory) -> AsyncIterator[Cluster]:
    tmp = tmp_path_factory.mktemp("emulator")
    table = f"emulated_{uuid.uuid4().hex[:8]}"
    ddb = {region: DynamoDBLocal(heap_mb=256, log_path=tmp / f"{region}.log") for region in REGIONS}
    stores: dict[str, LeanStore] = {}
    emulator: GlobalTableEmulator | None = None
    try:
        # The JVMs start in parallel: most of this module's wall time is their start.
        await asyncio.gather(*(asyncio.to_thread(d.start) for d in ddb.values()))
        for region, d in ddb.items():
            await create_table(d.endpoint, table)
            stores[region] = await open_lean_store(region, d.endpoint)
        emulator = GlobalTableEmulator({region: d.endpoint for region, d in ddb.items()}, [table])
        await emulator.start()
        yield Cluster(ddb, stores, emulator, table)
    finally:
        if emulator is not None:
            await emulator.stop()
        for store in stores.values():
            await store.close()
        for d in ddb.values():  # by PID, including a region restarted by a test
            d.stop()


async def eventually(check: Callable[[], Awaitable[bool]], timeout: float = 10.0, what: str = "condition") -> float:
    """Polls ``check`` until it holds; the seconds it took. Fails after ``timeout``."""
    started = time.monotonic()
    while not await check():
        if time.monotonic() - started > timeout:
            pytest.fail(f"{what} did not hold within {timeout:g} s")
        await asyncio.sleep(0.02)
    return time.monotonic() - started


def now_us() -> int:
    return time.time_ns() // 1000


def key(prefix: str) -> str:
    return f"{prefix}-{uuid.uuid4().hex[:10]}"


async def same_everywhere(cluster: Cluster, k: str, regions: tuple[str, ...] = REGIONS) -> dict[str, Any] | None:
    """The item if every region holds the same one (or all lack it); raises ``AssertionError`` if they differ."""
    items = [await cluster.get(region, k) for region in regions]
    assert all(i == items[0] for i in items), items
    return items[0]


async def converged(cluster: Cluster, k: str, expect: Callable[[dict[str, Any] | None], bool]) -> bool:
    items = [await cluster.get(region, k) for region in REGIONS]
    return all(i == items[0] for i in items) and expect(items[0])


async def test_a_put_in_each_region_appears_in_the_other_two(cluster: Cluster) -> None:
    keys = {region: key(f"put-{region}") for region in REGIONS}
    for region, k in keys.items():
        await cluster.put(region, k, now_us(), feature=region)
    for region, k in keys.items():
        await eventually(
            lambda k=k, region=region: converged(cluster, k, lambda i: i is not None and i["feature"]["S"] == region),
            what=f"{region}'s put everywhere",
        )


async def test_wait_idle_returns_once_every_change_is_applied(cluster: Cluster) -> None:
    keys = [key("idle") for _ in range(10)]
    for region in REGIONS:
        for k in keys:
            await cluster.put(region, k, now_us(), value=region)
    await cluster.emulator.wait_idle(20.0)
    for k in keys:
        item = await same_everywhere(cluster, k)
        assert item is not None and item["value"]["S"] == item["_region"]["S"]
    assert all(cluster.emulator.backlog(s, t) == 0 for s in REGIONS for t in REGIONS if s != t)


async def test_concurrent_writes_to_one_key_converge_to_the_higher_ts(cluster: Cluster) -> None:
    k = key("race")
    ts = now_us()
    # The older write lands last in its own region, so replication, not arrival order, must decide.
    await asyncio.gather(cluster.put(A, k, ts + 10, value="newer"), cluster.put(B, k, ts, value="older"))
    # Wait for the event itself, replication done (every backlog empty, every stream read empty since), then
    # look once: a poll for the expected state would also pass on a region that flips back later. The bound is
    # generous because DynamoDB Local's streams answer in seconds on two busy cores.
    await cluster.emulator.wait_idle(30.0)
    item = await same_everywhere(cluster, k)
    assert item is not None and item["value"]["S"] == "newer"
    assert item["_ts"] == {"N": str(ts + 10)} and item["_region"] == {"S": A}


async def test_equal_ts_is_broken_by_region_everywhere(cluster: Cluster) -> None:
    k = key("tie")
    ts = now_us()
    await asyncio.gather(*(cluster.put(region, k, ts, value=region) for region in REGIONS))
    await cluster.emulator.wait_idle(30.0)  # replication done (as above), then one look
    item = await same_everywhere(cluster, k)
    assert item is not None and item["value"]["S"] == max(REGIONS)


async def test_a_delete_replicates(cluster: Cluster) -> None:
    k = key("delete")
    await cluster.put(B, k, now_us(), value="x")
    await eventually(lambda: converged(cluster, k, lambda i: i is not None), what="put everywhere")
    await cluster.stores[B].delete_item(cluster.table, {"pk": {"S": k}})
    await eventually(lambda: converged(cluster, k, lambda i: i is None), what="delete everywhere")


async def test_a_newer_put_survives_an_older_delete(cluster: Cluster) -> None:
    k = key("delete-race")
    ts = now_us()
    await cluster.put(A, k, ts, value="first")
    await eventually(lambda: converged(cluster, k, lambda i: i is not None), what="first put everywhere")
    cluster.emulator.pause(A, B)
    await cluster.stores[A].delete_item(cluster.table, {"pk": {"S": k}})
    await cluster.put(B, k, ts + 5, origin=B, value="second")
    cluster.emulator.resume(A, B)
    await eventually(
        lambda: converged(cluster, k, lambda i: i is not None and i["value"]["S"] == "second"),
        what="the newer put everywhere",
    )


async def test_a_paused_pair_catches_up_after_resume_with_nothing_lost(cluster: Cluster) -> None:
    keys = [key("paused") for _ in range(50)]
    cluster.emulator.pause(A, B)
    try:
        for i, k in enumerate(keys):
            await cluster.put(A, k, now_us(), n=i)

        async def all_in(region: str) -> bool:
            return all([await cluster.get(region, k) is not None for k in keys])

        # C receiving all of them proves the emulator has read them; B must still lack every one.
        await eventually(lambda: all_in(C), what="the writes in the unpaused region")
        assert [k for k in keys if await cluster.get(B, k) is not None] == []
        assert cluster.emulator.backlog(A, B) >= 50
    finally:
        cluster.emulator.resume(A, B)
    await eventually(lambda: all_in(B), what="the paused writes after resume")
    for i, k in enumerate(keys):
        item = await same_everywhere(cluster, k)
        assert item is not None and item["n"] == {"S": str(i)}


async def test_reordered_delivery_keeps_each_items_order(cluster: Cluster) -> None:
    keys = [key("reorder") for _ in range(4)]
    cluster.emulator.pause(A, C)
    cluster.emulator.set_reorder(A, C, True)
    try:
        for version in range(8):
            for k in keys:
                await cluster.put(A, k, now_us(), version=version)

        async def backlog_filled() -> bool:
            return cluster.emulator.backlog(A, C) >= 32

        await eventually(backlog_filled, what="the backlog to fill")
        cluster.emulator.resume(A, C)
        for k in keys:
            await eventually(
                lambda k=k: converged(cluster, k, lambda i: i is not None and i["version"]["S"] == "7"),
                what="the last version everywhere",
            )
    finally:
        cluster.emulator.set_reorder(A, C, False)
        cluster.emulator.resume(A, C)


async def test_an_item_written_without_ts_replicates_and_converges(cluster: Cluster) -> None:
    k = key("raw")
    await cluster.put(B, k, value="written past the gateway")
    await eventually(lambda: converged(cluster, k, lambda i: i is not None and "_ts" in i), what="the stamped item everywhere")
    item = await same_everywhere(cluster, k)
    assert item is not None and item["value"]["S"] == "written past the gateway" and item["_region"] == {"S": B}


async def test_an_update_past_the_gateway_on_a_replicated_copy_replicates(cluster: Cluster) -> None:
    k = key("console")
    await cluster.put(A, k, now_us(), value="from the gateway")
    await eventually(lambda: converged(cluster, k, lambda i: i is not None), what="the put everywhere")
    # An UpdateItem from a tool in C keeps _ts/_region of A's write: it must not pass for an echo.
    await cluster.stores[C].update_item(
        cluster.table, {"pk": {"S": k}}, update="SET #v = :v", names={"#v": "value"}, values={":v": {"S": "from a tool"}}
    )
    await eventually(
        lambda: converged(cluster, k, lambda i: i is not None and i["value"]["S"] == "from a tool"),
        what="the tool's update everywhere",
    )


async def test_injected_lag_is_observed(cluster: Cluster) -> None:
    cluster.emulator.set_lag(A, B, 0.3)
    try:
        k = key("lag")
        started = time.monotonic()
        await cluster.put(A, k, now_us(), value="late")
        await asyncio.sleep(max(0.0, started + 0.1 - time.monotonic()))
        assert await cluster.get(B, k) is None, "arrived before the injected lag"
        took = await eventually(lambda: cluster.get(B, k), timeout=1.0, what="the lagged write") + 0.1
        assert took >= 0.25
        assert max(cluster.emulator.stats(A, B).delays) >= 0.3, "the replication delay is recorded"
    finally:
        cluster.emulator.set_lag(A, B, 0.0)


async def test_a_stopped_target_region_receives_its_backlog_when_it_returns(cluster: Cluster) -> None:
    down = cluster.ddb[C]
    port = down.port
    keys = [key("backlog") for _ in range(20)]
    await asyncio.to_thread(down.stop)
    try:
        for i, k in enumerate(keys):
            await cluster.put(A, k, now_us(), n=i)
        for k in keys:
            await eventually(lambda k=k: cluster.get(B, k), what="the write in the live region")
        assert cluster.emulator.backlog(A, C) >= len(keys), "the down region's changes are held"
    finally:
        # The same port, a new process: its in-memory database and stream start empty.
        cluster.ddb[C] = DynamoDBLocal(port, heap_mb=256, log_path=down.log_path)
        await asyncio.to_thread(cluster.ddb[C].start)
        await create_table(cluster.ddb[C].endpoint, cluster.table)
    for i, k in enumerate(keys):
        await eventually(lambda k=k: cluster.get(C, k), timeout=20.0, what="the backlog in the returned region")
        item = await same_everywhere(cluster, k)
        assert item is not None and item["n"] == {"S": str(i)}
    # And the returned region replicates again: its own stream was re-discovered.
    k = key("after-restart")
    await cluster.put(C, k, now_us(), value="back")
    await eventually(lambda: converged(cluster, k, lambda i: i is not None), timeout=20.0, what="a write from the returned region")


async def test_items_with_empty_maps_reach_every_region_whole(cluster: Cluster) -> None:
    """DynamoDB Local's stream renders an empty map as ``{}``; the item must still arrive, types and all."""
    k = key("empty")
    item = {
        "pk": {"S": k}, "_ts": {"N": str(now_us())}, "_region": {"S": A},
        "m": {"M": {}}, "l": {"L": []}, "s": {"S": ""},
        "nested": {"M": {"inner": {"M": {}}, "list": {"L": [{"M": {}}, {"L": []}]}}},
    }
    await cluster.stores[A].put_item(cluster.table, item)
    await eventually(lambda: converged(cluster, k, lambda stored: stored == item), what="the item with empty maps everywhere")
    assert all(cluster.emulator.stats(A, t).failed == 0 for t in (B, C))
