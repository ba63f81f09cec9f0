"""AWS Signature Version 4 for DynamoDB JSON POSTs, with the derived signing key cached.

botocore's ``SigV4Auth`` re-derives the signing key (four HMACs), re-parses the URL
and rebuilds every header map on every request (over ten times this signer's
cost; the README's Performance section has the figures). The derived key only
changes with the secret key and the UTC date, and everything else about a
DynamoDB data-plane request is fixed per endpoint except the body, the target
and the timestamp. So ``SigV4Signer`` precomputes the canonical-request
skeleton per endpoint, keeps the key per (secret key, date stamp, region,
service), keyed into an ``hmac.HMAC`` once, and a request costs two SHA-256
digests and one copy of that HMAC (``python -m loadtest.hotpath_bench`` and
``make bench`` measure it).

Invariant: for the same request (method POST, endpoint URL, body,
``Content-Type``, ``X-Amz-Target``, credentials and second), the
``Authorization`` header is byte-identical to the one botocore's ``SigV4Auth``
computes; tests/unit/store/test_sigv4.py proves it. botocore signs every header it
is given except a blacklist (user-agent, ...), so the signed set here is
exactly what botocore signs for a DynamoDB request: content-type, host,
x-amz-date, x-amz-security-token (only with a session token) and x-amz-target.

Spec: https://docs.aws.amazon.com/IAM/latest/UserGuide/create-signed-request.html
"""

from __future__ import annotations

import hashlib
import hmac
import time
from collections.abc import Callable
from typing import NamedTuple
from urllib.parse import quote, urlsplit

#: DynamoDB's JSON protocol (https://docs.aws.amazon.com/amazondynamodb/latest/developerguide/Programming.LowLevelAPI.html).
CONTENT_TYPE = "application/x-amz-json-1.0"
TARGET_PREFIX = "DynamoDB_20120810."

_ALGORITHM = "AWS4-HMAC-SHA256"
_SIGNED = "content-type;host;x-amz-date;x-amz-target"
# Canonical headers are sorted by name: "x-amz-security-token" < "x-amz-target".
_SIGNED_WITH_TOKEN = "content-type;host;x-amz-date;x-amz-security-token;x-amz-target"
_DEFAULT_PORTS = {"http": 80, "https": 443}
#: Derived keys kept per signer; more than a couple means keys are rotating, so old ones can go.
_KEY_CACHE_LIMIT = 8


class Credentials(NamedTuple):
    """Frozen credentials; botocore's ``ReadOnlyCredentials`` has the same first three fields and works too."""

    access_key: str
    secret_key: str
    token: str | None = None


def derive_signing_key(secret_key: str, date_stamp: str, region: str, service: str) -> bytes:
    """kSigning = HMAC(HMAC(HMAC(HMAC("AWS4" + secret, date), region), service), "aws4_request")."""
    key = hmac.digest(("AWS4" + secret_key).encode(), date_stamp.encode(), "sha256")
    key = hmac.digest(key, region.encode(), "sha256")
    key = hmac.digest(key, service.encode(), "sha256")
    return hmac.digest(key, b"aws4_request", "sha256")


def host_header(endpoint_url: str) -> str:
    """The Host value botocore signs: netloc without user info, port dropped when it is the scheme's default."""
    parts = urlsplit(endpoint_url)
    host = parts.hostname or ""
    if ":" in host:  # IPv6 literal
        host = f"[{host}]"
    if parts.port is not None and parts.port != _DEFAULT_PORTS.get(parts.scheme):
        host = f"{host}:{parts.port}"
    return host


def _canonical_path(path: str) -> str:
    # DynamoDB endpoints are "/"; a path prefix (a proxy) is signed as botocore does:
    # dot segments removed, URI-encoded except "/" and "~".
    if not path:
        return "/"
    segments: list[str] = []
    for segment in path.split("/"):
        if segment == "..":
            if segments:
                segments.pop()
        elif segment and segment != ".":
            segments.append(segment)
    normalized = "/" + "/".join(segments)
    if path.endswith("/") and normalized != "/":
        normalized += "/"
    return quote(normalized, safe="/~")


