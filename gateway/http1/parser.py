"""The HTTP/1.1 answer parser under the data plane's pool (gateway/http1/pool.py): bytes in, one answer out.

It reads what the pool's requests get back (a ``POST`` answered by DynamoDB
or a peer gateway): a status line, header lines, and a body framed by
``Content-Length`` or ``Transfer-Encoding: chunked`` (RFC 9112). Interim
``1xx`` answers (``100 Continue``, ``103 Early Hints``) are skipped; ``204``
and ``304`` have no body.

Invariants:
- Every malformed, ambiguous or oversized answer raises ``Http1Error`` naming
  the problem; nothing else ever leaves ``feed`` (no ``ValueError`` from a bad
  chunk size, no ``IndexError``), so a protocol callback cannot be broken by
  what a server sends.
- Stricter than RFC 9112 allows a recipient to be, never looser: it refuses a
  repeated ``Content-Length``, ``Content-Length`` beside ``Transfer-Encoding``
  (a smuggling vector, RFC 9112 §6.3), any transfer coding but ``chunked``,
  a body that runs to EOF, obs-fold and control characters in header lines,
  and ``101 Switching Protocols``. Whatever it accepts, h11 (a kept parser)
  reads the same way; tests/unit/http1/test_parser.py checks that with
  hypothesis, h11 as the oracle.
- Bounded: a head over ``max_head`` bytes or a body over ``max_body`` bytes is
  refused as soon as it is known to be too large, before it is buffered.
- Bytes after the answer are refused: the pool sends one request at a time, so
  they can only be a server out of step with its connection.

Why hand-written: h11 is pure Python and costs many times more per answer,
on every DynamoDB call and every forward; aiohttp's llhttp parser is as cheap
but reads answers leniently (obs-fold, bare LF, repeated headers) and hands
bodies over through a stream per answer. ``python -m loadtest.hotpath_bench``
prints this parser and h11 side by side; the README gives the figures.
"""

from __future__ import annotations

import re

#: Largest answer head read (status line and headers).
MAX_HEAD = 64 << 10
#: Largest answer body read. DynamoDB answers at most 16 MB of items per call (BatchGetItem), which JSON and
#: base64 enlarge by at most 4/3; a peer's answer carries at most one such read.
MAX_BODY = 64 << 20

_HEAD_END = b"\r\n\r\n"
_VCHAR = rb"\x21-\x7e\x80-\xff"  # VCHAR / obs-text (RFC 9110 §5.5)
_HEAD = re.compile(
    rb"HTTP/1\.[01] ([0-9]{3})(?: [\t " + _VCHAR + rb"]*)?"  # status-line, the reason phrase optional
    rb"(?:\r\n[-!#$%&'*+.^_`|~0-9A-Za-z]+:[ \t]*"  # field-name ":" OWS
    rb"(?:[" + _VCHAR + rb"]+(?:[ \t]+[" + _VCHAR + rb"]+)*)?[ \t]*)*"  # field-value OWS
)
_CHUNK_SIZE = re.compile(rb"([0-9A-Fa-f]{1,16})(?:;[\t " + _VCHAR + rb"]*)?[ \t]*")
_NO_BODY = (204, 304)
_NONE: list[bytes] = []


class Http1Error(ConnectionError):
    """The connection failed or the server's answer was not HTTP/1.1 we can read."""


class Http1ConnectError(Http1Error):
    """No connection could be made: the request was never sent (a caller may tell "not applied" from "unknown")."""


