"""The emulator's decisions, without I/O: versions, last writer wins, echoes, conditions, per-item order.

gateway/local/emulator.py reads streams and applies changes; everything it
decides about a stream record or a target's stored item is here, as pure
functions, so the unit tests can check the rules the module docstring of
``emulator`` states (last writer wins on (``_ts``, ``_region``), echoes,
stamping of writes that bypassed the gateway, tombstone-free deletes).

Invariant: ``should_apply`` says exactly what the conditions built here make
DynamoDB decide; the conditions are the only place the decision is enforced.
"""

from __future__ import annotations

import enum
import random
from collections import deque
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

from gateway.store.base import Condition, Item, key_identity

__all__ = [
    "Change",
    "Kind",
    "Version",
    "classify",
    "delete_condition",
    "interleave",
    "lossy",
    "newer",
    "put_condition",
    "should_apply",
    "stamp_condition",
    "version_of",
]

#: (``_ts`` in µs, ``_region``): the last-writer-wins order. ``None`` is an unstamped item, older than any version.
Version = tuple[int, str]

#: Placeholders of the conditions: names starting with "_" need them.
NAMES = {"#ts": "_ts", "#rg": "_region"}


class Kind(enum.Enum):
    PUT = "put"  # write the new image into the target if it is newer
    DELETE = "delete"  # delete the target's copy if it is not newer than the deleted item
    STAMP = "stamp"  # give an item written past the gateway a version, in its own region


@dataclass(frozen=True, slots=True)
class Change:
    """One stream record, decided. ``version``: PUT the new image's, DELETE and STAMP the old image's."""

    kind: Kind
    source: str
    table: str
    key: Item
    image: Item | None
    version: Version | None
    sequence: str
    seen: float  # monotonic time the reader got it

    @property
    def ident(self) -> tuple[Any, ...]:
        """Which item: changes with the same ident are never reordered."""
        return (self.table, key_identity(self.key, sorted(self.key)))


def version_of(image: Mapping[str, Mapping[str, Any]] | None) -> Version | None:
    if not image or "_ts" not in image:
        return None
    region = image.get("_region")
    return int(image["_ts"]["N"]), region["S"] if region else ""


def newer(a: Version | None, b: Version | None) -> bool:
    """Whether version ``a`` wins over ``b``: larger ``_ts``, then larger ``_region``; unstamped loses to stamped."""
    if a is None:
        return False
    return b is None or a > b


def should_apply(change: Change, stored: Item | None) -> bool:
    """What the conditions below make DynamoDB decide, given the target's stored item (for tests and reasoning)."""
    stored_version = version_of(stored)
    if change.kind is Kind.PUT:
        return stored is None or newer(change.version, stored_version)
    if change.kind is Kind.DELETE:
        if change.version is None:
            return stored_version is None
        return stored_version is None or not newer(stored_version, change.version)
    # STAMP: only if the item still is the one the record saw (same version, or still unstamped).
    return stored is not None and stored_version == change.version


def classify(region: str, table: str, record: Mapping[str, Any], seen: float) -> Change | None:
    """The change to replicate for one stream record of ``region``'s ``table``, or ``None`` for an echo."""
    data = record["dynamodb"]
    key = data["Keys"]
    sequence = data["SequenceNumber"]
    old = data.get("OldImage")
    if record["eventName"] == "REMOVE":
        return Change(Kind.DELETE, region, table, key, None, version_of(old), sequence, seen)
    new = data.get("NewImage")
    if new is None:
        raise ValueError(f"the stream of {table!r} in {region} has no new images: it must be NEW_AND_OLD_IMAGES")
    version = version_of(new)
    if version is None or (old is not None and version_of(old) == version):
        # Written past the gateway: nobody gave this content a version yet.
        return Change(Kind.STAMP, region, table, key, None, version, sequence, seen)
    if version[1] != region:
        return None  # applied here by replication (see the module docstring)
    return Change(Kind.PUT, region, table, key, new, version, sequence, seen)


def lossy(image: Mapping[str, Any]) -> bool:
    """Whether a stream image lost a type: DynamoDB Local renders an empty map as ``{}``, at any depth.

    Such an image cannot be written as it is ("Supplied AttributeValue is empty"); the applier reads
    the item from its source instead (``GlobalTableEmulator``).
    """
    return any(_lossy_value(value) for value in image.values())


def _lossy_value(value: Any) -> bool:
    if not isinstance(value, Mapping) or len(value) != 1:
        return True
    ((tag, raw),) = value.items()
    if tag == "M":
        return lossy(raw)
    if tag == "L":
        return any(_lossy_value(item) for item in raw)
    return False


def interleave(changes: Sequence[Change], rng: random.Random) -> list[Change]:
    """A random order of ``changes`` in which the changes of each item keep their relative order."""
    lanes: dict[tuple[Any, ...], deque[Change]] = {}
    for change in changes:
        lanes.setdefault(change.ident, deque()).append(change)
    # Drawing the next lane weighted by its length is a uniform random merge of the lanes.
    order = [ident for ident, lane in lanes.items() for _ in lane]
    rng.shuffle(order)
    return [lanes[ident].popleft() for ident in order]


def put_condition(version: Version) -> Condition:
    return Condition(
        "attribute_not_exists(#ts) OR #ts < :ts OR (#ts = :ts AND #rg < :rg)",
        NAMES,
        {":ts": {"N": str(version[0])}, ":rg": {"S": version[1]}},
    )


def delete_condition(version: Version | None) -> Condition:
    if version is None:
        return Condition("attribute_not_exists(#ts)", {"#ts": "_ts"})
    return Condition(
        "attribute_not_exists(#ts) OR #ts < :ts OR (#ts = :ts AND #rg <= :rg)",
        NAMES,
        {":ts": {"N": str(version[0])}, ":rg": {"S": version[1]}},
    )


def stamp_condition(change: Change) -> Condition:
    key_name = min(change.key)
    if change.version is None:
        return Condition("attribute_exists(#k) AND attribute_not_exists(#ts)", {"#k": key_name, "#ts": "_ts"})
    return Condition(
        "#ts = :ots AND #rg = :org", NAMES, {":ots": {"N": str(change.version[0])}, ":org": {"S": change.version[1]}}
    )
