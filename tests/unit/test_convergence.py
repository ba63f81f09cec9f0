"""The checker itself must catch what it claims to: each verdict is provoked here."""

from tests.support.convergence import Stored, Write, check, lost_count


def v(epoch: int, ts: int, region: str = "us-east-1") -> str:
    return f"{epoch}.{ts}.{region}"


WRITES = [Write("a", 1, v(0, 10)), Write("a", 2, v(0, 20)), Write("b", "x", v(0, 15))]


def test_converged_regions_are_clean():
    state = {"a": Stored(2, v(0, 20)), "b": Stored("x", v(0, 15))}
    reports = check(WRITES, {"us-east-1": state, "eu-west-1": dict(state)})
    assert all(r.clean for r in reports.values()) and lost_count(reports) == 0


def test_a_write_reflected_nowhere_is_lost_everywhere():
    state = {"a": Stored(1, v(0, 10)), "b": Stored("x", v(0, 15))}
    reports = check(WRITES, {"us-east-1": state, "eu-west-1": dict(state)})
    assert reports["us-east-1"].lost == ["a"] and reports["eu-west-1"].lost == ["a"]
    assert lost_count(reports) == 2


def test_a_region_behind_the_others_is_stale_not_lost():
    ahead = {"a": Stored(2, v(0, 20)), "b": Stored("x", v(0, 15))}
    behind = {"a": Stored(1, v(0, 10))}
    reports = check(WRITES, {"us-east-1": ahead, "ap-southeast-1": behind})
    assert reports["ap-southeast-1"].stale == ["a", "b"] and reports["ap-southeast-1"].lost == []
    assert reports["us-east-1"].clean


def test_same_version_other_value_is_divergent():
    good = {"a": Stored(2, v(0, 20)), "b": Stored("x", v(0, 15))}
    bad = {"a": Stored(99, v(0, 20)), "b": Stored("x", v(0, 15))}
    reports = check(WRITES, {"us-east-1": good, "eu-west-1": bad})
    assert reports["eu-west-1"].divergent == ["a"] and reports["us-east-1"].clean


def test_newer_unacknowledged_write_is_fine_only_if_all_agree():
    newer = {"a": Stored(3, v(0, 30)), "b": Stored("x", v(0, 15))}
    acked = {"a": Stored(2, v(0, 20)), "b": Stored("x", v(0, 15))}
    assert all(r.clean for r in check(WRITES, {"r1": newer, "r2": dict(newer)}).values())
    reports = check(WRITES, {"r1": newer, "r2": acked})
    assert reports["r2"].divergent == ["a"] and reports["r1"].clean


def test_epoch_orders_before_timestamp():
    writes = [Write("a", "old-primary", v(1, 999, "eu-west-1")), Write("a", "new-primary", v(2, 5))]
    state = {"a": Stored("old-primary", v(1, 999, "eu-west-1"))}
    reports = check(writes, {"r1": state})
    assert reports["r1"].lost == ["a"]


def test_deletes_expect_absence():
    writes = [Write("a", 1, v(0, 10)), Write("a", None, v(0, 20))]
    assert check(writes, {"r1": {}})["r1"].clean
    # The delete reached r1 but not r2: r2 still shows the deleted value.
    reports = check(writes, {"r1": {}, "r2": {"a": Stored(1, v(0, 10))}})
    assert reports["r1"].clean and reports["r2"].stale == ["a"]
