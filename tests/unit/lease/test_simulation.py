"""The lease protocol and the majority control plane under seeded schedules of partitions, loss, delay, crashes,
concurrent failovers and clock drift: no two primaries acknowledge at once, decided rules never go back.

``make test`` runs ``FGW_SIM_SCHEDULES`` schedules (10 000); set it higher for a longer run, or set
``FGW_SIM_SEED`` to replay one schedule. A failure names its seed. The harness is tests/support/lease_simulation.py.
"""

from __future__ import annotations

import os
import time

import pytest

from tests.support.lease_simulation import run

SCHEDULES = int(os.environ.get("FGW_SIM_SCHEDULES", "10000"))
FIRST = int(os.environ.get("FGW_SIM_FIRST_SEED", "0"))


# A longer run (FGW_SIM_SCHEDULES) gets the time it needs: some 5 ms a schedule, with room for a busy machine.
@pytest.mark.timeout(max(120, SCHEDULES // 50))
def test_no_two_regions_acknowledge_one_scope_at_once_no_decided_rule_goes_back_and_the_last_primary_gets_its_lease():
    seeds = [int(os.environ["FGW_SIM_SEED"])] if "FGW_SIM_SEED" in os.environ else range(FIRST, FIRST + SCHEDULES)
    started = time.monotonic()
    failed = []
    acknowledging = 0
    events = 0
    for seed in seeds:
        report = run(seed)
        events += report.events
        acknowledging += report.acknowledged_time > 0
        if report.violations:
            failed.append(f"seed {seed} (replay: FGW_SIM_SEED={seed}): {report.violations[0]}")
    elapsed = time.monotonic() - started
    print(f"{len(seeds)} schedules, {events} events, {elapsed:.1f} s; {acknowledging} acknowledged writes")
    assert not failed, f"{len(failed)} failing schedules; first: {failed[:5]}"
    assert acknowledging == len(seeds)  # no schedule passed by acknowledging nothing
