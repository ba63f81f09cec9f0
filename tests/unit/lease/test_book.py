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
