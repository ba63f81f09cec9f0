"""Real network partitions on loopback (gateway/local/partitions.py) and the local cluster's supervisor.

The cuts are nftables rules: these tests need root and nft (``make setup`` installs nftables) and fail, with
nft's own reason, where they cannot run. Only 127.0.0.0/8 addresses and the tests' own ports are matched.
"""

from __future__ import annotations

import asyncio
import contextlib
import io
import itertools
import os
import signal
import socket
import subprocess
from collections.abc import AsyncIterator, Iterator
from dataclasses import dataclass

import aiohttp
import orjson
import pytest

from gateway.clock import SystemClock
from gateway.ctl import main as ctl_main
from gateway.deadlines import TIMEOUT_HEADER
from gateway.errors import NotPrimary
from gateway.features.items import Version
from gateway.local.cluster import LocalCluster
from gateway.local.dynamodb_local import free_port
from gateway.local.partitions import Endpoint, Partitions, find_nft
from gateway.obs.metrics import Metrics
from gateway.peer.auth import PeerSigner
from gateway.peer.client import PeerClient
from gateway.routing.rules import SINGLE_PRIMARY, Rule
from tests.support.cluster_http import (
    REGIONS,
    clear_faults,
    converge,
    eventually,
    get,
    obeyed_everywhere,
    put,
    routing_of,
    running_cluster,
    state_of,
    url,
)
from tests.support.convergence import Write, check, lost_count

A, B, C = "127.0.1.1", "127.0.2.1", "127.0.3.1"


def tables() -> str:
    return subprocess.run([find_nft(), "list", "tables"], capture_output=True, text=True, check=True).stdout


@pytest.fixture
def listeners() -> Iterator[dict[str, tuple[socket.socket, int]]]:
    """A listening socket on each of three loopback addresses, on a free port each."""
    made = {}
    for address in (A, B, C):
        sock = socket.socket()
        port = free_port()
        sock.bind((address, port))
        sock.listen()
        made[address] = (sock, port)
    yield made
    for sock, _ in made.values():
        sock.close()


def reaches(source: str, target: str, port: int) -> bool:
    with socket.socket() as sock:
        sock.bind((source, 0))
        sock.settimeout(0.5)
        try:
            sock.connect((target, port))
        except TimeoutError:  # the SYN was dropped: what a partition looks like to a client
            return False
        return True


def test_a_cut_drops_both_ways_between_the_two_addresses_only_and_heal_and_remove_undo_it(listeners):
    ports = {address: port for address, (_, port) in listeners.items()}
    parts = Partitions({"a": Endpoint(A, (ports[A],)), "b": Endpoint(B, (ports[B],)), "c": Endpoint(C, (ports[C],))})
    try:
        assert parts.cut("a", ["b"]) == [("a", "b")]
        assert parts.table in tables() and parts.cuts == [("a", "b")]
        assert not reaches(A, B, ports[B]) and not reaches(B, A, ports[A])
        assert reaches(A, C, ports[C]) and reaches(C, B, ports[B]) and reaches("127.0.0.1", B, ports[B])
        assert parts.cut("c") == [("a", "c"), ("b", "c")]  # c from everyone
        assert not reaches(C, A, ports[A]) and not reaches(B, C, ports[C])
        assert parts.heal("c") == [("a", "c"), ("b", "c")]
        assert reaches(C, A, ports[A]) and not reaches(A, B, ports[B])
        assert parts.heal() == [("a", "b")] and reaches(A, B, ports[B])
    finally:
        parts.remove()
    assert parts.table not in tables()


def test_a_cut_touches_only_loopback_addresses():
    with pytest.raises(Exception, match="not a loopback address"):
        Endpoint("10.0.0.1", (80,))


