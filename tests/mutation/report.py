"""The table `make mutation` prints: per module, how many of mutmut's mutants the unit tests killed, and every survivor.

Reads what ``mutmut run`` left in ``mutants/`` (one ``.meta`` file per mutated module) and the reasons kept in
``tests/mutation/survivors.md``. A survivor is a mutant the tests let through: "survived", "no tests" (no unit
test reaches its function) or "suspicious". A timeout counts as killed: the mutant made a test hang, and the
per-test timeout failed it. Every survivor is printed with its diff and its reason, or ``UNEXPLAINED``.

Exit status 1 when a module is under ``THRESHOLD`` or a survivor has no reason: either is work left.

    .venv/bin/python -m tests.mutation.report [--quiet]   # --quiet: the table and the unexplained only
"""

from __future__ import annotations

import json
import re
import sys
from collections import Counter
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
SURVIVORS = ROOT / "tests" / "mutation" / "survivors.md"
THRESHOLD = 0.90

#: mutmut's exit codes (mutmut/stats.py), as the three outcomes this report counts.
KILLED = {1, 3}
TIMEOUT = {36, -24, 24, 152, 255}
NOT_RUN = {None, 2}


def outcome(code: int | None) -> str:
    if code in KILLED:
        return "killed"
    if code in TIMEOUT:
        return "timeout"
    if code in NOT_RUN:
        return "not run"
    return {0: "survived", 5: "no tests", 33: "no tests"}.get(code, "suspicious")  # type: ignore[arg-type]


def reasons() -> dict[str, str]:
    """Mutant name -> why it is equivalent or harmless, from the table rows of survivors.md."""
    found = {}
    for line in SURVIVORS.read_text(encoding="utf-8").splitlines():
        match = re.fullmatch(r"\|\s*`([^`]+)`\s*\|(.*)\|\s*", line)
        if match:
            found[match[1]] = match[2].strip()
    return found


def results() -> dict[str, dict[str, int | None]]:
    """Module path -> mutant name -> exit code, for every module mutmut mutated."""
    found = {}
    for meta in sorted((ROOT / "mutants").rglob("*.py.meta")):
        module = meta.relative_to(ROOT / "mutants").as_posix().removesuffix(".meta")
        found[module] = json.loads(meta.read_text(encoding="utf-8"))["exit_code_by_key"]
    return found


def diff(name: str, module: str) -> str:
    from mutmut.mutation.diff_apply import get_diff_for_mutant  # mutmut's own rendering of a mutant

    return get_diff_for_mutant(name, path=module)


def main(argv: list[str]) -> int:
    quiet = "--quiet" in argv
    by_module = results()
    if not by_module:
        print("no mutmut results in mutants/: run `make mutation`", file=sys.stderr)
        return 1
    why = reasons()
    print(f"{'module':<36} {'total':>6} {'killed':>7} {'timeout':>8} {'survived':>9} {'score':>7}")
    survivors: list[tuple[str, str, str]] = []
    low = []
    for module, codes in by_module.items():
        counts = Counter(outcome(code) for code in codes.values())
        total = len(codes) - counts["not run"]
        caught = counts["killed"] + counts["timeout"]
        left = total - caught
        score = caught / total if total else 1.0
        if score < THRESHOLD:
            low.append(module)
        not_run = f"  ({counts['not run']} not run)" if counts["not run"] else ""
        print(f"{module:<36} {total:>6} {counts['killed']:>7} {counts['timeout']:>8} {left:>9} {score:>7.1%}{not_run}")
        survivors += [(module, name, outcome(code)) for name, code in codes.items()
                      if outcome(code) not in ("killed", "timeout", "not run")]
    unexplained = [s for s in survivors if s[1] not in why]
    print(f"\n{len(survivors)} survivor(s), {len(unexplained)} without a reason in {SURVIVORS.relative_to(ROOT)}")
    for module, name, status in survivors if not quiet else unexplained:
        print(f"\n## {name} ({status}): {why.get(name, 'UNEXPLAINED')}")
        print(diff(name, module))
    if low:
        print(f"\nunder {THRESHOLD:.0%}: {', '.join(low)}")
    return 1 if low or unexplained else 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
