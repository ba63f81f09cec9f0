"""The answer parser (gateway/http1/parser.py), against h11 as the oracle and against what it must refuse.

The properties, over answers hypothesis builds (interim answers, random
headers, Content-Length or chunked bodies with extensions and trailers, keep-
alive or close) and over random corruptions of them:
- a well-formed answer reads as h11 reads it (status, body, whether the
  connection closes), however the bytes are split across ``feed`` calls;
- whatever the bytes, ``feed`` answers, waits for more, or raises
  ``Http1Error``: nothing else escapes;
- what the parser accepts, h11 accepts and reads the same way (it may refuse
  more than h11, never less).
"""

from __future__ import annotations

import h11
import pytest
from hypothesis import HealthCheck, example, given, settings
from hypothesis import strategies as st

from gateway.http1.parser import MAX_HEAD, Http1Error, ResponseParser

TOKEN = st.text("abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789-!#$%&'*+.^_`|~", min_size=1, max_size=12)
VALUE_BYTE = st.sampled_from([*range(0x21, 0x7F), *range(0x80, 0x100)])
FRAMING = ("content-length", "transfer-encoding", "connection")


@st.composite
def field_values(draw: st.DrawFn) -> bytes:
    words = draw(st.lists(st.binary(min_size=1, max_size=8).map(lambda b: bytes(0x41 + x % 26 for x in b)) | st.lists(
        VALUE_BYTE, min_size=1, max_size=6).map(bytes), max_size=3))
    return b" ".join(words)


@st.composite
def header_lines(draw: st.DrawFn) -> list[bytes]:
    lines = []
    for _ in range(draw(st.integers(0, 4))):
        name = draw(TOKEN.filter(lambda n: n.lower() not in FRAMING))
        space = draw(st.sampled_from([b"", b" ", b"\t", b"  "]))
        lines.append(name.encode() + b":" + space + draw(field_values()) + draw(st.sampled_from([b"", b" "])))
    return lines


@st.composite
def answers(draw: st.DrawFn) -> bytes:
    """One final answer, possibly after interim ones, well-formed by RFC 9112."""
    out = b""
    for _ in range(draw(st.integers(0, 2))):
        interim = draw(st.sampled_from([100, 102, 103]))
        out += f"HTTP/1.1 {interim} Interim\r\n".encode() + b"".join(h + b"\r\n" for h in draw(header_lines())) + b"\r\n"
    version = draw(st.sampled_from([b"1.1", b"1.1", b"1.0"]))
    status = draw(st.sampled_from([200, 200, 201, 204, 304, 400, 409, 413, 500, 503]))
    reason = draw(st.sampled_from([b" OK", b" Some Reason", b"", b" ", b" caf\xe9"]))
    lines = draw(header_lines())
    connection = draw(st.sampled_from([None, b"close", b"keep-alive", b"Keep-Alive, close"]))
    if connection is not None:
        lines.append(b"Connection: " + connection)
    body = b"" if status in (204, 304) else draw(st.binary(max_size=300))
    chunked = status not in (204, 304) and version == b"1.1" and draw(st.booleans())
    if chunked:
        lines.append(draw(st.sampled_from([b"Transfer-Encoding: chunked", b"transfer-encoding: Chunked"])))
        rest, wire = body, b""
        while rest:
            size = draw(st.integers(1, len(rest)))
            ext = draw(st.sampled_from([b"", b";name=value", b";x"]))
            wire += b"%x" % size + ext + b"\r\n" + rest[:size] + b"\r\n"
            rest = rest[size:]
        trailers = b"".join(h + b"\r\n" for h in draw(header_lines()))
        payload = wire + b"0\r\n" + trailers + b"\r\n"
    else:
        if status not in (204, 304) or draw(st.booleans()):
            lines.append(b"Content-Length: " + str(len(body)).encode())
        payload = body
    head = b"HTTP/" + version + b" " + str(status).encode() + reason + b"\r\n"
    return out + head + b"".join(line + b"\r\n" for line in lines) + b"\r\n" + payload