# A cluster of its own, not tests/integration/cluster/'s: its cuts and kills leave peer addresses ejected by the
# other regions' outlier detection for tens of seconds, which the next module's first forwards would meet.
@pytest.fixture(scope="module")
async def cluster(tmp_path_factory: pytest.TempPathFactory) -> AsyncIterator[LocalCluster]:
    async with running_cluster(tmp_path_factory.mktemp("partition-cluster"), warm=15) as cluster:
        yield cluster
    # down() removed the cluster's table
    assert f"fgw_local_{os.getpid()}" not in tables()


@pytest.fixture
async def http(cluster: LocalCluster) -> AsyncIterator[aiohttp.ClientSession]:
    async with aiohttp.ClientSession() as session:
        yield session
    await clear_faults(cluster)


async def test_a_region_cut_off_from_the_primary_refuses_writes_in_time_serves_reads_and_converges_after_heal(
    cluster, http
):
    key = f"cut-{os.urandom(4).hex()}"
    first = await put(http, cluster, "us-east-1", key, {"v": 1})
    await eventually(lambda: get(http, cluster, "eu-west-1", key), 10, "the first write in eu-west-1")
    await cluster.partition("eu-west-1")
    assert cluster.status()["partitions"] == [["us-east-1", "eu-west-1"], ["eu-west-1", "ap-southeast-1"]]
    loop = asyncio.get_running_loop()
    started = loop.time()
    async with http.put(f"{url(cluster, 'eu-west-1')}/v1/features/items/{key}",
                        data=orjson.dumps({"features": {"v": 2}}), headers={"Idempotency-Key": f"{key}-2"}) as resp:
        refused = await resp.json()
    elapsed = loop.time() - started
    # Within the request deadline, a retryable 503 (the forward went out on an open connection: the sender
    # cannot know whether it arrived, and says so), and nothing was applied: the primary never saw it.
    assert resp.status == 503 and refused["error"]["code"] == "primary_unreachable", refused
    assert "Retry-After" in resp.headers and refused["error"]["retryable"] is True
    assert elapsed < cluster.configs["eu-west-1"].request_timeout + 0.5
    assert (await get(http, cluster, "us-east-1", key))["features"] == {"v": 1}
    # Its replica still serves eventual reads; the primary takes writes from its own side.
    assert (await get(http, cluster, "eu-west-1", key))["version"] == first["version"]
    await put(http, cluster, "us-east-1", key, {"v": 3})
    assert (await get(http, cluster, "eu-west-1", key))["features"] == {"v": 1}  # replication is cut too
    await cluster.heal()
    assert cluster.status()["partitions"] == []
    healed = await eventually(
        lambda: _features_are(http, cluster, "eu-west-1", key, {"v": 3}), 10, "v3 in eu-west-1 after heal"
    )
    assert healed
    await put(http, cluster, "eu-west-1", key, {"v": 4})  # forwarded again


