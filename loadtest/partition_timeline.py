"""The timeline of the partition benchmark: what each region's callers were answered, bucket by bucket, and when.

Built from the writers' outcomes (loadtest/writers.py) and the scenario's events, all on ``time.monotonic()``
and shown relative to the cut. Per region that sent writes and per bucket: the writes acknowledged, split by
the epoch of the version they got (its token names the epoch and the region that applied it as primary), the
writes refused (503 ``primary_unreachable``), those answered 200 but not applied (``stale_event_time``: the key
already held a newer write; or ``duplicate``) and those that failed otherwise, by the time they were answered.

``overlaps`` is the no-overlap check of tests/integration/test_partitions.py: per region that applied writes as
primary, the interval from the sending of its first acknowledged write to the answer of its last; no two may
overlap. It is conservative: a write is taken as applied anywhere between its sending and its answer.
"""

from __future__ import annotations

import itertools
import math
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path

from gateway.features.items import Version
from loadtest.writers import Outcome

REFUSED = "primary_unreachable"


@dataclass(frozen=True, slots=True)
class Event:
    at: float  # time.monotonic()
    name: str  # short: the PNG's label
    detail: str = ""


@dataclass
class Timeline:
    regions: list[str]
    outcomes: list[Outcome]
    cut: float  # time.monotonic() of the cut: the timeline's zero
    bucket: float = 0.25
    events: list[Event] = field(default_factory=list)

    def add(self, at: float, name: str, detail: str = "") -> None:
        self.events.append(Event(at, name, detail))

    # -- figures ---------------------------------------------------------------------------------

    def epochs(self) -> list[int]:
        return sorted({Version.parse(o.body["version"]).epoch for o in self.outcomes if o.applied})

    def buckets(self) -> dict[int, dict[str, Counter[str]]]:
        """Bucket index (answer time from the cut) -> region -> counts: ``e<epoch>``, ``refused``, ``not_applied``,
        ``failed``."""
        counts: dict[int, dict[str, Counter[str]]] = {}
        for o in self.outcomes:
            index = math.floor((o.started + o.seconds - self.cut) / self.bucket)
            cell = counts.setdefault(index, {r: Counter() for r in self.regions})[o.region]
            if o.applied:
                cell[f"e{Version.parse(o.body['version']).epoch}"] += 1
            elif o.status == 503 and o.body.get("error", {}).get("code") == REFUSED:
                cell["refused"] += 1
            elif o.ok:
                cell["not_applied"] += 1
            else:
                cell["failed"] += 1
        return counts

    def spans(self) -> dict[str, tuple[float, float]]:
        """Per region that applied writes as primary: (first send, last answer) of the writes it acknowledged."""
        spans: dict[str, tuple[float, float]] = {}
        for o in self.outcomes:
            if o.applied:
                by = Version.parse(o.body["version"]).region
                first, last = spans.get(by, (o.started, o.started + o.seconds))
                spans[by] = (min(first, o.started), max(last, o.started + o.seconds))
        return spans

    def overlaps(self) -> list[tuple[str, str]]:
        """Pairs of regions whose acknowledgement intervals overlap: two primaries at once (must be empty)."""
        ordered = sorted(self.spans().items(), key=lambda span: span[1][0])
        return [(one, then) for (one, (_, one_last)), (then, (then_first, _)) in itertools.combinations(ordered, 2)
                if not one_last < then_first]

    # -- text ------------------------------------------------------------------------------------

    def text(self) -> str:
        epochs = self.epochs()
        columns = [f"e{e}" for e in epochs] + ["ref", "na", "err"]
        width = 4 * len(columns)
        head = f"{'t (s)':>7} " + " ".join(f"| {r:<{width}}" for r in self.regions) + " | events"
        sub = f"{'':>7} " + " ".join("| " + "".join(f"{c:>4}" for c in columns) for _ in self.regions) + " |"
        lines = [head, sub]
        counts = self.buckets()
        events = sorted(self.events, key=lambda e: e.at)
        said = {self._index(e.at): [] for e in events}
        for e in events:
            said[self._index(e.at)].append(f"{e.at - self.cut:+.2f} {e.name}" + (f": {e.detail}" if e.detail else ""))
        indexes = sorted(set(counts) | set(said))
        for index in range(indexes[0], indexes[-1] + 1) if indexes else ():
            cells = []
            for r in self.regions:
                c = counts.get(index, {}).get(r, Counter())
                shown = [c[f"e{e}"] for e in epochs] + [c["refused"], c["not_applied"], c["failed"]]
                cells.append("| " + "".join(f"{n:>4}" if n else f"{'.':>4}" for n in shown))
            notes = said.get(index, [])
            lines.append((f"{index * self.bucket:>+7.2f} " + " ".join(cells) + " | " + "; ".join(notes)).rstrip())
        lines.append(f"per region that sent them, by answer time in {self.bucket * 1e3:g} ms buckets from the cut: "
                     "eN acknowledged at epoch N, ref refused (503 primary_unreachable), na answered 200 but not "
                     "applied (stale_event_time or duplicate), err any other answer")
        return "\n".join(lines)

    def _index(self, at: float) -> int:
        return math.floor((at - self.cut) / self.bucket)

    # -- picture ---------------------------------------------------------------------------------

    def png(self, path: Path) -> None:
        """The timeline as a PNG: per region, acknowledged writes by epoch up, the others down; the events."""
        try:
            import matplotlib
        except ImportError as exc:
            raise SystemExit("the PNG needs matplotlib: pip install -e '.[bench]' (make bench-partition does)") from exc
        matplotlib.use("Agg")
        import matplotlib.pyplot as plt

        counts = self.buckets()
        indexes = range(min(counts), max(counts) + 1) if counts else range(0)
        xs = [i * self.bucket for i in indexes]
        fig, axes = plt.subplots(len(self.regions), 1, sharex=True, figsize=(12, 2.6 * len(self.regions) + 1.5))
        colours = plt.get_cmap("tab10")
        for ax, region in zip(axes, self.regions, strict=True):
            bottom = [0] * len(xs)
            for n, epoch in enumerate(self.epochs()):
                ys = [counts.get(i, {}).get(region, Counter())[f"e{epoch}"] for i in indexes]
                ax.bar(xs, ys, width=self.bucket, align="edge", bottom=bottom, color=colours(n),
                       label=f"acknowledged, epoch {epoch}")
                bottom = [b + y for b, y in zip(bottom, ys, strict=True)]
            below = [0] * len(xs)
            for kind, colour, label in (("refused", "tab:red", "refused (503)"),
                                        ("not_applied", "silver", "200, not applied"), ("failed", "black", "other error")):
                ys = [-counts.get(i, {}).get(region, Counter())[kind] for i in indexes]
                ax.bar(xs, ys, width=self.bucket, align="edge", bottom=below, color=colour, label=label)
                below = [b + y for b, y in zip(below, ys, strict=True)]
            ax.axhline(0, color="grey", linewidth=0.5)
            ax.set_ylabel(f"{region}\nwrites / {self.bucket:g} s")
            for e in self.events:
                ax.axvline(e.at - self.cut, color="grey", linestyle="--", linewidth=0.8)
        top = axes[0]
        for n, e in enumerate(sorted(self.events, key=lambda e: e.at)):
            top.annotate(e.name, (e.at - self.cut, 1.0), xycoords=("data", "axes fraction"),
                         xytext=(2, 4 + 11 * (n % 4)), textcoords="offset points", fontsize=7, rotation=0)
        handles, labels = axes[0].get_legend_handles_labels()
        fig.legend(handles, labels, loc="lower center", fontsize=8, ncols=len(labels), frameon=False)
        axes[-1].set_xlabel("seconds from the cut of the primary region (answer time)")
        fig.suptitle("partition of the primary region: writes acknowledged and refused per region", y=0.995)
        fig.tight_layout(rect=(0, 0.03, 1, 1))  # room for the legend below the axes
        fig.savefig(path, dpi=110)
        plt.close(fig)
