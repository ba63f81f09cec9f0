"""A region's promises in its control-table item (gateway/lease/book.py): one record, compare-and-set, durable."""

from __future__ import annotations

from gateway.lease.book import PROMISES_PREFIX, PromiseBook
from gateway.lease.promises import Known, Promise
from tests.fakes import FakeClock, FakeTables

TABLE = "routing"


def book(tables: FakeTables, clock: FakeClock, region: str = "eu-west-1") -> PromiseBook:
    return PromiseBook(tables, TABLE, region, clock, lease=2.0, max_drift=0.2)


def nothing_known(scope: str) -> Known | None:
    return None


async def test_a_grant_is_written_in_the_regions_own_item_and_binds_every_gateway_of_the_region():
    tables, clock = FakeTables(TABLE), FakeClock()
    one, other = book(tables, clock), book(tables, clock)  # two gateways of eu-west-1
    assert await one.grant("us-east-1", {"default": 3}, nothing_known) == (["default"], {})
    item = tables.item(TABLE, PROMISES_PREFIX + "eu-west-1")
    assert item is not None and item["kind"] == {"S": "promises"} and item["version"] == {"N": "1"}
    granted, refused = await other.grant("ap-southeast-1", {"default": 4}, nothing_known)
    assert granted == [] and "promised to us-east-1" in refused["default"]
    clock.advance(2.21)  # the lease and the drift margin: no gateway of the region is bound any more
    assert await other.grant("ap-southeast-1", {"default": 4}, nothing_known) == (["default"], {})
    assert (await one.promises())["default"] == Promise("ap-southeast-1", 4, clock.wall_ms() + 2000)


async def test_a_write_that_lost_the_race_reads_again_and_decides_on_what_the_other_gateway_wrote():
    tables, clock = FakeTables(TABLE), FakeClock()
    one, other = book(tables, clock), book(tables, clock)
    real_get = tables.get_item
    raced = False

    async def get_item(table, key, **kw):
        nonlocal raced
        found = await real_get(table, key, **kw)
        if not raced:  # between this read and its write, the region's other gateway promises us-east-1
            raced = True
            await other.grant("us-east-1", {"default": 3}, nothing_known)
        return found

    tables.get_item = get_item
    granted, refused = await one.grant("ap-southeast-1", {"default": 4}, nothing_known)
    assert granted == [] and "promised to us-east-1" in refused["default"]
    assert (await other.promises())["default"].holder == "us-east-1"


async def test_release_ends_the_holders_promise_only():
    tables, clock = FakeTables(TABLE), FakeClock()
    b = book(tables, clock)
    await b.grant("us-east-1", {"default": 3, "view#users": 3}, nothing_known)
    await b.release("ap-southeast-1", "default", 3)  # not the holder: nothing changes
    await b.release("us-east-1", "default", 3)
    assert set(await b.promises()) == {"view#users"}
    assert await b.grant("ap-southeast-1", {"default": 4}, nothing_known) == (["default"], {})


async def test_a_release_by_another_region_or_for_an_older_epoch_writes_nothing():
    tables, clock = FakeTables(TABLE), FakeClock()
    b = book(tables, clock)
    await b.grant("us-east-1", {"default": 3}, nothing_known)
    before = tables.item(TABLE, PROMISES_PREFIX + "eu-west-1")
    await b.release("ap-southeast-1", "default", 3)  # not the holder
    await b.release("us-east-1", "default", 2)  # an older epoch's handover: the promise is for epoch 3
    assert tables.item(TABLE, PROMISES_PREFIX + "eu-west-1") == before
    assert (await b.promises())["default"] == Promise("us-east-1", 3, clock.wall_ms() + 2000)


async def test_a_release_that_races_another_gateways_write_reads_again_and_ends_the_promise():
    tables, clock = FakeTables(TABLE), FakeClock()
    one, other = book(tables, clock), book(tables, clock)
    await one.grant("us-east-1", {"default": 3, "view#users": 3}, nothing_known)
    real_get, raced = tables.get_item, False

    async def get_item(table, key, **kw):
        nonlocal raced
        found = await real_get(table, key, **kw)
        if not raced:  # the region's other gateway renews us-east-1's promises between this read and its write
            raced = True
            clock.advance(0.5)
            await other.grant("us-east-1", {"default": 3, "view#users": 3}, nothing_known)
        return found

    tables.get_item = get_item
    await one.release("us-east-1", "default", 3)
    assert set(await other.promises()) == {"view#users"}


async def test_a_promise_binds_until_its_lease_and_the_drift_margin_have_passed_to_the_millisecond():
    tables, clock = FakeTables(TABLE), FakeClock()
    b = PromiseBook(tables, TABLE, "eu-west-1", clock, lease=2.0, max_drift=1.5)
    await b.grant("us-east-1", {"default": 3}, nothing_known)
    clock.advance(3.5)  # lease 2 s + drift 1.5 s: a gateway whose clock is 1.5 s behind may still be bound
    granted, refused = await b.grant("ap-southeast-1", {"default": 4}, nothing_known)
    assert granted == [] and refused["default"] == "promised to us-east-1 (epoch 3) for -1500 ms more"
    clock.advance(0.001)
    assert await b.grant("ap-southeast-1", {"default": 4}, nothing_known) == (["default"], {})


async def test_what_the_region_knows_of_each_scope_decides_its_promise():
    tables, clock = FakeTables(TABLE), FakeClock()
    b = book(tables, clock)

    def known(scope: str) -> Known | None:
        return Known(5, "us-east-1") if scope == "default" else None

    granted, refused = await b.grant("ap-southeast-1", {"default": 3, "view#users": 3}, known)
    assert granted == ["view#users"]
    assert refused == {"default": "epoch 3 is over: this region knows epoch 5 (primary us-east-1)"}


async def test_a_book_whose_item_keeps_changing_refuses_after_its_attempts_and_reads_strongly_each_time():
    tables, clock = FakeTables(TABLE), FakeClock()
    one, other = book(tables, clock), book(tables, clock)
    real_get, reads = tables.get_item, []

    async def get_item(table, key, **kw):
        reads.append(kw.get("consistent"))
        found = await real_get(table, key, **kw)
        if len(reads) % 2:  # every read of ``one`` is overtaken by a write of ``other`` before ``one`` writes
            await other.grant("us-east-1", {f"s{len(reads)}": 3}, nothing_known)
        return found

    tables.get_item = get_item
    assert await one.grant("us-east-1", {"default": 3}, nothing_known) == (
        [], {"default": "the region's promises kept changing; ask again"})
    assert reads and all(consistent is True for consistent in reads)
