"""Fault commands say what they changed or that there was nothing to change; status lists every active fault;
clear removes them all (gateway/local/faults.py)."""

from __future__ import annotations

from dataclasses import dataclass, field

import pytest

from gateway.local import faults
from gateway.local.emulator import GlobalTableEmulator

REGIONS = ("us-east-1", "eu-west-1", "ap-southeast-1")


@dataclass
class Region:
    stopped: bool = False


@dataclass
class Cluster:
    """The parts of ``LocalCluster`` the fault commands use, in memory (the partitions without nftables)."""

    emulator: GlobalTableEmulator = field(
        default_factory=lambda: GlobalTableEmulator({r: f"http://{r}.invalid" for r in REGIONS}, ["t"])
    )
    regions: dict[str, Region] = field(default_factory=lambda: {r: Region() for r in REGIONS})
    cuts: set[frozenset[str]] = field(default_factory=set)

    def status_partitions(self) -> list[tuple[str, str]]:
        return sorted(tuple(sorted(pair)) for pair in self.cuts)  # type: ignore[misc]

    async def stop_region(self, name: str) -> None:
        self.regions[name].stopped = True

    async def start_region(self, name: str) -> None:
        self.regions[name].stopped = False

    async def partition(self, region: str, others: list[str] | None = None) -> list[tuple[str, str]]:
        fresh = [frozenset((region, o)) for o in (others or [r for r in REGIONS if r != region])]
        fresh = [pair for pair in fresh if pair not in self.cuts]
        self.cuts |= set(fresh)
        for pair in fresh:
            a, b = sorted(pair)
            self.emulator.pause(a, b)
            self.emulator.pause(b, a)
        return [tuple(sorted(pair)) for pair in fresh]  # type: ignore[misc]

    async def heal(self, region: str | None = None) -> list[tuple[str, str]]:
        healed = {pair for pair in self.cuts if region is None or region in pair}
        self.cuts -= healed
        for pair in healed:
            a, b = sorted(pair)
            self.emulator.resume(a, b)
            self.emulator.resume(b, a)
        return sorted(tuple(sorted(pair)) for pair in healed)  # type: ignore[misc]


PAIR = {"from": "us-east-1", "to": "eu-west-1"}


@pytest.mark.parametrize("action, body, said", [
    ("resume", PAIR, "nothing to resume: replication us-east-1 -> eu-west-1 is not paused"),
    ("heal", {}, "nothing to heal: no partition is active"),
    ("heal", {"region": "eu-west-1"}, "nothing to heal: eu-west-1 is not partitioned"),
    ("start-region", {"region": "eu-west-1"}, "nothing to start: eu-west-1 is running"),
    ("reorder", {**PAIR, "enabled": False}, "nothing to change: us-east-1 -> eu-west-1 delivers in order already"),
    ("lag", {**PAIR, "seconds": 0}, "nothing to change: the lag us-east-1 -> eu-west-1 is none already"),
    ("clear", {}, "nothing to clear: no fault is active"),
])
async def test_a_command_on_nothing_says_so(action, body, said):
    outcome = await faults.apply(Cluster(), action, body)
    assert (outcome.changed, outcome.message) == (False, said)


async def test_status_lists_every_active_fault_and_clear_removes_them_all():
    cluster = Cluster()
    await faults.apply(cluster, "lag", {**PAIR, "seconds": 0.3, "jitter": 0.1})
    await faults.apply(cluster, "pause", {"from": "eu-west-1", "to": "ap-southeast-1"})
    await faults.apply(cluster, "reorder", {**PAIR, "enabled": True})
    await faults.apply(cluster, "stop-region", {"region": "ap-southeast-1"})
    await faults.apply(cluster, "partition", {"region": "us-east-1", "from": "eu-west-1"})
    assert faults.active(cluster) == {
        "lags": [{"from": "us-east-1", "to": "eu-west-1", "seconds": 0.3, "jitter": 0.1}],
        "pauses": [{"from": "eu-west-1", "to": "ap-southeast-1"}],  # the partition's pauses are the partition
        "reorders": [{"from": "us-east-1", "to": "eu-west-1"}],
        "stopped": ["ap-southeast-1"],
        "partitions": [["eu-west-1", "us-east-1"]],
    }
    resume = await faults.apply(cluster, "resume", {"from": "eu-west-1", "to": "us-east-1"})
    assert not resume.changed and "paused by a partition" in resume.message and "heal" in resume.message
    again = await faults.apply(cluster, "partition", {"region": "us-east-1", "from": "eu-west-1"})
    assert (again.changed, again.message) == (False, "nothing to cut: us-east-1 is already cut off from eu-west-1")

    cleared = await faults.apply(cluster, "clear", {})
    assert cleared.changed and cleared.message.startswith("cleared: healed eu-west-1 <-> us-east-1; started ap-southeast-1")
    assert faults.active(cluster) == {"lags": [], "pauses": [], "reorders": [], "stopped": [], "partitions": []}
    assert not any(cluster.emulator.faults(s, t).any for s in REGIONS for t in REGIONS if s != t)


def test_status_text_names_each_fault_and_what_it_does():
    status = {
        "regions": {"us-east-1": {"stopped": False, "restarts": 2}, "eu-west-1": {"stopped": True, "restarts": 0}},
        "faults": {"lags": [{"from": "us-east-1", "to": "eu-west-1", "seconds": 0.3, "jitter": 0}],
                   "pauses": [], "reorders": [], "stopped": ["eu-west-1"], "partitions": []},
        "backlog": {"us-east-1->eu-west-1": 4, "eu-west-1->us-east-1": 0},
        "dropped": {"us-east-1->eu-west-1": 0, "eu-west-1->us-east-1": 0},
    }
    assert faults.status_text(status).splitlines() == [
        "region          state    restarts",
        "us-east-1       running  2",
        "eu-west-1       stopped  0",
        "active faults (2):",
        "  lag        us-east-1 -> eu-west-1  0.3 s",
        "  stopped    eu-west-1               gateway down, DynamoDB frozen",
        "replication backlog: us-east-1->eu-west-1 4",
        "dropped changes: none",
    ]
