"""One gateway as a child process (``feature-gateway serve``), for the local cluster and the integration tests.

``start()`` returns once ``/readyz`` answers 200; ``stop()`` sends SIGTERM to
that PID (never by name), waits, and kills only if the grace runs out.

The process runs the ``feature-gateway`` entry point beside this interpreter
when there is one (a venv, an install), so ``ps`` and ``top`` show
``feature-gateway serve --region us-east-1 …`` (and ``comm`` is
``feature-gateway``) rather than one more ``python``; else ``python -m gateway.cli``.
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
import urllib.error
import urllib.request
from pathlib import Path

from gateway.config import load
from gateway.local import processes


class GatewayProcessError(RuntimeError):
    """The gateway exited or did not become ready."""


class GatewayProcess:
    def __init__(
        self,
        config_path: str | os.PathLike[str],
        *,
        region: str | None = None,
        workers: int | None = None,
        log_path: Path | None = None,
        env: dict[str, str] | None = None,
    ) -> None:
        self.config_path = str(config_path)
        self.region = region
        self.workers = workers
        self.log_path = log_path
        self.env = env
        #: The process's configuration, as it will load it.
        self.config = load(self.config_path, region=region, env={**os.environ, **(env or {})})
        self.url = f"http://{self.config.listen}"
        self._proc: subprocess.Popen[bytes] | None = None

    @property
    def pid(self) -> int | None:
        return self._proc.pid if self._proc else None

    @property
    def returncode(self) -> int | None:
        return self._proc.poll() if self._proc else None

    def command(self) -> list[str]:
        script = Path(sys.executable).parent / "feature-gateway"
        cmd = [str(script)] if script.exists() else [sys.executable, "-m", "gateway.cli"]
        cmd.append("serve")
        if self.region:
            cmd += ["--region", self.region]
        cmd += ["--config", self.config_path]
        if self.workers:
            cmd += ["--workers", str(self.workers)]
        return cmd

    def start(self, timeout: float = 30.0, *, wait_for: str = "/readyz") -> GatewayProcess:
        """Start, and return once ``wait_for`` answers 200 (``/healthz`` for a gateway expected unready)."""
        self._proc = processes.spawn(self.command(), log_path=self.log_path, env={**os.environ, **(self.env or {})})
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self._proc.poll() is not None:
                raise GatewayProcessError(
                    f"gateway exited with code {self._proc.returncode} before it was ready"
                    + (f"; see {self.log_path}; it ended with: {self._last_words()}" if self.log_path else "")
                )
            if self.answers(wait_for):
                return self
            time.sleep(0.05)
        self.stop()
        raise GatewayProcessError(f"gateway at {self.url} was not ready within {timeout:.0f}s")

    def _last_words(self, lines: int = 5) -> str:
        """The end of the gateway's log (its reason for exiting), for the error; logs of temporary runs vanish."""
        try:
            with open(self.log_path, "rb") as log:  # type: ignore[arg-type]
                log.seek(0, os.SEEK_END)
                log.seek(max(0, log.tell() - 4096))
                tail = log.read().decode(errors="replace").strip().splitlines()[-lines:]
        except OSError as exc:
            return f"(unreadable: {exc})"
        return " | ".join(tail) or "(nothing)"

    def answers(self, path: str = "/readyz") -> bool:
        try:
            with urllib.request.urlopen(f"{self.url}{path}", timeout=1.0) as resp:
                return resp.status == 200
        except (urllib.error.URLError, OSError):
            return False

    def signal(self, signum: int = signal.SIGTERM) -> None:
        if self._proc is not None and self._proc.poll() is None:
            self._proc.send_signal(signum)

    def wait(self, timeout: float) -> int:
        assert self._proc is not None
        return self._proc.wait(timeout)

    def stop(self, timeout: float = 15.0) -> int | None:
        return processes.stop(self._proc, timeout) if self._proc is not None else None
