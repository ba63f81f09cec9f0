"""The decisions of the dispatcher: the write condition's answers, where writes go, and cross-region reads.

The store answers like DynamoDB evaluates the write condition; peers are scripted (tests/fakes.py).
"""

import asyncio

import pytest

from gateway.config import BufferConfig, from_dict
from gateway.dispatcher import Dispatcher
from gateway.errors import (
    ConditionFailed,
    Draining,
    NoRoutingRule,
    NotPrimary,
    PeerError,
    PrimaryUnreachable,
    StoreThrottled,
    TableNotFound,
    Unavailable,
)
from gateway.features.items import Version
from gateway.features.records import delete_record, write_record
from gateway.obs.metrics import Metrics
from gateway.peer.client import MAY_HAVE_LANDED
from gateway.routing.rules import ANY_REGION, DEFAULT_SCOPE, SINGLE_PRIMARY, SWITCHING, Rule
from gateway.store.read_coalescer import ReadCoalescer
from gateway.switch.fence import AckLog
from gateway.switch.participant import SwitchParticipant
from gateway.switch.write_buffer import WriteBuffer
from tests.fakes import FakeClock, FakePeers, RecordingSleep, StaticRouting, holds

CONFIG = from_dict({"gateway": {"region": "eu-west-1"}, "views": {"items": {"table": "features_items"}}})
VIEW = CONFIG.views["items"]


class ConditionalStore:
    """The view's one table, an item per key; evaluates the condition each write carries, from its text, as
    DynamoDB would (``holds``). Another table does not exist here, as in DynamoDB; the old item comes back only
    when asked for (``ReturnValues=ALL_OLD``)."""

    def __init__(self, table: str = "features_items") -> None:
        self.table = table
        self.items: dict[str, dict] = {}
        self.fail_keys: set[str] = set()
        self.reads: list[bool] = []  # consistent? per read call

    def _check(self, table, key, condition):
        if table != self.table:
            raise TableNotFound(f"no table {table!r}")
        old = self.items.get(key)
        if key in self.fail_keys:
            raise StoreThrottled("throttled.")
        if condition is not None and not holds(condition, old):
            raise ConditionFailed(old)
        return old

    async def put_item(self, table, item, *, condition=None):
        key = item["pk"]["S"]
        self._check(table, key, condition)
        self.items[key] = item

    async def delete_item(self, table, key, *, condition=None, return_old=False):
        k = key["pk"]["S"]
        old = self._check(table, k, condition)
        self.items.pop(k, None)
        return old if return_old is True else None

    async def get_item(self, table, key, *, consistent=False, projection=None):
        self._check(table, None, None)
        self.reads.append(consistent)
        return self.items.get(key["pk"]["S"])

    async def batch_get_item(self, table, keys, *, consistent=False, projection=None):
        self._check(table, None, None)
        self.reads.append(consistent)
        return [self.items.get(k["pk"]["S"]) for k in keys]


HOME = Rule(DEFAULT_SCOPE, SINGLE_PRIMARY, "eu-west-1", epoch=0)


def make_dispatcher(store, *rules, peers=None, sleep=None, routing=None, leases=None):
    clock = FakeClock()
    routing = routing or StaticRouting(*(rules or (HOME,)))
    buffer = WriteBuffer(BufferConfig(), clock)
    acks = AckLog(clock, CONFIG.switch.fence_window, CONFIG.switch.fence_max_keys)
    dispatcher = Dispatcher(
        CONFIG, store, ReadCoalescer(store), clock, routing, peers or FakePeers(), Metrics(), buffer, acks,
        sleep=sleep or RecordingSleep(), leases=leases,
    )
    SwitchParticipant(CONFIG.region, routing, store, acks, buffer)  # buffering follows the rule, as in a gateway
    return dispatcher, clock


async def test_writes_are_stamped_and_answered():
    store = ConditionalStore()
    dispatcher, clock = make_dispatcher(store)
    answer = await dispatcher.write(write_record(VIEW, "k", {"a": 1}, 1000, "r1", 0))
    assert answer == {"applied": True, "version": f"0.{clock.wall_us()}.eu-west-1", "primary": "eu-west-1", "forwarded": False}
    stored = store.items["k"]
    assert stored["_region"] == {"S": "eu-west-1"} and stored["_req"] == {"S": "r1"} and stored["_event_ts"] == {"N": "1000"}


async def test_refusals_name_their_reason_and_the_stored_version():
    store = ConditionalStore()
    dispatcher, _ = make_dispatcher(store)
    first = await dispatcher.write(write_record(VIEW, "k", {"a": 1}, 1000, "r1", 0))
    again = await dispatcher.write(write_record(VIEW, "k", {"a": 2}, 2000, "r1", 0))
    older = await dispatcher.write(write_record(VIEW, "k", {"a": 3}, 999, "r2", 0))
    assert (again["applied"], again["reason"], again["version"]) == (False, "duplicate", first["version"])
    assert (older["applied"], older["reason"], older["version"]) == (False, "stale_event_time", first["version"])


async def test_the_write_condition_orders_by_event_time_and_refuses_a_replayed_idempotency_key():
    store = ConditionalStore()
    dispatcher, clock = make_dispatcher(store)
    first = await dispatcher.write(write_record(VIEW, "k", {"a": 1}, 1000, "r1", 0))
    clock.advance(0.001)  # the retry is stamped later, so only the idempotency clause can refuse it
    replay = await dispatcher.write(write_record(VIEW, "k", {"a": 1}, 1000, "r1", 0))  # a client retry
    clock.advance(0.001)
    assert first["applied"] and (replay["applied"], replay["reason"]) == (False, "duplicate")
    tie = await dispatcher.write(write_record(VIEW, "k", {"a": 2}, 1000, "r2", 0))  # same event time: applied
    newer = await dispatcher.write(write_record(VIEW, "k", {"a": 3}, 1001, "r3", 0))
    older = await dispatcher.write(write_record(VIEW, "k", {"a": 4}, 1000, "r4", 0))
    assert (tie["applied"], newer["applied"], older["applied"], older["reason"]) == (True, True, False, "stale_event_time")
    assert (store.items["k"]["a"], store.items["k"]["_req"], older["version"]) == ({"N": "3"}, {"S": "r3"}, newer["version"])


async def test_a_delete_carries_the_same_condition():
    store = ConditionalStore()
    dispatcher, _ = make_dispatcher(store)
    await dispatcher.write(write_record(VIEW, "k", {"a": 1}, 1000, "r1", 0))
    stale = await dispatcher.write(delete_record(VIEW, "k", 999, "d1", 0))
    replayed = await dispatcher.write(delete_record(VIEW, "k", 2000, "r1", 0))
    assert (stale["applied"], stale["reason"], replayed["applied"], replayed["reason"]) == (
        False, "stale_event_time", False, "duplicate"
    )
    assert "k" in store.items
    deleted = await dispatcher.write(delete_record(VIEW, "k", 1000, "d2", 0))
    assert deleted["applied"] and "k" not in store.items


async def test_delete_of_nothing_is_not_applied():
    dispatcher, _ = make_dispatcher(ConditionalStore())
    answer = await dispatcher.write(delete_record(VIEW, "missing", 5, "d1", 0))
    assert answer["applied"] is False and answer["reason"] == "not_found" and answer["version"] is None


async def test_batch_results_keep_order_and_isolate_failures():
    store = ConditionalStore()
    store.fail_keys.add("b")
    dispatcher, _ = make_dispatcher(store)
    records = [write_record(VIEW, k, {"v": k}, 1, None, 0) for k in ("a", "b", "c")]
    results = await dispatcher.write_many(records)
    assert [r["key"] for r in results] == ["a", "b", "c"]
    assert results[0]["applied"] and results[2]["applied"]
    assert results[1]["error"]["code"] == "throttled" and results[1]["error"]["retryable"] is True