class SigV4Signer:
    """Signs DynamoDB JSON POSTs to one endpoint in one region.

    ``sign()`` returns the complete header map to send. Not thread-safe (it caches
    the current second and key without a lock); one event loop owns it.
    """

    __slots__ = (
        "region",
        "service",
        "host",
        "derivations",
        "_clock",
        "_head",
        "_scope_tail",
        "_second",
        "_amz_date",
        "_date_stamp",
        "_scope",
        "_keys",
        "_last_secret",
        "_last_date",
        "_last_key",
    )

    def __init__(
        self,
        endpoint_url: str,
        region: str,
        service: str = "dynamodb",
        *,
        clock: Callable[[], float] = time.time,
    ) -> None:
        self.region = region
        self.service = service
        self.host = host_header(endpoint_url)
        #: How many times a signing key was derived (the cache's misses).
        self.derivations = 0
        self._clock = clock
        self._head = (
            f"POST\n{_canonical_path(urlsplit(endpoint_url).path)}\n\n"
            f"content-type:{CONTENT_TYPE}\nhost:{self.host}\nx-amz-date:"
        )
        self._scope_tail = f"/{region}/{service}/aws4_request"
        self._second = -1
        self._amz_date = ""
        self._date_stamp = ""
        self._scope = ""
        self._keys: dict[tuple[str, str], hmac.HMAC] = {}
        self._last_secret: str | None = None
        self._last_date = ""
        self._last_key = hmac.new(b"", digestmod=hashlib.sha256)

    def _tick(self, second: int) -> None:
        # botocore formats datetime.now(UTC) with "%Y%m%dT%H%M%SZ", i.e. it truncates to the second.
        self._second = second
        self._amz_date = time.strftime("%Y%m%dT%H%M%SZ", time.gmtime(second))
        self._date_stamp = self._amz_date[:8]
        self._scope = self._date_stamp + self._scope_tail

    def signing_key(self, secret_key: str, date_stamp: str) -> hmac.HMAC:
        """The derived key for (secret, date) in this region and service, keyed into an HMAC once (callers copy it)."""
        # Identity checks first: the common case is the same credentials object all day.
        if secret_key is self._last_secret and date_stamp == self._last_date:
            return self._last_key
        key = self._keys.get((secret_key, date_stamp))
        if key is None:
            if len(self._keys) >= _KEY_CACHE_LIMIT:
                self._keys.clear()
            key = hmac.new(derive_signing_key(secret_key, date_stamp, self.region, self.service), digestmod=hashlib.sha256)
            self._keys[(secret_key, date_stamp)] = key
            self.derivations += 1
        self._last_secret, self._last_date, self._last_key = secret_key, date_stamp, key
        return key

    def sign(self, target: str, body: bytes, credentials: Credentials) -> dict[str, str]:
        """Headers for a POST of ``body`` with ``X-Amz-Target: target`` (e.g. ``DynamoDB_20120810.GetItem``)."""
        second = int(self._clock())
        if second != self._second:
            self._tick(second)
        amz_date = self._amz_date
        token = credentials.token
        body_hash = hashlib.sha256(body).hexdigest()
        if token:
            # Session tokens are base64 (no whitespace), so SigV4's "trimall" leaves them unchanged.
            canonical = (
                f"{self._head}{amz_date}\nx-amz-security-token:{token}\nx-amz-target:{target}\n\n"
                f"{_SIGNED_WITH_TOKEN}\n{body_hash}"
            )
            signed = _SIGNED_WITH_TOKEN
        else:
            canonical = f"{self._head}{amz_date}\nx-amz-target:{target}\n\n{_SIGNED}\n{body_hash}"
            signed = _SIGNED
        string_to_sign = (
            f"{_ALGORITHM}\n{amz_date}\n{self._scope}\n{hashlib.sha256(canonical.encode()).hexdigest()}"
        )
        mac = self.signing_key(credentials.secret_key, self._date_stamp).copy()
        mac.update(string_to_sign.encode())
        signature = mac.hexdigest()
        headers = {
            "Host": self.host,
            "Content-Type": CONTENT_TYPE,
            "X-Amz-Date": amz_date,
            "X-Amz-Target": target,
            "Authorization": (
                f"{_ALGORITHM} Credential={credentials.access_key}/{self._scope}, "
                f"SignedHeaders={signed}, Signature={signature}"
            ),
        }
        if token:
            headers["X-Amz-Security-Token"] = token
        return headers
