"""The OpenAPI description against the gateway it describes: schemathesis, a tool no one here wrote, fuzzes a real
gateway process from the document that gateway serves, with every check it has.

Bounded and repeatable: a fixed seed (CI runs the same cases every time; set ``FGW_FUZZ_SEED`` to explore others,
``FGW_FUZZ_SECONDS`` for a longer run) and a time budget. Strings are generated in ASCII: JSON Schema's lengths
count characters where the gateway's limits count UTF-8 bytes, as DynamoDB's do, and the two agree on ASCII
(non-ASCII values are the hypothesis round-trip tests' part: tests/unit/features, tests/integration/test_api.py).
The settings that differ from schemathesis' defaults, and why, are in tests/integration/schemathesis.toml.
"""

from __future__ import annotations

import os
import re
import subprocess
import sys
import urllib.request
from pathlib import Path

import orjson
import pytest

from gateway.local.gateway_process import GatewayProcess

SEED = os.environ.get("FGW_FUZZ_SEED", "20261201")
SECONDS = int(os.environ.get("FGW_FUZZ_SECONDS", "60"))
SETTINGS = Path(__file__).with_name("schemathesis.toml")


def schemathesis(gateway: GatewayProcess, cwd: Path) -> subprocess.CompletedProcess[str]:
    command = [
        str(Path(sys.executable).with_name("schemathesis")), "--config-file", str(SETTINGS),
        "run", f"{gateway.url}/openapi.json", "--checks", "all", "--max-examples", "20", "--seed", SEED,
        "--generation-codec", "ascii", "--workers", "1", "--request-timeout", "10", "--max-time", str(SECONDS),
        "--no-color", "--output-truncate", "true",
    ]
    return subprocess.run(command, capture_output=True, text=True, timeout=SECONDS + 60, cwd=cwd)


@pytest.mark.timeout(SECONDS + 90)
def test_schemathesis_finds_no_failure_in_any_operation_with_every_check(gateway, tmp_path):
    with urllib.request.urlopen(f"{gateway.url}/openapi.json", timeout=10) as answer:
        document = orjson.loads(answer.read())
    # Every operation but the document's own, which schemathesis leaves out of what it tests.
    operations = sum(
        1 for path, item in document["paths"].items() if path != "/openapi.json"
        for method in item if method in ("get", "put", "post", "delete")
    )
    run = schemathesis(gateway, tmp_path)
    summary = run.stdout[run.stdout.rfind("SUMMARY"):]
    print(summary)
    assert run.returncode == 0, run.stdout[-20000:] + run.stderr[-4000:]
    assert f"Selected: {operations}/{operations}" in summary and f"Tested: {operations}" in summary, summary
    generated = re.search(r"(\d+) generated, (\d+) passed", summary)
    assert generated is not None and int(generated[1]) == int(generated[2]) >= 20 * operations, summary
