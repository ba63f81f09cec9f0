"""Every ``sh`` block of README.md, run as written, in order, against a fresh ``make run``.

The commands come from README.md itself, so the two cannot drift: a block fenced ``sh`` is commands to
run (one per line, ``\\`` continues a line, ``#`` starts a comment); each must exit 0, or the status a
``# exit N`` comment at the end of its line names. Blocks fenced otherwise are not run (``shell``: commands
for elsewhere, such as ``make run`` itself; unfenced: output).

The README's commands use the fixed addresses of config/local.toml, so this test runs the real ``make run``
on them, and fails at once, saying so, if one of them is taken (another ``make run``). Every command runs,
even after one failed, and the test fails with all the failures. At the end the cluster is stopped by a
SIGTERM to ``make run``'s process group, and every process it started must be gone.
"""

from __future__ import annotations

import json
import os
import re
import signal
import socket
import subprocess
import time
from dataclasses import dataclass
from pathlib import Path

import pytest

from gateway.local.cluster import pid_alive

REPO = Path(__file__).resolve().parents[2]
README = REPO / "README.md"
#: Seconds `make run` gets to print its ready line (setup is done: `make test` ran it first).
READY_TIMEOUT = 180.0
COMMAND_TIMEOUT = 120.0


@dataclass(frozen=True)
class Command:
    line: int
    text: str
    exit: int


def commands(readme: str) -> list[Command]:
    """Every command of every ``sh`` block, in order, with the exit status the README gives it."""
    found, block, start, pending = [], False, 0, ""
    for number, line in enumerate(readme.splitlines(), 1):
        if line.startswith("```"):
            block = line.strip() == "```sh" if not block else False
            continue
        if not block or not line.strip() or line.lstrip().startswith("#"):
            continue
        if not pending:
            start = number
        if line.rstrip().endswith("\\"):
            pending += line.rstrip()[:-1] + " "
            continue
        text = pending + line
        pending = ""
        expected = re.search(r"#\s*exit\s+(\d+)\s*$", text)
        found.append(Command(start, text, int(expected.group(1)) if expected else 0))
    return found


def fixed_addresses() -> list[tuple[str, int]]:
    text = (REPO / "config/local.toml").read_text()
    return sorted({(host, int(port)) for host, port in re.findall(r"(127\.\d+\.\d+\.\d+):(\d+)", text)})


def taken(address: tuple[str, int]) -> bool:
    with socket.socket() as sock:
        # As the servers do: connections of a cluster that just stopped (TIME_WAIT) do not make a port taken.
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            sock.bind(address)
        except OSError:
            return True
    return False


def test_commands_are_read_from_sh_blocks_only():
    sample = "```shell\nmake run\n```\n```sh\n# a comment\nls \\\n  -l   # listed\nfalse  # exit 1\n```\n```\n$ out\n```\n"
    assert commands(sample) == [Command(6, "ls    -l   # listed", 0), Command(8, "false  # exit 1", 1)]


@pytest.mark.timeout(READY_TIMEOUT + 400)  # make run, then some 40 commands that each start an interpreter
def test_every_readme_command_runs_as_written_on_a_fresh_make_run(tmp_path):
    busy = [f"{h}:{p}" for h, p in fixed_addresses() if taken((h, p))]
    assert not busy, (f"the README's addresses are taken ({', '.join(busy)}): is a `make run` running? "
                      "This test starts its own on them; stop the other first")
    assert not (REPO / ".local" / "cluster.json").exists(), ".local/cluster.json exists: is a `make run` running?"
    todo = commands(README.read_text())
    assert todo, "README.md has no sh block"
    log = tmp_path / "make-run.log"
    env = {k: v for k, v in os.environ.items() if not k.startswith("AWS_")}
    with open(log, "ab") as out:
        make = subprocess.Popen(["make", "run"], cwd=REPO, stdout=out, stderr=subprocess.STDOUT,
                                stdin=subprocess.DEVNULL, env=env, start_new_session=True)
    pids: list[int] = []
    failures = []
    try:
        deadline = time.monotonic() + READY_TIMEOUT
        while "\nready: " not in log.read_text():
            assert make.poll() is None, f"make run exited with {make.returncode}:\n{log.read_text()}"
            assert time.monotonic() < deadline, f"make run printed no ready line in {READY_TIMEOUT:.0f} s"
            time.sleep(0.2)
        pids = json.loads((REPO / ".local" / "cluster.json").read_text())["pids"]
        for command in todo:
            ran = subprocess.run(["bash", "-c", command.text], cwd=REPO, capture_output=True, text=True,
                                 timeout=COMMAND_TIMEOUT, env=env, stdin=subprocess.DEVNULL)
            if ran.returncode != command.exit:
                failures.append(f"README.md:{command.line}: exit {ran.returncode}, the README says {command.exit}: "
                                f"{command.text}\n  stdout: {ran.stdout.strip()[-600:]}\n  stderr: {ran.stderr.strip()[-600:]}")
    finally:
        os.killpg(make.pid, signal.SIGTERM)
        code = make.wait(90)
    assert not failures, f"{len(failures)} of {len(todo)} README commands failed:\n" + "\n".join(failures)
    # make forwards the signal and waits: local up stops everything it started, then both exit.
    assert code in (0, -signal.SIGTERM, 2), log.read_text()
    assert pids and [p for p in pids if pid_alive(p)] == [], f"still running: {pids}"
    assert not (REPO / ".local" / "cluster.json").exists()