async def test_the_primary_records_each_write_it_acknowledged_and_only_those_for_a_switchs_fence():
    store = ConditionalStore()
    store.fail_keys.add("throttled")
    dispatcher, _ = make_dispatcher(store)
    applied = await dispatcher.write(write_record(VIEW, "k", {"a": 1}, 1000, "r1", 0))
    await dispatcher.write(write_record(VIEW, "k", {"a": 2}, 999, "r2", 0))  # refused: stale, nothing to prove
    await dispatcher.write_many([write_record(VIEW, "throttled", {"a": 1}, 1, "r3", 0)])  # failed: not acknowledged
    acks = dispatcher._acks
    assert acks.acknowledged(DEFAULT_SCOPE) == ([("items", "k", applied["version"])], True)
    assert acks.in_flight(DEFAULT_SCOPE) == 0  # every write that began ended, the failed one too


async def test_an_any_region_write_is_no_primarys_evidence():
    dispatcher, _ = make_dispatcher(ConditionalStore(), Rule(DEFAULT_SCOPE, ANY_REGION, None, epoch=3))
    assert (await dispatcher.write(write_record(VIEW, "k", {"a": 1}, 1000, "i", 0)))["applied"]
    assert dispatcher._acks.acknowledged(DEFAULT_SCOPE) == ([], True)


# -- routing -------------------------------------------------------------------------------------


def applied_by(region):
    async def answer(to_region, body):
        return {"results": [{"applied": True, "version": f"{body['epoch']}.5.{to_region}", "primary": to_region,
                             "forwarded": False, "key": r["key"]} for r in body["records"]]}
    return answer


async def test_a_write_for_another_primary_is_forwarded_with_its_epoch_and_idempotency_key():
    store = ConditionalStore()
    peers = FakePeers(applied_by("us-east-1"))
    dispatcher, _ = make_dispatcher(store, Rule(DEFAULT_SCOPE, SINGLE_PRIMARY, "us-east-1", epoch=4), peers=peers)
    answer = await dispatcher.write(write_record(VIEW, "k", {"a": 1}, 1000, "idem-1", 0))
    assert answer == {"applied": True, "version": "4.5.us-east-1", "primary": "us-east-1", "forwarded": True}
    (op, region, body), = peers.calls
    assert (op, region, body["view"], body["scope"], body["epoch"], body["origin"]) == (
        "write", "us-east-1", "items", "default", 4, "eu-west-1"
    )
    assert body["records"] == [{"key": "k", "attributes": {"a": {"N": "1"}}, "event_ms": 1000, "idempotency_key": "idem-1"}]
    assert store.items == {}  # nothing written here


async def test_not_primary_refreshes_and_follows_the_peers_newer_rule():
    stale = Rule(DEFAULT_SCOPE, SINGLE_PRIMARY, "us-east-1", epoch=4, version=7)
    newer = Rule(DEFAULT_SCOPE, SINGLE_PRIMARY, "ap-southeast-1", epoch=5, version=8)

    async def answer(region, body):
        if region == "us-east-1":
            raise NotPrimary("moved", rule=newer.to_json())
        return await applied_by(region)(region, body)

    peers = FakePeers(answer)
    dispatcher, _ = make_dispatcher(ConditionalStore(), stale, peers=peers)
    result = await dispatcher.write(write_record(VIEW, "k", {"a": 1}, 1000, "idem-1", 0))
    assert result["primary"] == "ap-southeast-1" and result["version"].startswith("5.")
    assert [(c[1], c[2]["epoch"], c[2]["records"][0]["idempotency_key"]) for c in peers.calls] == [
        ("us-east-1", 4, "idem-1"), ("ap-southeast-1", 5, "idem-1"),
    ]
    assert dispatcher._routing.refreshes == 1


async def test_rerouting_is_bounded_and_backs_off():
    async def answer(region, body):
        raise NotPrimary("not me", rule=None)

    sleep = RecordingSleep()
    peers = FakePeers(answer)
    dispatcher, _ = make_dispatcher(ConditionalStore(), Rule(DEFAULT_SCOPE, SINGLE_PRIMARY, "us-east-1", epoch=1), peers=peers, sleep=sleep)
    with pytest.raises(PrimaryUnreachable, match="3 attempts"):
        await dispatcher.write(write_record(VIEW, "k", {"a": 1}, 1000, "i", 0))
    assert len(peers.calls) == 3 and sleep.delays == [0.05]


async def test_a_refreshed_snapshot_that_makes_this_region_primary_writes_locally():
    store = ConditionalStore()

    async def answer(region, body):
        raise NotPrimary("it is you now", rule=None)

    dispatcher, _ = make_dispatcher(store, Rule(DEFAULT_SCOPE, SINGLE_PRIMARY, "us-east-1", epoch=1), peers=FakePeers(answer))
    dispatcher._routing.next_rules = (Rule(DEFAULT_SCOPE, SINGLE_PRIMARY, "eu-west-1", epoch=2),)
    result = await dispatcher.write(write_record(VIEW, "k", {"a": 1}, 1000, "i", 0))
    assert result["forwarded"] is False and result["version"].startswith("2.") and "k" in store.items


async def test_writes_of_a_switching_scope_wait_in_the_buffer_and_go_to_the_new_primary():
    store = ConditionalStore()
    switching = Rule(DEFAULT_SCOPE, SINGLE_PRIMARY, "us-east-1", 1, state=SWITCHING, next_primary="eu-west-1", switch_id="s")
    dispatcher, _ = make_dispatcher(store, switching)
    write = asyncio.create_task(dispatcher.write(write_record(VIEW, "k", {"a": 1}, 1000, "i", 0)))
    await asyncio.sleep(0)
    assert not write.done() and dispatcher._buffer.stats(DEFAULT_SCOPE).held == 1 and store.items == {}
    # The switch commits: this region is primary at epoch 2; the held write is applied here.
    dispatcher._routing.set(Rule(DEFAULT_SCOPE, SINGLE_PRIMARY, "eu-west-1", 2))
    answer = await write
    assert answer["applied"] and answer["version"].startswith("2.") and store.items["k"]["_epoch"] == {"N": "2"}
    stats = dispatcher._buffer.stats(DEFAULT_SCOPE)
    assert (stats.buffered, stats.drained, stats.held) == (1, 1, 0)


async def test_a_missing_rule_is_no_routing_rule():
    dispatcher, _ = make_dispatcher(ConditionalStore(), Rule("view#other", SINGLE_PRIMARY, "eu-west-1", 0))
    with pytest.raises(NoRoutingRule) as refused:
        await dispatcher.write(write_record(VIEW, "k", {"a": 1}, 1000, "i", 0))
    assert refused.value.message == (
        "No routing rule covers view 'items' (no 'view#items' and no 'default' scope); add one with `gatewayctl rules set`."
    )


async def test_any_region_writes_locally_under_the_rules_epoch():
    store = ConditionalStore()
    dispatcher, clock = make_dispatcher(store, Rule(DEFAULT_SCOPE, ANY_REGION, None, epoch=3))
    result = await dispatcher.write(write_record(VIEW, "k", {"a": 1}, 1000, "i", 0))
    assert result == {"applied": True, "version": f"3.{clock.wall_us()}.eu-west-1", "primary": "eu-west-1", "forwarded": False}


async def test_a_peers_record_error_keeps_its_status_and_code():
    async def answer(region, body):
        return {"results": [{"key": "k", "error": {"code": "throttled", "message": "slow down", "retryable": True, "status": 429}}]}

    dispatcher, _ = make_dispatcher(ConditionalStore(), Rule(DEFAULT_SCOPE, SINGLE_PRIMARY, "us-east-1", 0), peers=FakePeers(answer))
    with pytest.raises(PeerError) as caught:
        await dispatcher.write(write_record(VIEW, "k", {"a": 1}, 1000, "i", 0))
    assert (caught.value.status, caught.value.code, caught.value.retryable) == (429, "throttled", True)


# -- accepting forwarded writes ------------------------------------------------------------------