async def test_a_primary_cut_off_from_the_majority_stops_acknowledging_within_a_lease_and_resumes_after_heal(
    cluster, http
):
    """Split brain refused: us-east-1 (primary of everything) alone cannot renew its lease; its writes get 503."""
    lease = cluster.configs["us-east-1"].routing.lease
    key = f"brain-{os.urandom(4).hex()}"
    await put(http, cluster, "us-east-1", key, {"v": 0})
    await cluster.partition("us-east-1")
    loop = asyncio.get_running_loop()
    cut_at = loop.time()
    last_acknowledged = None
    refused = 0
    # Bounded by time, not by count (a fast machine writes hundreds before the lease can have ended): the lease,
    # then three refusals that each wait out the request deadline for a lease, and a margin.
    bound = lease + 3 * cluster.configs["us-east-1"].request_timeout + 5.0
    for i in itertools.count(1):
        assert loop.time() - cut_at < bound, f"not three refusals within {bound:g}s of the cut"
        async with http.put(f"{url(cluster, 'us-east-1')}/v1/features/items/{key}",
                            data=orjson.dumps({"features": {"v": i}}), headers={"Idempotency-Key": f"{key}-{i}"}) as resp:
            body = await resp.json()
        if resp.status == 200:
            assert refused == 0, "acknowledged again after refusing, while still cut off"
            last_acknowledged = loop.time() - cut_at
        else:
            assert resp.status == 503 and body["error"]["code"] == "primary_unreachable", body
            # No lease: nothing applied; or the lease ended while DynamoDB wrote: not acknowledged, may have landed.
            message = body["error"]["message"]
            assert "lease" in message and ("Nothing was applied" in message or "not acknowledged" in message), body
            refused += 1
            if refused == 3:
                break
    # Acknowledgements stop within the lease (plus a second for the request in flight), then only 503s.
    print(f"last write acknowledged {last_acknowledged}s after the cut (lease {lease}s)")
    assert refused == 3 and (last_acknowledged or 0) <= lease + 1.0, (last_acknowledged, lease)
    assert await get(http, cluster, "us-east-1", key) is not None
    await cluster.heal()
    # Healed, it renews its lease and acknowledges again, within the request's own deadline.
    await put(http, cluster, "us-east-1", key, {"v": -1})


async def _features_are(http, cluster, region, key, features) -> bool:
    found = await get(http, cluster, region, key)
    return found is not None and found["features"] == features


async def test_a_gateway_killed_with_sigkill_is_started_again_and_nothing_acknowledged_is_lost(cluster, http):
    """kill -9 of the primary region's gateway while writers in every region write: it is started again, and
    every write acknowledged before, during and after is there."""
    region = cluster.regions["us-east-1"]
    assert region.gateway is not None and region.gateway.pid is not None
    prefix = f"kill{os.urandom(3).hex()}-"
    async with writing(http, cluster, prefix) as log:
        await asyncio.sleep(1.0)
        killed = region.gateway.pid
        restarts = region.restarts
        os.kill(killed, signal.SIGKILL)
        await eventually(lambda: _restarted(cluster, "us-east-1", killed, restarts), 30, "the gateway started again")
        again = asyncio.get_running_loop().time()
        await eventually(lambda: _acknowledged_by(log, "us-east-1", "us-east-1", after=again), 10,
                         "writes acknowledged by the restarted gateway")
        # Forwards too, once the other regions' outlier detection lets the address back in (it failed while the
        # gateway was down: ejected for peer.outlier_base_ejection seconds, 5, per ejection).
        await eventually(lambda: _acknowledged_by(log, "us-east-1", "eu-west-1", after=again), 25,
                         "writes forwarded from eu-west-1 to the restarted gateway acknowledged")
    await check_converged(http, cluster, log)


async def _restarted(cluster: LocalCluster, name: str, killed: int, restarts: int) -> bool:
    region = cluster.regions[name]
    gateway = region.gateway
    return region.restarts > restarts and gateway is not None and gateway.pid != killed and gateway.answers()


# -- failover from the majority side ---------------------------------------------------------------


@dataclass
class Attempt:
    """One write as a writer saw it: where it was sent, when, and what came back."""

    region: str
    key: str
    features: dict
    sent: float
    answered: float
    status: int
    version: str | None = None

    @property
    def applied_by(self) -> str | None:
        """The region that applied it as primary (the version token names it), for an acknowledged write."""
        return None if self.version is None else Version.parse(self.version).region


