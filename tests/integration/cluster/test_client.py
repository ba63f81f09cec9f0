"""feature_gateway_client against real gateway processes on the three-region local cluster.

- Read-your-writes: sessions write in us-east-1 (the primary) and resume from their token in eu-west-1 or
  ap-southeast-1, with replication lag injected by the emulator; each read is also made plainly, to count
  how often a read without the session would have missed the write.
- A planned switch of the scope clients write to without pause: no exception reaches them, nothing is lost.
- A region's gateway stopped and started: calls raise the documented exception within their deadline, and
  the same client's calls succeed once it is back.
"""

from __future__ import annotations

import asyncio
import time
import uuid
from collections.abc import AsyncIterator

import aiohttp
import pytest
from feature_gateway_client import AsyncClient, Client, ConnectionFailed, NotFound

from gateway.local.cluster import LocalCluster
from gateway.routing.rules import SINGLE_PRIMARY, Rule
from tests.support.cluster_http import REGIONS, clear_faults, converge, obeyed_everywhere, url
from tests.support.convergence import Write

#: Sessions writing and reading at once, and the iterations each makes (1000 write-then-read in all).
SESSIONS, ITERATIONS = 25, 40
#: Replication lag from the primary to the regions that read: 50 ms, and up to 50 ms more.
LAG, JITTER = 0.05, 0.05


@pytest.fixture
async def clients(cluster: LocalCluster) -> AsyncIterator[dict[str, AsyncClient]]:
    """An AsyncClient per region's gateway; every fault cleared afterwards."""
    made = {region: AsyncClient(url(cluster, region), timeout=5.0) for region in REGIONS}
    try:
        yield made
    finally:
        for client in made.values():
            await client.close()
        await clear_faults(cluster)


async def test_a_session_reads_its_own_write_in_another_region_every_time_a_plain_read_does_not(cluster, clients):
    assert cluster.emulator is not None
    for target in ("eu-west-1", "ap-southeast-1"):
        cluster.emulator.set_lag("us-east-1", target, LAG, JITTER)
    writer = clients["us-east-1"]
    readers = [clients["eu-west-1"], clients["ap-southeast-1"]]
    seen: list[bool] = []
    missed: list[bool] = []

    async def user(n: int) -> None:
        key = f"ryw-{n}-{uuid.uuid4().hex[:6]}"
        token = writer.session().token
        for i in range(ITERATIONS):
            # The user's request lands in us-east-1 and writes; the next lands in another region.
            here = writer.session(token=token)
            wrote = await here.put("items", key, {"n": i, "by": n})
            assert wrote.applied, wrote
            reader = readers[(n + i) % 2]
            try:
                plain = await reader.get("items", key)
                missed.append(plain.features != {"n": i, "by": n})
            except NotFound:
                missed.append(True)
            there = reader.session(token=here.token)
            got = await there.get("items", key)
            seen.append(got.features == {"n": i, "by": n} and got.version == wrote.version)
            token = there.token

    await asyncio.wait_for(asyncio.gather(*(user(n) for n in range(SESSIONS))), 120)
    print(f"read-your-writes: {sum(seen)}/{len(seen)} session reads saw their write; "
          f"plain reads missed it {sum(missed)}/{len(missed)} times")
    assert len(seen) == SESSIONS * ITERATIONS and all(seen)
    # The lag was real: without the session, a read in the other region missed the write often.
    assert sum(missed) >= len(missed) // 10, sum(missed)


def prefix_scope() -> tuple[Rule, str]:
    """A prefix scope of its own (epoch 1, last changed an hour ago, so a switch needs no --force)."""
    prefix = f"c{uuid.uuid4().hex[:6]}-"
    rule = Rule(f"view#items#prefix#{prefix}", SINGLE_PRIMARY, "us-east-1", epoch=1, version=1, updated_by="tests",
                updated_at=int(time.time() * 1000) - 3_600_000)
    return rule, prefix


