"""Fixtures of the gatewayctl unit tests."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

from gateway.local.cluster import LOCAL_CREDENTIALS
from tests.fakes import FakeClock, FakeTables
from tests.unit.ctl.harness import CONFIG, MEMBERS, NOW, RULES, Ctl


@pytest.fixture
def ctl(tmp_path: Path) -> Ctl:
    path = tmp_path / "gateway.toml"
    path.write_text(CONFIG)
    return Ctl(FakeTables(RULES, MEMBERS), path, FakeClock(NOW))


@pytest.fixture
def local_env(monkeypatch: pytest.MonkeyPatch) -> None:
    """``--local`` switches this process to the local credentials; put the test session's back afterwards."""
    for name in LOCAL_CREDENTIALS:
        if name in os.environ:
            monkeypatch.setenv(name, os.environ[name])
        else:
            monkeypatch.delenv(name, raising=False)
