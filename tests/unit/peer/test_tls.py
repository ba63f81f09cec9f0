"""mTLS between peers (``peer.tls_*``): both sides present a certificate of the private CA (gateway/peer/client.py)."""

from __future__ import annotations

import ssl
import subprocess
from collections.abc import AsyncIterator
from pathlib import Path

import aiohttp
import pytest
from aiohttp import web

from gateway.config import from_dict
from gateway.errors import PrimaryUnreachable
from gateway.obs.metrics import Metrics
from gateway.peer.auth import PeerSigner
from gateway.peer.client import PeerClient
from gateway.peer.tls import tls_context
from tests.fakes import FakeClock

SECRET = b"peer-secret-for-unit-tests-0123"


def openssl(*args: str, cwd: Path) -> None:
    subprocess.run(["openssl", *args], cwd=cwd, check=True, capture_output=True, timeout=60)


@pytest.fixture(scope="module")
def pki(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A throwaway CA and one peer certificate it signed (the same for both sides, as in a pod's mounted Secret)."""
    d = tmp_path_factory.mktemp("pki")
    openssl("req", "-x509", "-newkey", "rsa:2048", "-nodes", "-keyout", "ca.key", "-out", "ca.crt",
            "-subj", "/CN=feature-gateway test CA", "-days", "1", cwd=d)
    openssl("req", "-newkey", "rsa:2048", "-nodes", "-keyout", "peer.key", "-out", "peer.csr", "-subj", "/CN=peer", cwd=d)
    openssl("x509", "-req", "-in", "peer.csr", "-CA", "ca.crt", "-CAkey", "ca.key", "-CAcreateserial",
            "-out", "peer.crt", "-days", "1", cwd=d)
    return d


def config(pki: Path, peer_port: int):
    return from_dict(
        {
            "gateway": {"region": "eu-west-1"},
            "peer": {"timeout": 2.0, "tls_cert": str(pki / "peer.crt"), "tls_key": str(pki / "peer.key"),
                     "tls_ca": str(pki / "ca.crt")},
            "regions": {
                "eu-west-1": {"downstream": "127.0.0.1:1", "peer": "127.0.0.1:2"},
                "us-east-1": {"downstream": "127.0.0.1:3", "peer": f"127.0.0.1:{peer_port}"},
            },
            "views": {"items": {"table": "features_items"}},
        }
    )


@pytest.fixture
async def tls_peer(pki: Path) -> AsyncIterator[int]:
    """A loopback peer listener with the server side of the gateway's mTLS context."""

    async def handle(request: web.BaseRequest) -> web.Response:
        return web.json_response({"results": [], "client": request.transport.get_extra_info("peercert")["subject"]})

    runner = web.ServerRunner(web.Server(handle))
    await runner.setup()
    site = web.TCPSite(runner, "127.0.0.1", 0, ssl_context=tls_context(config(pki, 1), server=True))
    await site.start()
    yield runner.addresses[0][1]
    await runner.cleanup()


async def test_a_peer_with_a_certificate_of_the_ca_is_served(pki, tls_peer):
    cfg = config(pki, tls_peer)
    clock = FakeClock()
    client = PeerClient(cfg, PeerSigner(SECRET, clock), clock, Metrics())
    try:
        answer = await client.write("us-east-1", {})
    finally:
        await client.close()
    assert answer["results"] == [] and ["commonName", "peer"] in [list(x) for rdn in answer["client"] for x in rdn]


async def test_a_caller_without_a_client_certificate_is_refused(pki, tls_peer):
    trusting_only = ssl.create_default_context(cafile=str(pki / "ca.crt"))
    trusting_only.check_hostname = False
    async with aiohttp.ClientSession() as session:
        with pytest.raises(aiohttp.ClientError):
            async with session.post(f"https://127.0.0.1:{tls_peer}/internal/v1/write", ssl=trusting_only) as resp:
                await resp.read()


async def test_a_plain_http_client_cannot_talk_to_an_mtls_peer(pki, tls_peer):
    plain = from_dict(_plain(pki, tls_peer))
    clock = FakeClock()
    client = PeerClient(plain, PeerSigner(SECRET, clock), clock, Metrics())
    try:
        with pytest.raises(PrimaryUnreachable):
            await client.write("us-east-1", {})
    finally:
        await client.close()


def _plain(pki: Path, port: int) -> dict:
    return {
        "gateway": {"region": "eu-west-1"},
        "peer": {"timeout": 1.0},
        "regions": {
            "eu-west-1": {"downstream": "127.0.0.1:1", "peer": "127.0.0.1:2"},
            "us-east-1": {"downstream": "127.0.0.1:3", "peer": f"127.0.0.1:{port}"},
        },
        "views": {"items": {"table": "features_items"}},
    }


def test_tls_settings_come_all_together_or_not_at_all(pki):
    from gateway.config import ConfigError

    with pytest.raises(ConfigError, match="mTLS needs tls_cert, tls_key and tls_ca together"):
        from_dict({**_plain(pki, 1), "peer": {"tls_cert": str(pki / "peer.crt")}})
