"""AWS credentials for the data plane: botocore's provider chain, read cheaply per request.

``CredentialSource.get()`` is on every DynamoDB request's path, so it answers from
a cached frozen copy and only asks the provider (aiobotocore's
``get_frozen_credentials()``) once every ``recheck_interval`` seconds. Asking is
what drives the refreshable credentials' own schedule: botocore refreshes
temporary credentials (web identity, IMDS, SSO, assume-role) when fewer than
15 minutes remain (advisory, failures tolerated) and blocks for a refresh when
fewer than 10 remain (mandatory). So the copy handed out always has at least
``10 min - recheck_interval`` of validity left.

Invariants: at most one refresh is in flight; while it runs, callers keep
getting the cached copy instead of queueing behind it; a provider that cannot
produce credentials surfaces as ``StoreUnavailable`` with a message naming what
to fix, never as a botocore exception.

Provider chain: https://boto3.amazonaws.com/v1/documentation/api/latest/guide/credentials.html
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Callable
from typing import Any, Protocol

from aiobotocore.credentials import AioCredentials
from botocore.credentials import ReadOnlyCredentials

from gateway.errors import StoreUnavailable

__all__ = ["CredentialSource", "ReadOnlyCredentials"]


class _Provider(Protocol):
    """What aiobotocore's ``AioCredentials``/``AioRefreshableCredentials`` offer."""

    async def get_frozen_credentials(self) -> ReadOnlyCredentials: ...


class CredentialSource:
    """Frozen credentials for signing, refreshed ahead of expiry."""

    def __init__(
        self,
        provider: _Provider,
        *,
        recheck_interval: float = 30.0,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self._provider = provider
        self._recheck_interval = recheck_interval
        self._clock = clock
        self._lock = asyncio.Lock()
        # Guarded by the event loop (single thread); replaced together by _refresh_locked().
        self._frozen: ReadOnlyCredentials | None = None
        self._next_check = float("-inf")

    @classmethod
    def static(cls, access_key: str, secret_key: str, token: str | None = None) -> CredentialSource:
        """Fixed keys (tests, DynamoDB Local): never refreshed."""
        return cls(AioCredentials(access_key, secret_key, token, method="static"), recheck_interval=float("inf"))

    @classmethod
    async def from_provider_chain(cls, session: Any = None, **kw: Any) -> CredentialSource:
        """Resolve credentials the way every AWS SDK does (env, profiles, web identity, IMDS, ...).

        ``session`` is an aiobotocore session (a fresh one by default). Fails at once,
        with ``StoreUnavailable``, when the chain finds nothing: better at start than
        on the first request.
        """
        if session is None:
            from aiobotocore.session import get_session

            session = get_session()
        try:
            provider = await session.get_credentials()
        except Exception as exc:  # botocore raises many unrelated types from its providers
            raise StoreUnavailable(
                f"Resolving AWS credentials failed ({type(exc).__name__}: {exc}); "
                "check AWS_PROFILE, the web identity token file or the instance role."
            ) from exc
        if provider is None:
            raise StoreUnavailable(
                "No AWS credentials found: set AWS_ACCESS_KEY_ID/AWS_SECRET_ACCESS_KEY, AWS_PROFILE, "
                "a web identity (IRSA) role, or run where the instance metadata service provides a role."
            )
        source = cls(provider, **kw)
        await source.get()
        return source

    def cached(self) -> ReadOnlyCredentials | None:
        """The cached copy if it needs no check yet, else ``None``: lets the hot path skip an await."""
        if self._clock() < self._next_check:
            return self._frozen
        return None

    async def get(self) -> ReadOnlyCredentials:
        """Current credentials; awaits the provider only once per ``recheck_interval``."""
        frozen = self._frozen
        if frozen is not None and self._clock() < self._next_check:
            return frozen
        if frozen is not None and self._lock.locked():
            # Someone is already asking the provider, and our copy is still inside botocore's
            # 10-minute safety margin: do not queue every request behind that refresh.
            return frozen
        async with self._lock:
            if self._frozen is None or self._clock() >= self._next_check:
                await self._refresh_locked()
            assert self._frozen is not None
            return self._frozen

    async def _refresh_locked(self) -> None:
        try:
            frozen = await self._provider.get_frozen_credentials()
        except Exception as exc:  # provider errors are botocore/aiohttp/RuntimeError: map them all
            raise StoreUnavailable(
                f"Refreshing AWS credentials failed ({type(exc).__name__}: {exc}); DynamoDB requests "
                "cannot be signed until the credential provider (role, web identity, IMDS) answers."
            ) from exc
        if frozen is None or not frozen.access_key or not frozen.secret_key:
            raise StoreUnavailable("The AWS credential provider returned empty credentials.")
        self._frozen = frozen
        self._next_check = self._clock() + self._recheck_interval

    def invalidate(self) -> None:
        """Make the next ``get()`` ask the provider again (e.g. after DynamoDB said the token expired)."""
        self._next_check = float("-inf")