def ours(data: bytes, cuts: list[int] = ()) -> tuple[int, bytes, bool] | None:
    parser = ResponseParser()
    answer = None
    last = 0
    for cut in sorted(c for c in cuts if 0 < c < len(data)) + [len(data)]:
        piece, last = data[last:cut], cut
        if answer is not None:
            raise AssertionError("fed more after a whole answer")
        answer = parser.feed(piece)
    return None if answer is None else (answer[0], answer[1], parser.close)


def theirs(data: bytes) -> tuple[int, bytes, bool] | None:
    """h11's reading of ``data`` as the answer to a POST: (status, body, closes), ``None`` if incomplete."""
    conn = h11.Connection(h11.CLIENT, max_incomplete_event_size=MAX_HEAD + 4)
    conn.send(h11.Request(method="POST", target="/", headers=[("Host", "x"), ("Content-Length", "0")]))
    conn.send(h11.EndOfMessage())
    conn.receive_data(data)
    status, body = 0, []
    while True:
        event = conn.next_event()
        if event is h11.NEED_DATA:
            return None
        if isinstance(event, h11.Response):
            status = event.status_code
        elif isinstance(event, h11.Data):
            body.append(event.data)
        elif isinstance(event, h11.EndOfMessage):
            return status, b"".join(body), conn.their_state is h11.MUST_CLOSE


@settings(suppress_health_check=[HealthCheck.too_slow])
@given(answers(), st.lists(st.integers(0, 2000), max_size=6))
@example(b"HTTP/1.1 100 Continue\r\n\r\nHTTP/1.1 200 OK\r\nContent-Length: 2\r\n\r\n{}", [25])
def test_a_well_formed_answer_reads_as_h11_reads_it_however_it_is_split(data: bytes, cuts: list[int]) -> None:
    expected = theirs(data)
    assert expected is not None, "the generator made an answer h11 finds incomplete"
    assert ours(data, cuts) == expected


@st.composite
def corrupted(draw: st.DrawFn) -> bytes:
    data = bytearray(draw(answers()))
    for _ in range(draw(st.integers(1, 3))):
        kind = draw(st.sampled_from(["flip", "insert", "delete", "truncate"]))
        at = draw(st.integers(0, max(0, len(data) - 1)))
        if kind == "flip" and data:
            data[at] = draw(st.sampled_from([0, 9, 10, 13, 32, 48, 58, 59, 65, 102, 127, 255, data[at] ^ 1]))
        elif kind == "insert":
            data[at:at] = draw(st.sampled_from([b"\r\n", b"\n", b" ", b"0", b"\r\n\r\n", b"x: y\r\n", b"-", b";"]))
        elif kind == "delete" and data:
            del data[at]
        elif kind == "truncate":
            del data[at:]
    return bytes(data)


@settings(suppress_health_check=[HealthCheck.too_slow])
@given(corrupted())
def test_any_bytes_are_an_answer_h11_agrees_with_a_wait_or_an_http1_error(data: bytes) -> None:
    try:
        answer = ours(data)
    except Http1Error:
        return  # refused: allowed whatever h11 thinks (this parser may be stricter)
    if answer is None:
        return  # waiting for more bytes
    try:
        expected = theirs(data)
    except h11.RemoteProtocolError as exc:
        pytest.fail(f"accepted {data!r} as {answer!r}, which h11 refuses: {exc}")
    assert answer == expected


