"""One contract, two clients: LeanStore and BotocoreStore against DynamoDB Local (DESIGN.md §11).

Every operation runs through both stores from the same starting state. The two
outcomes (returned value or raised error, and the table's state afterwards)
must equal each other *and* the value the test expects: agreeing alone could
mean both are wrong.
"""

from __future__ import annotations

import base64
import uuid
from collections.abc import AsyncIterator, Awaitable, Callable, Sequence
from dataclasses import dataclass
from typing import Any

import pytest

from gateway import errors
from gateway.local.dynamodb_local import DynamoDBLocal
from gateway.store.base import Condition, Item, Store
from gateway.store.botocore import BotocoreStore
from gateway.store.lean import LeanStore, open_lean_store

REGION = "us-east-1"


@dataclass(frozen=True)
class Outcome:
    value: Any = None
    error: type[BaseException] | None = None
    old_item: Item | None = None  # ConditionFailed only
    state: tuple[Item | None, ...] = ()  # the touched keys afterwards


def canonical(value: Any) -> Any:
    """Sets come back in no defined order; everything else is compared exactly."""
    if isinstance(value, dict):
        return {k: sorted(v) if k in ("SS", "NS", "BS") else canonical(v) for k, v in value.items()}
    if isinstance(value, list):
        return [canonical(v) for v in value]
    return value


class Contract:
    """LeanStore over both wires (the HTTP/1.1 pool and aiohttp) and BotocoreStore, run side by side."""

    def __init__(self, table: str, lean: LeanStore, lean_aiohttp: LeanStore, botocore: BotocoreStore) -> None:
        self.table = table
        self.stores: dict[str, Store] = {"lean": lean, "lean-aiohttp": lean_aiohttp, "botocore": botocore}
        self.botocore = botocore

    async def run(
        self,
        op: Callable[[Store], Awaitable[Any]],
        *,
        seed: Sequence[Item] = (),
        touched: Sequence[str] = (),
    ) -> Outcome:
        """Run ``op`` on each store after resetting ``touched`` keys to ``seed``; assert both agree."""
        outcomes: dict[str, Outcome] = {}
        for name, store in self.stores.items():
            keys = [{"pk": {"S": pk}} for pk in dict.fromkeys([*touched, *(i["pk"]["S"] for i in seed)])]
            if keys:
                await self.botocore.batch_write_item(self.table, deletes=keys)
            if seed:
                await self.botocore.batch_write_item(self.table, puts=seed)
            try:
                result = Outcome(value=canonical(await op(store)))
            except errors.ConditionFailed as exc:
                result = Outcome(error=errors.ConditionFailed, old_item=canonical(exc.old_item))
            except errors.GatewayError as exc:
                assert self.table in exc.message or "nonexistent" in exc.message, exc.message
                result = Outcome(error=type(exc))
            state = tuple([canonical(await self.botocore.get_item(self.table, k, consistent=True)) for k in keys])
            outcomes[name] = Outcome(result.value, result.error, result.old_item, state)
        assert outcomes["lean"] == outcomes["botocore"]
        assert outcomes["lean-aiohttp"] == outcomes["botocore"]
        return outcomes["lean"]


@pytest.fixture(scope="module")
async def contract(dynamodb_local: DynamoDBLocal) -> AsyncIterator[Contract]:
    botocore = await BotocoreStore.open(REGION, dynamodb_local.endpoint)
    lean = await open_lean_store(REGION, dynamodb_local.endpoint)
    lean_aiohttp = await open_lean_store(REGION, dynamodb_local.endpoint, wire="aiohttp")
    table = f"contract-{uuid.uuid4().hex[:12]}"
    try:
        await botocore.create_table(table)
        assert table in await botocore.list_tables()
        yield Contract(table, lean, lean_aiohttp, botocore)
        await botocore.delete_table(table)
        assert table not in await botocore.list_tables()
    finally:
        await lean.close()
        await lean_aiohttp.close()
        await botocore.close()


def key(pk: str) -> Item:
    return {"pk": {"S": pk}}


def b64(raw: bytes) -> str:
    return base64.b64encode(raw).decode()


