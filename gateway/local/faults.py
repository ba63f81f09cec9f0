"""The local cluster's faults as operator commands: ``feature-gateway local fault …``.

One function per question an operator asks of a running cluster: ``apply``
injects or removes one fault and says what it changed, or that there was
nothing to change (``resume`` when nothing is paused, ``heal`` when nothing is
partitioned: a no-op is said, never silent, and is not an error); ``active``
lists every fault in force; ``clear`` removes them all; ``status_text`` renders
the cluster's status for a terminal.

The faults themselves belong to their owners: lag, pauses and reordering to the
emulator (gateway/local/emulator.py), stopped regions and partitions to the
cluster (gateway/local/cluster.py, gateway/local/partitions.py). A partition
pauses the emulator's pairs it cuts; those pauses are the partition's, listed
under it, and only ``heal`` ends them.

Invariants: after ``clear``, ``active`` is empty (no lag, jitter, pause, reorder,
stopped region or partition). Dropped changes are history, not a fault: they
are counted in the status and never cleared, since the regions differ for those
items until they are written again.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any, Protocol

from gateway.local.emulator import GlobalTableEmulator


class LocalCluster(Protocol):
    """What the fault commands need of gateway/local/cluster.py's ``LocalCluster`` (which imports this module)."""

    @property
    def regions(self) -> Mapping[str, Any]: ...  # name -> Region, whose ``stopped`` says if it is stopped
    @property
    def emulator(self) -> GlobalTableEmulator | None: ...
    def status_partitions(self) -> list[tuple[str, str]]: ...
    async def stop_region(self, name: str) -> None: ...
    async def start_region(self, name: str) -> None: ...
    async def partition(self, region: str, others: list[str] | None = None) -> list[tuple[str, str]]: ...
    async def heal(self, region: str | None = None) -> list[tuple[str, str]]: ...


class FaultError(ValueError):
    """A fault command that cannot be obeyed as given (an unknown region or action)."""


@dataclass(frozen=True, slots=True)
class Outcome:
    """What one fault command did: ``changed`` is False when there was nothing to do."""

    changed: bool
    message: str


def _pairs(cluster: LocalCluster) -> list[tuple[str, str]]:
    return [(s, t) for s in cluster.regions for t in cluster.regions if s != t]


def _cut(cluster: LocalCluster) -> set[frozenset[str]]:
    return {frozenset(pair) for pair in cluster.status_partitions()}


def active(cluster: LocalCluster) -> dict[str, list[Any]]:
    """Every fault in force: lags, pauses (not a partition's), reorders, stopped regions, partitions."""
    lags, pauses, reorders = [], [], []
    cut = _cut(cluster)
    if cluster.emulator is not None:
        for source, target in _pairs(cluster):
            f = cluster.emulator.faults(source, target)
            if f.lag or f.jitter:
                lags.append({"from": source, "to": target, "seconds": f.lag, "jitter": f.jitter})
            if f.paused and frozenset((source, target)) not in cut:
                pauses.append({"from": source, "to": target})
            if f.reorder:
                reorders.append({"from": source, "to": target})
    return {
        "lags": lags,
        "pauses": pauses,
        "reorders": reorders,
        "stopped": [name for name, region in cluster.regions.items() if region.stopped],
        "partitions": [list(pair) for pair in cluster.status_partitions()],
    }


def _pair_of(cluster: LocalCluster, body: dict[str, Any]) -> tuple[str, str]:
    source, target = body.get("from"), body.get("to")
    for name in (source, target):
        if name not in cluster.regions:
            raise FaultError(f"no region {name!r} in this cluster; regions are {', '.join(cluster.regions)}")
    if source == target:
        raise FaultError(f"--from and --to are both {source}: replication runs between two regions")
    return source, target  # type: ignore[return-value]


def _region_of(cluster: LocalCluster, name: Any) -> str:
    if name not in cluster.regions:
        raise FaultError(f"no region {name!r} in this cluster; regions are {', '.join(cluster.regions)}")
    return name  # type: ignore[no-any-return]


