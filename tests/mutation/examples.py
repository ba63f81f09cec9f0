"""The changes issue 16 named, reintroduced one at a time: each must fail the test that names it.

mutmut (`make mutation`) mutates inside functions only, so a changed constant such as the write
condition's text, or a change of several lines, is not among its mutants. Each example here is such a
change, as an exact text substitution in one file of a scratch copy of the repository; the test that
must fail runs against it there. The copy's own imports resolve to its files (the check below).

    .venv/bin/python -m tests.mutation.examples      # exit status 1 if an example passes its test
"""

from __future__ import annotations

import shutil
import subprocess
import sys
import tempfile
from dataclasses import dataclass
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
COPIED = ("gateway", "tests", "config", "deploy", "loadtest", "pyproject.toml", "README.md", "Makefile", "Dockerfile")


@dataclass(frozen=True)
class Example:
    what: str
    path: str
    old: str
    new: str
    test: str


EXAMPLES = [
    Example("idempotency clause: `<>` becomes `=`", "gateway/features/items.py", "#req <> :req", "#req = :req",
            "tests/unit/test_dispatcher.py::test_the_write_condition_orders_by_event_time_and_refuses_a_replayed_idempotency_key"),
    Example("idempotency clause deleted", "gateway/features/items.py",
            " AND (attribute_not_exists(#req) OR #req <> :req)", "",
            "tests/unit/test_dispatcher.py::test_the_write_condition_orders_by_event_time_and_refuses_a_replayed_idempotency_key"),
    Example("event time: `<=` becomes `>=`", "gateway/features/items.py", "#ets <= :ets", "#ets >= :ets",
            "tests/unit/test_dispatcher.py::test_the_write_condition_orders_by_event_time_and_refuses_a_replayed_idempotency_key"),
    Example("event time: `<=` becomes `<` (a tie refused)", "gateway/features/items.py", "#ets <= :ets", "#ets < :ets",
            "tests/unit/test_dispatcher.py::test_the_write_condition_orders_by_event_time_and_refuses_a_replayed_idempotency_key"),
    Example("routing.poll_interval above 1 s accepted", "gateway/config.py",
            'poll_interval: float = setting(1.0, positive, at_most(1.0, " second (DESIGN.md §5)"))',
            "poll_interval: float = setting(1.0, positive)",
            "tests/unit/test_config.py::test_bad_operations_settings_are_named"),
    Example("/readyz 200 before the rules are loaded", "gateway/api/health.py",
            "return self.store_ok and not self.draining and (self._routing is None or self._routing.table is not None)",
            "return self.store_ok and not self.draining",
            "tests/unit/api/test_downstream.py::test_readyz_is_false_until_the_routing_rules_are_loaded"),
    Example("the IAM policy grants an action the gateway never calls", "deploy/iam/gateway-policy.json",
            '"dynamodb:BatchGetItem",', '"dynamodb:BatchGetItem",\n        "dynamodb:Query",',
            "tests/deploy/test_artifacts.py::test_iam_policy_is_least_privilege_for_the_configured_tables"),
    Example("read coalescer: close() answers never-started reads with not found", "gateway/store/read_coalescer.py",
            "        for _, batch in batches:\n            _fail(batch, _shutting_down())",
            "        for _, batch in batches:\n            for waiters in batch.values():\n"
            "                for future in waiters:\n                    future.done() or future.set_result(None)",
            "tests/unit/store/test_read_coalescer.py::"
            "test_close_fails_reads_in_flight_started_and_queued_and_answers_none_of_them_not_found"),
    Example("fence: the primary records no acknowledged write", "gateway/dispatcher.py",
            'acks.end(rule.scope, view.name, record.key, answer["version"] if answer and answer["applied"] else None)',
            "acks.end(rule.scope, view.name, record.key, None)",
            "tests/unit/test_dispatcher.py::"
            "test_the_primary_records_each_write_it_acknowledged_and_only_those_for_a_switchs_fence"),
    Example("fence: the old primary's answer faked complete", "gateway/switch/participant.py",
            "return acknowledged, complete and quiet", "return acknowledged, True",
            "tests/unit/switch/test_participant.py::test_a_fence_whose_log_forgot_keys_for_space_is_not_complete"),
    Example("fence: the coordinator ignores \"complete\"", "gateway/switch/coordinator.py",
            'if answer.get("complete"):', "if True:",
            "tests/unit/switch/test_coordinator.py::test_an_incomplete_fence_answer_is_asked_again_and_never_verified_on_its_own"),
    Example("fence: the coordinator keeps the oldest version per key", "gateway/switch/coordinator.py",
            "Version.parse(token) > Version.parse(held)", "Version.parse(token) < Version.parse(held)",
            "tests/unit/switch/test_coordinator.py::test_the_newest_version_a_key_was_acknowledged_at_is_the_one_checked"),
    Example("write buffer: the sweeper wakes on its resolution only, past a write's window", "gateway/switch/write_buffer.py",
            "delay = self._resolution if expiry is None else max(0.0, min(self._resolution, expiry - self._clock.monotonic()))",
            "delay = self._resolution",
            "tests/unit/switch/test_write_buffer.py::test_the_sweeper_expires_a_held_write_when_its_window_ends"),
    Example("peer signatures compared on their first 8 hex digits only", "gateway/peer/auth.py",
            "if not hmac.compare_digest(expected, signature):",
            "if not hmac.compare_digest(expected[:8], signature[:8]):",
            "tests/unit/peer/test_auth.py::test_a_signature_that_only_starts_like_the_right_one_is_refused"),
]


def run(copy: Path, test: str) -> int:
    return subprocess.run(
        [sys.executable, "-m", "pytest", "-x", "-q", "-p", "no:cacheprovider", test],
        cwd=copy, capture_output=True, text=True, timeout=600,
    ).returncode


def main() -> int:
    with tempfile.TemporaryDirectory(prefix="fgw-examples-") as scratch:
        copy = Path(scratch)
        for name in COPIED:
            source = ROOT / name
            (shutil.copytree if source.is_dir() else shutil.copy2)(source, copy / name)
        where = subprocess.run(
            [sys.executable, "-c", "import gateway; print(gateway.__file__)"], cwd=copy, capture_output=True, text=True,
        ).stdout.strip()
        assert where.startswith(str(copy)), f"the copy imports gateway from {where}, not from itself"
        survived = []
        for example in EXAMPLES:
            target = copy / example.path
            original = target.read_text(encoding="utf-8")
            assert original.count(example.old) == 1, f"{example.what}: {example.old!r} is not once in {example.path}"
            assert run(copy, example.test) == 0, f"{example.test} fails without the change"
            target.write_text(original.replace(example.old, example.new), encoding="utf-8")
            try:
                code = run(copy, example.test)
            finally:
                target.write_text(original, encoding="utf-8")
            status = "fails its test" if code == 1 else f"NOT CAUGHT (pytest exit {code})"
            if code != 1:
                survived.append(example)
            print(f"{status:<16} {example.what}\n{'':<16} {example.test}")
    print(f"\n{len(EXAMPLES) - len(survived)}/{len(EXAMPLES)} examples fail their test")
    return 1 if survived else 0


if __name__ == "__main__":
    sys.exit(main())