async def writer(http, cluster, region: str, prefix: str, stop: asyncio.Event, log: list[Attempt]) -> None:
    """Writes until ``stop``: every third key is written once, the others cycle over five keys per region."""
    loop = asyncio.get_running_loop()
    for i in itertools.count():
        if stop.is_set():
            return
        key = f"{prefix}{region}-once-{i}" if i % 3 == 0 else f"{prefix}{region}-cycled-{i % 5}"
        features = {"n": i, "from": region}
        sent = loop.time()
        try:
            # A deadline of 1 s: a write that cannot be acknowledged is refused soon, and the next one tries again.
            async with http.put(f"{url(cluster, region)}/v1/features/items/{key}", data=orjson.dumps({"features": features}),
                                headers={"Idempotency-Key": f"{key}-{i}", TIMEOUT_HEADER: "1"}) as resp:
                body = await resp.json()
        except aiohttp.ClientConnectionError:  # the region's gateway is down (killed): no answer, not acknowledged
            log.append(Attempt(region, key, features, sent, loop.time(), 0))
            await asyncio.sleep(0.05)
            continue
        attempt = Attempt(region, key, features, sent, loop.time(), resp.status)
        if resp.status == 200:
            assert body["applied"] is True, body
            attempt.version = body["version"]
        else:  # not acknowledged: refused, or its deadline passed before an answer (it may have landed)
            assert (resp.status, body["error"]["code"]) in {(503, "primary_unreachable"), (504, "upstream_timeout")}, body
        log.append(attempt)


def gatewayctl_here(cluster: LocalCluster, *args: str) -> tuple[int, str]:
    """``gatewayctl --local`` in this process (the time an interpreter takes to start on two busy cores would land
    in what the test times); its exit code, and what it said on stdout and stderr."""
    said = io.StringIO()
    with contextlib.redirect_stdout(said), contextlib.redirect_stderr(said):
        code = ctl_main.run(["--local", "--state-dir", str(cluster.state_dir), *args])
    return code, said.getvalue()


def acknowledgement_intervals(log: list[Attempt]) -> dict[str, tuple[float, float]]:
    """Per region that applied writes as primary: from the sending of its first to the answer of its last."""
    spans: dict[str, tuple[float, float]] = {}
    for a in log:
        if a.applied_by is not None:
            first, last = spans.get(a.applied_by, (a.sent, a.answered))
            spans[a.applied_by] = (min(first, a.sent), max(last, a.answered))
    return spans


@contextlib.asynccontextmanager
async def writing(http, cluster, prefix: str) -> AsyncIterator[list[Attempt]]:
    """Two writers per region (a write refused after waiting out its deadline does not hide the first that is
    not), until the block ends; the attempts, as they happen."""
    stop, log = asyncio.Event(), []
    writers = [asyncio.create_task(writer(http, cluster, r, f"{prefix}{n}", stop, log)) for r in REGIONS for n in (0, 1)]
    try:
        yield log
    finally:
        stop.set()
        await asyncio.gather(*writers)


async def cut_off_primary_scope(http, cluster, prefix: str, **rule: object) -> tuple[str, Rule]:
    """A scope of its own, primary us-east-1, obeyed everywhere."""
    scope = f"view#items#prefix#{prefix}"
    made = Rule(scope=scope, mode=SINGLE_PRIMARY, primary="us-east-1", epoch=1, version=1, updated_by="test", **rule)
    await cluster.put_rules([made])
    await obeyed_everywhere(http, cluster, made, 10)
    return scope, made


async def resumed_after(log: list[Attempt], since: float, timeout: float) -> float:
    """Seconds from ``since`` until writes sent in eu-west-1 and in ap-southeast-1 were both acknowledged by
    eu-west-1 as primary (waited for up to ``timeout``)."""
    for sender in ("eu-west-1", "ap-southeast-1"):
        await eventually(lambda: _acknowledged_by(log, "eu-west-1", sender, after=since), timeout,
                         f"writes in {sender} acknowledged by eu-west-1")
    return max(
        min(a.answered for a in log if a.applied_by == "eu-west-1" and a.region == sender and a.sent > since)
        for sender in ("eu-west-1", "ap-southeast-1")
    ) - since