RICH = {
    "pk": {"S": "rich"},
    "_ts": {"N": "1700000000123"},
    "size": {"S": "reserved word"},
    "a.b": {"S": "dotted name"},
    "s": {"S": "héllo wörld – ü€ 😀 中文 עברית e\u0301"},
    "int64_max": {"N": "9223372036854775807"},
    "int64_min": {"N": "-9223372036854775808"},
    "tenth": {"N": "0.1"},
    "huge": {"N": "1E+100"},
    "precise": {"N": "1234567890.1234567890123456789012345678"},
    "yes": {"BOOL": True},
    "no": {"BOOL": False},
    "nothing": {"NULL": True},
    "bin": {"B": b64(bytes(range(256)))},
    "bins": {"BS": [b64(b"\x00"), b64(b"\xff\xfe")]},
    "strs": {"SS": ["b", "a", "ü"]},
    "nums": {"NS": ["1", "2.5", "-3"]},
    "list": {"L": [{"S": "x"}, {"N": "1"}, {"BOOL": False}, {"NULL": True}, {"L": []}, {"M": {}}]},
    "map": {
        "M": {
            "nested": {"M": {"deeper": {"L": [{"M": {"b": {"B": b64(b"\x01\x02")}, "n": {"N": "-0.5"}}}]}}},
            "empty_string": {"S": ""},
        }
    },
}


def as_returned(item: Item) -> Item:
    """What DynamoDB (Local) answers for RICH: numbers come back normalized, in plain notation."""
    out = dict(item)
    out["huge"] = {"N": "1" + "0" * 100}
    return out


# --- reads ---


async def test_get_missing_and_present(contract: Contract) -> None:
    t = contract.table
    missing = await contract.run(lambda s: s.get_item(t, key("nobody")), touched=["nobody"])
    assert missing == Outcome(value=None, state=(None,))

    present = await contract.run(lambda s: s.get_item(t, key("rich"), consistent=True), seed=[RICH])
    assert present.error is None
    assert present.value == canonical(as_returned(RICH))


async def test_numbers_round_trip_as_dynamodb_normalizes_them(contract: Contract) -> None:
    t = contract.table
    numbers = {"pk": {"S": "numbers"}, **{f"n{i}": {"N": n} for i, n in enumerate(
        ["9223372036854775807", "-9223372036854775808", "0.1", "1E+100", "0.10", "-0", "1e-130", "007"]
    )}}  # fmt: skip
    got = await contract.run(lambda s: s.get_item(t, key("numbers"), consistent=True), seed=[numbers])
    assert got.value == {
        "pk": {"S": "numbers"},
        "n0": {"N": "9223372036854775807"},
        "n1": {"N": "-9223372036854775808"},
        "n2": {"N": "0.1"},
        "n3": {"N": "1" + "0" * 100},
        "n4": {"N": "0.1"},
        "n5": {"N": "0"},
        "n6": {"N": "0." + "0" * 129 + "1"},
        "n7": {"N": "7"},
    }


async def test_projection_with_placeholder_names(contract: Contract) -> None:
    t = contract.table
    got = await contract.run(
        lambda s: s.get_item(t, key("rich"), consistent=True, projection=["_ts", "size", "a.b", "map", "absent"]),
        seed=[RICH],
    )
    assert got.value == canonical({n: RICH[n] for n in ("_ts", "size", "a.b", "map")})

    nothing = await contract.run(lambda s: s.get_item(t, key("rich"), projection=["absent"]), seed=[RICH])
    assert nothing.value == {}  # the item exists, none of the projected attributes do