async def test_a_forward_is_applied_only_at_the_primarys_epoch():
    store = ConditionalStore()
    dispatcher, _ = make_dispatcher(store, Rule(DEFAULT_SCOPE, SINGLE_PRIMARY, "eu-west-1", epoch=3))
    record = write_record(VIEW, "k", {"a": 1}, 1000, "i", 0)
    results = await dispatcher.accept_forwarded(VIEW, DEFAULT_SCOPE, 3, [record])
    assert results[0]["applied"] and store.items["k"]["_epoch"] == {"N": "3"}
    with pytest.raises(NotPrimary, match="Epoch 2 of scope default is over") as old:
        await dispatcher.accept_forwarded(VIEW, DEFAULT_SCOPE, 2, [record])
    assert old.value.rule["epoch"] == 3
    assert dispatcher._routing.refreshes == 0  # an older epoch needs no refresh to refuse


async def test_a_forward_from_a_newer_epoch_refreshes_before_refusing():
    dispatcher, _ = make_dispatcher(ConditionalStore(), Rule(DEFAULT_SCOPE, SINGLE_PRIMARY, "eu-west-1", epoch=3))
    dispatcher._routing.next_rules = (Rule(DEFAULT_SCOPE, SINGLE_PRIMARY, "eu-west-1", epoch=4),)
    results = await dispatcher.accept_forwarded(VIEW, DEFAULT_SCOPE, 4, [write_record(VIEW, "k", {"a": 1}, 1000, "i", 0)])
    assert results[0]["applied"] and dispatcher._routing.refreshes == 1


async def test_a_forward_to_a_region_that_is_not_primary_or_routes_another_scope_is_refused():
    dispatcher, _ = make_dispatcher(ConditionalStore(), Rule(DEFAULT_SCOPE, SINGLE_PRIMARY, "us-east-1", epoch=3))
    record = write_record(VIEW, "k", {"a": 1}, 1000, "i", 0)
    with pytest.raises(NotPrimary, match="not the active primary") as caught:
        await dispatcher.accept_forwarded(VIEW, DEFAULT_SCOPE, 3, [record])
    assert caught.value.rule["primary"] == "us-east-1"
    assert dispatcher._routing.refreshes == 1  # same epoch: our snapshot may be behind, so look once before refusing
    with pytest.raises(NotPrimary, match="by scope default, not view#items"):
        await dispatcher.accept_forwarded(VIEW, "view#items", 3, [record])


# -- reads ---------------------------------------------------------------------------------------


async def test_strong_reads_go_to_the_primary_and_eventual_reads_stay_local():
    store = ConditionalStore()

    async def answer(region, body):
        return {"results": [{"key": "k", "status": "PRESENT", "features": {"a": 2}, "version": "1.9.us-east-1"}]}

    peers = FakePeers(answer)
    dispatcher, _ = make_dispatcher(store, Rule(DEFAULT_SCOPE, SINGLE_PRIMARY, "us-east-1", epoch=1), peers=peers)
    store.items["k"] = {"pk": {"S": "k"}, "a": {"N": "1"}, "_ts": {"N": "5"}, "_epoch": {"N": "1"}, "_region": {"S": "us-east-1"}}
    strong = await dispatcher.read(VIEW, "k", None, True)
    assert strong == {"view": "items", "key": "k", "features": {"a": 2}, "version": "1.9.us-east-1", "region": "us-east-1"}
    eventual = await dispatcher.read(VIEW, "k", None, False)
    assert eventual["features"] == {"a": 1} and eventual["region"] == "eu-west-1"
    assert [c[0] for c in peers.calls] == ["read"]


async def test_a_min_version_read_serves_locally_once_caught_up_else_from_the_primary():
    store = ConditionalStore()

    async def answer(region, body):
        return {"results": [{"key": "k", "status": "PRESENT", "features": {"a": 9}, "version": "1.9.us-east-1"}]}

    clock_sleep = RecordingSleep()
    peers = FakePeers(answer)
    dispatcher, clock = make_dispatcher(store, Rule(DEFAULT_SCOPE, SINGLE_PRIMARY, "us-east-1", epoch=1), peers=peers, sleep=clock_sleep)
    store.items["k"] = {"pk": {"S": "k"}, "a": {"N": "1"}, "_ts": {"N": "5"}, "_epoch": {"N": "1"}, "_region": {"S": "us-east-1"}}
    local = await dispatcher.read(VIEW, "k", None, False, Version(1, 5, "us-east-1"))
    assert local["features"] == {"a": 1} and not peers.calls and not clock_sleep.delays

    async def advancing_sleep(delay):  # the injected sleep moves the fake clock
        clock.advance(delay)

    dispatcher._sleep = advancing_sleep
    remote = await dispatcher.read(VIEW, "k", None, False, Version(1, 9, "us-east-1"))
    assert remote["features"] == {"a": 9} and remote["region"] == "us-east-1" and len(peers.calls) == 1
    # The local replica was asked again while waiting, for about min_version_wait (0.5 s at 10 ms).
    assert 45 <= len(store.reads) <= 55


async def test_a_min_version_read_answers_from_the_local_replica_as_soon_as_it_catches_up():
    store = ConditionalStore()
    peers = FakePeers()
    dispatcher, clock = make_dispatcher(store, Rule(DEFAULT_SCOPE, SINGLE_PRIMARY, "us-east-1", epoch=1), peers=peers)
    store.items["k"] = {"pk": {"S": "k"}, "a": {"N": "1"}, "_ts": {"N": "5"}, "_epoch": {"N": "1"}, "_region": {"S": "us-east-1"}}
    polls = []

    async def replicating_sleep(delay):  # the newer version arrives while the read waits
        polls.append(delay)
        clock.advance(delay)
        if len(polls) == 3:
            store.items["k"] = {**store.items["k"], "a": {"N": "2"}, "_ts": {"N": "9"}}

    dispatcher._sleep = replicating_sleep
    answer = await dispatcher.read(VIEW, "k", ("a",), False, Version(1, 9, "us-east-1"))
    assert answer == {"view": "items", "key": "k", "features": {"a": 2}, "version": "1.9.us-east-1", "region": "eu-west-1"}
    assert polls == [0.01] * 3 and peers.calls == [] and store.reads == [False] * 4  # eventual reads only


async def test_a_strong_read_of_a_missing_key_at_the_primary_is_none():
    async def answer(region, body):
        return {"results": [{"key": "k", "status": "NOT_FOUND", "features": None, "version": None}]}

    peers = FakePeers(answer)
    dispatcher, _ = make_dispatcher(ConditionalStore(), Rule(DEFAULT_SCOPE, SINGLE_PRIMARY, "us-east-1", epoch=1), peers=peers)
    assert await dispatcher.read(VIEW, "k", ("a",), True) is None
    ((op, region, body),) = peers.calls
    assert (op, region, body) == ("read", "us-east-1", {"view": "items", "keys": ["k"], "features": ["a"]})


async def test_a_strong_read_here_as_primary_is_a_consistent_local_read():
    store = ConditionalStore()
    store.items["k"] = {"pk": {"S": "k"}, "a": {"N": "1"}, "_ts": {"N": "5"}, "_epoch": {"N": "0"}, "_region": {"S": "eu-west-1"}}
    dispatcher, _ = make_dispatcher(store)
    answer = await dispatcher.read(VIEW, "k", None, True)
    assert answer == {"view": "items", "key": "k", "features": {"a": 1}, "version": "0.5.eu-west-1", "region": "eu-west-1"}
    assert store.reads == [True] and await dispatcher.read(VIEW, "missing", None, True) is None


