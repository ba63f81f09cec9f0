"""config/local.toml for tests: the same cluster on free ports, so tests never collide with `make run`."""

from __future__ import annotations

from pathlib import Path

from gateway.local.cluster import relocated_config

REPO = Path(__file__).resolve().parents[2]


def local_config(tmp: Path) -> Path:
    """A copy of config/local.toml with every fixed port (DynamoDB Locals, gateways, peers) replaced by a free one."""
    return relocated_config(REPO / "config/local.toml", tmp / "local.toml")
