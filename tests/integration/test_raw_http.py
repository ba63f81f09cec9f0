"""Raw HTTP/1.1 against a real gateway process: what an OpenAPI tool cannot send.

Malformed framing, pipelining, oversized heads and slow senders, over loopback sockets. The promise under test
is the README's: every answer that is not a success is JSON with a code and a sentence (malformed HTTP
included), none is a 500, and the gateway serves on afterwards. Hypothesis builds the malformed requests from
the parts of a valid one (the ``ci`` profile runs the same examples every time: tests/conftest.py).
"""

from __future__ import annotations

import select
import socket
import time
from collections.abc import Iterator

import orjson
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from gateway.local.dynamodb_local import free_port
from gateway.local.gateway_process import GatewayProcess
from tests.integration.conftest import gateway_toml, unique, write_config

#: Seconds of silence after which a connection counts as held open. The fuzzed gateway closes every connection
#: within about a second (idle_timeout and request_timeout of 1 s), answered or not.
QUIET = 4.0


class Silent(AssertionError):
    """The gateway neither answered nor closed the connection within ``QUIET`` seconds."""


def exchange(port: int, raw: bytes, *, expect: int | None = None) -> bytes:
    """Send ``raw`` on a new connection; read until ``expect`` answers came, or else until the gateway closes it."""
    with socket.create_connection(("127.0.0.1", port), timeout=QUIET) as sock:
        sock.sendall(raw)
        received = b""
        try:
            while expect is None or len(answers(received, partial=True)) < expect:
                chunk = sock.recv(65536)
                if not chunk:
                    break
                received += chunk
        except TimeoutError:
            raise Silent(f"no answer and no close within {QUIET}s; received {received[:300]!r}") from None
        except ConnectionResetError:
            pass
        return received


@pytest.fixture(scope="module")
def strict(dynamodb_local, feature_tables, table_suffix, tmp_path_factory) -> Iterator[GatewayProcess]:
    """A gateway that gives a connection one second to send a whole request (and keeps it idle no longer)."""
    tmp = tmp_path_factory.mktemp("strict-gateway")
    path = write_config(tmp, gateway_toml(
        dynamodb_local.endpoint, free_port(), table_suffix, idle_timeout=1.0, request_timeout=1.0,
    ))
    proc = GatewayProcess(path, log_path=tmp / "gw.log").start()
    try:
        yield proc
    finally:
        proc.stop()


def answers(data: bytes, *, partial: bool = False) -> list[tuple[int, dict[str, str], bytes]]:
    """Every HTTP/1.1 answer in ``data`` (each has a Content-Length: the gateway never sends another kind).

    ``partial``: ``data`` is still arriving; a last answer not yet whole is left out instead of failing."""
    found = []
    while data:
        head, sep, rest = data.partition(b"\r\n\r\n")
        if partial and not sep:
            break
        assert sep, f"a truncated answer: {data[:200]!r}"
        lines = head.decode("latin-1").split("\r\n")
        status = int(lines[0].split()[1])
        headers = {name.lower(): value for name, _, value in (line.partition(": ") for line in lines[1:])}
        length = int(headers["content-length"])
        if partial and len(rest) < length:
            break
        found.append((status, headers, rest[:length]))
        data = rest[length:]
    return found


def assert_json_errors(found: list[tuple[int, dict[str, str], bytes]]) -> None:
    for status, headers, body in found:
        assert status != 500, body
        if status >= 400:
            assert headers.get("content-type", "").startswith("application/json"), (status, headers, body)
            error = orjson.loads(body)["error"]
            assert error["code"] and error["message"].endswith((".", ")")) and isinstance(error["retryable"], bool)


HEALTHZ = b"GET /healthz HTTP/1.1\r\nHost: x\r\n\r\n"


# -- hypothesis-built requests ---------------------------------------------------------------------

METHODS = st.sampled_from([b"GET", b"PUT", b"POST", b"DELETE", b"PATCH", b"HEAD", b"OPTIONS", b"TRACE", b"CONNECT",
                           b"BREW", b"get", b"G\x00ET", b"", b"GET GET"])
TARGETS = st.sampled_from([b"/healthz", b"/v1/features/items/k", b"/v1/read", b"/v1/write", b"*", b"", b"http://x/healthz",
                           b"/v1/features/items/%zz", b"/v1/features/items/\xff\xfe", b"/" + b"a" * 9000, b"/../../etc",
                           b"/v1/features//", b"/v1/features/items/k?features=%", b"/\r\n"])
VERSIONS = st.sampled_from([b"HTTP/1.1", b"HTTP/1.0", b"HTTP/2.0", b"HTTP/1.1 extra", b"HTTP/9.9", b"HTTP/1", b"", b"http/1.1"])
HEADER_NAMES = st.sampled_from([b"Host", b"Content-Length", b"Transfer-Encoding", b"Content-Encoding", b"Content-Type",
                                b"Connection", b"Expect", b"X-Request-Timeout", b"Idempotency-Key", b"Bad Name", b"",
                                b"X-\x00", b"Host\t"])
HEADER_VALUES = st.one_of(
    st.sampled_from([b"127.0.0.1", b"-1", b"1e3", b"99999999999999999999", b"chunked", b"gzip", b"identity, chunked",
                     b"application/json", b"close", b"100-continue", b"0.001", b"\x00", b"a\rb", b"\xff"]),
    st.binary(max_size=40),
)
BODIES = st.sampled_from([b"", b"{}", b'{"view":"items","keys":["k"]}', b"5\r\nhello\r\n0\r\n\r\n", b"zz\r\n", b"\x16\x03\x01",
                          b'{"features": {"v": 1e999}}', b"x" * 5000])


