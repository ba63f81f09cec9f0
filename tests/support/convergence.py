"""A convergence checker for replicated feature data, after Jepsen's set-full checker.

Given every write the system *acknowledged* (key, value, version) and the
final state read from each region, it reports per region:

- **lost**: the newest acknowledged write of a key is reflected in *no* region
  (neither it nor anything newer is stored anywhere). This is the pass
  criterion: an acknowledged write must never disappear.
- **stale**: this region holds an older version than the newest acknowledged
  one, while some other region has it (replication has not caught up, or an
  older value overwrote a newer one here).
- **divergent**: this region disagrees with the others on a key at or beyond
  the newest acknowledged version (same version with another value, or a
  different version than the region holding the highest one).

Versions are the gateway's tokens, ordered by (epoch, ts) as DESIGN.md §6.6
says; ``None`` as a value means an acknowledged delete (the key must be absent
or hold something newer). Writes that were not acknowledged (timeouts) may or
may not have landed; they are not in the input, and a region holding a newer
unacknowledged version than every acknowledged one is fine as long as all
regions agree.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from typing import Any

from gateway.features.items import Version


@dataclass(frozen=True, slots=True)
class Write:
    key: str
    value: Any  # None: a delete
    version: str


@dataclass(frozen=True, slots=True)
class Stored:
    value: Any
    version: str | None


@dataclass
class RegionReport:
    lost: list[str] = field(default_factory=list)
    stale: list[str] = field(default_factory=list)
    divergent: list[str] = field(default_factory=list)

    @property
    def clean(self) -> bool:
        return not (self.lost or self.stale or self.divergent)


def _order(version: str | None) -> Version | None:
    return Version.parse(version) if version is not None else None


def check(acknowledged: Iterable[Write], regions: Mapping[str, Mapping[str, Stored]]) -> dict[str, RegionReport]:
    """Per region, the keys lost, stale and divergent; ``regions[r][key]`` is absent for a missing item."""
    newest: dict[str, Write] = {}
    for write in acknowledged:
        known = newest.get(write.key)
        if known is None or Version.parse(write.version) > Version.parse(known.version):
            newest[write.key] = write
    reports = {region: RegionReport() for region in regions}
    for key, write in sorted(newest.items()):
        want = Version.parse(write.version)
        held = {region: state.get(key) for region, state in regions.items()}
        # For a delete, absence is the newest acknowledged state: count it as holding `want`.
        seen = {
            region: (_order(s.version) if s is not None else (want if write.value is None else None))
            for region, s in held.items()
        }
        reached = [v for v in seen.values() if v is not None and v >= want]
        highest = max(reached) if reached else None
        for region, stored in held.items():
            version = seen[region]
            report = reports[region]
            if version is None or version < want:
                (report.stale if reached else report.lost).append(key)
            elif version == want and write.value is not None and stored is not None and stored.value != write.value:
                report.divergent.append(key)
            elif highest is not None and version != highest:
                report.divergent.append(key)
    return reports


def lost_count(reports: Mapping[str, RegionReport]) -> int:
    return sum(len(r.lost) for r in reports.values())
