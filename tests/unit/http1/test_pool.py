"""The HTTP/1.1 pool against scripted servers on loopback sockets."""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable

import pytest

from gateway.http1.parser import Http1ConnectError, Http1Error
from gateway.http1.pool import Http1Pool

Answer = Callable[[bytes, asyncio.StreamWriter], Awaitable[None]]


class ScriptedServer:
    """Reads each request whole (headers + Content-Length body) and lets ``answer`` reply."""

    def __init__(self, answer: Answer) -> None:
        self.answer = answer
        self.requests: list[bytes] = []
        self.connections = 0
        self.server: asyncio.Server | None = None
        self.writers: list[asyncio.StreamWriter] = []
        self.handlers: set[asyncio.Task[None]] = set()

    async def handle(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        self.connections += 1
        self.writers.append(writer)
        task = asyncio.current_task()
        assert task is not None
        self.handlers.add(task)
        try:
            while True:
                head = await reader.readuntil(b"\r\n\r\n")
                length = int(head.lower().split(b"content-length:", 1)[1].split(b"\r\n", 1)[0])
                request = head + await reader.readexactly(length)
                self.requests.append(request)
                await self.answer(request, writer)
                if writer.is_closing():
                    return
        except (asyncio.IncompleteReadError, ConnectionError):
            pass
        finally:
            writer.close()

    async def __aenter__(self) -> str:
        self.server = await asyncio.start_server(self.handle, "127.0.0.1", 0)
        return f"http://127.0.0.1:{self.server.sockets[0].getsockname()[1]}/"

    async def __aexit__(self, *exc: object) -> None:
        assert self.server is not None
        self.server.close()
        for writer in self.writers:
            writer.close()
        for task in self.handlers:
            task.cancel()
        await asyncio.gather(*self.handlers, return_exceptions=True)
        await self.server.wait_closed()


def ok(body: bytes, extra: bytes = b"") -> bytes:
    return b"HTTP/1.1 200 OK\r\nContent-Length: " + str(len(body)).encode() + b"\r\n" + extra + b"\r\n" + body


async def echo(request: bytes, writer: asyncio.StreamWriter) -> None:
    writer.write(ok(request.split(b"\r\n\r\n", 1)[1]))


HEADERS = {"Host": "127.0.0.1", "Content-Type": "application/x-amz-json-1.0"}


def canned(raw: bytes) -> Answer:
    """A server answer that writes ``raw`` to every request."""

    async def answer(request: bytes, writer: asyncio.StreamWriter) -> None:
        writer.write(raw)

    return answer


async def exchange(answer: Answer, requests: int = 2) -> tuple[list[tuple[int, bytes]], int]:
    """``requests`` POSTs through one pool: their answers, and how many connections the server saw."""
    server = ScriptedServer(answer)
    async with server as url:
        pool = Http1Pool(url)
        answers = [await pool.post(HEADERS, b"{}") for _ in range(requests)]
        await pool.close()
    return answers, server.connections


async def test_requests_reuse_one_keep_alive_connection():
    server = ScriptedServer(echo)
    async with server as url:
        pool = Http1Pool(url)
        for i in range(5):
            assert await pool.post(HEADERS, b'{"n":%d}' % i) == (200, b'{"n":%d}' % i)
        await pool.close()
    assert server.connections == 1
    assert server.requests[0].startswith(b"POST / HTTP/1.1\r\nHost: 127.0.0.1\r\n")
    assert b"\r\nContent-Length: 7\r\n\r\n" in server.requests[0]


async def test_answer_split_across_packets_and_error_statuses():
    async def dribble(request: bytes, writer: asyncio.StreamWriter) -> None:
        answer = b"HTTP/1.1 400 Bad Request\r\nContent-Length: 11\r\n\r\n{\"a\":\"bcd\"}"
        for i in range(0, len(answer), 7):
            writer.write(answer[i:i + 7])
            await writer.drain()
            await asyncio.sleep(0.001)

    async with ScriptedServer(dribble) as url:
        pool = Http1Pool(url)
        assert await pool.post(HEADERS, b"{}") == (400, b'{"a":"bcd"}')
        await pool.close()


async def test_chunked_answers():
    chunked = b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n4\r\n{\"a\"\r\n3;ext=1\r\n:1}\r\n0\r\n\r\n"
    assert await exchange(canned(chunked)) == ([(200, b'{"a":1}')] * 2, 1)


async def test_connection_close_is_honoured():
    async def closing(request: bytes, writer: asyncio.StreamWriter) -> None:
        writer.write(ok(b"{}", b"Connection: close\r\n"))
        await writer.drain()
        writer.close()

    server = ScriptedServer(closing)
    async with server as url:
        pool = Http1Pool(url)
        for _ in range(3):
            assert await pool.post(HEADERS, b"{}") == (200, b"{}")
        await pool.close()
    assert server.connections == 3


async def test_an_idle_connection_closed_by_the_server_is_replaced_transparently():
    async def once(request: bytes, writer: asyncio.StreamWriter) -> None:
        writer.write(ok(b"{}"))
        await writer.drain()
        writer.close()  # no Connection: close header: the pool learns on reuse

    server = ScriptedServer(once)
    async with server as url:
        pool = Http1Pool(url)
        assert await pool.post(HEADERS, b"{}") == (200, b"{}")
        await asyncio.sleep(0.05)
        assert await pool.post(HEADERS, b"{}") == (200, b"{}")
        await pool.close()
    assert server.connections == 2


async def test_a_server_that_hangs_up_mid_answer_is_an_error_not_a_retry():
    async def truncate(request: bytes, writer: asyncio.StreamWriter) -> None:
        writer.write(b"HTTP/1.1 200 OK\r\nContent-Length: 100\r\n\r\n{\"partial")
        await writer.drain()
        writer.close()

    server = ScriptedServer(truncate)
    async with server as url:
        pool = Http1Pool(url)
        with pytest.raises(Http1Error, match="closed"):
            await pool.post(HEADERS, b"{}")
        await pool.close()
    assert len(server.requests) == 1


async def test_garbage_answers_are_errors():
    async def garbage(request: bytes, writer: asyncio.StreamWriter) -> None:
        writer.write(b"SMTP ready\r\n\r\n")

    async with ScriptedServer(garbage) as url:
        pool = Http1Pool(url)
        with pytest.raises(Http1Error, match="status line"):
            await pool.post(HEADERS, b"{}")
        await pool.close()


@pytest.mark.parametrize(
    "head, problem",
    [
        (b"HTTP/1.1 200 OK\r\nContent-Length: 2\r\ncontent-length: 3", "repeats the header 'content-length'"),
        (b"HTTP/1.1 200 OK\r\nContent-Length: two", "malformed Content-Length"),
        (b"HTTP/1.1 2x0 OK\r\nContent-Length: 2", "status line"),
        (b"HTTP/1.1 200 OK\r\nServer: x", "without Content-Length"),
    ],
)
async def test_answers_with_ambiguous_framing_are_errors(head, problem):
    with pytest.raises(Http1Error, match=problem):
        await exchange(canned(head + b"\r\n\r\n{}"), requests=1)


async def test_header_names_are_case_insensitive():
    answer = canned(b"HTTP/1.1 201 Created\r\nCONTENT-length:  2 \r\nConnection: Close\r\n\r\n{}")
    # Two connections: "Connection: Close" was honoured.
    assert await exchange(answer) == ([(201, b"{}")] * 2, 2)


async def _cancelled_by_the_caller(pool: Http1Pool) -> None:
    async with asyncio.timeout(0.05):
        await pool.post(HEADERS, b"first")


async def _timed_out_by_the_pool(pool: Http1Pool) -> None:
    await pool.post(HEADERS, b"first", timeout=0.05)


@pytest.mark.parametrize("first", [_cancelled_by_the_caller, _timed_out_by_the_pool])
async def test_a_request_given_up_never_hands_its_late_answer_to_the_next(first):
    release = asyncio.Event()

    async def slow_first(request: bytes, writer: asyncio.StreamWriter) -> None:
        if b"first" in request:
            await release.wait()
        writer.write(ok(request.split(b"\r\n\r\n", 1)[1]))

    server = ScriptedServer(slow_first)
    async with server as url:
        pool = Http1Pool(url)
        loop = asyncio.get_running_loop()
        started = loop.time()
        with pytest.raises(TimeoutError):
            await first(pool)
        assert 0.05 <= loop.time() - started < 0.5
        release.set()
        assert await pool.post(HEADERS, b"second", timeout=5) == (200, b"second")
        await pool.close()
    assert server.connections == 2  # the given-up connection was aborted, not reused


class Gate:
    """A server answer held until ``opened`` is set; ``arrived`` is set by the first request to reach it."""

    def __init__(self) -> None:
        self.opened = asyncio.Event()
        self.arrived = asyncio.Event()

    async def __call__(self, request: bytes, writer: asyncio.StreamWriter) -> None:
        self.arrived.set()
        await self.opened.wait()
        writer.write(ok(b"{}"))


async def test_the_timeout_also_bounds_the_wait_for_a_free_connection():
    gate = Gate()
    server = ScriptedServer(gate)
    async with server as url:
        pool = Http1Pool(url, limit=1)
        first = asyncio.create_task(pool.post(HEADERS, b"{}"))
        await gate.arrived.wait()  # the pool's one connection is busy
        # Nothing was sent: the error says so (a caller tells "not sent" from "may have landed" by it).
        with pytest.raises(Http1ConnectError, match="no connection .* within the deadline"):
            await pool.post(HEADERS, b"{}", timeout=0.05)
        gate.opened.set()
        assert await first == (200, b"{}")
        assert await pool.post(HEADERS, b"{}", timeout=5) == (200, b"{}")
        await pool.close()
    assert server.connections == 1 and len(server.requests) == 2


async def test_callers_beyond_the_limit_wait_their_turn():
    gate = Gate()
    server = ScriptedServer(gate)
    async with server as url:
        pool = Http1Pool(url, limit=2)
        tasks = [asyncio.create_task(pool.post(HEADERS, b"{}")) for _ in range(6)]
        async with asyncio.timeout(5):  # until the first two requests are at the server
            while len(server.requests) < 2:
                await asyncio.sleep(0.001)
        for _ in range(20):  # a pool past its limit would have connected in these turns, as the first two did
            await asyncio.sleep(0)
        assert server.connections == 2 and len(server.requests) == 2 and not any(t.done() for t in tasks)
        gate.opened.set()
        assert [await t for t in tasks] == [(200, b"{}")] * 6
        await pool.close()
    assert server.connections == 2


async def test_refused_connection_is_an_http1_error():
    async with ScriptedServer(echo) as url:
        pass  # closed: nothing listens on that port any more
    pool = Http1Pool(url)
    with pytest.raises(Http1Error, match="cannot connect"):
        await pool.post(HEADERS, b"{}")
    await pool.close()


def test_only_http_urls():
    with pytest.raises(ValueError):
        Http1Pool("ftp://example.com")