async def test_a_strong_read_follows_a_moved_primary_and_gives_up_when_it_keeps_moving():
    moved = Rule(DEFAULT_SCOPE, SINGLE_PRIMARY, "ap-southeast-1", epoch=5, version=8)

    async def answer(region, body):
        if region == "us-east-1":
            raise NotPrimary("moved", rule=moved.to_json())
        return {"results": [{"key": "k", "status": "PRESENT", "features": {"a": 3}, "version": "5.1.ap-southeast-1"}]}

    peers = FakePeers(answer)
    dispatcher, _ = make_dispatcher(ConditionalStore(), Rule(DEFAULT_SCOPE, SINGLE_PRIMARY, "us-east-1", epoch=4), peers=peers)
    found = await dispatcher.read(VIEW, "k", None, True)
    assert found == {"view": "items", "key": "k", "features": {"a": 3}, "version": "5.1.ap-southeast-1", "region": "ap-southeast-1"}

    async def refuse(region, body):
        raise NotPrimary("not me", rule=None)

    peers = FakePeers(refuse)
    dispatcher, _ = make_dispatcher(ConditionalStore(), Rule(DEFAULT_SCOPE, SINGLE_PRIMARY, "us-east-1", epoch=4), peers=peers)
    with pytest.raises(PrimaryUnreachable, match="disagree on the primary of view 'items'"):
        await dispatcher.read(VIEW, "k", None, True)
    assert len(peers.calls) == CONFIG.routing.max_attempts


async def test_a_strong_batch_read_refused_by_a_moved_primary_is_rerouted_key_by_key():
    # view#items moved from us-east-1 to ap-southeast-1 (the peer's 409 says so); default stays at home.
    stale = Rule("view#items#prefix#t1", SINGLE_PRIMARY, "us-east-1", epoch=3, version=5)
    moved = Rule("view#items#prefix#t1", SINGLE_PRIMARY, "ap-southeast-1", epoch=4, version=7)
    store = ConditionalStore()
    store.items["home"] = {"pk": {"S": "home"}, "a": {"N": "1"}, "_ts": {"N": "5"}, "_epoch": {"N": "0"}, "_region": {"S": "eu-west-1"}}

    async def answer(region, body):
        if region == "us-east-1":
            raise NotPrimary("moved", rule=moved.to_json())
        return {"results": [{"key": k, "status": "PRESENT", "features": {"at": region}, "version": "4.1." + region} for k in body["keys"]]}

    peers = FakePeers(answer)
    dispatcher, _ = make_dispatcher(store, HOME, stale, peers=peers)
    results = await dispatcher.read_many(VIEW, ["t1-a", "home", "t1-b"], None, True)
    assert [r["key"] for r in results] == ["t1-a", "home", "t1-b"]
    assert [r["features"] for r in results] == [{"at": "ap-southeast-1"}, {"a": 1}, {"at": "ap-southeast-1"}]
    assert [(c[1], c[2]["keys"]) for c in peers.calls] == [
        ("us-east-1", ["t1-a", "t1-b"]), ("ap-southeast-1", ["t1-a", "t1-b"]),
    ]


async def test_a_strong_batch_read_gives_up_when_the_primary_keeps_moving():
    async def answer(region, body):
        raise NotPrimary("not me", rule=None)

    peers = FakePeers(answer)
    dispatcher, _ = make_dispatcher(ConditionalStore(), Rule(DEFAULT_SCOPE, SINGLE_PRIMARY, "us-east-1", epoch=1), peers=peers)
    with pytest.raises(PrimaryUnreachable, match="kept moving during 3 attempts"):
        await dispatcher.read_many(VIEW, ["a", "b"], None, True)
    assert len(peers.calls) == 3


# -- answers, exactly as callers get them ------------------------------------------------------------


def stored(key, **features):
    item = {"pk": {"S": key}, "_ts": {"N": "5"}, "_epoch": {"N": "0"}, "_region": {"S": "eu-west-1"}}
    item.update({name: {"N": str(value)} for name, value in features.items()})
    return item


async def test_batch_reads_answer_each_key_in_order_with_its_status_features_and_version():
    store = ConditionalStore()
    store.items.update({"a": stored("a", x=1, y=2), "c": stored("c", x=3)})
    dispatcher, _ = make_dispatcher(store)
    present = {"status": "PRESENT", "version": "0.5.eu-west-1"}
    missing = {"key": "b", "status": "NOT_FOUND", "features": None, "version": None}
    for strong in (False, True):  # strong: this region is the primary, so a consistent read here
        assert await dispatcher.read_many(VIEW, ["a", "b", "c"], ("x",), strong) == [
            {"key": "a", **present, "features": {"x": 1}}, missing, {"key": "c", **present, "features": {"x": 3}},
        ]
    assert store.reads == [False, True]
    assert (await dispatcher.read_many(VIEW, ["a"], None, False))[0]["features"] == {"x": 1, "y": 2}


async def test_a_peers_strong_read_is_answered_only_as_the_primary_of_every_key():
    store = ConditionalStore()
    store.items["a"] = stored("a", x=1)
    elsewhere = Rule("view#items#prefix#far", SINGLE_PRIMARY, "us-east-1", epoch=2, version=3)
    dispatcher, _ = make_dispatcher(store, HOME, elsewhere)
    assert await dispatcher.accept_read(VIEW, ["a", "b"], ("x",)) == [
        {"key": "a", "status": "PRESENT", "features": {"x": 1}, "version": "0.5.eu-west-1"},
        {"key": "b", "status": "NOT_FOUND", "features": None, "version": None},
    ]
    assert store.reads == [True]
    with pytest.raises(NotPrimary, match="eu-west-1 is not the primary of scope view#items#prefix#far") as refused:
        await dispatcher.accept_read(VIEW, ["a", "far-1"], None)
    assert refused.value.rule == elsewhere.to_json() and store.reads == [True]


async def test_strong_batch_reads_of_another_primary_ask_it_once_for_its_keys():
    async def answer(region, body):
        return {"results": [{"key": k, "status": "PRESENT", "features": {"at": 1}, "version": "2.1." + region} for k in body["keys"]]}

    peers = FakePeers(answer)
    store = ConditionalStore()
    dispatcher, _ = make_dispatcher(store, Rule(DEFAULT_SCOPE, SINGLE_PRIMARY, "us-east-1", epoch=2), peers=peers)
    results = await dispatcher.read_many(VIEW, ["a", "b"], ("at",), True)
    assert [r["version"] for r in results] == ["2.1.us-east-1"] * 2 and store.reads == []
    assert peers.calls == [("read", "us-east-1", {"view": "items", "keys": ["a", "b"], "features": ["at"]})]


async def test_before_the_rules_are_loaded_every_request_is_503_with_retry_after():
    dispatcher, _ = make_dispatcher(ConditionalStore())
    dispatcher._routing.table = None
    with pytest.raises(Unavailable, match="has not loaded its routing rules yet") as caught:
        await dispatcher.write(write_record(VIEW, "k", {"a": 1}, 1000, "i", 0))
    assert (caught.value.status, caught.value.retry_after) == (503, 1.0)


def forward_count(dispatcher, region, outcome):
    value = dispatcher._metrics.registry.get_sample_value(
        "gateway_forward_total", {"to_region": region, "outcome": outcome}
    )
    return value or 0.0


@pytest.mark.parametrize(
    "error, outcome",
    [(None, "ok"), (NotPrimary("no", rule=None), "not_primary"), (PrimaryUnreachable("down"), "unreachable"),
     (PeerError(500, "internal", "boom", False), "error")],
)
async def test_each_forward_is_counted_by_its_outcome(error, outcome):
    async def answer(region, body):
        if error is not None:
            raise error
        return await applied_by(region)(region, body)

    rule = Rule(DEFAULT_SCOPE, SINGLE_PRIMARY, "us-east-1", epoch=1)
    dispatcher, _ = make_dispatcher(ConditionalStore(), rule, peers=FakePeers(answer))
    forward = dispatcher._forward(rule, [write_record(VIEW, "k", {"a": 1}, 1000, "i", 0)])
    if error is None:
        assert (await forward)[0]["forwarded"] is True
    else:
        with pytest.raises(type(error)):
            await forward
    counts = {o: forward_count(dispatcher, "us-east-1", o) for o in ("ok", "not_primary", "unreachable", "error")}
    assert counts == {o: 1.0 if o == outcome else 0.0 for o in counts}


