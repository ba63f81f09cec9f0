"""A keep-alive HTTP/1.1 connection pool for DynamoDB's JSON POSTs: the data plane's wire.

Why not ``aiohttp.ClientSession``: one ``ClientSession.post`` costs several
times the CPU and twice the wall time of the same request on a bare
``asyncio.Protocol``; ``make bench`` (loadtest/read_bench.py) measures both
side by side as its ``lean`` and ``lean-aiohttp`` arms, and the README gives
the figures. The data plane sends one kind of request (a
POST of a small JSON body to one host) and reads one kind of answer (a
status, a few headers, a ``Content-Length`` or chunked body), so the general
client's cookie jars, redirects, tracing hooks and header multidicts buy
nothing here. The control plane keeps using aiobotocore. Answers are parsed
by gateway/http1/parser.py, apart from the pool so it can be tested alone
against a kept parser.

Invariants:
- A connection serves one request at a time and returns to the pool only
  after its answer was read whole and the server did not ask to close it.
- A request cancelled mid-flight (deadline) aborts its connection: a late
  answer can never be read as the answer to the next request.
- A request that failed on a *reused* idle connection before any byte of the
  answer arrived is sent once more on a fresh connection (the server closed
  the idle connection under us, the usual keep-alive race); every other
  failure surfaces as ``Http1Error`` (a ``ConnectionError``) for the caller's
  retry policy, a malformed answer included.
- At most ``limit`` connections exist; callers beyond it wait, first come first served.
- A request given a ``timeout`` raises ``TimeoutError`` once that many seconds
  passed since it was made (waiting for a connection included) and aborts its
  connection. The timer is one loop timer on the connection's answer, not an
  ``asyncio.timeout`` scope: a forward is on every write's path.
"""

from __future__ import annotations

import asyncio
import ssl
from collections import deque
from urllib.parse import urlsplit

from gateway.http1.parser import MAX_BODY, Http1ConnectError, Http1Error, ResponseParser


class _Connection(asyncio.Protocol):
    __slots__ = ("transport", "_parser", "_waiter", "_got_bytes", "closed", "reused", "discarded", "_loop", "_timer")

    def __init__(self, max_body: int = MAX_BODY) -> None:
        self.transport: asyncio.Transport | None = None
        self._parser = ResponseParser(max_body)
        self._waiter: asyncio.Future[tuple[int, bytes]] | None = None
        self._got_bytes = False
        self.closed = False
        self.reused = False
        #: Set once the pool stopped counting this connection (guards against counting it out twice).
        self.discarded = False
        self._timer: asyncio.TimerHandle | None = None

    # -- asyncio.Protocol ------------------------------------------------------------------------

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = transport  # type: ignore[assignment]
        # Cached: asyncio.get_running_loop() costs a getpid() system call on every use.
        self._loop = asyncio.get_running_loop()

    def connection_lost(self, exc: Exception | None) -> None:
        self.closed = True
        waiter = self._take_waiter()
        if waiter is not None and not waiter.done():
            waiter.set_exception(Http1Error(f"connection closed by the server ({exc or 'EOF'})"))

    def data_received(self, data: bytes) -> None:
        if self._waiter is None:
            # Bytes nobody asked for: the stream is out of step; never reuse it.
            self.abort()
            return
        self._got_bytes = True
        try:
            answer = self._parser.feed(data)
        except Http1Error as exc:
            waiter = self._take_waiter()
            self.abort()
            if waiter is not None and not waiter.done():
                waiter.set_exception(exc)
            return
        if answer is None:
            return
        waiter = self._take_waiter()
        if self._parser.close:
            self.abort()
        if waiter is not None and not waiter.done():
            waiter.set_result(answer)

    def eof_received(self) -> bool | None:
        return False

    # -- request/answer ------------------------------------------------------------------------

    def send(self, request: bytes, deadline: float | None = None) -> asyncio.Future[tuple[int, bytes]]:
        """Write ``request``; the future of its answer, failed with ``TimeoutError`` at ``deadline`` (loop time)."""
        assert self._waiter is None and self.transport is not None, "one request at a time per connection"
        self._waiter = waiter = self._loop.create_future()
        self._got_bytes = False
        if deadline is not None:
            self._timer = self._loop.call_at(deadline, self._expire)
        self.transport.write(request)
        return waiter

    def _take_waiter(self) -> asyncio.Future[tuple[int, bytes]] | None:
        """The pending answer's future, which the caller settles; its timer is disarmed."""
        waiter, self._waiter = self._waiter, None
        timer, self._timer = self._timer, None
        if timer is not None:
            timer.cancel()
        return waiter

    def _expire(self) -> None:
        self._timer = None
        waiter = self._take_waiter()
        self.abort()  # a late answer must never be read as the next request's
        if waiter is not None and not waiter.done():
            waiter.set_exception(TimeoutError())

    @property
    def got_bytes(self) -> bool:
        return self._got_bytes

    def abort(self) -> None:
        self.closed = True
        timer, self._timer = self._timer, None
        if timer is not None:
            timer.cancel()
        if self.transport is not None:
            self.transport.abort()


