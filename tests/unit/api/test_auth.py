"""Downstream callers' bearer tokens (gateway/api/auth.py): who may read and write which view, rotation, refusals."""

from __future__ import annotations

import asyncio
import hashlib
import os
from pathlib import Path

import aiohttp
import orjson
import pytest
from aiohttp import web

from gateway.api.auth import TokenAuthority, TokensFileError, parse_tokens
from gateway.api.frontend import create_server
from gateway.background import background
from gateway.errors import Forbidden, NotAuthenticated
from tests.unit.api.test_downstream import ScriptedStore, downstream_api


def digest(token: str) -> str:
    return hashlib.sha256(token.encode()).hexdigest()


TOKENS = f"""
[tokens.reader]
sha256 = "{digest("reader-token")}"
read = ["items"]

[tokens.writer]
sha256 = "{digest("writer-token")}"
read = ["*"]
write = ["items"]
"""


def rewrite(path: Path, text: str, mtime: int) -> None:
    """A new version of the file, with a modification time of its own even within the filesystem's resolution."""
    path.write_text(text)
    os.utime(path, (mtime, mtime))


@pytest.fixture
def tokens_file(tmp_path: Path) -> Path:
    path = tmp_path / "tokens.toml"
    path.write_text(TOKENS)
    return path


def test_a_known_token_is_its_caller_and_anything_else_is_refused(tokens_file):
    authority = TokenAuthority(str(tokens_file))
    reader = authority.authenticate("Bearer reader-token")
    assert reader.name == "reader" and reader.may("read", "items") and not reader.may("write", "items")
    assert authority.authenticate("bearer  writer-token ").may("write", "items")  # the scheme is case-insensitive
    for header in (None, "", "Basic cmVhZGVyLXRva2Vu", "Bearer", "Bearer unknown", "reader-token"):
        with pytest.raises(NotAuthenticated):
            authority.authenticate(header)
    with pytest.raises(Forbidden, match="'reader' may not write view 'items'"):
        authority.authorize(reader, "write", "items")


@pytest.mark.parametrize(
    "text, problem",
    [
        ("", "no \\[tokens.NAME\\] tables"),
        ("[tokens.a]\nsha256 = 'abc'\n", "tokens.a.sha256: must be the 64 hex digits"),
        (f"[tokens.a]\nsha256 = '{digest('x')}'\nread = 'items'\n", "tokens.a.read: must be a list"),
        (f"[tokens.a]\nsha256 = '{digest('x')}'\nadmin = true\n", "tokens.a.admin: is not a known setting"),
        (f"[tokens.a]\nsha256 = '{digest('x')}'\n[tokens.b]\nsha256 = '{digest('x')}'\n", "the same token as tokens.a"),
        ("[token]\n", "token: is not a known table"),
        ("[tokens\n", "not valid TOML"),
    ],
)
def test_a_malformed_tokens_file_is_refused_naming_the_entry(text, problem):
    with pytest.raises(TokensFileError, match=problem):
        parse_tokens(text, "tokens.toml")


async def test_tokens_rotate_without_a_restart_and_a_broken_file_keeps_the_tokens_in_force(tokens_file):
    authority = await asyncio.to_thread(TokenAuthority, str(tokens_file))
    assert not await authority.reload()  # unchanged: nothing read
    await asyncio.to_thread(rewrite, tokens_file, f'[tokens.next]\nsha256 = "{digest("next-token")}"\nread = ["*"]\n', 1)
    assert await authority.reload()
    assert authority.authenticate("Bearer next-token").name == "next"
    with pytest.raises(NotAuthenticated):
        authority.authenticate("Bearer reader-token")  # revoked with the old file
    await asyncio.to_thread(rewrite, tokens_file, "[tokens.next\n", 2)
    assert not await authority.reload()
    assert authority.authenticate("Bearer next-token").name == "next"


async def test_with_auth_on_every_api_call_needs_a_token_and_a_read_token_cannot_write(tokens_file):
    store = ScriptedStore()
    api, _, deadlines, _ = downstream_api(store, auth=await asyncio.to_thread(TokenAuthority, str(tokens_file)))
    runner = web.ServerRunner(create_server(api, api._config))
    await runner.setup()
    await web.TCPSite(runner, "127.0.0.1", 0).start()
    base = f"http://127.0.0.1:{runner.addresses[0][1]}"
    reader = {"Authorization": "Bearer reader-token"}
    put = orjson.dumps({"features": {"a": 1}})
    async with background(deadlines.run(), "deadline-sweeper"), aiohttp.ClientSession() as session:
        store.outcome = {"pk": {"S": "k"}, "a": {"N": "1"}}
        async with session.get(base + "/v1/features/items/k", headers=reader) as resp:
            assert resp.status == 200
        calls = store.calls
        for method, path, body in (("PUT", "/v1/features/items/k", put), ("DELETE", "/v1/features/items/k", None),
                                   ("POST", "/v1/write", orjson.dumps({"view": "items", "records": [{"key": "k", "features": {}}]}))):
            async with session.request(method, base + path, data=body, headers=reader) as resp:
                answer = await resp.json()
                assert resp.status == 403 and answer["error"]["code"] == "forbidden", (method, path, answer)
        assert store.calls == calls  # nothing was written, nothing was even asked of DynamoDB
        for path in ("/v1/features/items/k", "/v1/routing", "/v1/members"):
            async with session.get(base + path) as resp:
                assert resp.status == 401 and resp.headers["WWW-Authenticate"].startswith("Bearer")
                assert (await resp.json())["error"]["code"] == "unauthorized"
        async with session.get(base + "/v1/routing", headers=reader) as resp:
            assert resp.status == 200
        for path in ("/healthz", "/metrics"):  # probes and scrapers carry no token
            async with session.get(base + path) as resp:
                assert resp.status == 200, path
        async with session.put(base + "/v1/features/items/k", data=put, headers={"Authorization": "Bearer writer-token"}) as resp:
            assert resp.status == 200
    await runner.cleanup()