@pytest.mark.parametrize(
    "error, status, code, message, retryable, retry_after",
    [
        ("not a dict", 502, "upstream_error", "A peer gateway answered a malformed record result.", True, None),
        ({"code": "throttled", "message": "slow", "retryable": True, "status": 429}, 429, "throttled", "slow", True, 1.0),
        ({"code": "unavailable", "message": "later", "retryable": True, "status": 503}, 503, "unavailable", "later", True, 1.0),
        ({"code": "timeout", "message": "t", "retryable": True, "status": 504}, 504, "timeout", "t", True, None),
        ({"code": "bad", "message": "no", "status": 400}, 400, "bad", "no", False, None),
        ({"code": "odd", "status": 600}, 502, "odd", "", False, None),
        ({"code": "odd", "status": 399}, 502, "odd", "", False, None),
        ({"status": "500"}, 502, "upstream_error", "", False, None),
        ({"code": "edge", "status": 599}, 599, "edge", "", False, None),
    ],
)
async def test_a_peers_record_error_is_passed_on_with_its_status_code_and_retry_advice(
    error, status, code, message, retryable, retry_after
):
    async def answer(region, body):
        return {"results": [{"key": "k", "error": error}]}

    dispatcher, _ = make_dispatcher(ConditionalStore(), Rule(DEFAULT_SCOPE, SINGLE_PRIMARY, "us-east-1", 0), peers=FakePeers(answer))
    with pytest.raises(PeerError) as caught:
        await dispatcher.write(write_record(VIEW, "k", {"a": 1}, 1000, "i", 0))
    got = caught.value
    assert (got.status, got.code, got.message, got.retryable, got.retry_after) == (status, code, message, retryable, retry_after)


async def test_forwarded_records_are_answered_each_on_its_own_with_the_status_of_its_error():
    store = ConditionalStore()
    store.fail_keys.add("b")
    dispatcher, clock = make_dispatcher(store, Rule(DEFAULT_SCOPE, SINGLE_PRIMARY, "eu-west-1", epoch=3))
    records = [write_record(VIEW, k, {"v": 1}, 1000, f"i-{k}", 0) for k in ("a", "b", "c")]
    results = await dispatcher.accept_forwarded(VIEW, DEFAULT_SCOPE, 3, records)
    version = f"3.{clock.wall_us()}.eu-west-1"
    applied = {"applied": True, "version": version, "primary": "eu-west-1", "forwarded": False}
    assert results == [
        {**applied, "key": "a"},
        {"key": "b", "error": {"code": "throttled", "message": "throttled.", "retryable": True, "status": 429}},
        {**applied, "key": "c"},
    ]
    single = await dispatcher.accept_forwarded(VIEW, DEFAULT_SCOPE, 3, [records[1]])
    assert single == [results[1]]


async def test_refused_and_missing_writes_name_the_primary_that_refused_them():
    store = ConditionalStore()
    dispatcher, _ = make_dispatcher(store)
    first = await dispatcher.write(write_record(VIEW, "k", {"a": 1}, 1000, "r1", 0))
    assert await dispatcher.write(write_record(VIEW, "k", {"a": 1}, 900, "r2", 0)) == {
        "applied": False, "version": first["version"], "primary": "eu-west-1", "forwarded": False, "reason": "stale_event_time",
    }
    assert await dispatcher.write(delete_record(VIEW, "gone", 5, "d1", 0)) == {
        "applied": False, "version": None, "primary": "eu-west-1", "forwarded": False, "reason": "not_found",
    }


async def test_rerouting_backs_off_longer_at_each_further_attempt():
    config = from_dict({"gateway": {"region": "eu-west-1"}, "routing": {"max_attempts": 4}, "views": {"items": {"table": "features_items"}}})

    async def answer(region, body):
        raise NotPrimary("not me", rule={"scope": "default", "primary": "nowhere"})  # a malformed rule: ignored

    sleep = RecordingSleep()
    clock = FakeClock()
    routing = StaticRouting(Rule(DEFAULT_SCOPE, SINGLE_PRIMARY, "us-east-1", epoch=1))
    dispatcher = Dispatcher(
        config, ConditionalStore(), ReadCoalescer(ConditionalStore()), clock, routing, FakePeers(answer), Metrics(),
        WriteBuffer(BufferConfig(), clock), AckLog(clock, 60.0, 100), sleep=sleep,
    )
    with pytest.raises(PrimaryUnreachable, match="kept moving during 4 attempts"):
        await dispatcher.write(write_record(config.views["items"], "k", {"a": 1}, 1000, "i", 0))
    assert sleep.delays == [0.05, 0.1] and routing.refreshes == 3


async def test_a_key_under_a_prefix_rule_is_written_where_that_rule_says():
    store = ConditionalStore()
    peers = FakePeers(applied_by("ap-southeast-1"))
    prefix = Rule("view#items#prefix#ap-", SINGLE_PRIMARY, "ap-southeast-1", epoch=2)
    dispatcher, _ = make_dispatcher(store, HOME, prefix, peers=peers)
    assert (await dispatcher.write(write_record(VIEW, "ap-1", {"a": 1}, 1000, "i", 0)))["primary"] == "ap-southeast-1"
    assert (await dispatcher.write(write_record(VIEW, "eu-1", {"a": 1}, 1000, "j", 0)))["primary"] == "eu-west-1"
    assert [c[2]["scope"] for c in peers.calls] == ["view#items#prefix#ap-"] and list(store.items) == ["eu-1"]


async def test_a_strong_read_of_an_any_region_scope_is_served_here_whatever_primary_it_names():
    store = ConditionalStore()
    store.items["k"] = stored("k", x=1)
    dispatcher, _ = make_dispatcher(store, Rule(DEFAULT_SCOPE, ANY_REGION, "us-east-1", epoch=0))
    assert (await dispatcher.read(VIEW, "k", None, True))["region"] == "eu-west-1" and store.reads == [True]


async def test_a_min_version_read_of_a_key_the_replica_does_not_hold_yet_goes_to_the_primary():
    async def answer(region, body):
        return {"results": [{"key": "k", "status": "PRESENT", "features": {"a": 9}, "version": "1.9.us-east-1"}]}

    peers = FakePeers(answer)
    dispatcher, clock = make_dispatcher(ConditionalStore(), Rule(DEFAULT_SCOPE, SINGLE_PRIMARY, "us-east-1", epoch=1), peers=peers)

    async def advancing_sleep(delay):
        clock.advance(delay)

    dispatcher._sleep = advancing_sleep
    found = await dispatcher.read(VIEW, "k", None, False, Version(1, 9, "us-east-1"))
    assert found["region"] == "us-east-1" and len(peers.calls) == 1


async def test_a_peer_answer_without_keys_is_still_an_answer():
    async def answer(region, body):
        return {"results": [{"applied": True, "version": "1.5.us-east-1", "primary": region, "forwarded": False}]}

    dispatcher, _ = make_dispatcher(ConditionalStore(), Rule(DEFAULT_SCOPE, SINGLE_PRIMARY, "us-east-1", 1), peers=FakePeers(answer))
    result = await dispatcher.write(write_record(VIEW, "k", {"a": 1}, 1000, "i", 0))
    assert result == {"applied": True, "version": "1.5.us-east-1", "primary": "us-east-1", "forwarded": True}


async def test_a_write_drained_into_a_second_switch_that_the_buffer_refuses_gets_the_refusal():
    store = ConditionalStore()
    first = Rule(DEFAULT_SCOPE, SINGLE_PRIMARY, "us-east-1", 1, state=SWITCHING, next_primary="eu-west-1", switch_id="s1")
    dispatcher, _ = make_dispatcher(store, first)
    write = asyncio.create_task(dispatcher.write(write_record(VIEW, "k", {"a": 1}, 1000, "i", 0)))
    await asyncio.sleep(0)
    assert dispatcher._buffer.stats(DEFAULT_SCOPE).held == 1
    routing = dispatcher._routing
    routing.set(Rule(DEFAULT_SCOPE, SINGLE_PRIMARY, "us-east-1", 2))  # aborted: the held write is let go ...
    routing.set(Rule(DEFAULT_SCOPE, SINGLE_PRIMARY, "us-east-1", 2, state=SWITCHING, next_primary="eu-west-1",
                     switch_id="s2"))  # ... into the next switch, while the gateway shuts down
    dispatcher._buffer.close()
    with pytest.raises(Draining):
        await write
    assert store.items == {}