class ResponseParser:
    """One connection's answers, parsed incrementally: ``feed`` bytes until it returns (status, body)."""

    __slots__ = ("_buffer", "_head_len", "_length", "_chunked", "_status", "_pos", "_parts", "_body_size",
                 "close", "max_body")

    def __init__(self, max_body: int = MAX_BODY) -> None:
        self._buffer = bytearray()
        self.max_body = max_body
        #: After an answer: whether the server asked to close the connection (or spoke HTTP/1.0).
        self.close = False
        self._reset()

    def _reset(self) -> None:
        self._head_len = -1  # bytes of the current answer's head (with its blank line); -1 until it is whole
        self._length = -1  # Content-Length, or -1 when chunked
        self._chunked = False
        self._status = 0
        self._pos = 0  # chunked: where the next chunk-size line starts
        self._parts: list[bytes] = []
        self._body_size = 0

    def feed(self, data: bytes) -> tuple[int, bytes] | None:
        """Take bytes of the stream; the final answer's (status, body) once it is whole, else ``None``."""
        buffer = self._buffer
        buffer += data
        while True:
            if self._head_len < 0:
                end = buffer.find(_HEAD_END)
                if end < 0:
                    if len(buffer) > MAX_HEAD:
                        raise Http1Error(f"answer headers larger than {MAX_HEAD >> 10} KiB")
                    return None
                if end > MAX_HEAD:
                    raise Http1Error(f"answer headers larger than {MAX_HEAD >> 10} KiB")
                self._read_head(bytes(buffer[:end]))
                self._head_len = self._pos = end + 4
                if 100 <= self._status < 200:  # an interim answer: the final one follows
                    del buffer[: self._head_len]
                    self._reset()
                    continue
            body = self._dechunk() if self._chunked else self._sized()
            if body is None:
                return None
            status = self._status
            buffer.clear()
            self._reset()
            return status, body

    def _sized(self) -> bytes | None:
        buffer, start = self._buffer, self._head_len
        end = start + self._length
        if len(buffer) < end:
            return None
        if len(buffer) > end:
            raise Http1Error("the server sent more bytes than its Content-Length")
        return bytes(buffer[start:end])

    def _read_head(self, head: bytes) -> None:
        match = _HEAD.fullmatch(head)
        if match is None:
            raise Http1Error(_head_problem(head))
        status = self._status = int(match[1])
        if status < 100 or status == 101:
            raise Http1Error(f"answer with status {status}, which a POST on this connection cannot get")
        # Lookups in the lower-cased head instead of a split of every line: the head is parsed on every
        # answer (each DynamoDB call, each forward), and the regex above already vouched for each line.
        lower = head.lower()
        lengths = _values(lower, b"\r\ncontent-length:")
        codings = _values(lower, b"\r\ntransfer-encoding:") if b"\r\ntransfer-encoding:" in lower else _NONE
        # HTTP/1.0 keep-alive is an old extension that proxies get wrong: an HTTP/1.0 answer closes.
        close = head.startswith(b"HTTP/1.0")
        if not close and b"close" in lower:  # the usual answer keeps the connection: no list made
            for value in _values(lower, b"\r\nconnection:"):
                close = close or b"close" in [token.strip(b" \t") for token in value.split(b",")]
        self.close = close
        if len(lengths) > 1:
            raise Http1Error("answer repeats the header 'content-length'")
        if lengths and not (lengths[0].isdigit() and lengths[0].isascii()):
            raise Http1Error(f"answer with a malformed Content-Length: {lengths[0][:40]!r}")
        if codings:
            if lengths:
                raise Http1Error("answer with both Content-Length and Transfer-Encoding (ambiguous framing)")
            if codings != [b"chunked"]:
                raise Http1Error(f"answer with a transfer coding other than chunked: {b', '.join(codings)[:40]!r}")
        if status < 200 or status in _NO_BODY:
            self._length = 0  # no body, whatever the headers say (RFC 9110 §15.2, §15.3.5, §15.4.5)
            return
        if codings:
            self._chunked = True
            return
        if not lengths:
            # Neither length nor chunks: the body runs to EOF. DynamoDB never answers so; refuse.
            raise Http1Error("answer without Content-Length or chunked encoding")
        if len(lengths[0]) > 12 or int(lengths[0]) > self.max_body:
            raise Http1Error(f"answer body of {lengths[0][:20].decode()} bytes is over the {self.max_body} bytes read")
        self._length = int(lengths[0])

    def _dechunk(self) -> bytes | None:
        """The whole chunked body once it has arrived (trailers read and dropped), else ``None``."""
        buffer, pos = self._buffer, self._pos
        while True:
            line_end = buffer.find(b"\r\n", pos)
            if line_end < 0:
                if len(buffer) - pos > 1024:
                    raise Http1Error("a chunk-size line longer than 1 KiB")
                return None
            match = _CHUNK_SIZE.fullmatch(buffer, pos, line_end)
            if match is None:
                raise Http1Error(f"a malformed chunk-size line: {bytes(buffer[pos:line_end])[:40]!r}")
            size = int(match[1], 16)
            start = line_end + 2
            if size == 0:
                return self._trailers(start)
            self._body_size += size
            if self._body_size > self.max_body:
                raise Http1Error(f"chunked answer body over the {self.max_body} bytes read")
            if len(buffer) < start + size + 2:
                return None
            if buffer[start + size:start + size + 2] != b"\r\n":
                raise Http1Error("a chunk not followed by CRLF")
            self._parts.append(bytes(buffer[start:start + size]))
            pos = self._pos = start + size + 2

    def _trailers(self, start: int) -> bytes | None:
        """After the last chunk: trailer lines (validated like header lines, then dropped) and a blank line."""
        buffer = self._buffer
        if buffer.startswith(b"\r\n", start):
            end = start + 2
        else:
            blank = buffer.find(_HEAD_END, start)
            if blank < 0:
                if len(buffer) - start > MAX_HEAD:
                    raise Http1Error(f"answer trailers larger than {MAX_HEAD >> 10} KiB")
                return None
            if _HEAD.fullmatch(b"HTTP/1.1 200\r\n" + bytes(buffer[start:blank])) is None:
                raise Http1Error("malformed trailer lines after the last chunk")
            end = blank + 4
        if len(buffer) > end:
            raise Http1Error("the server sent more bytes after its last chunk")
        return b"".join(self._parts)


def _values(lower_head: bytes, marker: bytes) -> list[bytes]:
    """Every value of the header whose ``\\r\\nname:`` is ``marker`` in a lower-cased head, stripped."""
    values = []
    at = lower_head.find(marker)
    while at >= 0:
        start = at + len(marker)
        end = lower_head.find(b"\r\n", start)
        if end < 0:
            end = len(lower_head)
        values.append(lower_head[start:end].strip(b" \t"))
        at = lower_head.find(marker, end)
    return values


def _head_problem(head: bytes) -> str:
    """Which line of a head the grammar refused, for the error message."""
    lines = head.split(b"\r\n")
    if _HEAD.fullmatch(lines[0]) is None:
        return f"not an HTTP/1.x status line: {lines[0][:80]!r}"
    for line in lines[1:]:
        if _HEAD.fullmatch(b"HTTP/1.1 200\r\n" + line) is None:
            return f"a malformed header line (RFC 9110 §5): {line[:80]!r}"
    return f"a malformed answer head: {head[:80]!r}"
