"""What calls answer: entities, batch-read results and write results, as frozen dataclasses."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from feature_gateway_client.errors import GatewayError


@dataclass(frozen=True, slots=True)
class Entity:
    """One entity's features (``GET /v1/features/{view}/{key}``) and the region whose replica answered."""

    view: str
    key: str
    features: dict[str, Any]
    version: str
    region: str


@dataclass(frozen=True, slots=True)
class ReadResult:
    """One key of a batch read: ``found`` with its features and version, or not found (``features`` empty)."""

    key: str
    found: bool
    features: dict[str, Any]
    version: str | None


@dataclass(frozen=True, slots=True)
class WriteResult:
    """The answer to one write (PUT, DELETE, or one record of a batch).

    ``applied``: this write is in DynamoDB in the primary region. Otherwise ``reason`` says why not:
    ``duplicate`` (a write with this idempotency key is already stored: an earlier attempt of this very
    call, or an earlier call with the same key), ``stale_event_time`` (something newer is stored;
    ``version`` is its version), ``not_found`` (a delete of nothing). ``error``: in a batch, the record's
    error once retries are exhausted (the other records are unaffected).
    """

    key: str
    applied: bool
    version: str | None
    reason: str | None = None
    primary: str | None = None
    forwarded: bool = False
    idempotency_key: str | None = None
    error: GatewayError | None = None

    @property
    def landed(self) -> bool:
        """The write is stored: applied now, or by an earlier attempt with its idempotency key (``duplicate``)."""
        return self.applied or self.reason == "duplicate"
