"""Unit tests run the gateway's code in this process's event loop: fail any test in which it blocks that loop."""

from collections.abc import Iterator

import pytest
from blockbuster import BlockBuster, blockbuster_ctx


@pytest.fixture(autouse=True)
def blockbuster() -> Iterator[BlockBuster]:
    # Only calls made from the gateway's own modules count; pytest and aiohttp's test
    # utilities may block as they please.
    with blockbuster_ctx(["gateway"]) as bb:
        yield bb