async def heal_and_check(http, cluster, scope: str, healed: float) -> str:
    """After the heal: us-east-1 routes by the new rule within 2 s, and a write forwarded under the old epoch
    gets 409."""
    loop = asyncio.get_running_loop()
    moved = Rule(scope=scope, mode=SINGLE_PRIMARY, primary="eu-west-1", epoch=2, version=2)
    await obeyed_everywhere(http, cluster, moved, 2.0, regions=["us-east-1"])
    routed = loop.time() - healed
    with pytest.raises(NotPrimary):  # the old primary's view is over
        await _forward_under(cluster, "eu-west-1", scope, epoch=1, key=f"{scope}-stale")
    return f"the old primary routed by the new rule {routed:.2f}s after heal"


def check_acknowledgements(log: list[Attempt], cut: float, lease: float, healed: float) -> dict[str, tuple[float, float]]:
    # Within lease + 1 s of the cut, us-east-1 acknowledges none of its callers' writes until the heal (503s, and
    # 504s for writes whose 1 s deadline passed first); and no region's write was applied by it as primary after.
    late = [a for a in log if a.region == "us-east-1" and cut + lease + 1.0 < a.answered < healed]
    assert late and all(a.status in (503, 504) for a in late), [a for a in late if a.status not in (503, 504)]
    late_acks = [a for a in log if a.applied_by == "us-east-1" and a.answered > cut + lease + 1.0]
    assert not late_acks, f"us-east-1 acknowledged {len(late_acks)} write(s) more than a lease after it was cut off"
    spans = acknowledgement_intervals(log)
    assert set(spans) == {"us-east-1", "eu-west-1"}
    ordered = sorted(spans.items(), key=lambda span: span[1][0])
    for (one, (_, one_last)), (then, (then_first, _)) in itertools.pairwise(ordered):
        assert one_last < then_first, (f"{one} acknowledged until {one_last - cut:.2f}s after the cut, "
                                       f"{then} from {then_first - cut:.2f}s: two primaries at once")
    return {r: (round(first - cut, 2), round(last - cut, 2)) for r, (first, last) in spans.items()}


async def check_converged(http, cluster, log: list[Attempt]) -> None:
    acknowledged = [Write(a.key, a.features, a.version) for a in log if a.version is not None]
    keys = sorted({a.key for a in log})
    await converge(http, cluster, acknowledged, keys, 20)
    reports = check(acknowledged, await state_of(http, cluster, keys))
    assert lost_count(reports) == 0 and all(not r.stale for r in reports.values())


async def test_failover_from_the_majority_side_while_the_primary_is_cut_off_acknowledges_no_write_twice(cluster, http):
    """us-east-1, primary and old control region, is cut off while writers in every region write; gatewayctl
    run in eu-west-1 fails the scope over; no two regions acknowledge at once, and after heal nothing is lost."""
    lease = cluster.configs["us-east-1"].routing.lease
    prefix = f"fo{os.urandom(3).hex()}-"
    scope, _ = await cut_off_primary_scope(http, cluster, prefix)
    loop = asyncio.get_running_loop()
    async with writing(http, cluster, prefix) as log:
        await asyncio.sleep(1.0)  # writes flow in every region before the cut
        await cluster.partition("us-east-1")
        cut = loop.time()
        await asyncio.sleep(lease + 1.0)
        command = loop.time()
        code, said = await asyncio.to_thread(
            gatewayctl_here, cluster, "--region", "eu-west-1", "failover", scope, "--to", "eu-west-1", "--yes")
        print(said)
        assert code == 0, said
        assert "accepted by eu-west-1, ap-southeast-1 (2 of 3 regions); no answer from us-east-1" in said
        assert "waited out us-east-1's lease" in said
        resumed = await resumed_after(log, command, lease + 2.0)
        assert resumed <= lease + 2.0, f"writes acknowledged again {resumed:.2f}s after the command"
        await asyncio.sleep(0.5)
        await cluster.heal()
        healed = loop.time()
        routed = await heal_and_check(http, cluster, scope, healed)
        await asyncio.sleep(1.0)  # writes flow again in every region after heal
    spans = check_acknowledgements(log, cut, lease, healed)
    print(f"acknowledged (s after the cut) {spans}; writes resumed {resumed:.2f}s after the command; {routed}")
    await check_converged(http, cluster, log)


