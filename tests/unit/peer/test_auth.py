"""Peer request signatures: window, tampering, forgery, replay (gateway/peer/auth.py)."""

from __future__ import annotations

import hashlib
import hmac

import pytest

from gateway.errors import Unauthorized
from gateway.peer.auth import DIGEST, NONCE, SIGNATURE, TIMESTAMP, PeerSigner, PeerVerifier
from gateway.peer.nonces import WINDOW, NonceTable
from tests.fakes import FakeClock

SECRET = b"0123456789abcdef0123456789abcdef"
PATH = "/internal/v1/write"
REGION = "us-east-1"


@pytest.fixture
def clock():
    return FakeClock()


def verifier(clock, **kw):
    return PeerVerifier(SECRET, clock, max_skew=30.0, region=REGION, **kw)


def test_a_signed_request_passes_once_and_its_replay_is_refused(clock):
    headers = PeerSigner(SECRET, clock).headers("POST", PATH, b"{}", to=REGION)
    v = verifier(clock)
    v.verify("POST", PATH, headers, b"{}")
    with pytest.raises(Unauthorized) as refused:
        v.verify("POST", PATH, headers, b"{}")
    assert refused.value.message == "The peer request was already received once (replayed nonce)."


@pytest.mark.parametrize(
    "method, path, body",
    [("PUT", PATH, b"{}"), ("POST", "/internal/v1/read", b"{}"), ("POST", PATH, b'{"x":1}')],
)
def test_any_change_to_method_path_or_body_breaks_the_signature(clock, method, path, body):
    headers = PeerSigner(SECRET, clock).headers("POST", PATH, b"{}", to=REGION)
    # A changed method or path breaks the signature; a changed body, the digest it signs.
    with pytest.raises(Unauthorized, match="does not match|not the one that was signed"):
        verifier(clock).verify(method, path, headers, body)


def test_another_secret_is_refused(clock):
    headers = PeerSigner(b"x" * 32, clock).headers("POST", PATH, b"{}", to=REGION)
    with pytest.raises(Unauthorized, match="does not match"):
        verifier(clock).verify("POST", PATH, headers, b"{}")


def test_a_changed_timestamp_or_nonce_breaks_the_signature(clock):
    for name, value in ((TIMESTAMP, None), (NONCE, "f" * 32)):
        headers = PeerSigner(SECRET, clock).headers("POST", PATH, b"{}", to=REGION)
        headers[name] = value or str(int(headers[TIMESTAMP]) + 1)
        with pytest.raises(Unauthorized, match="does not match"):
            verifier(clock).verify("POST", PATH, headers, b"{}")


@pytest.mark.parametrize("offset, accepted", [(-29.9, True), (29.9, True), (-30.1, False), (30.1, False)])
def test_the_window_is_plus_minus_max_skew(clock, offset, accepted):
    sender = FakeClock(clock.now + offset)
    headers = PeerSigner(SECRET, sender).headers("POST", PATH, b"{}", to=REGION)
    if accepted:
        verifier(clock).verify("POST", PATH, headers, b"{}")
    else:
        with pytest.raises(Unauthorized, match="±30s"):
            verifier(clock).verify("POST", PATH, headers, b"{}")


@pytest.mark.parametrize("missing", [TIMESTAMP, NONCE, SIGNATURE])
def test_missing_headers_are_refused(clock, missing):
    headers = PeerSigner(SECRET, clock).headers("POST", PATH, b"{}", to=REGION)
    del headers[missing]
    with pytest.raises(Unauthorized, match="must be signed"):
        verifier(clock).verify("POST", PATH, headers, b"{}")


def test_nonces_are_forgotten_once_their_timestamp_left_the_window(clock):
    v = verifier(clock)
    for _ in range(3):
        v.verify("POST", PATH, PeerSigner(SECRET, clock).headers("POST", PATH, b"{}", to=REGION), b"{}")
    assert v.nonces.live(clock.wall_ms()) == 3
    clock.advance(31)
    v.verify("POST", PATH, PeerSigner(SECRET, clock).headers("POST", PATH, b"{}", to=REGION), b"{}")
    assert v.nonces.live(clock.wall_ms()) == 1


def test_a_replay_to_another_worker_sharing_the_table_is_refused(clock):
    """Workers of one gateway share one nonce table: the kernel may hand a replay's connection to any of them."""
    shared = NonceTable(64, shared=True)
    first, second = (verifier(clock, nonces=shared) for _ in range(2))
    headers = PeerSigner(SECRET, clock).headers("POST", PATH, b"{}", to=REGION)
    first.verify("POST", PATH, headers, b"{}")
    with pytest.raises(Unauthorized, match="replayed"):
        second.verify("POST", PATH, headers, b"{}")


def test_a_bad_signature_never_burns_a_nonce(clock):
    good = PeerSigner(SECRET, clock).headers("POST", PATH, b"{}", to=REGION)
    bad = dict(good, **{SIGNATURE: "0" * 64})
    v = verifier(clock)
    with pytest.raises(Unauthorized):
        v.verify("POST", PATH, bad, b"{}")
    v.verify("POST", PATH, good, b"{}")  # the legitimate request with that nonce still passes


