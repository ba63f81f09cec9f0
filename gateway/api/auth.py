"""Who a downstream caller is, and what it may do: bearer tokens mapped to views it may read and write.

With ``auth.mode = "tokens"``, every ``/v1/`` request must carry
``Authorization: Bearer <token>``. The tokens file (``auth.tokens_file``, e.g.
a Kubernetes Secret mounted as a file) names each caller and what it may do,
and holds only the SHA-256 of each token, so the file is not itself a secret
worth stealing::

    # printf %s "$TOKEN" | sha256sum
    [tokens.ranker]
    sha256 = "9f86d081884c7d659a2feaa0c55ad015a3bf4f1b2b0b822cd15d6c15b0f00a08"
    read = ["users", "items"]   # views it may read; "*" is every view
    write = ["items"]           # views it may write (PUT, DELETE, POST /v1/write)

Answers: no token, or one the file does not hold, is 401 ``unauthorized``
with ``WWW-Authenticate: Bearer``; a known token on a view it may not read or
write is 403 ``forbidden``, before anything is read or written.
``/v1/routing`` and ``/v1/members`` need a known token; ``/healthz``,
``/readyz`` and ``/metrics`` need none (probes and scrapers carry no token).

Rotation without restart: an owned task looks at the file's modification
time every second and re-reads it when it changed; a file that does not parse
keeps the tokens in force and logs why (at start, it stops the gateway with
one line instead). Tokens are compared by their digest, through a dict, so a
check costs one SHA-256 of the token and a lookup (``python -m
loadtest.hotpath_bench`` measures it).

Invariant: a request the authority admits carries a ``Principal`` the file
named at some moment since the last reload; nothing else is ever let through
when auth is on.
"""

from __future__ import annotations

import asyncio
import hashlib
import logging
import os
import tomllib
from collections.abc import Awaitable, Callable, Mapping
from dataclasses import dataclass
from typing import Any

from gateway.errors import Forbidden, NotAuthenticated

log = logging.getLogger(__name__)

#: Seconds between looks at the tokens file's modification time.
RELOAD_INTERVAL = 1.0
ANY_VIEW = "*"
_BEARER = "bearer "


class TokensFileError(ValueError):
    """The tokens file cannot be read or is malformed; the message names the file and the entry."""


@dataclass(frozen=True, slots=True)
class Principal:
    """A caller the tokens file names, and the views it may read and write."""

    name: str
    read: frozenset[str]
    write: frozenset[str]

    def may(self, action: str, view: str) -> bool:
        allowed = self.read if action == "read" else self.write
        return view in allowed or ANY_VIEW in allowed


def parse_tokens(text: str, source: str) -> dict[str, Principal]:
    """The tokens file as {sha256 hex: Principal}; raises ``TokensFileError`` naming what is wrong."""
    try:
        raw = tomllib.loads(text)
    except tomllib.TOMLDecodeError as exc:
        raise TokensFileError(f"{source}: not valid TOML: {exc}") from None
    tokens = raw.get("tokens")
    unknown = sorted(set(raw) - {"tokens"})
    if unknown:
        raise TokensFileError(f"{source}: {unknown[0]}: is not a known table (the file holds [tokens.NAME] tables)")
    if not isinstance(tokens, dict) or not tokens:
        raise TokensFileError(f"{source}: no [tokens.NAME] tables: with auth on, no caller could be admitted")
    by_digest: dict[str, Principal] = {}
    for name, entry in tokens.items():
        where = f"{source}: tokens.{name}"
        if not isinstance(entry, dict):
            raise TokensFileError(f"{where}: must be a table")
        extra = sorted(set(entry) - {"sha256", "read", "write"})
        if extra:
            raise TokensFileError(f"{where}.{extra[0]}: is not a known setting (sha256, read, write)")
        digest = entry.get("sha256")
        if not isinstance(digest, str) or len(digest) != 64 or not all(c in "0123456789abcdef" for c in digest.lower()):
            raise TokensFileError(f"{where}.sha256: must be the 64 hex digits of the token's SHA-256")
        views = {action: _views(entry.get(action, []), f"{where}.{action}") for action in ("read", "write")}
        if digest.lower() in by_digest:
            raise TokensFileError(f"{where}.sha256: the same token as tokens.{by_digest[digest.lower()].name}")
        by_digest[digest.lower()] = Principal(name, views["read"], views["write"])
    return by_digest


def _views(value: Any, where: str) -> frozenset[str]:
    if not isinstance(value, list) or not all(isinstance(v, str) and v for v in value):
        raise TokensFileError(f"{where}: must be a list of view names (\"*\" for every view)")
    return frozenset(value)


class TokenAuthority:
    """The tokens in force, from ``path``; ``authenticate`` on the hot path, ``run`` keeps them current."""

    __slots__ = ("_path", "_tokens", "_stamp")

    def __init__(self, path: str) -> None:
        """Reads the file now (blocking: call at start); raises ``TokensFileError``."""
        self._path = path
        self._stamp = self._stat()
        self._tokens = self._read()

    def _stat(self) -> tuple[float, int] | None:
        try:
            info = os.stat(self._path)
        except OSError:
            return None
        return info.st_mtime, info.st_size

    def _read(self) -> Mapping[str, Principal]:
        try:
            with open(self._path, encoding="utf-8") as file:
                text = file.read()
        except (OSError, UnicodeDecodeError) as exc:
            raise TokensFileError(f"{self._path}: cannot read the tokens file: {exc}") from None
        return parse_tokens(text, self._path)

    def authenticate(self, authorization: str | None) -> Principal:
        """The caller of a request with this ``Authorization`` header; ``NotAuthenticated`` if none is known."""
        if authorization is None or not authorization[:7].lower() == _BEARER:
            raise NotAuthenticated("This gateway authenticates its callers: send Authorization: Bearer <token>.")
        principal = self._tokens.get(hashlib.sha256(authorization[7:].strip().encode()).hexdigest())
        if principal is None:
            raise NotAuthenticated("The bearer token is not one this gateway knows (revoked, or mistyped).")
        return principal

    @staticmethod
    def authorize(principal: Principal, action: str, view: str) -> None:
        if not principal.may(action, view):
            raise Forbidden(f"The caller {principal.name!r} may not {action} view {view!r}.")

    async def reload(self) -> bool:
        """Re-read the file if it changed since the last read; True if new tokens are in force."""
        stamp = await asyncio.to_thread(self._stat)
        if stamp is None or stamp == self._stamp:
            return False
        self._stamp = stamp
        try:
            tokens = await asyncio.to_thread(self._read)
        except TokensFileError as exc:
            log.error("tokens file not reloaded, the tokens in force stay: %s", exc)
            return False
        self._tokens = tokens
        log.info("tokens reloaded", extra={"tokens": len(tokens), "file": self._path})
        return True

    async def run(self, sleep: Callable[[float], Awaitable[None]] = asyncio.sleep) -> None:
        """Until cancelled: reload the file when it changes (rotation without restart)."""
        while True:
            await sleep(RELOAD_INTERVAL)
            await self.reload()
