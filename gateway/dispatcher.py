"""The one place that decides where a request goes.

Handlers translate HTTP into calls on the ``Dispatcher`` and its answers back
into HTTP; they never route, retry or buffer. Today every region writes to its
own table (routing to a primary arrives with the control table); the
dispatcher is where that decision will live, so handlers do not change when it
does.

Invariant: a write is acknowledged (``applied: true``) only after DynamoDB in
the primary region accepted the conditional write; a refused condition is an
answer (``applied: false`` with a reason), never an error.
"""

from __future__ import annotations

import asyncio
from typing import Any

from gateway.clock import Clock
from gateway.config import Config, ViewConfig
from gateway.errors import ConditionFailed, GatewayError
from gateway.items import (
    Stamp,
    features_of,
    key_of,
    not_applied_reason,
    put_item,
    token_of,
    write_condition,
)
from gateway.read_coalescer import ReadCoalescer
from gateway.records import WriteRecord
from gateway.store import Store

#: Epoch every write is stamped with until routing rules (and their epochs) exist.
INITIAL_EPOCH = 0


class Dispatcher:
    __slots__ = ("_config", "_store", "_reads", "_clock", "region")

    def __init__(self, config: Config, store: Store, reads: ReadCoalescer, clock: Clock) -> None:
        self._config = config
        self._store = store
        self._reads = reads
        self._clock = clock
        self.region = config.region

    # -- reads ---------------------------------------------------------------------------------

    async def read(self, view: ViewConfig, key: str, wanted: tuple[str, ...] | None, strong: bool) -> dict[str, Any] | None:
        """One entity's features, or ``None`` when it does not exist."""
        item = await self._reads.get(view.table, view.key_attribute, key, strong)
        if item is None:
            return None
        return {
            "view": view.name,
            "key": key,
            "features": features_of(item, view.key_attribute, wanted),
            "version": token_of(item),
            "region": self.region,
        }

    async def read_many(
        self, view: ViewConfig, keys: list[str], wanted: tuple[str, ...] | None, strong: bool
    ) -> list[dict[str, Any]]:
        key_attribute = view.key_attribute
        items = await self._store.batch_get_item(
            view.table, [key_of(key_attribute, k) for k in keys], consistent=strong
        )
        results = []
        for key, item in zip(keys, items):
            if item is None:
                results.append({"key": key, "status": "NOT_FOUND", "features": None, "version": None})
            else:
                results.append(
                    {
                        "key": key,
                        "status": "PRESENT",
                        "features": features_of(item, key_attribute, wanted),
                        "version": token_of(item),
                    }
                )
        return results

    # -- writes --------------------------------------------------------------------------------

    async def write(self, record: WriteRecord) -> dict[str, Any]:
        """Apply one write (put or delete) in the primary region and say whether it was applied."""
        stamp = Stamp(self._clock.wall_us(), self.region, INITIAL_EPOCH)
        view = record.view
        try:
            if record.attributes is None:
                old = await self._store.delete_item(
                    view.table, key_of(view.key_attribute, record.key), condition=write_condition(record), return_old=True
                )
                if old is None:
                    return self._answer(False, None, reason="not_found")
            else:
                await self._store.put_item(view.table, put_item(record, stamp), condition=write_condition(record))
        except ConditionFailed as refused:
            stored = refused.old_item
            return self._answer(False, token_of(stored) if stored else None, reason=not_applied_reason(record, stored))
        return self._answer(True, stamp.version().token())

    async def write_many(self, records: list[WriteRecord]) -> list[dict[str, Any]]:
        """Each record is its own conditional write (BatchWriteItem takes no conditions); answers in order."""
        answers = await asyncio.gather(*(self.write(r) for r in records), return_exceptions=True)
        results: list[dict[str, Any]] = []
        for record, answer in zip(records, answers):
            if isinstance(answer, GatewayError):
                results.append(
                    {"key": record.key, "error": {"code": answer.code, "message": answer.message, "retryable": answer.retryable}}
                )
            elif isinstance(answer, BaseException):
                raise answer
            else:
                answer["key"] = record.key
                results.append(answer)
        return results

    def _answer(self, applied: bool, version: str | None, reason: str | None = None) -> dict[str, Any]:
        answer: dict[str, Any] = {"applied": applied, "version": version, "primary": self.region, "forwarded": False}
        if reason is not None:
            answer["reason"] = reason
        return answer
