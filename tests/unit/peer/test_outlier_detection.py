"""OutlierDetector: consecutive failures eject, ejections grow, one probe closes (gateway/peer/outlier_detection.py)."""

from __future__ import annotations

from gateway.peer.outlier_detection import OutlierDetector, State
from tests.fakes import FakeClock

A, B, C = "10.0.0.1:8701", "10.0.0.2:8701", "10.0.0.3:8701"


def make_detector(clock: FakeClock, changes: list | None = None, **kw) -> OutlierDetector:
    settings = {"consecutive_failures": 3, "base_ejection": 10.0, "max_ejection": 25.0, "max_ejection_percent": 50,
                "probe_timeout": 2.0, **kw}
    return OutlierDetector(clock, on_change=lambda a, old, new: (changes if changes is not None else []).append((a, new)), **settings)


def fail(detector: OutlierDetector, address: str, times: int, pool=(A,)) -> None:
    for _ in range(times):
        assert detector.allow(address)
        detector.failure(address, list(pool))


def test_consecutive_failures_eject_and_a_success_resets_the_count():
    clock = FakeClock(0.0)
    detector = make_detector(clock)
    fail(detector, A, 2)
    detector.success(A)
    fail(detector, A, 2)
    assert detector.state(A) is State.HEALTHY and detector.allow(A)
    detector.failure(A, [A])
    assert detector.state(A) is State.EJECTED and not detector.allow(A)
    assert detector.retry_in(A) == 10.0


def test_one_probe_after_the_ejection_makes_the_address_healthy_on_success():
    clock, changes = FakeClock(0.0), []
    detector = make_detector(clock, changes)
    fail(detector, A, 3)
    clock.advance(9.99)
    assert not detector.allow(A)
    clock.advance(0.01)
    assert detector.allow(A)  # the probe
    assert detector.state(A) is State.PROBING and not detector.allow(A)  # only one at a time
    detector.success(A)
    assert detector.state(A) is State.HEALTHY and detector.allow(A) and detector.allow(A)
    assert changes == [(A, State.EJECTED), (A, State.PROBING), (A, State.HEALTHY)]


def test_a_failed_probe_ejects_again_for_longer_up_to_the_maximum():
    clock = FakeClock(0.0)
    detector = make_detector(clock)
    fail(detector, A, 3)
    for expected in (20.0, 25.0, 25.0):  # base x ejections, capped at max_ejection
        clock.advance(detector.retry_in(A))
        assert detector.allow(A)
        detector.failure(A, [A])
        assert detector.state(A) is State.EJECTED and detector.retry_in(A) == expected


def test_time_spent_healthy_forgives_past_ejections():
    clock = FakeClock(0.0)
    detector = make_detector(clock)
    fail(detector, A, 3)  # ejected once: 10 s
    clock.advance(10.0)
    assert detector.allow(A)
    detector.failure(A, [A])  # probe failed: ejected twice, 20 s
    clock.advance(20.0)
    assert detector.allow(A)
    detector.success(A)
    clock.advance(10.0)  # one base period healthy: one ejection forgiven
    fail(detector, A, 3)
    assert detector.retry_in(A) == 20.0
    clock.advance(20.0)
    assert detector.allow(A)
    detector.success(A)
    clock.advance(100.0)  # long healthy: back to the base time
    fail(detector, A, 3)
    assert detector.retry_in(A) == 10.0


def test_a_probe_that_never_reports_is_replaced_after_its_timeout():
    clock = FakeClock(0.0)
    detector = make_detector(clock)
    fail(detector, A, 3)
    clock.advance(10.0)
    assert detector.allow(A) and not detector.allow(A)
    clock.advance(2.0)
    assert detector.allow(A)


def test_max_ejection_percent_keeps_part_of_a_pool_in_rotation_but_one_may_always_go():
    clock = FakeClock(0.0)
    detector = make_detector(clock, max_ejection_percent=50)
    pool = (A, B, C)
    fail(detector, A, 3, pool)
    assert detector.state(A) is State.EJECTED  # the first of a region may always be ejected
    fail(detector, B, 5, pool)
    assert detector.state(B) is State.HEALTHY  # 2 of 3 would be over 50 %
    fail(detector, C, 3, (C,))
    assert detector.state(C) is State.EJECTED  # alone in its region


def test_late_answers_of_calls_made_before_the_ejection_change_nothing():
    clock = FakeClock(0.0)
    detector = make_detector(clock)
    fail(detector, A, 3)
    detector.failure(A, [A])
    detector.success(A)
    assert detector.state(A) is State.EJECTED and detector.retry_in(A) == 10.0
