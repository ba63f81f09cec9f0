"""A running local cluster seen from another terminal: ``local status``, ``local down``, ``local fault …``.

Everything goes through what ``local up`` leaves in its state directory:
``cluster.json`` names the ``local up`` process, every PID it started and its
control endpoint (faults, status). ``down`` signals the ``local up`` process
(SIGTERM, as Ctrl-C would) and waits until every PID of ``cluster.json`` is gone;
a cluster whose ``local up`` was killed (``kill -9``) left its children behind,
and ``down`` stops those by their PIDs, after checking each still runs what the
cluster started (a PID may have been reused since).

Invariant: a process is signalled only by a PID read from ``cluster.json`` and
only while its command line is one the cluster starts; never by name.
"""

from __future__ import annotations

import json
import os
import signal
import time
from pathlib import Path
from typing import Any

import aiohttp

#: Seconds ``down`` waits for the cluster to stop (the gateways' shutdown grace is 5 s in config/local.toml).
DOWN_TIMEOUT = 60.0
#: What the command line of a process the cluster started holds (gateway/local/gateway_process.py,
#: gateway/local/dynamodb_local.py, ``feature-gateway local up``).
CLUSTER_MARKS = (b"feature-gateway", b"gateway.cli", b"DynamoDBLocal")


class RemoteError(RuntimeError):
    """No cluster to talk to, or it did not answer; one line saying what to do."""


def read_state(state_dir: str | Path) -> dict[str, Any] | None:
    """``cluster.json``, or None when no cluster left one."""
    try:
        return json.loads((Path(state_dir) / "cluster.json").read_text())  # type: ignore[no-any-return]
    except FileNotFoundError:
        return None
    except (OSError, ValueError) as exc:
        raise RemoteError(f"{Path(state_dir) / 'cluster.json'} cannot be read ({exc}); remove it if no cluster runs")


def _ours(pid: int) -> bool:
    """``pid`` runs and is a process the cluster starts (its command line says so)."""
    try:
        cmdline = Path(f"/proc/{pid}/cmdline").read_bytes()
    except OSError:
        return False
    return any(mark in cmdline for mark in CLUSTER_MARKS)


def live_pids(state: dict[str, Any]) -> list[int]:
    return [pid for pid in state.get("pids", []) if _ours(pid)]


async def request(state_dir: str | Path, method: str, path: str, body: dict[str, Any] | None = None) -> Any:
    """One call to the running cluster's control endpoint; its JSON answer."""
    state = read_state(state_dir)
    if state is None:
        raise RemoteError(f"no local cluster is running ({Path(state_dir) / 'cluster.json'} is missing); "
                          "start one with `make run`")
    url = state.get("control")
    if not url:
        raise RemoteError(f"{Path(state_dir) / 'cluster.json'} names no control endpoint; is the cluster still starting?")
    async with aiohttp.ClientSession() as http:
        try:
            async with http.request(method, f"{url}{path}", json=body, timeout=aiohttp.ClientTimeout(total=120)) as resp:
                answer = await resp.json()
        except (aiohttp.ClientError, TimeoutError) as exc:
            raise RemoteError(f"the local cluster at {url} did not answer ({type(exc).__name__}); is it still running? "
                              "`feature-gateway local down` cleans up after one that died") from None
    if resp.status != 200:
        raise RemoteError(answer.get("error", f"HTTP {resp.status}"))
    return answer


async def send_fault(state_dir: str | Path, action: str, body: dict[str, Any]) -> dict[str, Any]:
    """``local fault ACTION``: ``{"changed", "message", "status"}``."""
    return await request(state_dir, "POST", f"/fault/{action}", body)  # type: ignore[no-any-return]


async def cluster_status(state_dir: str | Path) -> dict[str, Any]:
    return await request(state_dir, "GET", "/cluster")  # type: ignore[no-any-return]


def down(state_dir: str | Path, timeout: float = DOWN_TIMEOUT) -> str:
    """Stop the cluster of ``state_dir``: signal its ``local up``, wait for every PID; what was done, in a line."""
    state = read_state(state_dir)
    if state is None:
        return "nothing to stop: no local cluster is running (no cluster.json in " + str(state_dir) + ")"
    pids = live_pids(state)
    if not pids:
        (Path(state_dir) / "cluster.json").unlink(missing_ok=True)
        return "nothing to stop: the cluster of cluster.json is gone already (its file is removed)"
    leader = state.get("pid")
    if leader in pids:
        os.kill(leader, signal.SIGTERM)  # local up stops its children in order, then exits
        how = f"stopped the local cluster (local up, pid {leader})"
    else:
        # local up was killed without stopping its children: stop them by PID. Thaw first: a stopped region's
        # DynamoDB Local is frozen (SIGSTOP) and could not act on SIGTERM.
        for pid in pids:
            os.kill(pid, signal.SIGCONT)
            os.kill(pid, signal.SIGTERM)
        how = f"stopped {len(pids)} process(es) a killed local up left behind"
    deadline = time.monotonic() + timeout
    while (left := live_pids(state)) and time.monotonic() < deadline:
        time.sleep(0.1)
    if left:
        raise RemoteError(f"still running after {timeout:.0f} s: PIDs {', '.join(map(str, left))}")
    if leader not in pids:
        (Path(state_dir) / "cluster.json").unlink(missing_ok=True)
    return how
