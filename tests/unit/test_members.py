"""Fleet view and replication lag from heartbeats, with a fake clock and an in-memory members table."""

import asyncio

from gateway.config import from_dict
from gateway.members import Member, Membership
from gateway.obs.metrics import Metrics
from tests.fakes import FakeClock

REGIONS = {
    r: {"downstream": f"127.0.0.1:{p}", "peer": f"127.0.0.1:{p + 1}"}
    for r, p in (("us-east-1", 8700), ("eu-west-1", 8710), ("ap-southeast-1", 8720))
}


def config(region: str = "eu-west-1"):
    return from_dict(
        {
            "gateway": {"region": region},
            "regions": REGIONS,
            "members": {"heartbeat_interval": 0.1, "observe_interval": 0.05, "expiry": 5.0},
            "views": {"items": {"table": "features_items"}},
        }
    )


class MembersTable:
    def __init__(self) -> None:
        self.items: dict[str, dict] = {}

    async def put_item(self, table, item, *, condition=None):
        self.items[item["pk"]["S"]] = item

    async def delete_item(self, table, key, *, condition=None, return_old=False):
        self.items.pop(key["pk"]["S"], None)

    async def scan(self, table, *, consistent=False, page_size=None):
        return list(self.items.values())


def gauge(metrics: Metrics, region: str) -> float:
    return metrics.registry.get_sample_value("gateway_replication_lag_seconds", {"from_region": region})


async def test_heartbeats_make_the_fleet_view():
    clock, table, metrics = FakeClock(), MembersTable(), Metrics()
    us = Membership(config("us-east-1"), table, clock, metrics, instance="us-1")
    eu = Membership(config("eu-west-1"), table, clock, metrics, instance="eu-1")
    await us.heartbeat()
    await eu.heartbeat()
    await eu.observe()
    assert [m.instance for m in eu.members()] == ["eu-1", "us-1"]
    body = eu.describe()
    assert body["region"] == "eu-west-1" and {m["region"] for m in body["members"]} == {"us-east-1", "eu-west-1"}
    await us.leave()
    await eu.observe()
    assert [m.instance for m in eu.members()] == ["eu-1"]


async def test_expired_members_are_gone():
    clock, table = FakeClock(), MembersTable()
    us = Membership(config("us-east-1"), table, clock, Metrics(), instance="us-1")
    eu = Membership(config("eu-west-1"), table, clock, Metrics(), instance="eu-1")
    await us.heartbeat()
    clock.advance(5.1)
    await eu.observe()
    assert eu.members() == []


def heartbeat_at(clock: FakeClock, seconds_ago: float) -> int:
    return clock.wall_us() - int(seconds_ago * 1e6)


def member(region: str, hb_us: int) -> Member:
    return Member(f"{region}-1", region, "", "", 0, hb_us)


async def test_lag_is_the_age_of_a_heartbeat_when_first_seen_and_grows_when_none_arrive():
    clock, metrics = FakeClock(), Metrics()
    eu = Membership(config("eu-west-1"), MembersTable(), clock, metrics, instance="eu-1")
    # Before any heartbeat is seen, the gauges exist (rates and alerts work from the start).
    assert gauge(metrics, "us-east-1") == 0.0 and gauge(metrics, "ap-southeast-1") == 0.0
    eu.update([member("us-east-1", heartbeat_at(clock, 0.3))])
    assert abs(eu.lag()["us-east-1"] - 0.3) < 1e-6
    assert abs(gauge(metrics, "us-east-1") - 0.3) < 1e-6
    # A fresher heartbeat arriving with the same delay keeps the lag at 0.3.
    clock.advance(0.1)
    eu.update([member("us-east-1", heartbeat_at(clock, 0.3))])
    assert abs(eu.lag()["us-east-1"] - 0.3) < 1e-6
    # Replication stops: no newer heartbeat; after 2 s the lag shows it.
    clock.advance(2.0)
    seen = eu.members()[0].heartbeat_at_us
    eu.update([member("us-east-1", seen)])
    assert 2.0 <= eu.lag()["us-east-1"] <= 2.3
    # Replication resumes with no delay: the lag drops back.
    eu.update([member("us-east-1", clock.wall_us())])
    assert eu.lag()["us-east-1"] == 0.0


async def test_the_sampled_lag_is_the_last_measured_one_and_stays_while_a_region_is_quiet():
    clock = FakeClock()
    eu = Membership(config("eu-west-1"), MembersTable(), clock, Metrics(), instance="eu-1")
    eu.update([member("us-east-1", heartbeat_at(clock, 0.4))])
    # us-east-1 stops: its newest heartbeat stays the one seen; the lag grows, the sample does not.
    last = eu.members()[0].heartbeat_at_us
    clock.advance(3.0)
    eu.update([member("us-east-1", last)])
    assert eu.lag()["us-east-1"] > 2.5
    item = eu.item()
    assert item["replication_lag_sampled"] == {"M": {"us-east-1": {"N": "0.400"}}}
    assert Member.from_item(item).replication_lag_sampled == {"us-east-1": 0.4}


async def test_own_region_is_not_a_replication_source():
    clock = FakeClock()
    eu = Membership(config("eu-west-1"), MembersTable(), clock, Metrics(), instance="eu-1")
    eu.update([member("eu-west-1", heartbeat_at(clock, 1.0))])
    assert eu.lag() == {}


def test_member_items_carry_replication_order_and_ttl():
    clock = FakeClock()
    item = Membership(config("eu-west-1"), MembersTable(), clock, Metrics(), instance="eu-1").item()
    assert item["_ts"] == item["heartbeat_at"] and item["_region"] == {"S": "eu-west-1"}
    assert int(item["expires_at"]["N"]) == int(clock.now) + 5
    assert Member.from_item(item).peer == "127.0.0.1:8711"


async def test_leaving_removes_the_item_and_never_hangs_on_a_stuck_store():
    table = MembersTable()
    m = Membership(config(), table, FakeClock(), Metrics())
    await m.heartbeat()
    await m.leave()
    assert table.items == {}

    class Stuck(MembersTable):
        async def delete_item(self, table, key, *, condition=None, return_old=False):
            await asyncio.Event().wait()

    stuck = Membership(config(), Stuck(), FakeClock(), Metrics())
    await asyncio.wait_for(stuck.leave(timeout=0.05), 5)  # returns after its own bound, well within 5 s
