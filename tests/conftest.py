"""Shared fixtures: one DynamoDB Local per test session, and an environment that can never reach AWS."""

from __future__ import annotations

import os
from collections.abc import Iterator
from pathlib import Path

import pytest
from hypothesis import settings

from gateway.local.dynamodb_local import DynamoDBLocal

# Property tests run the same examples on every run (a failure reproduces; CI is never flaky), and
# HYPOTHESIS_PROFILE=thorough searches far more widely with fresh random examples, for a change to a parser.
settings.register_profile("ci", max_examples=300, derandomize=True, database=None, deadline=None)
settings.register_profile("thorough", max_examples=20_000, database=None, deadline=None)
settings.load_profile(os.environ.get("HYPOTHESIS_PROFILE", "ci"))

# Tests sign with throwaway credentials and must never find real ones (or the instance
# metadata service) through the provider chain.
os.environ.update(
    {
        "AWS_ACCESS_KEY_ID": "testing",
        "AWS_SECRET_ACCESS_KEY": "testing",
        "AWS_DEFAULT_REGION": "us-east-1",
        "AWS_EC2_METADATA_DISABLED": "true",
        "AWS_CONFIG_FILE": os.devnull,
        "AWS_SHARED_CREDENTIALS_FILE": os.devnull,
        # Gateways started by tests share this peer secret (they refuse to start without one).
        "FGW_PEER_SECRET": "test-peer-secret-not-for-production",
        # No load balancer watches test gateways: stop at once (the drain tests set their own).
        "FGW_GATEWAY__DRAIN_SECONDS": "0",
    }
)
os.environ.pop("AWS_SESSION_TOKEN", None)
os.environ.pop("AWS_PROFILE", None)


@pytest.fixture(scope="session")
def dynamodb_local(tmp_path_factory: pytest.TempPathFactory) -> Iterator[DynamoDBLocal]:
    """One DynamoDB Local for the whole session; tests isolate themselves by table name."""
    log = Path(tmp_path_factory.mktemp("dynamodb-local")) / "dynamodb-local.log"
    ddb = DynamoDBLocal(log_path=log).start()
    try:
        yield ddb
    finally:
        ddb.stop()