class Http1Pool:
    """Keep-alive connections to one origin (``http://host:port`` or ``https://host``)."""

    __slots__ = ("host", "port", "_ssl", "_server_hostname", "limit", "_max_body", "_idle", "_count", "_waiters",
                 "_closed", "_local_addr")

    def __init__(
        self,
        url: str,
        *,
        limit: int = 256,
        ssl_context: ssl.SSLContext | None = None,
        max_body: int = MAX_BODY,
        source_address: str | None = None,
    ) -> None:
        """``source_address``: the local address every connection is made from (any port), if not the kernel's choice."""
        parts = urlsplit(url)
        if parts.scheme not in ("http", "https") or not parts.hostname:
            raise ValueError(f"not an http(s) URL: {url!r}")
        self.host = parts.hostname
        self.port = parts.port or (443 if parts.scheme == "https" else 80)
        self._ssl = (ssl_context or ssl.create_default_context()) if parts.scheme == "https" else None
        self._server_hostname = self.host if self._ssl else None
        self.limit = limit
        self._max_body = max_body
        # Event-loop confined: touched only between awaits.
        self._idle: list[_Connection] = []
        self._count = 0
        self._waiters: deque[asyncio.Future[None]] = deque()
        self._closed = False
        self._local_addr = (source_address, 0) if source_address else None

    async def post(
        self, headers: dict[str, str], body: bytes, path: str = "/", *, timeout: float | None = None
    ) -> tuple[int, bytes]:
        """POST ``body`` with ``headers`` (which must include Host); the answer's status and body."""
        head = "".join([f"{name}: {value}\r\n" for name, value in headers.items()])
        return await self.request(
            f"POST {path} HTTP/1.1\r\n{head}Content-Length: {len(body)}\r\n\r\n".encode() + body, timeout=timeout
        )

    async def request(self, request: bytes, *, timeout: float | None = None) -> tuple[int, bytes]:
        """Send one complete HTTP/1.1 request; the answer's status and body (``TimeoutError`` after ``timeout`` s)."""
        deadline = None if timeout is None else asyncio.get_running_loop().time() + timeout
        conn = await self._acquire(deadline=deadline)
        try:
            try:
                answer = await conn.send(request, deadline)
            except Http1Error:
                if not (conn.reused and not conn.got_bytes):
                    raise
                # The idle connection was closed under us before the server read a byte of ours.
                self._discard(conn)
                conn = await self._acquire(fresh=True, deadline=deadline)
                answer = await conn.send(request, deadline)
        except BaseException:
            conn.abort()
            self._discard(conn)
            raise
        self._release(conn)
        return answer

    async def _acquire(self, fresh: bool = False, deadline: float | None = None) -> _Connection:
        if self._closed:
            raise Http1Error("the connection pool is closed")
        conn = None if fresh else self._pop_idle()
        if conn is not None:
            return conn
        if deadline is None:
            return await self._wait_or_connect(fresh)
        # The slow path (a free slot, a new connection) counts against the same deadline as the answer. Running out
        # of it here means nothing was sent (no slot came free, or the connection never opened: a partition drops
        # the SYN), which is what Http1ConnectError says to a caller that must tell "not sent" from "maybe landed".
        try:
            async with asyncio.timeout_at(deadline):
                return await self._wait_or_connect(fresh)
        except TimeoutError:
            raise Http1ConnectError(f"no connection to {self.host}:{self.port} within the deadline") from None

    async def _wait_or_connect(self, fresh: bool) -> _Connection:
        while self._count >= self.limit:
            waiter = asyncio.get_running_loop().create_future()
            self._waiters.append(waiter)
            try:
                await waiter
            finally:
                if waiter in self._waiters:
                    self._waiters.remove(waiter)
            conn = None if fresh else self._pop_idle()
            if conn is not None:
                return conn
        self._count += 1
        try:
            loop = asyncio.get_running_loop()
            _, conn = await loop.create_connection(
                lambda: _Connection(self._max_body), self.host, self.port, ssl=self._ssl,
                server_hostname=self._server_hostname, local_addr=self._local_addr,
            )
        except BaseException as exc:
            self._count -= 1
            self._wake()
            if isinstance(exc, OSError):
                raise Http1ConnectError(f"cannot connect to {self.host}:{self.port}: {exc}") from exc
            raise
        return conn

    def _pop_idle(self) -> _Connection | None:
        """An idle connection still open, if any; closed ones found on the way are counted out."""
        while self._idle:
            conn = self._idle.pop()
            if not conn.closed:
                conn.reused = True
                return conn
            self._discard(conn)
        return None

    def _release(self, conn: _Connection) -> None:
        if conn.closed or self._closed:
            self._discard(conn)
            return
        self._idle.append(conn)
        self._wake()

    def _discard(self, conn: _Connection) -> None:
        if conn.discarded:
            return
        conn.discarded = True
        self._count -= 1
        self._wake()

    def _wake(self) -> None:
        while self._waiters:
            waiter = self._waiters.popleft()
            if not waiter.done():
                waiter.set_result(None)
                return

    async def close(self) -> None:
        self.shut()

    def shut(self) -> None:
        """``close()`` for callers outside a coroutine: idle connections close now; busy ones when they finish."""
        self._closed = True
        idle, self._idle = self._idle, []
        for conn in idle:
            conn.abort()
            self._discard(conn)
