"""Integration fixtures: real gateway processes over real sockets against the session's DynamoDB Local."""

from __future__ import annotations

import uuid
from collections.abc import AsyncIterator, Iterator
from pathlib import Path

import aiohttp
import pytest

from gateway.local.dynamodb_local import DynamoDBLocal, free_port
from gateway.local.gateway_process import GatewayProcess
from gateway.routing.rules import DEFAULT_SCOPE, SINGLE_PRIMARY, Rule
from gateway.store.botocore import BotocoreStore

#: Small enough that the body-size tests stay fast, large enough for a 400 KB item.
MAX_BODY_BYTES = 600_000


def gateway_toml(endpoint: str, port: int, suffix: str, **gateway: object) -> str:
    settings = {
        "region": "us-east-1",
        "listen": f"127.0.0.1:{port}",
        "peer_listen": f"127.0.0.1:{free_port()}",
        "max_body_bytes": MAX_BODY_BYTES,
        **gateway,
    }
    lines = ["[gateway]"] + [f"{k} = {v!r}".replace("'", '"') for k, v in settings.items()]
    return "\n".join(
        lines
        + [
            "[dynamodb]",
            f'endpoint_url = "{endpoint}"',
            "[members]",
            f'table = "members_{suffix}"',
            "[routing]",
            f'table = "routing_{suffix}"',
            "poll_interval = 0.2",
            "[views.users]",
            f'table = "features_users_{suffix}"',
            'features = { age = "int", country = "string", score = "float", segments = "list", active = "bool", profile = "map" }',
            "[views.items]",
            f'table = "features_items_{suffix}"',
            "",
        ]
    )


@pytest.fixture(scope="session")
def table_suffix() -> str:
    return uuid.uuid4().hex[:8]


@pytest.fixture(scope="session")
async def feature_tables(dynamodb_local: DynamoDBLocal, table_suffix: str) -> AsyncIterator[dict[str, str]]:
    store = await BotocoreStore.open("us-east-1", dynamodb_local.endpoint)
    tables = {
        "users": f"features_users_{table_suffix}",
        "items": f"features_items_{table_suffix}",
        "members": f"members_{table_suffix}",
        "routing": f"routing_{table_suffix}",
    }
    try:
        for table in tables.values():
            await store.create_table(table)
        # The single-region gateway of these tests is the primary of everything.
        rule = Rule(DEFAULT_SCOPE, SINGLE_PRIMARY, "us-east-1", epoch=0, version=1, updated_by="tests")
        await store.put_item(tables["routing"], rule.to_item(ts_us=1, region="us-east-1"))
        yield tables
    finally:
        await store.close()


@pytest.fixture(scope="session")
def gateway(
    dynamodb_local: DynamoDBLocal, feature_tables: dict[str, str], table_suffix: str, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[GatewayProcess]:
    """One real gateway process for the session."""
    tmp = tmp_path_factory.mktemp("gateway")
    config = tmp / "gateway.toml"
    config.write_text(gateway_toml(dynamodb_local.endpoint, free_port(), table_suffix))
    proc = GatewayProcess(config, log_path=tmp / "gateway.log").start()
    try:
        yield proc
    finally:
        proc.stop()


@pytest.fixture
async def http() -> AsyncIterator[aiohttp.ClientSession]:
    async with aiohttp.ClientSession() as session:
        yield session


def unique(prefix: str = "k") -> str:
    return f"{prefix}-{uuid.uuid4().hex[:12]}"


def write_config(tmp: Path, text: str) -> Path:
    path = tmp / "gateway.toml"
    path.write_text(text)
    return path