def test_a_full_nonce_table_refuses_with_a_reason_and_forgets_nothing(clock):
    v = verifier(clock, max_nonces=1)
    accepted = []
    with pytest.raises(Unauthorized, match="Too many peer requests"):
        for _ in range(v.nonces.slots + WINDOW + 1):
            headers = PeerSigner(SECRET, clock).headers("POST", PATH, b"{}", to=REGION)
            v.verify("POST", PATH, headers, b"{}")
            accepted.append(headers)
    for headers in accepted:  # every request accepted is still remembered
        with pytest.raises(Unauthorized, match="replayed"):
            v.verify("POST", PATH, headers, b"{}")


@pytest.mark.parametrize("secret", [b"s" * 16, b"k" * 64, b"long-" * 40])
def test_the_signature_is_standard_hmac_sha256_of_the_documented_string(clock, secret):
    # What another implementation (or an operator with openssl) must compute to talk to a gateway.
    body = b'{"view":"items"}'
    headers = PeerSigner(secret, clock).headers("POST", PATH, body, to=REGION)
    canonical = "\n".join(["POST", PATH, headers[TIMESTAMP], headers[NONCE], REGION, hashlib.sha256(body).hexdigest()])
    assert headers[SIGNATURE] == hmac.new(secret, canonical.encode(), hashlib.sha256).hexdigest()


def test_the_wire_form_carries_the_same_four_headers(clock):
    lines = PeerSigner(SECRET, clock).header_lines("POST", PATH, b"{}", to=REGION).split("\r\n")
    assert lines[-1] == ""
    headers = dict(line.split(": ", 1) for line in lines[:-1])
    assert set(headers) == {TIMESTAMP, NONCE, DIGEST, SIGNATURE}
    verifier(clock).verify("POST", PATH, headers, b"{}")


@pytest.mark.parametrize("secret", [b"k" * 16, b"k" * 64, b"k" * 65, b"long-secret-" * 20])
def test_each_signature_is_the_standard_hmac_of_its_own_request_message_after_message(clock, secret):
    """The keyed HMAC is kept per signer and copied per message: no message's state leaks into the next."""
    signer = PeerSigner(secret, clock)
    for body in (b"", b"one", b"two" * 100, b"one"):
        headers = signer.headers("POST", PATH, body, to=REGION)
        digest = hashlib.sha256(body).hexdigest()
        canonical = f"POST\n{PATH}\n{headers[TIMESTAMP]}\n{headers[NONCE]}\n{REGION}\n{digest}".encode()
        assert headers[SIGNATURE] == hmac.new(secret, canonical, hashlib.sha256).hexdigest()
        PeerVerifier(secret, clock, max_skew=30.0, region=REGION).verify("POST", PATH, headers, body)


@pytest.mark.parametrize("timestamp", ["²", "１７００００００００００００", "9" * 400, "1e12", "-5", " 1700000000000", ""])
def test_a_malformed_timestamp_is_refused_as_unauthorized_never_a_crash(clock, timestamp):
    headers = PeerSigner(SECRET, clock).headers("POST", PATH, b"{}", to=REGION)
    headers[TIMESTAMP] = timestamp
    with pytest.raises(Unauthorized):
        verifier(clock).verify("POST", PATH, headers, b"{}")


@pytest.mark.parametrize("name", [NONCE, DIGEST, SIGNATURE])
@pytest.mark.parametrize("value", ["é" * 64, "０" * 64, "f" * 63 + "é", "f" * 65])
def test_a_non_ascii_or_misshapen_signature_header_is_refused_as_unauthorized_never_a_crash(clock, name, value):
    headers = PeerSigner(SECRET, clock).headers("POST", PATH, b"{}", to=REGION)
    headers[name] = value
    with pytest.raises(Unauthorized):
        verifier(clock).verify("POST", PATH, headers, b"{}")


def test_a_request_signed_for_another_region_is_refused_there(clock):
    """A signature names its receiver's region: replayed to another region's gateway, it is worth nothing."""
    headers = PeerSigner(SECRET, clock).headers("POST", PATH, b"{}", to="eu-west-1")
    with pytest.raises(Unauthorized, match=f"signed for a region other than {REGION}"):
        verifier(clock).verify("POST", PATH, headers, b"{}")
    PeerVerifier(SECRET, clock, max_skew=30.0, region="eu-west-1").verify("POST", PATH, headers, b"{}")


def test_the_head_is_checked_without_the_body_and_the_body_must_be_the_signed_one(clock):
    headers = PeerSigner(SECRET, clock).headers("POST", PATH, b'{"a": 1}', to=REGION)
    check = verifier(clock)
    check.verify_head("POST", PATH, headers)  # a signed sender: now, and only now, its body is read
    with pytest.raises(Unauthorized, match="not the one that was signed"):
        check.verify_body(headers, b'{"a": 2}')
    check.verify_body(headers, b'{"a": 1}')
    forged = dict(headers, **{DIGEST: hashlib.sha256(b'{"a": 2}').hexdigest()})
    with pytest.raises(Unauthorized, match="does not match"):
        verifier(clock).verify_head("POST", PATH, forged)


