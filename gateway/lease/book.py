"""A region's book of promises: the ``promises.grant`` rule applied to one item of its control-table replica.

Each region's gateways keep the region's promises in one item, ``promises#<region>`` in the control table,
that only they write, in their own region's replica, every write conditional on the version they read: the
region's promises are one record whichever gateway answers, and two gateways asked at once cannot both give a
conflicting promise (one's write fails its condition; it reads again). The item replicates to the other
regions like any other, where nothing reads it. The promises are durable: a gateway that restarts finds them.

Invariant: a scope's promise in the item changes only through ``promises.grant`` or ``promises.release``.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from typing import Any

from gateway.clock import Clock
from gateway.errors import ConditionFailed
from gateway.lease.promises import Known, Promise, grant, release
from gateway.store.base import Condition, Store

PROMISES_PREFIX = "promises#"
#: Read-modify-write attempts when another gateway of the region writes the item at the same time.
ATTEMPTS = 3

_CAS = Condition("attribute_not_exists(pk) OR #v = :v", {"#v": "version"})


class PromiseBook:
    """This region's promises, by scope, in its own replica of the control table."""

    def __init__(self, store: Store, table: str, region: str, clock: Clock, lease: float, max_drift: float) -> None:
        self._store = store
        self._rules_table = table
        self._clock = clock
        self._lease_ms = int(lease * 1000)
        self._drift_ms = int(max_drift * 1000)
        self._key = {"pk": {"S": PROMISES_PREFIX + region}}

    async def grant(
        self, asker: str, scopes: Mapping[str, int], known: Callable[[str], Known | None]
    ) -> tuple[list[str], dict[str, str]]:
        """Confirm what may be confirmed of ``asker``'s lease on ``scopes`` (scope -> epoch): granted, refused."""
        for _ in range(ATTEMPTS):
            version, promises = await self._read()
            granted: list[str] = []
            refused: dict[str, str] = {}
            now = self._clock.wall_ms()
            for scope, epoch in scopes.items():
                answer = grant(promises.get(scope), asker, epoch, known(scope), now, self._lease_ms, self._drift_ms)
                if isinstance(answer, Promise):
                    promises[scope] = answer
                    granted.append(scope)
                else:
                    refused[scope] = answer
            if not granted:
                return granted, refused
            try:
                await self._write(version, promises)
            except ConditionFailed:
                continue  # another gateway of this region wrote meanwhile: read its promises and decide again
            return granted, refused
        return [], {scope: "the region's promises kept changing; ask again" for scope in scopes}

    async def release(self, holder: str, scope: str, epoch: int) -> None:
        """A planned switch's handover: ``holder``'s promise on ``scope`` ends now."""
        for _ in range(ATTEMPTS):
            version, promises = await self._read()
            kept = release(promises.get(scope), holder, epoch)
            if kept == promises.get(scope):
                return
            promises.pop(scope, None)
            try:
                await self._write(version, promises)
            except ConditionFailed:
                continue
            return

    async def promises(self) -> dict[str, Promise]:
        """The region's promises as its replica holds them (for tests and operators)."""
        return (await self._read())[1]

    async def _read(self) -> tuple[int | None, dict[str, Promise]]:
        item = await self._store.get_item(self._rules_table, self._key, consistent=True)
        if item is None:
            return None, {}
        promises = {
            scope: Promise(entry["M"]["holder"]["S"], int(entry["M"]["epoch"]["N"]), int(entry["M"]["until"]["N"]))
            for scope, entry in item.get("scopes", {"M": {}})["M"].items()
        }
        return int(item["version"]["N"]), promises

    async def _write(self, version: int | None, promises: Mapping[str, Promise]) -> None:
        item: dict[str, Any] = {
            **self._key,
            "kind": {"S": "promises"},
            "version": {"N": str((version or 0) + 1)},
            "scopes": {"M": {
                scope: {"M": {"holder": {"S": p.holder}, "epoch": {"N": str(p.epoch)}, "until": {"N": str(p.until_ms)}}}
                for scope, p in promises.items()
            }},
        }
        condition = Condition(_CAS.expression, _CAS.names, {":v": {"N": str(version if version is not None else -1)}})
        await self._store.put_item(self._rules_table, item, condition=condition)
