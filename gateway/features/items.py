"""Feature items in DynamoDB: the system attributes the gateway owns, the write condition, versions.

An item is the entity's features plus the system attributes of DESIGN.md §3:
``_ts`` (µs write time), ``_region`` (region that accepted the write),
``_epoch`` (routing epoch), ``_event_ts`` (ms event time the writer declared),
``_req`` (idempotency key of the last applied write). Callers never see them,
except folded into the opaque ``version`` token.

The write condition is the whole of the gateway's write semantics: a write is
applied only if the stored event time is not newer and the stored idempotency
key differs. It is evaluated by DynamoDB atomically with the write, so two
gateways racing on one key cannot both believe they won.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from typing import Any

from gateway.features.records import WriteRecord
from gateway.features.values import from_attribute
from gateway.store.base import Condition

SYSTEM_ATTRIBUTES = ("_ts", "_region", "_epoch", "_event_ts", "_req")
#: A version token: ``EPOCH.MICROSECONDS.REGION`` (ASCII digits; the region as config names regions, or empty
#: for an item some other tool wrote).
VERSION_PATTERN = r"^(0|[1-9][0-9]{0,17})\.(0|[1-9][0-9]{0,17})\.((?:[a-z]{2}(?:-[a-z]+)+-[0-9]+)?)$(?!\n)"
_VERSION = re.compile(VERSION_PATTERN)

WRITE_CONDITION = "(attribute_not_exists(#ets) OR #ets <= :ets) AND (attribute_not_exists(#req) OR #req <> :req)"
_CONDITION_NAMES = {"#ets": "_event_ts", "#req": "_req"}


@dataclass(frozen=True, slots=True, order=True)
class Version:
    """Versions order by (epoch, ts): clocks of two regions differ, epochs do not lie (DESIGN.md §6.6)."""

    epoch: int
    ts: int
    region: str

    def token(self) -> str:
        return f"{self.epoch}.{self.ts}.{self.region}"

    @classmethod
    def parse(cls, token: str) -> Version:
        match = _VERSION.fullmatch(token)
        if match is None:
            raise ValueError(f"{token[:64]!r} is not a version token returned by this gateway")
        return cls(int(match[1]), int(match[2]), match[3])


@dataclass(frozen=True, slots=True)
class Stamp:
    """What the accepting gateway adds to a write."""

    ts: int
    region: str
    epoch: int

    def version(self) -> Version:
        return Version(self.epoch, self.ts, self.region)


def _write_values(record: WriteRecord) -> dict[str, dict[str, str]]:
    return {":ets": {"N": str(record.event_ms)}, ":req": {"S": record.idempotency_key}}


def write_condition(record: WriteRecord) -> Condition:
    return Condition(WRITE_CONDITION, _CONDITION_NAMES, _write_values(record))


#: Within one epoch, a put lands only over an older stamp: of two writes of one key racing at the primary, the one
#: DynamoDB applies last must carry the later version, or the version a caller was given would go back, and
#: replication (last writer wins by version) would keep the one the primary overwrote. Across epochs nothing is
#: added: a key may fall back to a rule of a lower epoch (its scope deleted), and leases keep epochs apart.
VERSION_CONDITION = "(attribute_not_exists(#ts) OR attribute_not_exists(#ep) OR #ep <> :ep OR #ts < :ts)"
_PUT_CONDITION = f"{WRITE_CONDITION} AND {VERSION_CONDITION}"
_PUT_NAMES = {**_CONDITION_NAMES, "#ts": "_ts", "#ep": "_epoch"}


def put_condition(record: WriteRecord, stamp: Stamp) -> Condition:
    """``write_condition`` and the version order, for a put stamped ``stamp``."""
    values = _write_values(record)
    values[":ep"] = {"N": str(stamp.epoch)}
    values[":ts"] = {"N": str(stamp.ts)}
    return Condition(_PUT_CONDITION, _PUT_NAMES, values)


def lost_the_race(record: WriteRecord, stamp: Stamp, stored: dict[str, dict[str, Any]] | None) -> int | None:
    """When a put was refused only for the version order (a concurrent write of the key landed first with a later
    stamp), the stored ``_ts`` to stamp above; ``None`` when it was refused for its event time or its key."""
    if stored is None or stored.get("_req", {}).get("S") == record.idempotency_key:
        return None
    event = stored.get("_event_ts")
    if event is not None and int(event["N"]) > record.event_ms:
        return None
    epoch, ts = stored.get("_epoch"), stored.get("_ts")
    if ts is None or (int(epoch["N"]) if epoch else 0) != stamp.epoch:
        return None
    return int(ts["N"])


def key_of(view_key_attribute: str, key: str) -> dict[str, dict[str, Any]]:
    return {view_key_attribute: {"S": key}}


def put_item(record: WriteRecord, stamp: Stamp) -> dict[str, dict[str, Any]]:
    assert record.attributes is not None, "put_item of a delete record"
    item = dict(record.attributes)
    item[record.view.key_attribute] = {"S": record.key}
    item["_ts"] = {"N": str(stamp.ts)}
    item["_region"] = {"S": stamp.region}
    item["_epoch"] = {"N": str(stamp.epoch)}
    item["_event_ts"] = {"N": str(record.event_ms)}
    item["_req"] = {"S": record.idempotency_key}
    return item


def version_of(item: dict[str, dict[str, Any]]) -> Version | None:
    """The item's version, or ``None`` for an item no gateway wrote (no ``_ts``)."""
    ts = item.get("_ts")
    if ts is None:
        return None
    epoch = item.get("_epoch")
    region = item.get("_region")
    return Version(int(epoch["N"]) if epoch else 0, int(ts["N"]), region["S"] if region else "")


def token_of(item: dict[str, dict[str, Any]]) -> str | None:
    """``version_of(item).token()`` without building the ``Version``: this runs for every read."""
    ts = item.get("_ts")
    if ts is None:
        return None
    epoch = item.get("_epoch")
    region = item.get("_region")
    # DynamoDB answers numbers in canonical form, so the N text is the integer's text.
    return f"{epoch['N'] if epoch else 0}.{ts['N']}.{region['S'] if region else ''}"


def features_of(item: dict[str, dict[str, Any]], key_attribute: str, wanted: tuple[str, ...] | None) -> dict[str, Any]:
    if wanted is not None:
        return {name: from_attribute(item[name]) for name in wanted if name in item}
    return {
        name: from_attribute(attr)
        for name, attr in item.items()
        if name != key_attribute and not name.startswith("_")
    }


def not_applied_reason(record: WriteRecord, stored: dict[str, dict[str, Any]] | None) -> str:
    """Why DynamoDB refused the write condition, from the item it returned."""
    if stored is not None and stored.get("_req", {}).get("S") == record.idempotency_key:
        return "duplicate"
    return "stale_event_time"