# -- each read path answers for its own view, key and features ---------------------------------------

VIEW_RULE = Rule("view#items", SINGLE_PRIMARY, "us-east-1", epoch=3, version=2)  # default stays at home
PREFIX_RULE = Rule("view#items#prefix#p-", SINGLE_PRIMARY, "eu-west-1", epoch=1, version=1)


def answering(features):
    async def answer(region, body):
        return {"results": [{"key": k, "status": "PRESENT", "features": features, "version": f"3.1.{region}"} for k in body["keys"]]}

    return answer


async def test_every_read_path_answers_the_asked_key_with_the_asked_features_only():
    store = ConditionalStore()
    store.items.update({"p-1": stored("p-1", a=1, b=2), "k": stored("k", a=1, b=2)})
    peers = FakePeers(answering({"a": 7}))
    dispatcher, clock = make_dispatcher(store, HOME, VIEW_RULE, PREFIX_RULE, peers=peers)
    local = {"view": "items", "key": "p-1", "features": {"a": 1}, "version": "0.5.eu-west-1", "region": "eu-west-1"}
    assert await dispatcher.read(VIEW, "p-1", ("a",), False) == local  # eventual
    assert await dispatcher.read(VIEW, "p-1", ("a",), True) == local  # strong: the prefix's primary is here
    assert await dispatcher.read(VIEW, "p-1", ("a",), False, Version(0, 5, "eu-west-1")) == local  # min_version, reached
    # Strong, of a key whose view rule names us-east-1: asked there, for the features wanted.
    assert await dispatcher.read(VIEW, "k", ("a",), True) == {
        "view": "items", "key": "k", "features": {"a": 7}, "version": "3.1.us-east-1", "region": "us-east-1",
    }
    assert peers.calls == [("read", "us-east-1", {"view": "items", "keys": ["k"], "features": ["a"]})]

    async def catching_up(delay):
        clock.advance(delay)
        store.items["k"] = {**stored("k", a=1, b=2), "_epoch": {"N": "3"}, "_ts": {"N": "9"}}

    dispatcher._sleep = catching_up
    assert await dispatcher.read(VIEW, "k", ("b",), False, Version(3, 9, "")) == {
        "view": "items", "key": "k", "features": {"b": 2}, "version": "3.9.eu-west-1", "region": "eu-west-1",
    }
    assert await dispatcher.accept_read(VIEW, ["p-1"], ("b",)) == [
        {"key": "p-1", "status": "PRESENT", "features": {"b": 2}, "version": "0.5.eu-west-1"},
    ]
    assert await dispatcher.read_many(VIEW, ["p-1"], ("b",), True) == await dispatcher.accept_read(VIEW, ["p-1"], ("b",))


async def test_a_min_version_read_that_never_catches_up_asks_the_primary_for_the_features_wanted():
    store = ConditionalStore()
    store.items["k"] = stored("k", a=1)
    peers = FakePeers(answering({"a": 7}))
    dispatcher, clock = make_dispatcher(store, HOME, VIEW_RULE, peers=peers)

    async def advancing(delay):
        clock.advance(delay)

    dispatcher._sleep = advancing
    assert (await dispatcher.read(VIEW, "k", ("a",), False, Version(3, 9, "")))["region"] == "us-east-1"
    assert peers.calls == [("read", "us-east-1", {"view": "items", "keys": ["k"], "features": ["a"]})]


async def test_a_forward_is_revalidated_by_the_rule_of_its_view_and_prefix():
    store = ConditionalStore()
    dispatcher, _ = make_dispatcher(store, HOME, VIEW_RULE, PREFIX_RULE)
    applied = await dispatcher.accept_forwarded(VIEW, "view#items#prefix#p-", 1, [write_record(VIEW, "p-1", {"a": 1}, 5, "i", 0)])
    assert applied[0]["applied"] and store.items["p-1"]["_epoch"] == {"N": "1"}
    with pytest.raises(NotPrimary, match="not the active primary of scope view#items at epoch 3"):
        await dispatcher.accept_forwarded(VIEW, "view#items", 3, [write_record(VIEW, "k", {"a": 1}, 5, "j", 0)])


async def test_strong_batch_reads_refused_by_two_moved_primaries_reroute_both_groups():
    stale_a = Rule("view#items#prefix#a-", SINGLE_PRIMARY, "us-east-1", epoch=1, version=1)
    stale_b = Rule("view#items#prefix#b-", SINGLE_PRIMARY, "ap-southeast-1", epoch=1, version=1)
    moved = {
        "us-east-1": Rule("view#items#prefix#a-", SINGLE_PRIMARY, "eu-west-1", epoch=2, version=2),
        "ap-southeast-1": Rule("view#items#prefix#b-", SINGLE_PRIMARY, "eu-west-1", epoch=2, version=2),
    }

    async def answer(region, body):
        raise NotPrimary("moved", rule=moved[region].to_json())

    store = ConditionalStore()
    store.items.update({"a-1": stored("a-1", x=1), "b-1": stored("b-1", x=2)})
    dispatcher, _ = make_dispatcher(store, HOME, stale_a, stale_b, peers=FakePeers(answer))
    routing = dispatcher._routing
    routing.next_rules = (HOME, *moved.values())  # the refresh after the refusals brings both moves
    results = await dispatcher.read_many(VIEW, ["a-1", "b-1"], None, True)
    assert [(r["key"], r["features"]) for r in results] == [("a-1", {"x": 1}), ("b-1", {"x": 2})]


async def test_an_any_region_scope_is_read_strongly_here_by_a_batch_and_for_a_peer():
    store = ConditionalStore()
    store.items["k"] = stored("k", x=1)
    dispatcher, _ = make_dispatcher(store, Rule(DEFAULT_SCOPE, ANY_REGION, None, epoch=0))
    assert (await dispatcher.read_many(VIEW, ["k"], None, True))[0]["status"] == "PRESENT"
    assert (await dispatcher.accept_read(VIEW, ["k"], None))[0]["status"] == "PRESENT"
    assert store.reads == [True, True]


async def test_a_refusal_without_the_stored_item_has_no_version_to_report():
    class Refusing(ConditionalStore):
        async def put_item(self, table, item, *, condition=None):
            raise ConditionFailed(None)  # a store that did not return the item

    dispatcher, _ = make_dispatcher(Refusing())
    answer = await dispatcher.write(write_record(VIEW, "k", {"a": 1}, 1000, "i", 0))
    assert (answer["applied"], answer["version"], answer["reason"]) == (False, None, "stale_event_time")


async def test_a_batch_writes_errors_are_the_downstream_kind_without_a_peer_status():
    store = ConditionalStore()
    store.fail_keys.add("b")
    dispatcher, _ = make_dispatcher(store)
    results = await dispatcher.write_many([write_record(VIEW, "b", {"v": 1}, 1, None, 0)])
    assert results == [{"key": "b", "error": {"code": "throttled", "message": "throttled.", "retryable": True}}]


async def test_strong_reads_back_off_longer_at_each_further_attempt():
    config = from_dict({"gateway": {"region": "eu-west-1"}, "routing": {"max_attempts": 4}, "views": {"items": {"table": "features_items"}}})

    async def answer(region, body):
        raise NotPrimary("not me", rule=None)

    sleep, clock = RecordingSleep(), FakeClock()
    dispatcher = Dispatcher(
        config, ConditionalStore(), ReadCoalescer(ConditionalStore()), clock,
        StaticRouting(Rule(DEFAULT_SCOPE, SINGLE_PRIMARY, "us-east-1", epoch=1)), FakePeers(answer), Metrics(),
        WriteBuffer(BufferConfig(), clock), AckLog(clock, 60.0, 100), sleep=sleep,
    )
    with pytest.raises(PrimaryUnreachable):
        await dispatcher.read(config.views["items"], "k", None, True)
    assert sleep.delays == pytest.approx([0.05, 0.1, 0.15])