@st.composite
def requests(draw) -> bytes:
    """Mostly well-formed parts, each sometimes replaced by a malformed one: the answers span 2xx to 4xx."""

    def part(valid, junk):
        return draw(st.one_of(valid, junk) if draw(st.integers(0, 3)) == 0 else valid)

    method = part(st.sampled_from([b"GET", b"PUT", b"POST", b"DELETE"]), METHODS)
    line = method + b" " + part(st.sampled_from([b"/healthz", b"/v1/features/items/k", b"/v1/read"]), TARGETS)
    line += b" " + part(st.just(b"HTTP/1.1"), VERSIONS)
    headers = [(b"Host", b"127.0.0.1")] if draw(st.booleans()) else []
    headers += draw(st.lists(st.tuples(HEADER_NAMES, HEADER_VALUES), max_size=4))
    body = draw(BODIES)
    if draw(st.booleans()):
        headers.append((b"Content-Length", str(len(body)).encode()))
    separator = part(st.just(b"\r\n"), st.sampled_from([b"\n", b"\r"]))
    head = separator.join([line, *(name + b": " + value for name, value in headers)]) + separator * 2
    return head + body


@settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(raw=st.lists(requests(), min_size=1, max_size=3).map(b"".join))
def test_malformed_and_pipelined_requests_are_answered_in_json_never_500_and_never_held_open(strict, raw):
    # Whatever the bytes, the gateway answers (JSON unless a success) and closes, or closes, within a second.
    assert_json_errors(answers(exchange(strict.config.listen.port, raw)))
    # And serves on: a request on a fresh connection is answered.
    status, _, _ = answers(exchange(strict.config.listen.port, HEALTHZ, expect=1))[0]
    assert status == 200


# -- pipelining ----------------------------------------------------------------------------------------

def test_pipelined_requests_are_answered_in_order(gateway):
    good = [b"GET /healthz HTTP/1.1\r\nHost: x\r\nX-Request-Id: r%d\r\n\r\n" % i for i in range(50)]
    found = answers(exchange(gateway.config.listen.port, b"".join(good), expect=50))
    assert [headers["x-request-id"] for _, headers, _ in found] == [f"r{i}" for i in range(50)]


def test_a_malformed_request_behind_pipelined_writes_ends_the_connection_and_no_unanswered_write_lands(gateway):
    """The parser may refuse the whole burst at the bad request: writes it did not answer were never applied."""
    keys = [unique("pipe") for _ in range(3)]
    puts = [
        b"PUT /v1/features/items/%s HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\n"
        b"Content-Length: 17\r\n\r\n{\"features\":{}}  " % key.encode() for key in keys
    ]
    bad = b"GET /healthz HTTP/1.1\r\nHost: x\r\nContent-Length: -5\r\n\r\n"
    found = answers(exchange(gateway.config.listen.port, b"".join(puts) + bad + puts[0]))  # closed after the 400
    statuses = [status for status, _, _ in found]
    answered = statuses.count(200)
    assert statuses == [200] * answered + [400], statuses
    assert_json_errors(found)
    for i, key in enumerate(keys):
        read = b"GET /v1/features/items/%s HTTP/1.1\r\nHost: x\r\n\r\n" % key.encode()
        status, _, _ = answers(exchange(gateway.config.listen.port, read, expect=1))[0]
        assert status == (200 if i < answered else 404), (i, answered, status)


# -- oversized heads --------------------------------------------------------------------------------------

def test_oversized_request_lines_headers_and_header_counts_are_refused_in_json(gateway):
    cases = {
        "request line": b"GET /" + b"a" * 9000 + b" HTTP/1.1\r\nHost: x\r\n\r\n",
        "header line": b"GET /healthz HTTP/1.1\r\nHost: x\r\nX-Big: " + b"b" * 9000 + b"\r\n\r\n",
        "header count": b"GET /healthz HTTP/1.1\r\nHost: x\r\n" + b"".join(b"X-%d: v\r\n" % i for i in range(200)) + b"\r\n",
    }
    for what, raw in cases.items():
        found = answers(exchange(gateway.config.listen.port, raw))  # answered, then closed
        assert len(found) == 1 and found[0][0] == (400 if what == "header count" else 431), (what, found)
        assert_json_errors(found)


# -- slow senders ---------------------------------------------------------------------------------------------

def test_slow_heads_are_closed_after_the_idle_timeout_and_slow_bodies_answered_408(strict):
    port = strict.config.listen.port
    with socket.create_connection(("127.0.0.1", port), timeout=5) as sock:
        started = time.monotonic()
        closed = False
        for byte in b"GET /healthz HTTP/1.1\r\nHost: x\r\nX-Slow: " + b"y" * 40:  # 0.1 s a byte: never a whole head
            readable, _, _ = select.select([sock], [], [], 0.1)
            if readable:
                closed = sock.recv(65536) == b""
                break
            try:
                sock.sendall(bytes([byte]))
            except (BrokenPipeError, ConnectionResetError):
                closed = True
                break
        assert closed and time.monotonic() - started < 3.0, "a head trickling in held its connection open"
    slow_body = (b"PUT /v1/features/items/slow HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\n"
                 b"Content-Length: 100\r\n\r\n{")
    found = answers(exchange(port, slow_body))
    assert [status for status, _, _ in found] == [408]
    assert orjson.loads(found[0][2])["error"]["code"] == "request_timeout"
