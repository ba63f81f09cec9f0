"""Fixtures of the client's unit tests: both clients on httpx's MockTransport, on a fake clock.

``clients`` runs a test against ``Client`` and ``AsyncClient`` alike: ``await act(x)`` takes either a result
or an awaitable, so one test body covers both. Waits move the fake clock instead of sleeping.
"""

from __future__ import annotations

import inspect
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import httpx
import pytest
from feature_gateway_client import AsyncClient, Client, RetryPolicy

BASE = "http://127.0.0.1:8700"


@dataclass
class FakeClock:
    now: float = 1000.0
    wall: int = 1_767_225_600_000
    slept: list[float] = field(default_factory=list)

    def monotonic(self) -> float:
        return self.now

    def wall_ms(self) -> int:
        return self.wall

    def sleep(self, seconds: float) -> None:
        assert seconds >= 0
        self.slept.append(seconds)
        self.now += seconds

    async def async_sleep(self, seconds: float) -> None:
        self.sleep(seconds)


@dataclass
class Gateway:
    """A scripted gateway: ``answers`` are served in order (the last one again), every request is kept."""

    clock: FakeClock
    answers: list[Any] = field(default_factory=list)
    requests: list[httpx.Request] = field(default_factory=list)
    #: Seconds each attempt takes on the fake clock.
    latency: float = 0.001

    def handle(self, request: httpx.Request) -> httpx.Response:
        self.requests.append(request)
        self.clock.now += self.latency
        answer = self.answers[min(len(self.requests), len(self.answers)) - 1]
        if callable(answer):
            answer = answer(request)
        if isinstance(answer, Exception):
            raise answer
        return answer


def error(status: int, code: str, retryable: bool, retry_after: int | None = None, message: str = "no") -> httpx.Response:
    headers = {"X-Request-Id": "req-1"}
    if retry_after is not None:
        headers["Retry-After"] = str(retry_after)
    return httpx.Response(status, json={"error": {"code": code, "message": message, "retryable": retryable}}, headers=headers)


def ok(body: dict[str, Any]) -> httpx.Response:
    return httpx.Response(200, json=body, headers={"X-Request-Id": "req-ok"})


def entity(key: str = "u-1", version: str = "0.100.us-east-1", **features: Any) -> httpx.Response:
    return ok({"view": "users", "key": key, "features": features or {"age": 1}, "version": version, "region": "us-east-1"})


def applied(version: str = "0.200.us-east-1") -> httpx.Response:
    return ok({"applied": True, "version": version, "primary": "us-east-1", "forwarded": False})


async def act(result: Any) -> Any:
    """The result of a call of either client."""
    return await result if inspect.isawaitable(result) else result


@pytest.fixture
def clock() -> FakeClock:
    return FakeClock()


@pytest.fixture
def gateway(clock: FakeClock) -> Gateway:
    return Gateway(clock)


@pytest.fixture(params=["sync", "async"])
def make(request: pytest.FixtureRequest, clock: FakeClock, gateway: Gateway) -> Callable[..., Any]:
    """``make(**kwargs)``: a Client or AsyncClient (by the parameter) talking to ``gateway`` on ``clock``."""

    def build(**kwargs: Any) -> Client | AsyncClient:
        kwargs.setdefault("retry", RetryPolicy(rng=lambda: 0.5))
        transport = httpx.MockTransport(gateway.handle)
        if request.param == "sync":
            return Client(BASE, transport=transport, clock=clock.monotonic, sleep=clock.sleep, wall_ms=clock.wall_ms, **kwargs)
        return AsyncClient(BASE, transport=transport, clock=clock.monotonic, sleep=clock.async_sleep, wall_ms=clock.wall_ms, **kwargs)

    return build