async def test_a_write_waiting_for_a_lease_goes_to_the_new_primary_once_this_region_learns_it_was_deposed():
    """A primary cut off, healed: its held write is not refused at its deadline but forwarded by the new rule."""
    store = ConditionalStore()
    peers = FakePeers(applied_by("us-east-1"))
    routing = StaticRouting(Rule(DEFAULT_SCOPE, SINGLE_PRIMARY, "eu-west-1", epoch=4))

    class Leases:
        def valid(self, scope, epoch):
            return False

        async def wait_valid(self, scope, epoch, timeout):
            routing.set(Rule(DEFAULT_SCOPE, SINGLE_PRIMARY, "us-east-1", epoch=5))  # learned from a lease refusal
            return False

    dispatcher, _ = make_dispatcher(store, peers=peers, routing=routing, leases=Leases())
    answer = await dispatcher.write(write_record(VIEW, "k", {"a": 1}, 1000, "idem-1", 0))
    assert answer == {"applied": True, "version": "5.5.us-east-1", "primary": "us-east-1", "forwarded": True}
    assert store.items == {}  # nothing applied here, as the old primary


async def test_a_write_that_loses_a_race_to_a_later_stamp_is_stamped_above_it_so_versions_follow_the_apply_order():
    """Two writes of one key at the primary: the one DynamoDB applies last carries the later version, or a caller's
    version would go back and replication (last writer wins by version) would keep the overwritten write."""
    store = ConditionalStore()
    dispatcher, clock = make_dispatcher(store)
    first = await dispatcher.write(write_record(VIEW, "k", {"a": 1}, 1000, "r1", 0))
    landed_first = store.items["k"]
    later = int(landed_first["_ts"]["N"]) + 500  # a concurrent write, stamped later, landed before ours
    store.items["k"] = {**landed_first, "_ts": {"N": str(later)}, "_req": {"S": "r-other"}}
    answer = await dispatcher.write(write_record(VIEW, "k", {"a": 2}, 1000, "r2", 0))  # same event time: it may win
    assert answer["applied"] is True and Version.parse(answer["version"]).ts == later + 1
    assert store.items["k"]["a"] == {"N": "2"} and store.items["k"]["_ts"] == {"N": str(later + 1)}
    assert Version.parse(answer["version"]) > Version.parse(first["version"])
    # A write with an older event time is still refused for it, not re-stamped.
    refused = await dispatcher.write(write_record(VIEW, "k", {"a": 3}, 999, "r3", 0))
    assert refused["applied"] is False and refused["reason"] == "stale_event_time"


class Leases:
    """The lease keeper's two questions, answered for one (scope, epoch) only: a check of another scope or epoch
    finds no lease. ``ends_after_checks`` ends the lease after that many ``valid`` answers (DynamoDB was slow);
    ``waits`` records each ``wait_valid`` timeout; ``on_wait`` runs at each wait (the keeper learns a rule)."""

    def __init__(self, scope=DEFAULT_SCOPE, epoch=0, *, held=True, ends_after_checks=None, on_wait=None):
        self.held, self.scope, self.epoch = held, scope, epoch
        self.checks_left = ends_after_checks
        self.on_wait = on_wait
        self.waits: list[float] = []

    def valid(self, scope, epoch):
        if self.checks_left is not None:
            if self.checks_left == 0:
                self.held = False
            self.checks_left -= 1
        return self.held and (scope, epoch) == (self.scope, self.epoch)

    async def wait_valid(self, scope, epoch, timeout):
        self.waits.append(timeout)
        if self.on_wait is not None:
            self.on_wait()
        return self.valid(scope, epoch)


async def test_a_primary_holding_its_lease_for_the_rules_scope_and_epoch_acknowledges_at_once():
    store, leases = ConditionalStore(), Leases(DEFAULT_SCOPE, 0)
    dispatcher, clock = make_dispatcher(store, leases=leases)
    answer = await dispatcher.write(write_record(VIEW, "k", {"a": 1}, 1000, "r1", 0))
    assert answer == {"applied": True, "version": f"0.{clock.wall_us()}.eu-west-1", "primary": "eu-west-1", "forwarded": False}
    assert leases.waits == []  # held before and after the write: nothing waited for


async def test_a_lease_of_another_epoch_is_no_lease_the_write_waits_its_deadline_less_a_margin_then_503():
    from gateway import deadlines as request_deadlines
    from gateway.dispatcher import LEASE_WAIT_MARGIN

    store, leases = ConditionalStore(), Leases(DEFAULT_SCOPE, 1)  # promised for epoch 1; the rule is at epoch 0
    dispatcher, clock = make_dispatcher(store, leases=leases)
    with pytest.raises(PrimaryUnreachable) as refused:
        await dispatcher.write(write_record(VIEW, "k", {"a": 1}, 1000, "r1", 0))
    assert refused.value.message == (
        "eu-west-1 is the primary of default (epoch 0) but a majority of the regions has not confirmed its lease: it "
        "may be cut off from them. Nothing was applied; retry (the primary may be moving).")
    assert leases.waits == [pytest.approx(CONFIG.request_timeout - LEASE_WAIT_MARGIN)]  # outside a request
    token = request_deadlines.current.set(request_deadlines.Deadline(None, clock.monotonic() + 1.5, clock))
    try:
        with pytest.raises(PrimaryUnreachable):
            await dispatcher.write(write_record(VIEW, "k", {"a": 1}, 1000, "r2", 0))
    finally:
        request_deadlines.current.reset(token)
    assert leases.waits[1] == pytest.approx(1.5 - LEASE_WAIT_MARGIN)  # inside one: what is left of its deadline
    assert store.items == {}  # nothing applied without a lease


async def test_a_lease_that_ends_while_dynamodb_writes_is_not_an_acknowledgement_and_the_fence_lists_nothing():
    store = ConditionalStore()
    leases = Leases(DEFAULT_SCOPE, 0, ends_after_checks=1)  # valid before the write, over once DynamoDB answered
    dispatcher, _ = make_dispatcher(store, leases=leases)
    with pytest.raises(PrimaryUnreachable) as refused:
        await dispatcher.write(write_record(VIEW, "k", {"a": 1}, 1000, "r1", 0))
    assert refused.value.message == (
        "eu-west-1's lease on default ended while DynamoDB wrote: the write was not acknowledged. " + MAY_HAVE_LANDED)
    assert "k" in store.items  # it may have landed: a retry with its idempotency key finds out
    assert dispatcher._acks.acknowledged(DEFAULT_SCOPE) == ([], True)  # nothing for a switch's fence to prove


async def test_a_primary_deposed_again_at_every_lease_wait_gives_up_naming_the_view_after_max_attempts():
    routing = StaticRouting(Rule(DEFAULT_SCOPE, SINGLE_PRIMARY, "eu-west-1", epoch=1))
    epochs = iter(range(2, 100))

    def deposed():  # each wait learns a newer epoch, this region primary again: the rule keeps moving
        epoch = next(epochs)
        routing.set(Rule(DEFAULT_SCOPE, SINGLE_PRIMARY, "eu-west-1", epoch=epoch))

    leases = Leases(DEFAULT_SCOPE, 99, on_wait=deposed)
    dispatcher, _ = make_dispatcher(ConditionalStore(), routing=routing, leases=leases)
    with pytest.raises(PrimaryUnreachable) as refused:
        await dispatcher.write(write_record(VIEW, "k", {"a": 1}, 1000, "r1", 0))
    assert refused.value.message == (
        f"The primary of 'items' kept moving during {CONFIG.routing.max_attempts} attempts (last: eu-west-1 is no "
        f"longer the primary of default: epoch {CONFIG.routing.max_attempts + 1} (primary eu-west-1).); retry shortly."
    )
    assert len(leases.waits) == CONFIG.routing.max_attempts