async def apply(cluster: LocalCluster, action: str, body: dict[str, Any]) -> Outcome:
    """One fault command, as ``feature-gateway local fault ACTION`` sends it."""
    if action == "status":
        return Outcome(False, "")
    if action == "clear":
        done = await clear(cluster)
        return Outcome(bool(done), "cleared: " + "; ".join(done) if done else "nothing to clear: no fault is active")
    if action == "stop-region":
        name = _region_of(cluster, body.get("region"))
        if cluster.regions[name].stopped:
            return Outcome(False, f"nothing to stop: {name} is stopped already (`start-region {name}` brings it back)")
        await cluster.stop_region(name)
        return Outcome(True, f"stopped {name}: its gateway is down, its DynamoDB Local frozen with its data")
    if action == "start-region":
        name = _region_of(cluster, body.get("region"))
        if not cluster.regions[name].stopped:
            return Outcome(False, f"nothing to start: {name} is running")
        await cluster.start_region(name)
        return Outcome(True, f"started {name}: its gateway is ready; replication delivers what it missed")
    if action == "partition":
        name = _region_of(cluster, body.get("region"))
        others = [_region_of(cluster, body["from"])] if body.get("from") else None
        before = _cut(cluster)
        cut = await cluster.partition(name, others)
        fresh = [pair for pair in cut if frozenset(pair) not in before]
        if not fresh:
            return Outcome(False, f"nothing to cut: {name} is already cut off from {', '.join(others or ['the others'])}")
        return Outcome(True, "cut " + ", ".join(f"{a} <-> {b}" for a, b in fresh) + " (network and replication)")
    if action == "heal":
        name = _region_of(cluster, body["region"]) if body.get("region") else None
        healed = await cluster.heal(name)
        if not healed:
            return Outcome(False, "nothing to heal: " + (f"{name} is not partitioned" if name else "no partition is active"))
        return Outcome(True, "healed " + ", ".join(f"{a} <-> {b}" for a, b in healed) + "; replication delivers the backlog")
    emulator = cluster.emulator
    if emulator is None:
        raise FaultError("replication faults need at least two regions")
    if action not in ("lag", "pause", "resume", "reorder"):
        raise FaultError(f"unknown fault {action!r}")
    source, target = _pair_of(cluster, body)
    pair = f"{source} -> {target}"
    before = emulator.faults(source, target)
    if action == "lag":
        seconds, jitter = float(body["seconds"]), float(body.get("jitter", 0.0))
        if seconds < 0 or jitter < 0:
            raise FaultError("--seconds and --jitter must not be negative")
        if (before.lag, before.jitter) == (seconds, jitter):
            return Outcome(False, f"nothing to change: the lag {pair} is {_lag_text(seconds, jitter)} already")
        emulator.set_lag(source, target, seconds, jitter)
        if not seconds and not jitter:
            return Outcome(True, f"removed the lag {pair}")
        return Outcome(True, f"lag {pair}: {_lag_text(seconds, jitter)}")
    partitioned = frozenset((source, target)) in _cut(cluster)
    if action == "pause":
        if before.paused:
            why = " by a partition (`heal` ends it)" if partitioned else ""
            return Outcome(False, f"nothing to pause: replication {pair} is paused already{why}")
        emulator.pause(source, target)
        return Outcome(True, f"paused replication {pair}; its changes accumulate (`resume` delivers them)")
    if action == "resume":
        if partitioned:
            return Outcome(False, f"nothing to resume: replication {pair} is paused by a partition; "
                                  f"`feature-gateway local fault heal` ends it")
        if not before.paused:
            return Outcome(False, f"nothing to resume: replication {pair} is not paused")
        emulator.resume(source, target)
        return Outcome(True, f"resumed replication {pair}; {emulator.backlog(source, target)} change(s) to deliver")
    enabled = bool(body.get("enabled", True))
    if before.reorder == enabled:
        return Outcome(False, f"nothing to change: {pair} delivers {'out of order' if enabled else 'in order'} already")
    emulator.set_reorder(source, target, enabled)
    return Outcome(True, f"{pair} now delivers {'out of order (per-item order kept)' if enabled else 'in order'}")


async def clear(cluster: LocalCluster) -> list[str]:
    """Remove every fault: heal partitions, start stopped regions, no lag, no pause, in-order delivery."""
    done = []
    healed = await cluster.heal()
    if healed:
        done.append("healed " + ", ".join(f"{a} <-> {b}" for a, b in healed))
    for name, region in cluster.regions.items():
        if region.stopped:
            await cluster.start_region(name)
            done.append(f"started {name}")
    if cluster.emulator is not None:
        for source, target in _pairs(cluster):
            f = cluster.emulator.faults(source, target)
            if f.lag or f.jitter:
                cluster.emulator.set_lag(source, target, 0.0)
                done.append(f"removed the lag {source} -> {target}")
            if f.paused:
                cluster.emulator.resume(source, target)
                done.append(f"resumed {source} -> {target}")
            if f.reorder:
                cluster.emulator.set_reorder(source, target, False)
                done.append(f"in-order delivery {source} -> {target}")
    return done


def _lag_text(seconds: float, jitter: float) -> str:
    if not seconds and not jitter:
        return "none"
    return f"{seconds:g} s" + (f" (+ up to {jitter:g} s jitter)" if jitter else "")


def status_text(status: dict[str, Any]) -> str:
    """``local fault status`` for a terminal: regions, every active fault, backlogs, dropped changes."""
    lines = ["region          state    restarts"]
    for name, region in status["regions"].items():
        lines.append(f"{name:<15} {'stopped' if region['stopped'] else 'running':<8} {region['restarts']}")
    faults = status["faults"]
    rows = [("lag", f"{f['from']} -> {f['to']}", _lag_text(f["seconds"], f["jitter"])) for f in faults["lags"]]
    rows += [("pause", f"{f['from']} -> {f['to']}", "changes accumulate") for f in faults["pauses"]]
    rows += [("reorder", f"{f['from']} -> {f['to']}", "out of order, per-item order kept") for f in faults["reorders"]]
    rows += [("stopped", name, "gateway down, DynamoDB frozen") for name in faults["stopped"]]
    rows += [("partition", f"{a} <-> {b}", "network and replication cut") for a, b in faults["partitions"]]
    if rows:
        lines.append(f"active faults ({len(rows)}):")
        width = max(len(r[1]) for r in rows)
        lines += [f"  {kind:<10} {what:<{width}}  {detail}" for kind, what, detail in rows]
    else:
        lines.append("active faults: none")
    waiting = {pair: n for pair, n in status["backlog"].items() if n}
    lines.append("replication backlog: " + (", ".join(f"{p} {n}" for p, n in waiting.items()) if waiting else "none"))
    dropped = {pair: n for pair, n in status["dropped"].items() if n}
    lines.append("dropped changes: " + (", ".join(f"{p} {n}" for p, n in dropped.items()) if dropped else "none"))
    return "\n".join(lines)
