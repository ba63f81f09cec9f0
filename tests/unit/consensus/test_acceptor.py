"""One region's acceptor slots in its control-table replica (gateway/consensus/acceptor.py)."""

from __future__ import annotations

from gateway.consensus.acceptor import ACCEPTOR_PREFIX, Acceptor
from gateway.consensus.ballots import Slot, ballot
from gateway.routing.rules import Rule
from tests.fakes import FakeTables

TABLE = "routing"
RULE = Rule(scope="default", mode="single_primary", primary="us-east-1", epoch=3, version=7, updated_by="ann")


async def test_a_slot_is_one_item_of_the_regions_own_and_every_writer_of_the_region_sees_it():
    tables = FakeTables(TABLE)
    tables.put(TABLE, RULE.to_item(ts_us=1, region="us-east-1"))
    one, other = Acceptor(tables, TABLE, "eu-west-1"), Acceptor(tables, TABLE, "eu-west-1")
    b1, b2 = ballot(1, "a"), ballot(2, "b")
    answer = await one.prepare("default", b1)
    assert answer.ok and answer.slot == Slot(b1) and answer.replica == RULE
    item = tables.item(TABLE, f"{ACCEPTOR_PREFIX}eu-west-1#default")
    assert item is not None and item["kind"] == {"S": "acceptor"} and item["rev"] == {"N": "1"}
    assert (await other.prepare("default", b1)).ok is False  # the same ballot again, through another writer
    assert (await other.accept("default", b2, RULE)).ok
    assert (await one.accept("default", b1, RULE)).ok is False
    assert await one.slot("default") == Slot(b2, b2, RULE)
    assert (await Acceptor(tables, TABLE, "us-east-1").slot("default")) == Slot()  # another region's slot is its own


async def test_a_write_that_lost_the_race_reads_again_and_decides_on_what_the_other_writer_wrote():
    tables = FakeTables(TABLE)
    acceptor = Acceptor(tables, TABLE, "eu-west-1")
    real_get = tables.get_item
    raced = False

    async def get_item(table, key, **kw):
        nonlocal raced
        found = await real_get(table, key, **kw)
        if not raced and key["pk"]["S"].startswith(ACCEPTOR_PREFIX):
            raced = True  # another proposer promises a higher ballot between this read and its write
            await Acceptor(tables, TABLE, "eu-west-1").prepare("default", ballot(5, "other"))
        return found

    tables.get_item = get_item
    answer = await acceptor.prepare("default", ballot(3, "mine"))
    assert answer.ok is False and answer.slot.promised == ballot(5, "other")


async def test_a_hand_edited_slot_reads_as_nothing_accepted_and_is_overwritten_by_the_next_accept():
    tables = FakeTables(TABLE)
    tables.put(TABLE, {"pk": {"S": f"{ACCEPTOR_PREFIX}eu-west-1#default"}, "rev": {"N": "4"},
                       "promised": {"S": ballot(2, "a")}, "value": {"S": "not json"}})
    acceptor = Acceptor(tables, TABLE, "eu-west-1")
    assert await acceptor.slot("default") == Slot(ballot(2, "a"))
    assert (await acceptor.accept("default", ballot(3, "a"), RULE)).ok
    assert await acceptor.slot("default") == Slot(ballot(3, "a"), ballot(3, "a"), RULE)
