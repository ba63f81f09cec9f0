"""One region's acceptor of the rule registers: its ``Slot`` of each scope, in its own replica of the control table.

The slot of scope S in region R is the item ``acceptor#R#S`` of the control table, read strongly consistent and
written only in R's replica (through R's DynamoDB endpoint, by whoever proposes: ``gatewayctl``, a switch
coordinator, the scheduler), each write conditional on the ``rev`` it read. Inside a region DynamoDB makes that
a compare-and-set, so R's slot is one record whoever writes it; the item replicates to the other regions like any
other, where nobody reads it. Slots are durable: an acceptor forgets nothing when a process restarts.

A prepare also answers the rule item of R's replica (``replica``), which a proposer takes as the register's value
when no acceptor of its majority has accepted anything yet: a rule made before the control plane was a majority's
(seeded, or written by an older gatewayctl) is decided by the first change made through it.

Invariant: a slot changes only through ``ballots.on_prepare`` and ``ballots.on_accept``.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from gateway.consensus.ballots import EMPTY, ZERO, Slot, Value, decode, encode, on_accept, on_prepare
from gateway.errors import ConditionFailed
from gateway.routing.rules import RULE_PREFIX, Rule, RuleError, parse_rule
from gateway.store.base import Condition, Item, Store

ACCEPTOR_PREFIX = "acceptor#"
#: Read-modify-write attempts when another proposer writes the slot at the same time.
ATTEMPTS = 3


@dataclass(frozen=True, slots=True)
class Answer:
    """A region's answer to a prepare or an accept: whether it promised (accepted), and its slot after."""

    ok: bool
    slot: Slot
    #: Prepare only: the rule item of this region's replica (``None``: none, or not a valid rule).
    replica: Rule | None = None


def slot_key(region: str, scope: str) -> Item:
    return {"pk": {"S": f"{ACCEPTOR_PREFIX}{region}#{scope}"}}


class Acceptor:
    """Region ``region``'s slots, in the control table ``table`` of its replica (``store`` reaches it)."""

    def __init__(self, store: Store, table: str, region: str) -> None:
        self.store = store
        self._rules_table = table
        self.region = region

    async def prepare(self, scope: str, b: str) -> Answer:
        answer = await self._change(scope, lambda slot: on_prepare(slot, b))
        item = await self.store.get_item(self._rules_table, {"pk": {"S": RULE_PREFIX + scope}}, consistent=True)
        try:
            replica = None if item is None else parse_rule(item)
        except RuleError:
            replica = None
        return Answer(answer.ok, answer.slot, replica)

    async def accept(self, scope: str, b: str, value: Value) -> Answer:
        return await self._change(scope, lambda slot: on_accept(slot, b, value))

    async def slot(self, scope: str) -> Slot:
        """The slot as the replica holds it (for tests and operators)."""
        return (await self._read(scope))[1]

    async def _change(self, scope: str, rule: Callable[[Slot], Slot | None]) -> Answer:
        for _ in range(ATTEMPTS):
            rev, slot = await self._read(scope)
            after = rule(slot)
            if after is None:
                return Answer(False, slot)
            if after == slot:
                return Answer(True, slot)
            try:
                await self._write(scope, rev, after)
            except ConditionFailed:
                continue  # another proposer wrote the slot meanwhile: decide again on what it wrote
            return Answer(True, after)
        return Answer(False, (await self._read(scope))[1])

    async def _read(self, scope: str) -> tuple[int | None, Slot]:
        item = await self.store.get_item(self._rules_table, slot_key(self.region, scope), consistent=True)
        if item is None:
            return None, EMPTY
        text = item.get("value", {}).get("S")
        try:
            value = None if text is None else decode(text)
        except RuleError:
            value = None  # hand-edited: as if nothing was accepted; the next accept overwrites it
        return int(item["rev"]["N"]), Slot(item.get("promised", {}).get("S", ZERO), item.get("accepted", {}).get("S", ZERO), value)

    async def _write(self, scope: str, rev: int | None, slot: Slot) -> None:
        item: dict[str, Any] = {
            **slot_key(self.region, scope),
            "kind": {"S": "acceptor"},
            "scope": {"S": scope},
            "rev": {"N": str((rev or 0) + 1)},
            "promised": {"S": slot.promised},
        }
        if slot.accepted != ZERO:
            item["accepted"] = {"S": slot.accepted}
        if slot.value is not None:
            item["value"] = {"S": encode(slot.value)}
        if rev is None:
            condition = Condition("attribute_not_exists(pk)")
        else:
            condition = Condition("#rev = :rev", {"#rev": "rev"}, {":rev": {"N": str(rev)}})
        await self.store.put_item(self._rules_table, item, condition=condition)
