"""The three-region cluster of config/local.toml on free ports, started once for the modules of this folder.

A cluster costs some 20 s of this machine's two cores to start and warm (three DynamoDB Locals, three gateways,
the emulator), and idle it still takes most of a core (heartbeats ten times a second, streams polled), so:
one for this package, started by its first test and stopped after its last, before the other integration
modules run. What lets the modules share it:

- each writes under keys and scopes of its own (a key prefix, a ``view#items#prefix#...`` rule);
- none changes the default rules (``view#users``, ``view#items``, ``default``: us-east-1 primary at epoch 0);
- each leaves no fault behind: ``cluster`` clears them after every module, ``http`` after every test (a failed
  test leaves some).

The partition tests (tests/integration/test_partitions.py) keep a cluster of their own: their cuts and kills leave
peer addresses ejected for tens of seconds, and the next module's first forwards would be refused.
"""

from __future__ import annotations

import os
import subprocess
from collections.abc import AsyncIterator

import aiohttp
import pytest

from gateway.local.cluster import LocalCluster
from gateway.local.partitions import find_nft
from tests.support.cluster_http import clear_faults, running_cluster


@pytest.fixture(scope="package")
async def three_regions(tmp_path_factory: pytest.TempPathFactory) -> AsyncIterator[LocalCluster]:
    async with running_cluster(tmp_path_factory.mktemp("cluster")) as cluster:
        yield cluster
    # down() removed the cluster's nftables table, partitions and all.
    listed = subprocess.run([find_nft(), "list", "tables"], capture_output=True, text=True, check=True).stdout
    assert f"fgw_local_{os.getpid()}" not in listed, listed


@pytest.fixture(scope="module")
async def cluster(three_regions: LocalCluster) -> AsyncIterator[LocalCluster]:
    """The package's cluster for one module, every fault the module left cleared afterwards."""
    yield three_regions
    await clear_faults(three_regions)


@pytest.fixture
async def http(cluster: LocalCluster) -> AsyncIterator[aiohttp.ClientSession]:
    """A client session for one test, every fault the test left cleared afterwards."""
    async with aiohttp.ClientSession() as session:
        yield session
    await clear_faults(cluster)
