"""Child processes of the local tools: started in their own session with output to a log, stopped by PID.

Own session: a Ctrl-C aimed at the terminal's process group reaches only the
parent, which then stops its children in order (gateways before the DynamoDB
they serve from). Stopping is always by the PID we started, never by name.
"""

from __future__ import annotations

import signal
import subprocess
from pathlib import Path


def spawn(
    cmd: list[str], *, log_path: Path | None = None, env: dict[str, str] | None = None, cwd: Path | None = None
) -> subprocess.Popen[bytes]:
    out = open(log_path, "ab") if log_path else subprocess.DEVNULL
    try:
        return subprocess.Popen(
            cmd, cwd=cwd, env=env, stdout=out, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL,
            start_new_session=True,
        )
    finally:
        if out is not subprocess.DEVNULL:
            out.close()


def stop(proc: subprocess.Popen[bytes], timeout: float) -> int:
    """SIGTERM, wait up to ``timeout``, then SIGKILL; the exit code."""
    if proc.poll() is None:
        proc.send_signal(signal.SIGTERM)
        try:
            proc.wait(timeout)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait(timeout)
    return proc.returncode
