"""The lease a primary region's gateway holds on its scopes: the asker side of primacy leases (issue 13, part 2).

A gateway that believes its region is the active primary of some scopes asks every region (its own included)
to confirm them, all scopes in one request per region per round. A round's confirmations count only together:
once a majority of the regions confirmed scope S at epoch E in one round, the gateway may acknowledge S's writes
until ``sent + lease - max_drift``, by its own monotonic clock, where ``sent`` is when the round was *asked*.
Every confirming region promised for ``lease`` from when it *answered*, later than ``sent``, so the holder's
lease ends before any of those promises can (``max_drift`` covers the clocks' disagreement about how long a
lease is). Another primary needs a majority too, which shares a region with this one's, whose promise it must
outwait: two leases on one scope never overlap.

Invariants:
- ``valid`` is true only inside a round's window that a majority confirmed, for that exact epoch.
- Validity only moves forward in time within an epoch, and a higher epoch drops every lower one's window.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass, field


@dataclass(slots=True)
class _Round:
    sent: float
    #: scope -> epoch asked.
    asked: dict[str, int]
    #: scope -> regions that confirmed it.
    confirmed: dict[str, set[str]] = field(default_factory=dict)


class LeaseHolder:
    """One gateway's leases, by scope; time is its monotonic clock, in seconds."""

    __slots__ = ("region", "majority", "lease", "max_drift", "_rounds", "_next", "_until", "_epoch")

    def __init__(self, region: str, regions: Iterable[str], lease: float, max_drift: float) -> None:
        names = set(regions)
        assert region in names and lease > 2 * max_drift > 0
        self.region = region
        self.majority = len(names) // 2 + 1
        self.lease = lease
        self.max_drift = max_drift
        self._rounds: dict[int, _Round] = {}
        self._next = 0
        #: scope -> (epoch, monotonic time the lease ends).
        self._until: dict[str, float] = {}
        self._epoch: dict[str, int] = {}

    def ask(self, scopes: dict[str, int], now: float) -> int:
        """Start a round asking for ``scopes`` (scope -> epoch) at ``now``; its id, to pass to ``confirmed``."""
        self._next += 1
        self._rounds[self._next] = _Round(now, dict(scopes))
        # Rounds older than a lease can no longer give anything: forget them.
        for old in [r for r, each in self._rounds.items() if each.sent + self.lease < now]:
            del self._rounds[old]
        return self._next

    def confirmed(self, round_id: int, region: str, scopes: Iterable[str]) -> None:
        """``region`` confirmed these scopes of round ``round_id`` (at the epochs the round asked)."""
        each = self._rounds.get(round_id)
        if each is None:
            return
        for scope in scopes:
            epoch = each.asked.get(scope)
            if epoch is None:
                continue
            regions = each.confirmed.setdefault(scope, set())
            regions.add(region)
            if len(regions) >= self.majority:
                self._extend(scope, epoch, each.sent + self.lease - self.max_drift)

    def _extend(self, scope: str, epoch: int, until: float) -> None:
        held = self._epoch.get(scope)
        if held is None or epoch > held:
            self._epoch[scope], self._until[scope] = epoch, until
        elif epoch == held and until > self._until[scope]:
            self._until[scope] = until

    def valid(self, scope: str, epoch: int, now: float) -> bool:
        """May this gateway acknowledge a write of ``scope`` as its primary at ``epoch`` at ``now``?"""
        return self._epoch.get(scope) == epoch and now < self._until[scope]

    def until(self, scope: str) -> tuple[int, float] | None:
        """The epoch and end of the lease held on ``scope`` (ended or not), if any."""
        if scope not in self._epoch:
            return None
        return self._epoch[scope], self._until[scope]

    def scopes(self) -> list[str]:
        """The scopes this holder has (or had, ended) a lease on."""
        return list(self._epoch)

    def drop(self, scope: str) -> None:
        """Give the lease up (demoted, or handing it over in a planned switch)."""
        self._epoch.pop(scope, None)
        self._until.pop(scope, None)
