"""The signatures' SHA-256 and HMAC-SHA256 (gateway/digests.py) are the standard ones."""

from __future__ import annotations

import hashlib
import hmac

import pytest

from gateway.digests import Hmac, sha256_hex

MESSAGES = [b"", b"a", b"x" * 55, b"x" * 56, b"x" * 64, b"POST\n/internal/v1/write\n" * 40]


@pytest.mark.parametrize("message", MESSAGES)
def test_sha256_is_hashlibs(message):
    assert sha256_hex(message) == hashlib.sha256(message).hexdigest()


@pytest.mark.parametrize("key", [b"", b"k", b"k" * 32, b"k" * 64, b"k" * 65, b"long-secret-" * 20])
@pytest.mark.parametrize("message", MESSAGES)
def test_hmac_is_the_standard_librarys(key, message):
    mac = Hmac(key)
    assert mac.digest(message) == hmac.digest(key, message, "sha256")
    assert mac.hexdigest(message) == hmac.new(key, message, hashlib.sha256).hexdigest()


def test_one_key_signs_many_messages_independently():
    mac = Hmac(b"secret-of-sixteen")
    first = mac.hexdigest(b"one")
    mac.hexdigest(b"two")
    assert mac.hexdigest(b"one") == first  # the precomputed states are copied, never consumed
