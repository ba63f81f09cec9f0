"""What both clients are configured with: the gateway's address, the bearer token, the deadline, the pool.

Each setting comes from the constructor's argument, else from the environment
(``FEATURE_GATEWAY_URL``, ``FEATURE_GATEWAY_TOKEN``), else the default: the
sidecar on ``http://127.0.0.1:8700``, no token, 5 s per call (the gateway's own
``gateway.request_timeout``).
"""

from __future__ import annotations

import os
from dataclasses import dataclass, field

import httpx

from feature_gateway_client.retry import RetryPolicy

URL_ENV = "FEATURE_GATEWAY_URL"
TOKEN_ENV = "FEATURE_GATEWAY_TOKEN"
DEFAULT_URL = "http://127.0.0.1:8700"
DEFAULT_TIMEOUT = 5.0


@dataclass(frozen=True, slots=True)
class Settings:
    base_url: str
    token: str | None
    timeout: float
    retry: RetryPolicy = field(default_factory=RetryPolicy)
    #: Idle keep-alive connections are closed after 5 s, well before the gateway's idle_timeout (75 s).
    limits: httpx.Limits = field(default_factory=lambda: httpx.Limits(max_connections=100, max_keepalive_connections=32, keepalive_expiry=5.0))

    @classmethod
    def resolve(
        cls, base_url: str | None, token: str | None, timeout: float | None, retry: RetryPolicy | None,
        limits: httpx.Limits | None,
    ) -> Settings:
        url = (base_url or os.environ.get(URL_ENV) or DEFAULT_URL).rstrip("/")
        if not url.startswith(("http://", "https://")):
            raise ValueError(f"base_url must be an http:// or https:// URL, not {url!r}")
        if timeout is not None and not timeout > 0:
            raise ValueError("timeout must be a number of seconds above 0")
        return cls(
            url, token if token is not None else os.environ.get(TOKEN_ENV) or None,
            DEFAULT_TIMEOUT if timeout is None else timeout, retry or RetryPolicy(),
            limits or cls.__dataclass_fields__["limits"].default_factory(),  # type: ignore[misc]
        )

    def headers(self) -> list[tuple[bytes, bytes]]:
        """Headers every request carries."""
        base = [(b"Accept", b"application/json")]
        if self.token:
            base.append((b"Authorization", b"Bearer " + self.token.encode("ascii")))
        return base