@pytest.mark.parametrize(
    "answer, problem",
    [
        (b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\nzz\r\nab\r\n0\r\n\r\n", "malformed chunk-size"),
        (b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n0x2\r\nab\r\n0\r\n\r\n", "malformed chunk-size"),
        (b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n-2\r\nab\r\n0\r\n\r\n", "malformed chunk-size"),
        (b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n2\r\nabc\r\n0\r\n\r\n", "not followed by CRLF"),
        (b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\nContent-Length: 2\r\n\r\n{}", "both Content-Length and"),
        (b"HTTP/1.1 200 OK\r\nTransfer-Encoding: gzip, chunked\r\n\r\n0\r\n\r\n", "other than chunked"),
        (b"HTTP/1.1 200 OK\r\nContent-Length: 2\r\nContent-Length: 2\r\n\r\n{}", "repeats the header"),
        (b"HTTP/1.1 200 OK\r\nContent-Length: +2\r\n\r\n{}", "malformed Content-Length"),
        (b"HTTP/1.1 200 OK\r\nContent-Length: \xd9\xa2\r\n\r\n{}", "malformed Content-Length"),  # Arabic-Indic 2
        (b"HTTP/1.1 200 OK\r\nX: a\r\n folded\r\nContent-Length: 2\r\n\r\n{}", "malformed header line"),
        (b"HTTP/1.1 200 OK\r\nX: a\x00b\r\nContent-Length: 2\r\n\r\n{}", "malformed header line"),
        (b"HTTP/1.1 200 OK\r\nX : a\r\nContent-Length: 2\r\n\r\n{}", "malformed header line"),
        (b"HTTP/1.1 101 Switching Protocols\r\nUpgrade: h2c\r\n\r\n", "status 101"),
        (b"HTTP/2 200 OK\r\nContent-Length: 2\r\n\r\n{}", "status line"),
        (b"HTTP/1.1 200 OK\r\nContent-Length: 2\r\n\r\n{}extra", "more bytes than its Content-Length"),
        (b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n0\r\n\r\nextra", "more bytes after its last chunk"),
        (b"HTTP/1.1 200 OK\r\n\r\n{}", "without Content-Length or chunked"),
    ],
)
def test_what_is_refused_is_refused_with_a_reason(answer: bytes, problem: str) -> None:
    with pytest.raises(Http1Error, match=problem):
        ResponseParser().feed(answer)


def test_bodies_over_the_cap_are_refused_before_they_are_buffered() -> None:
    parser = ResponseParser(max_body=1000)
    with pytest.raises(Http1Error, match="over the 1000 bytes"):
        parser.feed(b"HTTP/1.1 200 OK\r\nContent-Length: 1001\r\n\r\n")
    chunked = ResponseParser(max_body=1000)
    assert chunked.feed(b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n200\r\n" + b"a" * 512 + b"\r\n") is None
    with pytest.raises(Http1Error, match="over the 1000 bytes"):
        chunked.feed(b"200\r\n")  # the second chunk's size alone passes the cap: refused before its data arrives
    assert ResponseParser(max_body=1000).feed(b"HTTP/1.1 200 OK\r\nContent-Length: 1000\r\n\r\n" + b"a" * 1000)


def test_heads_over_the_cap_are_refused_without_their_end() -> None:
    with pytest.raises(Http1Error, match="headers larger than 64 KiB"):
        ResponseParser().feed(b"HTTP/1.1 200 OK\r\nX: " + b"a" * MAX_HEAD)


def test_a_connection_answers_many_times_and_keeps_or_closes_as_each_answer_says() -> None:
    parser = ResponseParser()
    assert parser.feed(b"HTTP/1.1 200 OK\r\nContent-Length: 1\r\n\r\na") == (200, b"a") and not parser.close
    assert parser.feed(b"HTTP/1.1 204 No Content\r\n\r\n") == (204, b"") and not parser.close
    assert parser.feed(b"HTTP/1.0 200 OK\r\nContent-Length: 0\r\n\r\n") == (200, b"") and parser.close
    assert parser.feed(b"HTTP/1.0 200 OK\r\nConnection: keep-alive\r\nContent-Length: 0\r\n\r\n") == (200, b"")
    assert parser.close  # HTTP/1.0 keep-alive is not trusted
    assert parser.feed(b"HTTP/1.1 200 OK\r\nConnection: keep-alive\r\nContent-Length: 0\r\n\r\n") == (200, b"")
    assert not parser.close
    assert parser.feed(b"HTTP/1.1 503 Busy\r\nConnection: keep-alive, close\r\nContent-Length: 0\r\n\r\n") == (503, b"")
    assert parser.close
