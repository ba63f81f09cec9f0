"""Authentication of the peer API: HMAC-SHA256 signatures with a timestamp window and a nonce cache.

A signed request carries three headers::

    X-Fgw-Timestamp: <milliseconds since the epoch>
    X-Fgw-Nonce:     <16 random hex digits per signer, then a counter in hex>
    X-Fgw-Signature: hex(HMAC-SHA256(secret, METHOD \\n PATH \\n TIMESTAMP \\n NONCE \\n hex(SHA256(body))))

The receiver refuses (401) a request whose headers are missing, whose
timestamp is more than ``max_skew`` seconds from its own clock (expired, or
from the future), whose signature does not match (forged, or any of method,
path, body, timestamp, nonce tampered with), or whose nonce it has accepted
before within the window (replayed).

Invariants:
- The signature is checked before the nonce is remembered, so unsigned junk
  cannot fill the cache or burn a legitimate sender's nonce.
- A nonce is remembered until its timestamp leaves the window; after that the
  timestamp check alone refuses it. The cache is per worker process: a replay
  that lands on another worker of the same pod within the window is caught
  only by the write's idempotency key (it is a duplicate, applied once).
- Comparisons of signatures take constant time (``hmac.compare_digest``).
- The secret is keyed into one ``hmac.HMAC`` per signer and verifier, once;
  each signature works on a ``copy()`` of it, so the key is never processed
  again per request and one message's state never leaks into the next.
  ``python -m loadtest.hotpath_bench`` measures a signature and a check.
"""

from __future__ import annotations

import hashlib
import hmac
import itertools
import os
from collections import deque
from collections.abc import Mapping

from gateway.clock import Clock
from gateway.errors import Unauthorized

TIMESTAMP = "X-Fgw-Timestamp"
NONCE = "X-Fgw-Nonce"
SIGNATURE = "X-Fgw-Signature"


def _canonical(method: str, path: str, timestamp: str, nonce: str, body: bytes) -> bytes:
    return f"{method}\n{path}\n{timestamp}\n{nonce}\n{hashlib.sha256(body).hexdigest()}".encode()


def _signature(keyed: hmac.HMAC, canonical: bytes) -> str:
    mac = keyed.copy()
    mac.update(canonical)
    return mac.hexdigest()


class PeerSigner:
    """Signs outgoing peer requests."""

    __slots__ = ("_mac", "_clock", "_prefix", "_count")

    def __init__(self, secret: bytes, clock: Clock) -> None:
        assert secret, "a peer signer needs a secret"
        self._mac = hmac.new(secret, digestmod=hashlib.sha256)
        self._clock = clock
        # A nonce need only never repeat: 16 random hex digits per signer (process) and a counter.
        # That spares a getrandom() system call per forwarded request.
        self._prefix = os.urandom(8).hex()
        self._count = itertools.count()

    def headers(self, method: str, path: str, body: bytes) -> dict[str, str]:
        timestamp, nonce, signature = self._sign(method, path, body)
        return {TIMESTAMP: timestamp, NONCE: nonce, SIGNATURE: signature}

    def header_lines(self, method: str, path: str, body: bytes) -> str:
        """The three headers as HTTP/1.1 header lines (what ``PeerClient`` writes on the wire)."""
        timestamp, nonce, signature = self._sign(method, path, body)
        return f"{TIMESTAMP}: {timestamp}\r\n{NONCE}: {nonce}\r\n{SIGNATURE}: {signature}\r\n"

    def _sign(self, method: str, path: str, body: bytes) -> tuple[str, str, str]:
        timestamp = str(self._clock.wall_ms())
        nonce = f"{self._prefix}{next(self._count):x}"
        return timestamp, nonce, _signature(self._mac, _canonical(method, path, timestamp, nonce, body))


class PeerVerifier:
    """Checks incoming peer requests; raises ``Unauthorized`` with the reason."""

    __slots__ = ("_mac", "_clock", "_skew_ms", "_seen", "_expiry", "max_nonces")

    def __init__(self, secret: bytes, clock: Clock, max_skew: float, max_nonces: int = 1_000_000) -> None:
        assert secret, "a peer verifier needs a secret"
        self._mac = hmac.new(secret, digestmod=hashlib.sha256)
        self._clock = clock
        self._skew_ms = int(max_skew * 1000)
        # Touched only from the event loop, never across an await.
        self._seen: set[str] = set()
        self._expiry: deque[tuple[int, str]] = deque()  # (forget after, nonce), in arrival order
        self.max_nonces = max_nonces

    def verify(self, method: str, path: str, headers: Mapping[str, str], body: bytes) -> None:
        timestamp = headers.get(TIMESTAMP)
        nonce = headers.get(NONCE)
        signature = headers.get(SIGNATURE)
        if not (timestamp and nonce and signature):
            raise Unauthorized(f"Peer requests must be signed ({TIMESTAMP}, {NONCE}, {SIGNATURE}).")
        # ASCII digits only ("²" and full-width digits are digits to str.isdigit), and at most 15 of them:
        # milliseconds until the year 33658, and far from what int() or float() cannot take.
        if not (timestamp.isascii() and timestamp.isdigit()) or len(timestamp) > 15 or len(nonce) > 64:
            raise Unauthorized("The peer request's signature headers are malformed.")
        now = self._clock.wall_ms()
        sent = int(timestamp)
        if abs(now - sent) > self._skew_ms:
            raise Unauthorized(
                f"The peer request was signed {(now - sent) / 1000:+.1f}s from this gateway's clock; "
                f"at most ±{self._skew_ms / 1000:g}s is accepted (expired, or the clocks differ)."
            )
        expected = _signature(self._mac, _canonical(method, path, timestamp, nonce, body))
        if not hmac.compare_digest(expected, signature):
            raise Unauthorized("The peer request's signature does not match (wrong secret, or the request was altered).")
        self._forget(now)
        if nonce in self._seen:
            raise Unauthorized("The peer request was already received once (replayed nonce).")
        if len(self._seen) >= self.max_nonces:
            raise Unauthorized("Too many peer requests within the signature window; retry shortly.")
        self._seen.add(nonce)
        self._expiry.append((sent + self._skew_ms, nonce))

    def _forget(self, now: int) -> None:
        # Arrival order is close to timestamp order (both within the window), so the head expires first;
        # an entry stuck behind a later one is forgotten a little late, never early.
        expiry = self._expiry
        while expiry and expiry[0][0] < now:
            self._seen.discard(expiry.popleft()[1])