async def test_a_planned_switch_under_clients_writing_raises_nothing_and_loses_nothing(cluster, clients):
    rule, prefix = prefix_scope()
    await cluster.put_rules([rule])
    async with aiohttp.ClientSession() as http:
        await obeyed_everywhere(http, cluster, rule, 10)
    assert cluster.emulator is not None
    for source in REGIONS:
        for target in REGIONS:
            if source != target:
                cluster.emulator.set_lag(source, target, 0.1)
    keys = [f"{prefix}{i}" for i in range(30)]
    acknowledged: list[Write] = []
    raised: list[BaseException] = []
    primaries: list[tuple[float, str]] = []
    stop = asyncio.Event()

    async def writer(region: str, offset: int) -> None:
        # ~20 writes/s from each region, one after the other: a service's steady stream.
        i = 0
        while not stop.is_set():
            key = keys[(offset + i) % len(keys)]
            value = {"region": region, "i": i}
            try:
                answer = await clients[region].put("items", key, value)
            except Exception as exc:  # every exception counts against the client: none may reach a caller
                raised.append(exc)
            else:
                if answer.applied:
                    acknowledged.append(Write(key, value, answer.version))
                primaries.append((time.monotonic(), answer.primary))
            i += 1
            await asyncio.sleep(0.05)

    writers = [asyncio.create_task(writer(region, n * 10)) for n, region in enumerate(REGIONS)]
    try:
        await asyncio.sleep(1.0)
        async with cluster.coordinator(by="tests") as coordinator:
            outcome = await coordinator.switch(rule.scope, "eu-west-1")
        switched = time.monotonic()
        await asyncio.sleep(1.0)
    finally:
        stop.set()
        await asyncio.gather(*writers)
    print(f"switch: {outcome.seconds:.2f} s, {len(primaries)} writes answered, {len(raised)} raised")
    assert outcome.committed, outcome
    assert raised == []
    assert len(acknowledged) >= 60
    # Writes went to the old primary before and to the new one after.
    assert {p for t, p in primaries if t < switched - outcome.seconds} == {"us-east-1"}
    assert {p for t, p in primaries if t > switched + 0.5} == {"eu-west-1"}
    for source in REGIONS:
        for target in REGIONS:
            if source != target:
                cluster.emulator.set_lag(source, target, 0.0)
    async with aiohttp.ClientSession() as http:
        await converge(http, cluster, acknowledged, keys, 30)


async def test_a_stopped_gateway_fails_calls_within_their_deadline_then_the_same_client_succeeds(cluster, clients):
    region = "ap-southeast-1"
    key = f"restart-{uuid.uuid4().hex[:6]}"
    blocking = Client(url(cluster, region), timeout=1.0)
    try:
        assert (await asyncio.to_thread(blocking.put, "items", key, {"v": 1})).applied
        assert (await clients[region].put("items", key, {"v": 2})).applied
        await cluster.stop_region(region)

        for call in (lambda: blocking.get("items", key), lambda: blocking.put("items", key, {"v": 3})):
            began = time.monotonic()
            with pytest.raises(ConnectionFailed) as failed:
                await asyncio.to_thread(call)
            elapsed = time.monotonic() - began
            print(f"stopped gateway: {type(failed.value).__name__} after {elapsed:.2f} s")
            assert elapsed <= 1.0 + 0.1
            assert failed.value.retryable and not failed.value.may_have_landed
        began = time.monotonic()
        with pytest.raises(ConnectionFailed):
            await clients[region].get("items", key, timeout=1.0)
        assert time.monotonic() - began <= 1.0 + 0.1

        await cluster.start_region(region)
        # The same clients, whose pooled connections died with the old process.
        session = blocking.session()
        assert (await asyncio.to_thread(session.put, "items", key, {"v": 4})).applied
        assert (await clients[region].session(token=session.token).get("items", key)).features == {"v": 4}
        assert (await asyncio.to_thread(blocking.get, "items", key, None, "strong")).features == {"v": 4}
    finally:
        blocking.close()