# -- forgeries that come close: every hex digit of the signature and of the digest counts ------------


def flip(hex_text: str, position: int) -> str:
    """``hex_text`` with the digit at ``position`` changed to another hex digit."""
    digit = hex_text[position]
    return hex_text[:position] + ("0" if digit != "0" else "1") + hex_text[position + 1:]


@pytest.mark.parametrize("position", [0, 7, 8, 31, 32, 62, 63])
def test_a_signature_off_by_one_hex_digit_anywhere_is_refused(clock, position):
    headers = PeerSigner(SECRET, clock).headers("POST", PATH, b"{}", to=REGION)
    forged = dict(headers, **{SIGNATURE: flip(headers[SIGNATURE], position)})
    with pytest.raises(Unauthorized, match="signature does not match"):
        verifier(clock).verify("POST", PATH, forged, b"{}")


@pytest.mark.parametrize("keep", [8, 16, 32, 63])
def test_a_signature_that_only_starts_like_the_right_one_is_refused(clock, keep):
    headers = PeerSigner(SECRET, clock).headers("POST", PATH, b"{}", to=REGION)
    right = headers[SIGNATURE]
    for forged in (right[:keep] + "0" * (64 - keep), right[:keep], right + "0"):
        if forged == right:
            continue
        # A forgery of the right length is compared and refused; one of another length never gets that far.
        with pytest.raises(Unauthorized, match="signature does not match" if len(forged) == 64 else "malformed"):
            verifier(clock).verify("POST", PATH, dict(headers, **{SIGNATURE: forged}), b"{}")


@pytest.mark.parametrize("position", [0, 8, 63])
def test_a_body_whose_digest_is_off_by_one_hex_digit_is_refused(clock, position):
    body = b'{"view":"items"}'
    headers = PeerSigner(SECRET, clock).headers("POST", PATH, body, to=REGION)
    near = dict(headers, **{DIGEST: flip(headers[DIGEST], position)})
    with pytest.raises(Unauthorized, match="not the one that was signed"):
        PeerVerifier.verify_body(near, body)
    with pytest.raises(Unauthorized, match="not the one that was signed"):
        PeerVerifier.verify_body({}, body)  # no digest at all: refused, never a crash


@pytest.mark.parametrize(
    "name, value",
    [(DIGEST, "a" * 63), (DIGEST, "a" * 65), (NONCE, "n" * 65), (TIMESTAMP, "1" * 16)],
)
def test_signature_headers_of_the_wrong_length_are_malformed(clock, name, value):
    headers = PeerSigner(SECRET, clock).headers("POST", PATH, b"{}", to=REGION)
    headers[name] = value
    with pytest.raises(Unauthorized) as refused:
        verifier(clock).verify_head("POST", PATH, headers)
    assert str(refused.value) == "The peer request's signature headers are malformed."


def test_the_longest_nonce_and_timestamp_are_read_not_refused_as_malformed(clock):
    headers = PeerSigner(SECRET, clock).headers("POST", PATH, b"{}", to=REGION)
    headers[NONCE] = "n" * 64
    with pytest.raises(Unauthorized, match="signature does not match"):  # read and checked: the nonce was changed
        verifier(clock).verify_head("POST", PATH, headers)
    headers[TIMESTAMP] = "1" * 15  # about the year 5490: read, then refused as outside the window
    with pytest.raises(Unauthorized, match="from this gateway's clock"):
        verifier(clock).verify_head("POST", PATH, headers)


@pytest.mark.parametrize("offset", [-30.0, 30.0])
def test_a_request_signed_exactly_max_skew_away_is_accepted(clock, offset):
    headers = PeerSigner(SECRET, FakeClock(clock.now + offset)).headers("POST", PATH, b"{}", to=REGION)
    verifier(clock).verify("POST", PATH, headers, b"{}")


def test_a_refusal_for_the_clock_says_how_far_off_the_sender_was(clock):
    headers = PeerSigner(SECRET, FakeClock(clock.now - 31.25)).headers("POST", PATH, b"{}", to=REGION)
    with pytest.raises(Unauthorized) as refused:
        verifier(clock).verify("POST", PATH, headers, b"{}")
    assert str(refused.value) == (
        "The peer request was signed +31.2s from this gateway's clock; "
        "at most ±30s is accepted (expired, or the clocks differ)."
    )
    headers = PeerSigner(SECRET, FakeClock(clock.now + 600)).headers("POST", PATH, b"{}", to=REGION)  # from the future
    with pytest.raises(Unauthorized, match=r"^The peer request was signed -600\.0s from this gateway's clock; "):
        verifier(clock).verify("POST", PATH, headers, b"{}")


def test_the_age_of_a_verified_request_is_in_seconds_by_the_receivers_clock(clock):
    headers = PeerSigner(SECRET, clock).headers("POST", PATH, b"{}", to=REGION)
    check = verifier(clock)
    check.verify_head("POST", PATH, headers)
    clock.advance(2.5)
    assert check.age(headers) == 2.5
