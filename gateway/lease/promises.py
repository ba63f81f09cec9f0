"""What a region promises about a scope's primary: the acceptor side of primacy leases (issue 13, part 2).

A region that confirms region P's lease on scope S at epoch E promises, for the lease's length, to confirm no
other primary of S. The promise is one record per (region, scope), written only by that region's gateways,
each write conditional on the record it read (a strongly consistent compare-and-set inside the region: in
production an item of the control table in the region's own replica, in the simulation a dict), so the
region's gateways keep one promise between them whichever of them is asked.

``grant`` is the whole rule, a pure function:
- a live promise to another region is never broken: the asker is refused until it has expired;
- a promise to the same region is renewed (its epoch may rise, never fall);
- a promise whose epoch is below what this gateway knows of the scope is not given (the asker is a deposed
  primary that has not learned it yet), nor one for a primary that this gateway knows is not the primary at
  that epoch;
- "expired" is judged with the clock-drift margin: the record's ``until`` was written by one gateway of the
  region and is read by another, whose clocks may differ by up to ``max_drift``.

Invariant (what the simulation in tests/unit/lease checks on every schedule): with clocks within ``max_drift``
of each other, no two regions hold a majority of live promises for one scope at the same instant.
"""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True, slots=True)
class Promise:
    """Region-wide: this region confirms ``holder`` as primary of the scope at ``epoch`` until ``until_ms``."""

    holder: str
    epoch: int
    #: Wall-clock milliseconds of the gateway that wrote it.
    until_ms: int


@dataclass(frozen=True, slots=True)
class Known:
    """What the confirming gateway's own rules say of the scope: its epoch and primary (``None`` if no rule)."""

    epoch: int
    primary: str | None


def expired(promise: Promise | None, now_ms: int, max_drift_ms: int) -> bool:
    """True when no gateway of the region can still be bound by ``promise``, whatever its clock."""
    return promise is None or now_ms > promise.until_ms + max_drift_ms


def grant(
    current: Promise | None,
    asker: str,
    epoch: int,
    known: Known | None,
    now_ms: int,
    lease_ms: int,
    max_drift_ms: int,
) -> Promise | str:
    """The promise to write for ``asker``'s lease request at ``epoch``, or why it is refused."""
    if known is not None:
        if epoch < known.epoch:
            return f"epoch {epoch} is over: this region knows epoch {known.epoch} (primary {known.primary})"
        if epoch == known.epoch and known.primary != asker:
            return f"{asker} is not the primary at epoch {epoch}: {known.primary} is"
    if current is not None and not expired(current, now_ms, max_drift_ms):
        if current.holder != asker:
            return f"promised to {current.holder} (epoch {current.epoch}) for {current.until_ms - now_ms} ms more"
        if epoch < current.epoch:
            return f"promised to {asker} at epoch {current.epoch} already; epoch {epoch} is over"
    return Promise(asker, epoch, now_ms + lease_ms)


def release(current: Promise | None, holder: str, epoch: int) -> Promise | None:
    """A planned switch's handover: the old primary gives its lease up, so the promise ends now, not at ``until``."""
    if current is not None and current.holder == holder and current.epoch <= epoch:
        return None
    return current
