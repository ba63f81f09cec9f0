"""The connection layer under every listener: JSON for malformed HTTP, idle connections reaped, connections capped.

aiohttp's low-level server parses HTTP and calls ``Frontend.handle`` with each
request; what it cannot parse it answers itself, in text/plain. This module
subclasses its ``Server`` and ``RequestHandler`` (aiohttp's documented
extension points, ``aiohttp.web_protocol``) so that:

- **Every answer is JSON.** A request aiohttp could not parse (a bad
  ``Content-Length``, a malformed request line, TLS bytes on the plain port, a
  missing ``Host``, a head over 8190 bytes a line) is answered from the error
  tree: 400 ``invalid_request`` or 431 ``headers_too_large``, naming the
  problem, and the connection is closed (its framing cannot be trusted).
  Anything else aiohttp would answer itself (a handler that raised past
  ``Frontend``, which does not happen) is 500 ``internal``.
- **Idle connections are reaped.** A connection with no complete request head
  within ``gateway.idle_timeout`` seconds of being opened, or of its last
  answer, is closed: an idle keep-alive, a client that connected and said
  nothing, and one sending its headers a byte at a time all count as idle
  (aiohttp's keep-alive timer, which partial heads do not reset). A slow
  *body* is bounded by the request's deadline instead (408, gateway/api/frontend.py).
- **A crowd's memory is given back.** After many connections closed, the heap
  they freed is returned to the OS (``give_memory_back``), so a worker's RSS
  does not stay at the high-water mark of its busiest minute.
- **Connections are capped.** Past its cap of open connections
  (``gateway.max_connections``, ``peer.max_connections``; per worker), a new one is answered 503
  ``overloaded`` with ``Retry-After`` and closed at once, before anything of it
  is read: memory and file descriptors stay bounded whatever strangers open.

Invariant: no byte a client sends, however malformed, gets an answer that is
not JSON with a ``code`` and a message, nor an exception out of this module.
"""

from __future__ import annotations

import asyncio
import ctypes
import ctypes.util
import functools
import gc
from collections.abc import Awaitable, Callable
from typing import Any

from aiohttp import web
from aiohttp.http_exceptions import LineTooLong
from aiohttp.web_protocol import RequestHandler

from gateway.errors import GatewayError, HeadersTooLarge, Overloaded, RequestError

#: Seconds the rest of an unread body is read and dropped after its answer, before the connection closes.
LINGERING_TIME = 1.0
#: The answer to a connection over the cap, written before its request is read (HTTP/1.1 lets a server answer early).
_OVER_CAP = Overloaded(
    "This gateway worker has reached its maximum of open connections on this listener; retry shortly (or elsewhere)."
)


class GatewayProtocol(RequestHandler):
    """One connection: aiohttp's handler with JSON errors and the listener's connection cap."""

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        super().connection_made(transport)
        server = self._manager
        assert isinstance(server, GatewayServer)
        if server.open_connections() > server.max_connections:
            body = _OVER_CAP.body()
            head = (
                f"HTTP/1.1 503 Service Unavailable\r\nContent-Type: application/json\r\nContent-Length: {len(body)}\r\n"
                f"Retry-After: {_OVER_CAP.headers()['Retry-After']}\r\nConnection: close\r\n\r\n"
            )
            transport.write(head.encode() + body)  # type: ignore[attr-defined]
            self.force_close()
            transport.close()

    def handle_error(
        self, request: web.BaseRequest, status: int = 500, exc: BaseException | None = None, message: str | None = None
    ) -> web.StreamResponse:
        """aiohttp's answer for what it could not hand to ``Frontend``, as a JSON error of the tree."""
        error: GatewayError
        if isinstance(exc, LineTooLong):
            error = HeadersTooLarge(f"The request's head is too large ({_problem(exc, message)}); keep each header "
                                    "line under 8190 bytes.")
        elif status < 500:
            error = RequestError(f"The request is not HTTP/1.1 this gateway can read: {_problem(exc, message)}.")
        else:
            self.log_exception("error serving a request from %s", request.remote, exc_info=exc)
            error = GatewayError("The gateway failed unexpectedly; the error is logged. Retrying may help.")
        if request.writer.output_size > 0:
            raise ConnectionError("an answer was already under way; the connection is closed instead")
        response = web.Response(status=error.status, body=error.body(), content_type="application/json",
                                headers=error.headers())
        response.force_close()
        return response


def _problem(exc: BaseException | None, message: str | None) -> str:
    text = message or (getattr(exc, "message", None) or str(exc) if exc is not None else "") or "malformed"
    # aiohttp quotes the offending bytes; keep the sentence short and printable.
    return " ".join(text.split())[:200]


class GatewayServer(web.Server):
    """aiohttp's low-level server, making a ``GatewayProtocol`` per connection and capping them."""

    def __init__(
        self,
        handler: Callable[[web.BaseRequest], Awaitable[web.StreamResponse]],
        *,
        max_connections: int,
        idle_timeout: float,
        **kwargs: Any,
    ) -> None:
        # lingering_time: after an answer to a request whose body was not read whole (408, 413, a bad body),
        # aiohttp keeps reading and dropping what still arrives, so the client is not reset before it reads the
        # answer; 1 s instead of its 10 s, so a slow sender cannot hold the connection much past its answer.
        super().__init__(handler, keepalive_timeout=idle_timeout, lingering_time=LINGERING_TIME, **kwargs)
        self.max_connections = max_connections

    def open_connections(self) -> int:
        """Connections open now (aiohttp's own record of them; its ``connections`` property copies it to a list)."""
        return len(self._connections)

    def __call__(self) -> GatewayProtocol:
        return GatewayProtocol(self, loop=self._loop, **self._kwargs)


#: Connections that must have closed since the last look before the freed memory is handed back.
TRIM_AFTER_CLOSED = 256
#: Seconds between looks.
TRIM_INTERVAL = 5.0


def _malloc_trim() -> Callable[[], object] | None:
    """glibc's ``malloc_trim(0)``, or ``None`` where there is none (musl, macOS)."""
    try:
        libc = ctypes.CDLL(ctypes.util.find_library("c") or "libc.so.6")
        return functools.partial(libc.malloc_trim, 0)
    except (OSError, AttributeError):
        return None


async def give_memory_back(
    servers: list[GatewayServer],
    sleep: Callable[[float], Awaitable[None]] = asyncio.sleep,
    trim: Callable[[], object] | None = None,
) -> None:
    """An owned task: after a crowd of connections closes, return the heap they freed to the OS.

    Connection buffers are freed into glibc's heap, which keeps them for reuse, so a worker's RSS
    would stay at the high-water mark of its busiest minute. ``malloc_trim`` hands free pages back;
    it walks the heap (a few ms), so it runs only when many connections closed since it last ran.
    """
    trim = trim or _malloc_trim()
    if trim is None:
        return
    peak = 0
    while True:
        await sleep(TRIM_INTERVAL)
        open_now = sum(server.open_connections() for server in servers)
        peak = max(peak, open_now)
        if peak - open_now >= TRIM_AFTER_CLOSED:
            gc.collect()
            trim()
            peak = open_now