async def test_automatic_failover_moves_a_cut_off_primary_without_an_operator(cluster, http):
    """The rule fails over by itself after ``failover_after``: writes are acknowledged again within
    failover_after + lease + 2 s of the cut, with no overlap and nothing lost."""
    lease = cluster.configs["us-east-1"].routing.lease
    prefix = f"af{os.urandom(3).hex()}-"
    after = 2.0
    long_ago = SystemClock().wall_ms() - 3_600_000  # the anti-flap interval has passed
    scope, _ = await cut_off_primary_scope(http, cluster, prefix, failover_order=("eu-west-1", "ap-southeast-1"),
                                           failover_after=after, updated_at=long_ago)
    loop = asyncio.get_running_loop()
    async with writing(http, cluster, prefix) as log:
        await asyncio.sleep(1.0)
        await cluster.partition("us-east-1")
        cut = loop.time()
        resumed = await resumed_after(log, cut, after + lease + 2.0 + 5.0)

        assert resumed <= after + lease + 2.0, f"writes acknowledged again {resumed:.2f}s after the cut"
        await asyncio.sleep(0.5)
        await cluster.heal()
        healed = loop.time()
        routed = await heal_and_check(http, cluster, scope, healed)
        await asyncio.sleep(1.0)
    spans = check_acknowledgements(log, cut, lease, healed)
    print(f"acknowledged (s after the cut) {spans}; writes resumed {resumed:.2f}s after the cut; {routed}")
    await check_converged(http, cluster, log)


async def _acknowledged_by(log: list[Attempt], primary: str, sender: str, *, after: float) -> bool:
    return any(a.applied_by == primary and a.region == sender and a.sent > after for a in log)


async def _forward_under(cluster: LocalCluster, region: str, scope: str, *, epoch: int, key: str) -> None:
    config = cluster.configs["us-east-1"]
    clock = SystemClock()
    peers = PeerClient(config, PeerSigner(config.peer.secret, clock), clock, Metrics())
    try:
        await peers.write(region, {
            "view": "items", "scope": scope, "epoch": epoch, "origin": "us-east-1",
            "records": [{"key": key, "attributes": {"n": {"N": "1"}}, "event_ms": clock.wall_ms(),
                         "idempotency_key": f"{key}-old-epoch"}],
        })
    finally:
        await peers.close()


async def test_a_failover_that_no_majority_answers_is_refused_naming_the_regions_and_changes_nothing(cluster, http):
    prefix = f"nm{os.urandom(3).hex()}-"
    scope = f"view#items#prefix#{prefix}"
    rule = Rule(scope=scope, mode=SINGLE_PRIMARY, primary="us-east-1", epoch=1, version=1, updated_by="test")
    await cluster.put_rules([rule])
    await obeyed_everywhere(http, cluster, rule, 10)
    await cluster.partition("eu-west-1")  # eu-west-1 alone: one region of three
    code, said = await asyncio.to_thread(
        gatewayctl_here, cluster, "--region", "eu-west-1", "failover", scope, "--to", "eu-west-1", "--yes")
    assert code == 1, said
    assert (f"no majority of the regions answered for {scope} (1 of 3, 2 needed; promised: eu-west-1; no answer "
            "from us-east-1") in said, said
    assert "nothing was decided" in said
    await cluster.heal()
    assert (await routing_of(http, cluster, "eu-west-1"))[scope]["primary"] == "us-east-1"
    code, said = await asyncio.to_thread(gatewayctl_here, cluster, "--json", "rules", "get", scope)
    assert code == 0 and orjson.loads(said[said.index("{"):])["epoch"] == 1, said
