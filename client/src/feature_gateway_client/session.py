"""A session's memory: the newest version it wrote or read per key, bounded, and its export as a token.

Read-your-writes anywhere (the README's ``min_version``): a session remembers,
per (view, key), the newest ``version`` any of its calls was answered with, and
its reads of that key ask the gateway for that version or newer, in whichever
region they land. A key the session deleted is read from the primary
(``consistency=strong``) until a newer version is seen, since ``min_version``
cannot say "gone since".

Limits, by design: per key, not across keys (a session that wrote ``a`` then
``b`` may read the new ``b`` and an old ``a`` written elsewhere by others; only
its own writes of a key are guaranteed); at most ``max_keys`` keys, the least
recently used forgotten first (a forgotten key reads like a plain read); the
token carries them all, so ``max_keys`` also bounds the token (about 30 bytes
per key after compression; keep it under a hundred keys for a cookie).

Versions order by (epoch, write time), as the gateway's ``EPOCH.MICROS.REGION``
tokens say; a token of another shape is kept as the last one seen.

Invariant: ``len(state) <= max_keys``, and the version kept for a key never
goes back to an older one.
"""

from __future__ import annotations

import base64
import json
import re
import zlib
from collections import OrderedDict
from dataclasses import dataclass

_VERSION = re.compile(r"(0|[1-9][0-9]{0,17})\.(0|[1-9][0-9]{0,17})\.([a-z0-9-]*)")
TOKEN_PREFIX = "fgs1."
DEFAULT_MAX_KEYS = 1000


class InvalidSessionToken(ValueError):
    """A session token this client did not make (or a damaged one)."""


def order(version: str | None) -> tuple[int, int] | None:
    """The sort key of a gateway version token; ``None`` for one of another shape."""
    if version is None:
        return None
    match = _VERSION.fullmatch(version)
    return (int(match[1]), int(match[2])) if match else None


def newer(candidate: str, than: str | None) -> bool:
    """Whether ``candidate`` is newer than ``than`` (a version of unknown shape counts as newer: the last one seen)."""
    if than is None:
        return True
    a, b = order(candidate), order(than)
    if a is None or b is None:
        return candidate != than
    return a > b


@dataclass(frozen=True, slots=True)
class Known:
    """What a session knows of one key: the newest version seen, and whether that was its deletion."""

    version: str | None
    deleted: bool = False


class SessionState:
    """The bounded map of (view, key) to what the session last saw of it; not thread-safe (one per caller)."""

    __slots__ = ("max_keys", "_known")

    def __init__(self, max_keys: int = DEFAULT_MAX_KEYS) -> None:
        if max_keys < 1:
            raise ValueError("max_keys must be at least 1")
        self.max_keys = max_keys
        #: Least recently used first.
        self._known: OrderedDict[tuple[str, str], Known] = OrderedDict()

    def __len__(self) -> int:
        return len(self._known)

    def get(self, view: str, key: str) -> Known | None:
        return self._known.get((view, key))

    def observe(self, view: str, key: str, version: str | None, *, deleted: bool = False) -> None:
        """The session saw ``version`` of the key (``deleted``: its deletion); kept if newer than what it knew."""
        slot = (view, key)
        known = self._known.get(slot)
        if known is None or version is None and deleted or version is not None and newer(version, known.version):
            self._known[slot] = Known(version, deleted)
        self._known.move_to_end(slot)
        while len(self._known) > self.max_keys:
            self._known.popitem(last=False)

    def wanted(self, view: str, key: str) -> tuple[str | None, bool]:
        """(min_version, strong) for a read of the key: what the gateway must answer at least."""
        known = self._known.get((view, key))
        if known is None:
            return None, False
        if known.deleted:
            return None, True
        return known.version, False

    def satisfied_by(self, view: str, key: str, version: str | None) -> bool:
        """Whether an answer holding ``version`` (``None``: not found) is at least what the session knows."""
        known = self._known.get((view, key))
        if known is None:
            return True
        if known.deleted:
            return version is None or known.version is not None and newer(version, known.version)
        return version is not None and (version == known.version or newer(version, known.version))

    # -- tokens ----------------------------------------------------------------------------------

    def token(self) -> str:
        """The state as a compact string: ``fgs1.`` and base64url of compressed JSON (views listed once)."""
        views: dict[str, int] = {}
        entries = []
        for (view, key), known in self._known.items():
            index = views.setdefault(view, len(views))
            entries.append([index, key, known.version, 1 if known.deleted else 0])
        raw = json.dumps({"v": list(views), "k": entries}, separators=(",", ":")).encode()
        return TOKEN_PREFIX + base64.urlsafe_b64encode(zlib.compress(raw, 9)).rstrip(b"=").decode()

    @classmethod
    def from_token(cls, token: str, max_keys: int = DEFAULT_MAX_KEYS) -> SessionState:
        """A state resumed from ``token()``; raises ``InvalidSessionToken`` for anything else."""
        if not isinstance(token, str) or not token.startswith(TOKEN_PREFIX):
            raise InvalidSessionToken(f"not a session token (they start with {TOKEN_PREFIX!r})")
        body = token[len(TOKEN_PREFIX):]
        try:
            compressed = base64.urlsafe_b64decode(body + "=" * (-len(body) % 4))
            # Bounded: a token is read from a cookie or a header, so from anyone.
            inflater = zlib.decompressobj()
            raw = inflater.decompress(compressed, 16 * 1024 * 1024)
            if inflater.unconsumed_tail:
                raise ValueError("token inflates past 16 MiB")
            data = json.loads(raw)
            views = data["v"]
            state = cls(max_keys)
            for index, key, version, deleted in data["k"]:
                view = views[index]
                if not (isinstance(view, str) and isinstance(key, str) and (version is None or isinstance(version, str))):
                    raise ValueError("malformed entry")
                state._known[(view, key)] = Known(version, bool(deleted))
        except (ValueError, TypeError, KeyError, IndexError, zlib.error) as exc:
            raise InvalidSessionToken(f"damaged session token: {exc}") from None
        while len(state._known) > max_keys:
            state._known.popitem(last=False)
        return state