async def test_a_forwarded_write_the_primary_refuses_per_record_as_deposed_is_routed_again_by_the_rule_it_sends():
    """The primary was cut off and waited for a lease; it learned it was deposed and refused the forwarded write
    (``not_primary`` with its new rule, in the record's result). The origin must route the write again, not pass a
    peer-API 409 to its caller."""
    store = ConditionalStore()
    moved = Rule(DEFAULT_SCOPE, SINGLE_PRIMARY, "eu-west-1", epoch=2)

    async def deposed(region, body):
        return {"results": [{"key": body["records"][0]["key"], "rule": moved.to_json(), "error": {
            "code": "not_primary", "status": 409, "retryable": True,
            "message": "us-east-1 is no longer the primary of default: epoch 2 (primary eu-west-1)."}}]}

    peers = FakePeers(deposed)
    dispatcher, clock = make_dispatcher(store, Rule(DEFAULT_SCOPE, SINGLE_PRIMARY, "us-east-1", epoch=1), peers=peers)
    answer = await dispatcher.write(write_record(VIEW, "k", {"a": 1}, 1000, "r1", 0))
    assert answer == {"applied": True, "version": f"2.{clock.wall_us()}.eu-west-1", "primary": "eu-west-1", "forwarded": False}
    assert len(peers.calls) == 1 and store.items["k"]["_epoch"] == {"N": "2"}
    assert (forward_count(dispatcher, "us-east-1", "not_primary"), forward_count(dispatcher, "us-east-1", "ok")) == (1, 0)


async def test_the_primary_answers_a_forwarded_write_it_was_deposed_for_while_it_waited_with_its_new_rule():
    routing = StaticRouting(Rule(DEFAULT_SCOPE, SINGLE_PRIMARY, "eu-west-1", epoch=1))
    moved = Rule(DEFAULT_SCOPE, SINGLE_PRIMARY, "us-east-1", epoch=2)
    leases = Leases(DEFAULT_SCOPE, 1, held=False, on_wait=lambda: routing.set(moved))
    store = ConditionalStore()
    dispatcher, _ = make_dispatcher(store, routing=routing, leases=leases)
    record = write_record(VIEW, "k", {"a": 1}, 1000, "r1", 0)
    assert await dispatcher.accept_forwarded(VIEW, DEFAULT_SCOPE, 1, [record]) == [{"key": "k", "rule": moved.to_json(), "error": {
        "code": "not_primary", "status": 409, "retryable": True,
        "message": "eu-west-1 is no longer the primary of default: epoch 2 (primary us-east-1)."}}]
    assert store.items == {}


async def test_a_lease_that_comes_while_the_write_waits_lets_it_be_acknowledged():
    store = ConditionalStore()
    leases = Leases(DEFAULT_SCOPE, 0, held=False)
    leases.on_wait = lambda: setattr(leases, "held", True)  # the keeper's round got a majority's promises
    dispatcher, _ = make_dispatcher(store, leases=leases)
    answer = await dispatcher.write(write_record(VIEW, "k", {"a": 1}, 1000, "r1", 0))
    assert answer["applied"] is True and len(leases.waits) == 1 and "k" in store.items


@pytest.mark.parametrize(("left", "waited"), [(0.1, False), (0.35, True)])
async def test_a_write_with_no_time_left_past_the_margin_does_not_wait_for_a_lease(left, waited):
    from gateway import deadlines as request_deadlines

    leases = Leases(DEFAULT_SCOPE, 0, held=False)
    dispatcher, clock = make_dispatcher(ConditionalStore(), leases=leases)
    token = request_deadlines.current.set(request_deadlines.Deadline(None, clock.monotonic() + left, clock))
    try:
        with pytest.raises(PrimaryUnreachable):
            await dispatcher.write(write_record(VIEW, "k", {"a": 1}, 1000, "r1", 0))
    finally:
        request_deadlines.current.reset(token)
    assert leases.waits == ([pytest.approx(0.25)] if waited else [])


async def test_a_write_whose_scope_rule_is_deleted_while_it_waits_for_a_lease_is_refused_with_nothing_applied():
    routing = StaticRouting(Rule("view#items", SINGLE_PRIMARY, "eu-west-1", epoch=1), HOME)
    store = ConditionalStore()
    leases = Leases("view#items", 1, held=False, on_wait=lambda: routing.set(HOME))  # only the default is left
    dispatcher, _ = make_dispatcher(store, routing=routing, leases=leases)
    with pytest.raises(PrimaryUnreachable, match="has not confirmed its lease"):
        await dispatcher.write(write_record(VIEW, "k", {"a": 1}, 1000, "r1", 0))
    assert store.items == {}


async def test_a_write_whose_primary_keeps_refusing_it_per_record_gives_up_naming_the_view_and_the_last_refusal():
    async def deposed(region, body):
        return {"results": [{"key": "k", "rule": "not a rule", "error": {
            "code": "not_primary", "status": 409, "retryable": True, "message": "us-east-1 moved on."}}]}

    dispatcher, _ = make_dispatcher(ConditionalStore(), Rule(DEFAULT_SCOPE, SINGLE_PRIMARY, "us-east-1", epoch=1),
                                    peers=FakePeers(deposed))
    with pytest.raises(PrimaryUnreachable) as refused:
        await dispatcher.write(write_record(VIEW, "k", {"a": 1}, 1000, "r1", 0))
    assert refused.value.message == (
        f"The primary of 'items' kept moving during {CONFIG.routing.max_attempts} attempts (last: us-east-1 moved on.); "
        "retry shortly.")


async def test_a_record_error_of_another_kind_from_the_primary_is_passed_on_and_the_forward_counted_ok():
    async def refused(region, body):
        return {"results": [{"key": "k", "error": {
            "code": "item_too_large", "status": 413, "retryable": False, "message": "Too large."}}]}

    dispatcher, _ = make_dispatcher(ConditionalStore(), Rule(DEFAULT_SCOPE, SINGLE_PRIMARY, "us-east-1", epoch=1),
                                    peers=FakePeers(refused))
    with pytest.raises(PeerError) as error:
        await dispatcher.write(write_record(VIEW, "k", {"a": 1}, 1000, "r1", 0))
    assert (error.value.status, error.value.code, error.value.message) == (413, "item_too_large", "Too large.")
    assert (forward_count(dispatcher, "us-east-1", "ok"), forward_count(dispatcher, "us-east-1", "not_primary")) == (1, 0)


async def test_writes_that_keep_racing_at_the_primary_give_up_after_their_attempts_with_a_retry_that_is_safe():
    from gateway.dispatcher import STAMP_ATTEMPTS

    class Racing(ConditionalStore):
        async def put_item(self, table, item, *, condition=None):
            # Before each attempt lands, another write of the key lands stamped later.
            stored = self.items.get("k") or {**item, "_req": {"S": "other"}}
            self.items["k"] = {**stored, "_req": {"S": "other"}, "_ts": {"N": str(int(item["_ts"]["N"]) + 10)}}
            self.attempts = getattr(self, "attempts", 0) + 1
            return await super().put_item(table, item, condition=condition)

    store = Racing()
    dispatcher, _ = make_dispatcher(store)
    with pytest.raises(PrimaryUnreachable) as refused:
        await dispatcher.write(write_record(VIEW, "k", {"a": 1}, 1000, "r1", 0))
    assert refused.value.message == "Writes of key 'k' kept racing this one; retry with the same Idempotency-Key."
    assert store.attempts == STAMP_ATTEMPTS


async def test_a_write_with_exactly_the_margin_left_does_not_wait_for_a_lease():
    from gateway import deadlines as request_deadlines
    from gateway.dispatcher import LEASE_WAIT_MARGIN

    class Left:
        def remaining(self):
            return LEASE_WAIT_MARGIN  # nothing left to wait once the margin is kept

    leases = Leases(DEFAULT_SCOPE, 0, held=False)
    dispatcher, _ = make_dispatcher(ConditionalStore(), leases=leases)
    token = request_deadlines.current.set(Left())
    try:
        with pytest.raises(PrimaryUnreachable):
            await dispatcher.write(write_record(VIEW, "k", {"a": 1}, 1000, "r1", 0))
    finally:
        request_deadlines.current.reset(token)
    assert leases.waits == []
