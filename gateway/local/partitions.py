"""Network partitions between the local cluster's regions: nftables rules in a table of the cluster's own.

Each region's processes have their own loopback address (config/local.toml: 127.0.1.1, 127.0.2.1, …): its
gateway listens on it and connects from it (``gateway.source_address``), its DynamoDB Local listens on it. A
cut between regions A and B drops, in the kernel, every packet between A's address and B's address that goes
to or comes from one of the cluster's ports on either side: new connections hang in SYN, open ones stall, as
across a real partition. Nothing in the gateway knows about it.

Invariants:
- Only loopback, only this cluster: every rule matches IPv4 source and destination addresses in 127.0.0.0/8
  and this cluster's own ports (two clusters on one machine share the addresses, never the ports).
- One table per cluster (``fgw_local_<pid>``), written whole in one nft transaction at every change (never
  half a rule set), deleted when the cluster stops. A table left by a cluster that died (its PID gone) is
  deleted by the next one that starts (``remove_stale``).
- The cuts are symmetric: a cut between A and B is one unordered pair.
"""

from __future__ import annotations

import ipaddress
import os
import re
import shutil
import subprocess
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass

TABLE_PREFIX = "fgw_local_"
_TABLE = re.compile(rf"^table ip ({TABLE_PREFIX}(\d+))$", re.M)


class PartitionError(RuntimeError):
    """nft is missing or refused (not root, no nf_tables in the kernel), or the cut names no such region."""


@dataclass(frozen=True, slots=True)
class Endpoint:
    """Where one region's processes are: its loopback address and the ports the cluster uses on it."""

    address: str
    ports: tuple[int, ...]

    def __post_init__(self) -> None:
        if not ipaddress.IPv4Address(self.address).is_loopback:
            raise PartitionError(f"{self.address} is not a loopback address; partitions only ever touch 127.0.0.0/8")


def find_nft() -> str:
    nft = shutil.which("nft") or next((p for p in ("/usr/sbin/nft", "/sbin/nft") if os.path.exists(p)), None)
    if nft is None:
        raise PartitionError("nft (nftables) is not installed: `make setup` installs it (apt-get install nftables)")
    return nft


def _run(nft: str, *args: str, script: str | None = None) -> str:
    done = subprocess.run([nft, *args], input=script, capture_output=True, text=True, timeout=10)
    if done.returncode != 0:
        problem = done.stderr.strip().splitlines()[-1] if done.stderr.strip() else f"exit code {done.returncode}"
        hint = "" if os.geteuid() == 0 else " (nft needs root)"
        raise PartitionError(f"nft {' '.join(args)} failed{hint}: {problem}")
    return done.stdout


class Partitions:
    """The cuts between a cluster's regions, and the nftables table that enforces them."""

    def __init__(self, endpoints: Mapping[str, Endpoint], *, owner: int | None = None) -> None:
        self._endpoints = dict(endpoints)
        self.table = f"{TABLE_PREFIX}{owner or os.getpid()}"
        self._nft = find_nft()
        self._cuts: set[frozenset[str]] = set()

    @property
    def cuts(self) -> list[tuple[str, str]]:
        """Each cut pair once, in the cluster's region order."""
        return [self._pair(pair) for pair in self._sorted(self._cuts)]

    def _pair(self, pair: frozenset[str]) -> tuple[str, str]:
        first, second = sorted(pair, key=list(self._endpoints).index)
        return first, second

    def _sorted(self, pairs: Iterable[frozenset[str]]) -> list[frozenset[str]]:
        order = list(self._endpoints)
        return sorted(pairs, key=lambda pair: sorted(order.index(r) for r in pair))

    def cut(self, region: str, others: Iterable[str] | None = None) -> list[tuple[str, str]]:
        """Cut ``region`` off from ``others`` (default: every other region); the pairs newly cut."""
        others = list(others) if others is not None else [r for r in self._endpoints if r != region]
        for name in (region, *others):
            if name not in self._endpoints:
                raise PartitionError(f"no region {name!r} in this cluster; regions are {', '.join(self._endpoints)}")
        added = [frozenset((region, other)) for other in others if other != region]
        fresh = [pair for pair in added if pair not in self._cuts]
        self._apply(self._cuts | set(added))
        return [self._pair(pair) for pair in fresh]

    def heal(self, region: str | None = None) -> list[tuple[str, str]]:
        """Remove every cut (or those of ``region``); the pairs healed."""
        healed = {pair for pair in self._cuts if region is None or region in pair}
        self._apply(self._cuts - healed)
        return [self._pair(pair) for pair in self._sorted(healed)]

    def remove(self) -> None:
        """Delete the table (at cluster stop); harmless if it was never written."""
        _run(self._nft, "-f", "-", script=f"table ip {self.table} {{}}\ndelete table ip {self.table}\n")
        self._cuts.clear()

    def _apply(self, cuts: set[frozenset[str]]) -> None:
        rules = []
        for pair in self._sorted(cuts):
            a, b = (self._endpoints[r] for r in self._pair(pair))
            for one, other in ((a, b), (b, a)):
                ports = ", ".join(map(str, other.ports))
                # To the other side's ports, and the answers coming back from them.
                rules.append(f"ip saddr {one.address} ip daddr {other.address} tcp dport {{ {ports} }} drop")
                rules.append(f"ip saddr {other.address} ip daddr {one.address} tcp sport {{ {ports} }} drop")
        body = "\n".join(f"    {rule}" for rule in rules)
        script = (
            f"table ip {self.table} {{}}\ndelete table ip {self.table}\n"
            f"table ip {self.table} {{\n  chain output {{\n    type filter hook output priority 0; policy accept;\n"
            f"{body}\n  }}\n}}\n"
        )
        _run(self._nft, "-f", "-", script=script)
        self._cuts = set(cuts)


def remove_stale(alive: Callable[[int], bool]) -> list[str]:
    """Delete the tables of local clusters whose process is gone; their names."""
    nft = find_nft()
    removed = []
    for match in _TABLE.finditer(_run(nft, "list", "tables")):
        if not alive(int(match[2])):
            _run(nft, "delete", "table", "ip", match[1])
            removed.append(match[1])
    return removed

