"""The majority control plane's rule, as pure functions: one scope's rule is a register that a majority decides.

Every change of a rule (a ``gatewayctl`` edit, a switch's steps, a failover, a scheduled switch) is a
compare-and-set of one register per scope, decided by a majority of the regions, as CASPaxos does it (Rystsov,
"CASPaxos: Replicated State Machines without logs", 2018): each region is an *acceptor* of every scope's
register, one ``Slot`` per (region, scope), kept in an item of the control table that is written only in that
region's replica, each write conditional on the one read (gateway/consensus/acceptor.py). A proposer
(gateway/consensus/proposer.py) changes a register in two phases:

1. **prepare** with a ballot higher than any it has seen: each acceptor that has promised and accepted only
   lower ballots promises this one and answers what it accepted; with a majority of promises, the register's
   current value is the value of the highest ballot accepted among them (``chosen``);
2. **accept** the new value (the change applied to the current one) with the same ballot: each acceptor that
   has promised no higher ballot meanwhile accepts it; once a majority accepted, the change is *decided*.

Why it holds: two majorities share a region. A change decided at ballot b was accepted by a majority; any later
ballot's prepare hears from one of them, so its proposer sees that value (or a later one) as current and builds
on it: a decided value is never lost, and two changes made from the same current value cannot both be decided
(the second's compare-and-set finds the first). A proposer that hears from no majority decides nothing, and says
so; what it did get accepted may still become current through a later proposer (as in every Paxos), so such a
change is reported as *not confirmed*, never as refused.

Ballots are ``(counter, proposer)`` pairs; their text form sorts as the pair does (the counter zero-padded), so a
DynamoDB condition can compare two ballots.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass
from typing import Any

import orjson

from gateway.routing.rules import Rule, RuleError, check_scope, rule_from_json

#: Digits of a ballot's counter: milliseconds since 1970 fit until the year 2286.
COUNTER_DIGITS = 13
#: No ballot: lower than every ballot a proposer makes.
ZERO = ""


def ballot(counter: int, proposer: str) -> str:
    """The text form of ballot ``(counter, proposer)``; it sorts as the pair does."""
    assert 0 < counter < 10**COUNTER_DIGITS and "/" not in proposer and proposer
    return f"{counter:0{COUNTER_DIGITS}d}/{proposer}"


def counter_of(b: str) -> int:
    return int(b.split("/", 1)[0]) if b else 0


@dataclass(frozen=True, slots=True)
class Deleted:
    """A register's value once its rule was deleted: the scope has no rule (``version`` is the rule deleted)."""

    scope: str
    version: int
    updated_by: str = ""


#: A register's value: the scope's rule, or that it was deleted.
Value = Rule | Deleted


def encode(value: Value) -> str:
    if isinstance(value, Deleted):
        return orjson.dumps({"deleted": {"scope": value.scope, "version": value.version, "by": value.updated_by}}).decode()
    return orjson.dumps({"rule": value.to_json()}).decode()


def decode(text: str) -> Value:
    """A stored value; raises ``RuleError`` when it is not one (an item edited by hand, say)."""
    try:
        body: Any = orjson.loads(text)
    except orjson.JSONDecodeError as exc:
        raise RuleError(f"an accepted value is not JSON: {exc}") from None
    if isinstance(body, dict) and isinstance(body.get("deleted"), dict):
        gone = body["deleted"]
        version = gone.get("version")
        if not isinstance(version, int) or isinstance(version, bool):
            raise RuleError("an accepted deletion names no version")
        return Deleted(check_scope(gone.get("scope")), version, str(gone.get("by") or ""))
    if isinstance(body, dict) and "rule" in body:
        return rule_from_json(body["rule"])
    raise RuleError("an accepted value is neither a rule nor a deletion")


@dataclass(frozen=True, slots=True)
class Slot:
    """One region's acceptor state for one scope's register."""

    #: The highest ballot this region promised (in a prepare or an accept).
    promised: str = ZERO
    #: The ballot of the value it accepted last, and that value (``None``: it accepted nothing yet).
    accepted: str = ZERO
    value: Value | None = None


EMPTY = Slot()


def on_prepare(slot: Slot, b: str) -> Slot | None:
    """The slot after promising ballot ``b``, or ``None``: a ballot as high was promised or accepted already."""
    if b > slot.promised and b > slot.accepted:
        return Slot(b, slot.accepted, slot.value)
    return None


def on_accept(slot: Slot, b: str, value: Value) -> Slot | None:
    """The slot after accepting ``value`` at ballot ``b``, or ``None``: a higher ballot was promised meanwhile.

    Accepting again what was accepted at ``b`` is allowed (a proposer's retry), and changes nothing.
    """
    if b >= slot.promised and b >= slot.accepted:
        if b == slot.accepted and value != slot.value:
            return None  # one ballot, one value: a second value at b would be a different proposal
        return Slot(b, b, value)
    return None


def chosen(slots: Iterable[Slot]) -> Value | None:
    """The register's value as a majority's promises show it: the value of the highest ballot accepted."""
    best: Slot | None = None
    for slot in slots:
        if slot.value is not None and (best is None or slot.accepted > best.accepted):
            best = slot
    return None if best is None else best.value
