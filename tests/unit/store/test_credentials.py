"""CredentialSource hands out cached credentials and refreshes them ahead of expiry, on one clock."""

from __future__ import annotations

import asyncio
import datetime
from typing import Any

import pytest
from aiobotocore.credentials import AioRefreshableCredentials

from gateway.errors import StoreUnavailable
from gateway.store.credentials import CredentialSource
from tests.fakes import FakeClock

HOUR = 3600.0


class FakeSts:
    """The refresh function of temporary credentials: each call issues a new one-hour set."""

    def __init__(self, clock: FakeClock, lifetime: float = HOUR) -> None:
        self.clock = clock
        self.lifetime = lifetime
        self.issued = 0
        self.fail_with: BaseException | None = None
        self.gate: asyncio.Event | None = None

    async def __call__(self) -> dict[str, Any]:
        if self.gate is not None:
            await self.gate.wait()
        if self.fail_with is not None:
            raise self.fail_with
        self.issued += 1
        expiry = datetime.datetime.fromtimestamp(self.clock.now + self.lifetime, tz=datetime.timezone.utc)
        return {
            "access_key": f"ASIA{self.issued}",
            "secret_key": f"secret{self.issued}",
            "token": f"token{self.issued}",
            "expiry_time": expiry.isoformat(),
        }


async def refreshable(clock: FakeClock, sts: FakeSts) -> AioRefreshableCredentials:
    """botocore's own refreshable credentials, on the fake clock, as the provider chain would build them."""
    first = await sts()
    return AioRefreshableCredentials(
        access_key=first["access_key"],
        secret_key=first["secret_key"],
        token=first["token"],
        expiry_time=datetime.datetime.fromisoformat(first["expiry_time"]),
        refresh_using=sts,
        method="assume-role",
        time_fetcher=clock.datetime,
    )


async def test_credentials_are_refreshed_ahead_of_expiry_not_per_request() -> None:
    clock = FakeClock()
    sts = FakeSts(clock)
    source = CredentialSource(await refreshable(clock, sts), recheck_interval=30.0, clock=clock)

    first = await source.get()
    assert first.access_key == "ASIA1"
    # Forty minutes of traffic: 20 minutes of validity still left, nothing refreshed.
    for _ in range(40 * 60):
        clock.advance(1.0)
        assert await source.get() is first
    assert sts.issued == 1

    # Inside botocore's 15-minute advisory window: refreshed within one recheck interval.
    clock.advance(6 * 60)
    assert (await source.get()).access_key == "ASIA2"
    assert sts.issued == 2


async def test_credentials_handed_out_never_have_less_than_ten_minutes_left() -> None:
    clock = FakeClock()
    sts = FakeSts(clock, lifetime=HOUR)
    source = CredentialSource(await refreshable(clock, sts), recheck_interval=30.0, clock=clock)
    expires_at = {"ASIA1": clock.now + HOUR}
    for _ in range(3 * 3600 // 10):
        credentials = await source.get()
        expires_at.setdefault(credentials.access_key, clock.now + HOUR)
        assert expires_at[credentials.access_key] - clock.now > 10 * 60 - 30
        clock.advance(10.0)
    assert sts.issued >= 3


async def test_advisory_refresh_failure_keeps_old_credentials_mandatory_failure_raises() -> None:
    clock = FakeClock()
    sts = FakeSts(clock)
    source = CredentialSource(await refreshable(clock, sts), recheck_interval=30.0, clock=clock)
    first = await source.get()
    sts.fail_with = RuntimeError("sts unreachable")

    clock.advance(HOUR - 12 * 60)  # 12 minutes left: advisory, the refresh failure is tolerated
    assert await source.get() is first

    clock.advance(3 * 60)  # 9 minutes left: mandatory
    with pytest.raises(StoreUnavailable, match="Refreshing AWS credentials failed"):
        await source.get()

    sts.fail_with = None
    assert (await source.get()).access_key == "ASIA2"


async def test_concurrent_requests_do_not_queue_behind_a_refresh() -> None:
    clock = FakeClock()
    sts = FakeSts(clock)
    source = CredentialSource(await refreshable(clock, sts), recheck_interval=30.0, clock=clock)
    first = await source.get()

    clock.advance(HOUR - 14 * 60)
    sts.gate = asyncio.Event()
    refreshing = asyncio.create_task(source.get())
    await asyncio.sleep(0)  # the refresh is now waiting on STS
    others = [await asyncio.wait_for(source.get(), 1.0) for _ in range(5)]
    assert all(c is first for c in others)
    sts.gate.set()
    assert (await refreshing).access_key == "ASIA2"
    assert sts.issued == 2
    assert (await source.get()).access_key == "ASIA2"


async def test_invalidate_makes_the_next_get_ask_the_provider() -> None:
    clock = FakeClock()
    sts = FakeSts(clock)
    provider = await refreshable(clock, sts)
    source = CredentialSource(provider, recheck_interval=30.0, clock=clock)
    await source.get()
    asked: list[int] = []
    original = provider.get_frozen_credentials

    async def counting() -> Any:
        asked.append(1)
        return await original()

    provider.get_frozen_credentials = counting  # type: ignore[method-assign]
    await source.get()
    assert asked == []
    source.invalidate()
    await source.get()
    assert asked == [1]


async def test_cached_copy_is_offered_without_an_await_until_the_next_check() -> None:
    clock = FakeClock()
    source = CredentialSource(await refreshable(clock, FakeSts(clock)), recheck_interval=30.0, clock=clock)
    assert source.cached() is None
    first = await source.get()
    clock.advance(29.0)
    assert source.cached() is first
    clock.advance(1.0)
    assert source.cached() is None
    assert await source.get() is first


async def test_static_credentials() -> None:
    source = CredentialSource.static("AKID", "secret", "token")
    credentials = await source.get()
    assert (credentials.access_key, credentials.secret_key, credentials.token) == ("AKID", "secret", "token")
    assert await source.get() is credentials


async def test_provider_chain_reads_the_environment(blockbuster, monkeypatch) -> None:
    # Resolving the chain reads botocore's config files (blocking os.stat): the gateway does it
    # once at start-up, before it serves, so it is allowed here and nowhere else.
    blockbuster.deactivate()
    # Its own environment: other tests (gatewayctl --local, in process) may have set the cluster's credentials.
    monkeypatch.setenv("AWS_ACCESS_KEY_ID", "from-the-environment")
    monkeypatch.setenv("AWS_SECRET_ACCESS_KEY", "its-secret")
    monkeypatch.delenv("AWS_SESSION_TOKEN", raising=False)
    source = await CredentialSource.from_provider_chain()
    credentials = await source.get()
    assert (credentials.access_key, credentials.secret_key, credentials.token) == ("from-the-environment", "its-secret", None)


async def test_no_credentials_found_is_a_clear_store_error() -> None:
    class EmptyChain:
        async def get_credentials(self) -> None:
            return None

    with pytest.raises(StoreUnavailable, match="No AWS credentials found"):
        await CredentialSource.from_provider_chain(EmptyChain())


async def test_provider_chain_errors_are_mapped() -> None:
    class BrokenChain:
        async def get_credentials(self) -> None:
            raise OSError("web identity token file missing")

    with pytest.raises(StoreUnavailable, match="web identity token file missing"):
        await CredentialSource.from_provider_chain(BrokenChain())