async def test_batch_get_of_100_keys_with_some_missing_keeps_order(contract: Contract) -> None:
    t = contract.table
    seed = [{"pk": {"S": f"bg{i:03}"}, "i": {"N": str(i)}, "_ts": {"N": "1"}} for i in range(0, 100, 3)]
    keys = [key(f"bg{i:03}") for i in reversed(range(100))]
    expected = [canonical(seed[i // 3]) if i % 3 == 0 else None for i in reversed(range(100))]

    got = await contract.run(lambda s: s.batch_get_item(t, keys, consistent=True), seed=seed)
    assert got.value == expected

    projected = await contract.run(lambda s: s.batch_get_item(t, keys, projection=["_ts"]), seed=seed)
    assert projected.value == [None if e is None else {"_ts": {"N": "1"}} for e in expected]


async def test_batch_get_of_duplicates_over_several_chunks(contract: Contract) -> None:
    t = contract.table
    seed = [{"pk": {"S": f"dup{i:03}"}, "s": {"S": "ü" * i}} for i in range(150)]
    keys = [key(f"dup{i % 160:03}") for i in range(320)]  # 160 distinct keys, each twice; 10 missing
    expected = [canonical(seed[i % 160]) if i % 160 < 150 else None for i in range(320)]
    got = await contract.run(lambda s: s.batch_get_item(t, keys, consistent=True), seed=seed)
    assert got.value == expected


# --- writes ---


async def test_put_with_condition_met_and_not_met(contract: Contract) -> None:
    t = contract.table
    new = {"pk": {"S": "cond"}, "_ts": {"N": "2"}, "v": {"S": "new"}}
    old = {"pk": {"S": "cond"}, "_ts": {"N": "1"}, "v": {"S": "old"}}
    newer = {"pk": {"S": "cond"}, "_ts": {"N": "3"}, "v": {"S": "newer"}}
    is_older = Condition("attribute_not_exists(pk) OR #ts < :ts", names={"#ts": "_ts"}, values={":ts": {"N": "2"}})

    met = await contract.run(lambda s: s.put_item(t, new, condition=is_older), seed=[old])
    assert met == Outcome(value=None, state=(new,))

    created = await contract.run(lambda s: s.put_item(t, new, condition=is_older), touched=["cond"])
    assert created == Outcome(value=None, state=(new,))

    not_met = await contract.run(lambda s: s.put_item(t, new, condition=is_older), seed=[newer])
    assert not_met == Outcome(error=errors.ConditionFailed, old_item=newer, state=(newer,))

    nothing_there = await contract.run(
        lambda s: s.put_item(t, new, condition=Condition("attribute_exists(pk)")), touched=["cond"]
    )
    assert nothing_there == Outcome(error=errors.ConditionFailed, old_item=None, state=(None,))


async def test_update_item_return_values(contract: Contract) -> None:
    t = contract.table
    old = {"pk": {"S": "upd"}, "n": {"N": "1"}, "keep": {"S": "k"}}
    add = {"update": "SET #n = #n + :one", "names": {"#n": "n"}, "values": {":one": {"N": "1"}}}
    new = {**old, "n": {"N": "2"}}

    for return_values, expected in [
        ("NONE", None),
        ("ALL_NEW", new),
        ("ALL_OLD", old),
        ("UPDATED_NEW", {"n": {"N": "2"}}),
        ("UPDATED_OLD", {"n": {"N": "1"}}),
    ]:
        got = await contract.run(
            lambda s, rv=return_values: s.update_item(t, key("upd"), **add, return_values=rv), seed=[old]
        )
        assert got == Outcome(value=expected, state=(new,)), return_values

    created = await contract.run(
        lambda s: s.update_item(
            t, key("upd"), update="SET #m = :m", names={"#m": "m"}, values={":m": {"M": {"b": {"B": b64(b"\0")}}}},
            return_values="ALL_OLD",
        ),
        touched=["upd"],
    )  # fmt: skip
    assert created == Outcome(value=None, state=({"pk": {"S": "upd"}, "m": {"M": {"b": {"B": "AA=="}}}},))

    guarded = Condition("#ts < :ts", names={"#ts": "_ts"}, values={":ts": {"N": "5"}})
    refused = await contract.run(
        lambda s: s.update_item(t, key("upd"), **add, condition=guarded, return_values="ALL_NEW"),
        seed=[{**old, "_ts": {"N": "9"}}],
    )
    assert refused == Outcome(
        error=errors.ConditionFailed, old_item={**old, "_ts": {"N": "9"}}, state=({**old, "_ts": {"N": "9"}},)
    )


async def test_delete_with_return_old_and_condition(contract: Contract) -> None:
    t = contract.table
    old = {"pk": {"S": "del"}, "v": {"L": [{"S": "x"}]}, "bin": {"B": b64(b"\xff")}}

    got = await contract.run(lambda s: s.delete_item(t, key("del"), return_old=True), seed=[old])
    assert got == Outcome(value=old, state=(None,))

    quiet = await contract.run(lambda s: s.delete_item(t, key("del")), seed=[old])
    assert quiet == Outcome(value=None, state=(None,))

    absent = await contract.run(lambda s: s.delete_item(t, key("del"), return_old=True), touched=["del"])
    assert absent == Outcome(value=None, state=(None,))

    refused = await contract.run(
        lambda s: s.delete_item(t, key("del"), condition=Condition("attribute_not_exists(v)"), return_old=True),
        seed=[old],
    )
    assert refused == Outcome(error=errors.ConditionFailed, old_item=old, state=(old,))


async def test_batch_write_of_puts_and_deletes(contract: Contract) -> None:
    t = contract.table
    doomed = [{"pk": {"S": f"bw-old{i}"}, "v": {"N": str(i)}} for i in range(10)]
    puts = [{"pk": {"S": f"bw{i:02}"}, "v": {"N": str(i)}, "s": {"SS": ["a", f"ü{i}"]}} for i in range(25)]
    touched = [p["pk"]["S"] for p in puts] + [d["pk"]["S"] for d in doomed]

    got = await contract.run(
        lambda s: s.batch_write_item(t, puts=puts, deletes=[key(d["pk"]["S"]) for d in doomed]),
        seed=doomed,
        touched=touched,
    )
    assert got == Outcome(value=None, state=(*map(canonical, puts), *([None] * 10)))


async def test_scan_reads_every_page(contract: Contract) -> None:
    t = contract.table
    seed = [{"pk": {"S": f"scan-{i:02}"}, "v": {"N": str(i)}} for i in range(30)]

    async def scan_ours(store: Store) -> list[Item]:
        # The table holds other tests' items too; page_size=7 forces several pages.
        items = await store.scan(t, page_size=7)
        return sorted((i for i in items if i["pk"]["S"].startswith("scan-")), key=lambda i: i["pk"]["S"])

    got = await contract.run(scan_ours, seed=seed)
    assert got.value == canonical(seed)


async def test_rich_item_written_by_either_store_reads_the_same(contract: Contract) -> None:
    t = contract.table

    async def put_then_get(store: Store) -> Item | None:
        await store.put_item(t, RICH)
        return await store.get_item(t, key("rich"), consistent=True)

    got = await contract.run(put_then_get, touched=["rich"])
    assert got == Outcome(value=canonical(as_returned(RICH)), state=(canonical(as_returned(RICH)),))


# --- errors ---


async def test_unknown_table_is_table_not_found(contract: Contract) -> None:
    got = await contract.run(lambda s: s.get_item("nonexistent-table", key("x")))
    assert got == Outcome(error=errors.TableNotFound)
    got = await contract.run(lambda s: s.batch_get_item("nonexistent-table", [key("x")]))
    assert got == Outcome(error=errors.TableNotFound)


async def test_invalid_request_is_store_validation(contract: Contract) -> None:
    t = contract.table
    assert await contract.run(lambda s: s.get_item(t, {"wrong": {"S": "x"}})) == Outcome(error=errors.StoreValidation)
    bad_update = await contract.run(
        lambda s: s.update_item(t, key("bad"), update="SET = nonsense", names={}, values={}), touched=["bad"]
    )
    assert bad_update == Outcome(error=errors.StoreValidation, state=(None,))


async def test_item_over_400_kb_is_item_too_large(contract: Contract) -> None:
    t = contract.table
    big = {"pk": {"S": "big"}, "v": {"S": "x" * (400 * 1024 + 1)}}
    assert await contract.run(lambda s: s.put_item(t, big), touched=["big"]) == Outcome(
        error=errors.ItemTooLarge, state=(None,)
    )
    grown = await contract.run(
        lambda s: s.update_item(t, key("big"), update="SET v = :v", names={}, values={":v": big["v"]}),
        seed=[{"pk": {"S": "big"}}],
    )
    assert grown == Outcome(error=errors.ItemTooLarge, state=({"pk": {"S": "big"}},))
