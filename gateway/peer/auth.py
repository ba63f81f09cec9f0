"""Authentication of the peer API: HMAC-SHA256 signatures bound to their receiver, checked before the body is read.

A signed request carries four headers::

    X-Fgw-Timestamp:      <milliseconds since the epoch>
    X-Fgw-Nonce:          <16 random hex digits per signer, then a counter in hex>
    X-Fgw-Content-Sha256: hex(SHA256(body))
    X-Fgw-Signature:      hex(HMAC-SHA256(secret, METHOD \n PATH \n TIMESTAMP \n NONCE \n REGION \n CONTENT-SHA256))

``REGION`` is the receiver's region: a request signed for one region is
refused by every other (a replay to another region's gateway is not a
request to it). The body's digest travels as a header and is covered by the
signature, as SigV4's ``x-amz-content-sha256``, so the receiver checks the
head first (``verify_head``) and reads the body only for a signed sender;
the body must then hash to that digest (``verify_body``).

The receiver refuses (401) a request whose headers are missing, whose
timestamp is more than ``max_skew`` seconds from its own clock (expired, or
from the future), whose signature does not match (forged, signed for another
region, or any of method, path, timestamp, nonce and digest tampered with),
whose body does not hash to its digest, or whose nonce it has accepted before
within the window (replayed).

Invariants:
- The signature is checked before the nonce is remembered, so unsigned junk
  cannot fill the cache or burn a legitimate sender's nonce; and before the
  body is read, so a stranger holds no memory for a body nor a request slot.
- A nonce is remembered until its timestamp leaves the window; after that the
  timestamp check alone refuses it. The memory of nonces (``NonceTable``,
  gateway/peer/nonces.py) is shared by every worker process of the gateway:
  a replay on a fresh connection, which the kernel may hand to any worker,
  is refused as surely as one on the same connection.
- Comparisons of signatures and digests take constant time (``hmac.compare_digest``).
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
from collections.abc import Mapping

from gateway.clock import Clock
from gateway.errors import Unauthorized
from gateway.peer.nonces import NonceTable, NoRoom

TIMESTAMP = "X-Fgw-Timestamp"
NONCE = "X-Fgw-Nonce"
DIGEST = "X-Fgw-Content-Sha256"
SIGNATURE = "X-Fgw-Signature"



def _canonical(method: str, path: str, timestamp: str, nonce: str, region: str, digest: str) -> bytes:
    return f"{method}\n{path}\n{timestamp}\n{nonce}\n{region}\n{digest}".encode()


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

    def headers(self, method: str, path: str, body: bytes, *, to: str) -> dict[str, str]:
        """The signature headers of a request to a gateway of region ``to``."""
        timestamp, nonce, digest, signature = self._sign(method, path, body, to)
        return {TIMESTAMP: timestamp, NONCE: nonce, DIGEST: digest, SIGNATURE: signature}

    def header_lines(self, method: str, path: str, body: bytes, *, to: str) -> str:
        """The four headers as HTTP/1.1 header lines (what ``PeerClient`` writes on the wire)."""
        timestamp, nonce, digest, signature = self._sign(method, path, body, to)
        return f"{TIMESTAMP}: {timestamp}\r\n{NONCE}: {nonce}\r\n{DIGEST}: {digest}\r\n{SIGNATURE}: {signature}\r\n"

    def _sign(self, method: str, path: str, body: bytes, to: str) -> tuple[str, str, str, str]:
        timestamp = str(self._clock.wall_ms())
        nonce = f"{self._prefix}{next(self._count):x}"
        digest = hashlib.sha256(body).hexdigest()
        return timestamp, nonce, digest, _signature(self._mac, _canonical(method, path, timestamp, nonce, to, digest))


class PeerVerifier:
    """Checks incoming peer requests to a gateway of ``region``; raises ``Unauthorized`` with the reason."""

    __slots__ = ("_mac", "_clock", "_skew_ms", "_region", "nonces")

    def __init__(
        self,
        secret: bytes,
        clock: Clock,
        max_skew: float,
        *,
        region: str,
        nonces: NonceTable | None = None,
        max_nonces: int = 1 << 16,
    ) -> None:
        """``nonces``: the table shared by this gateway's workers (default: one of ``max_nonces`` of its own)."""
        assert secret, "a peer verifier needs a secret"
        self._mac = hmac.new(secret, digestmod=hashlib.sha256)
        self._clock = clock
        self._skew_ms = int(max_skew * 1000)
        self._region = region
        self.nonces = nonces if nonces is not None else NonceTable(max_nonces)

    def verify(self, method: str, path: str, headers: Mapping[str, str], body: bytes) -> None:
        """The whole check, for a request whose body is at hand."""
        self.verify_head(method, path, headers)
        self.verify_body(headers, body)

    def verify_head(self, method: str, path: str, headers: Mapping[str, str]) -> None:
        """Everything but the body: a request that passes was signed by a holder of the secret, for this region."""
        timestamp = headers.get(TIMESTAMP)
        nonce = headers.get(NONCE)
        digest = headers.get(DIGEST)
        signature = headers.get(SIGNATURE)
        if not (timestamp and nonce and digest and signature):
            raise Unauthorized(f"Peer requests must be signed ({TIMESTAMP}, {NONCE}, {DIGEST}, {SIGNATURE}).")
        # ASCII digits only ("²" and full-width digits are digits to str.isdigit), and at most 15 of them:
        # milliseconds until the year 33658, and far from what int() or float() cannot take. The rest ASCII
        # too: hmac.compare_digest raises on a str that is not.
        if (
            not (timestamp.isascii() and timestamp.isdigit()) or len(timestamp) > 15
            or not (nonce.isascii() and digest.isascii() and signature.isascii())
            or len(nonce) > 64 or len(digest) != 64 or len(signature) != 64
        ):
            raise Unauthorized("The peer request's signature headers are malformed.")
        now = self._clock.wall_ms()
        sent = int(timestamp)
        if abs(now - sent) > self._skew_ms:
            raise Unauthorized(
                f"The peer request was signed {(now - sent) / 1000:+.1f}s from this gateway's clock; "
                f"at most ±{self._skew_ms / 1000:g}s is accepted (expired, or the clocks differ)."
            )
        expected = _signature(self._mac, _canonical(method, path, timestamp, nonce, self._region, digest))
        if not hmac.compare_digest(expected, signature):
            raise Unauthorized(
                f"The peer request's signature does not match (wrong secret, signed for a region other than "
                f"{self._region}, or the request was altered)."
            )
        try:
            # The signature stands for the request: it covers the nonce, no other request has it, and its
            # first 64 bits are as random as a hash of the nonce would be, without computing one.
            fresh = self.nonces.remember(int(signature[:16], 16) or 1, sent + self._skew_ms, now)
        except NoRoom as exc:
            raise Unauthorized(f"Too many peer requests within the signature window ({exc}); retry shortly.") from None
        if not fresh:
            raise Unauthorized("The peer request was already received once (replayed nonce).")

    def age(self, headers: Mapping[str, str]) -> float:
        """Seconds since a request that passed ``verify_head`` was signed, by this gateway's clock."""
        return (self._clock.wall_ms() - int(headers[TIMESTAMP])) / 1000

    @staticmethod
    def verify_body(headers: Mapping[str, str], body: bytes) -> None:
        """After ``verify_head``: the body is the one that was signed."""
        if not hmac.compare_digest(hashlib.sha256(body).hexdigest(), headers.get(DIGEST, "")):
            raise Unauthorized("The peer request's body is not the one that was signed (tampered with on the way).")
