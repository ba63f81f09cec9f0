"""The write decisions of the dispatcher, with a store that answers like DynamoDB evaluates the condition."""

from gateway.config import from_dict
from gateway.dispatcher import Dispatcher
from gateway.errors import ConditionFailed, StoreThrottled
from gateway.read_coalescer import ReadCoalescer
from gateway.records import delete_record, write_record
from tests.fakes import FakeClock

CONFIG = from_dict({"gateway": {"region": "eu-west-1"}, "views": {"items": {"table": "features_items"}}})
VIEW = CONFIG.views["items"]


class ConditionalStore:
    """One item per key; applies the gateway's write condition the way DynamoDB would."""

    def __init__(self) -> None:
        self.items: dict[str, dict] = {}
        self.fail_keys: set[str] = set()

    def _check(self, key, condition):
        old = self.items.get(key)
        if key in self.fail_keys:
            raise StoreThrottled("throttled.")
        if old is None:
            return None
        values = condition.values
        if int(old["_event_ts"]["N"]) > int(values[":ets"]["N"]) or old["_req"] == values[":req"]:
            raise ConditionFailed(old)
        return old

    async def put_item(self, table, item, *, condition=None):
        key = item["pk"]["S"]
        self._check(key, condition)
        self.items[key] = item

    async def delete_item(self, table, key, *, condition=None, return_old=False):
        k = key["pk"]["S"]
        old = self._check(k, condition)
        self.items.pop(k, None)
        return old


def dispatcher(store):
    clock = FakeClock()
    return Dispatcher(CONFIG, store, ReadCoalescer(store), clock), clock


async def test_writes_are_stamped_and_answered():
    store = ConditionalStore()
    d, clock = dispatcher(store)
    answer = await d.write(write_record(VIEW, "k", {"a": 1}, 1000, "r1", 0))
    assert answer == {"applied": True, "version": f"0.{clock.wall_us()}.eu-west-1", "primary": "eu-west-1", "forwarded": False}
    stored = store.items["k"]
    assert stored["_region"] == {"S": "eu-west-1"} and stored["_req"] == {"S": "r1"} and stored["_event_ts"] == {"N": "1000"}


async def test_refusals_name_their_reason_and_the_stored_version():
    store = ConditionalStore()
    d, _ = dispatcher(store)
    first = await d.write(write_record(VIEW, "k", {"a": 1}, 1000, "r1", 0))
    again = await d.write(write_record(VIEW, "k", {"a": 2}, 2000, "r1", 0))
    older = await d.write(write_record(VIEW, "k", {"a": 3}, 999, "r2", 0))
    assert (again["applied"], again["reason"], again["version"]) == (False, "duplicate", first["version"])
    assert (older["applied"], older["reason"], older["version"]) == (False, "stale_event_time", first["version"])


async def test_delete_of_nothing_is_not_applied():
    d, _ = dispatcher(ConditionalStore())
    answer = await d.write(delete_record(VIEW, "missing", 5, "d1", 0))
    assert answer["applied"] is False and answer["reason"] == "not_found" and answer["version"] is None


async def test_batch_results_keep_order_and_isolate_failures():
    store = ConditionalStore()
    store.fail_keys.add("b")
    d, _ = dispatcher(store)
    records = [write_record(VIEW, k, {"v": k}, 1, None, 0) for k in ("a", "b", "c")]
    results = await d.write_many(records)
    assert [r["key"] for r in results] == ["a", "b", "c"]
    assert results[0]["applied"] and results[2]["applied"]
    assert results[1]["error"]["code"] == "throttled" and results[1]["error"]["retryable"] is True
