"""config/local.toml for tests: the same cluster on free ports, so tests never collide with `make run`."""

from __future__ import annotations

import re
from pathlib import Path

from gateway.local.dynamodb_local import free_port

REPO = Path(__file__).resolve().parents[2]


def local_config(tmp: Path) -> Path:
    """A copy of config/local.toml with every fixed port (86xx DynamoDB, 87xx gateways) replaced by a free one."""
    text = (REPO / "config/local.toml").read_text()
    text = re.sub(r"127\.0\.0\.1:(86|87)\d\d", lambda m: f"127.0.0.1:{free_port()}", text)
    path = tmp / "local.toml"
    path.write_text(text)
    return path
