"""``Client``: the blocking client, and its ``Session``. ``async_client.py`` is the same, line for line, with ``await``.

Each call has one deadline (the client's ``timeout`` or the call's): every
attempt sends the time left as ``X-Request-Timeout`` and waits at most that
long, and failed attempts are retried by ``retry.RetryPolicy`` only while the
deadline allows. Network I/O goes through one httpx transport (its
``handle_request`` seam), so tests pass ``transport=httpx.MockTransport(...)``.

Why the transport and not ``httpx.Client``: the client layer (cookies,
redirects, auth flows, event hooks, URL merging) costs ~70 µs a call here and
this client needs none of it; ``python -m loadtest.client_bench`` measures both.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Iterable, Mapping
from datetime import datetime
from typing import Any

import httpx

from feature_gateway_client import protocol
from feature_gateway_client.errors import ConnectionFailed, GatewayError, InvalidRequest, NotFound, Timeout
from feature_gateway_client.models import Entity, ReadResult, WriteResult
from feature_gateway_client.protocol import Answer, Call
from feature_gateway_client.retry import Deadline, RetryPolicy
from feature_gateway_client.session import DEFAULT_MAX_KEYS, SessionState
from feature_gateway_client.settings import Settings

EventTime = int | str | datetime | None


class Client:
    """A blocking client of one gateway (usually the sidecar on localhost); thread-safe, pooled connections."""

    def __init__(
        self,
        base_url: str | None = None,
        *,
        token: str | None = None,
        timeout: float | None = None,
        retry: RetryPolicy | None = None,
        limits: httpx.Limits | None = None,
        transport: httpx.BaseTransport | None = None,
        clock: Callable[[], float] = time.monotonic,
        sleep: Callable[[float], None] = time.sleep,
        wall_ms: Callable[[], int] = protocol.wall_ms,
    ) -> None:
        self.settings = Settings.resolve(base_url, token, timeout, retry, limits)
        self._url = httpx.URL(self.settings.base_url)
        self._headers = self.settings.headers()
        self._transport = transport or httpx.HTTPTransport(limits=self.settings.limits, retries=0)
        self._clock, self._sleep, self._wall_ms = clock, sleep, wall_ms

    def close(self) -> None:
        self._transport.close()

    def __enter__(self) -> Client:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def session(self, token: str | None = None, *, max_keys: int = DEFAULT_MAX_KEYS) -> Session:
        """A session that reads its own writes in any region; ``token`` resumes one exported as ``session.token``."""
        state = SessionState.from_token(token, max_keys) if token is not None else SessionState(max_keys)
        return Session(self, state)

    # -- reads -----------------------------------------------------------------------------------

    def get(
        self, view: str, key: str, features: Iterable[str] | None = None, consistency: str = "eventual", *,
        min_version: str | None = None, timeout: float | None = None,
    ) -> Entity:
        """One entity; raises ``NotFound`` when there is none."""
        return self._get(view, key, features, consistency, min_version, self._deadline(timeout))

    def _get(
        self, view: str, key: str, features: Iterable[str] | None, consistency: str, min_version: str | None,
        deadline: Deadline,
    ) -> Entity:
        return protocol.entity(self._send(protocol.get(view, key, features, consistency, min_version), deadline))

    def read(
        self, view: str, keys: list[str], features: Iterable[str] | None = None, consistency: str = "eventual", *,
        timeout: float | None = None,
    ) -> list[ReadResult]:
        """Up to 100 keys in one request, answered in request order."""
        return self._read(view, keys, features, consistency, self._deadline(timeout))

    def _read(
        self, view: str, keys: list[str], features: Iterable[str] | None, consistency: str, deadline: Deadline
    ) -> list[ReadResult]:
        return protocol.read_results(self._send(protocol.read(view, keys, features, consistency), deadline))

    def routing(self, *, timeout: float | None = None) -> dict[str, Any]:
        """The rules this gateway routes writes by (``GET /v1/routing``)."""
        return protocol.values.loads(self._send(Call("GET", "/v1/routing"), self._deadline(timeout)).body)

    def health(self, *, timeout: float | None = None) -> dict[str, Any]:
        """``GET /readyz`` as it answers, ready or not (``{"ready": bool, "region", "reasons"?}``)."""
        answer = self._attempt(Call("GET", "/readyz"), self._deadline(timeout).left(), protocol.new_key())
        return protocol.readiness(answer)

    # -- writes ----------------------------------------------------------------------------------

    def put(
        self, view: str, key: str, features: Mapping[str, Any], event_time: EventTime = None, *,
        idempotency_key: str | None = None, timeout: float | None = None,
    ) -> WriteResult:
        """Write an entity's features; every attempt carries one idempotency key and one event time."""
        idem = idempotency_key or protocol.new_key()
        call = protocol.put(view, key, features, protocol.event_time_of(event_time, self._wall_ms()), idem)
        return protocol.write_answer(key, idem, self._send(call, self._deadline(timeout)))

    def delete(
        self, view: str, key: str, event_time: int | datetime | None = None, *,
        idempotency_key: str | None = None, timeout: float | None = None,
    ) -> WriteResult:
        idem = idempotency_key or protocol.new_key()
        when = protocol.event_time_of(event_time, self._wall_ms())
        if not isinstance(when, int):
            raise InvalidRequest("a delete's event_time is epoch milliseconds or an aware datetime")
        return protocol.write_answer(key, idem, self._send(protocol.delete(view, key, when, idem), self._deadline(timeout)))

    def write(
        self, view: str, records: Iterable[Mapping[str, Any]], *, timeout: float | None = None
    ) -> list[WriteResult]:
        """Up to 25 records ``{"key", "features", "event_time"?, "idempotency_key"?}``; results in order.

        A record answered with a retryable error is sent again (alone with the others that were) while the
        deadline allows; one that still fails carries its ``error``, and the others are unaffected.
        """
        pending = protocol.records_of(records, self._wall_ms())
        deadline = self._deadline(timeout)
        done: dict[int, WriteResult] = {}
        todo = list(range(len(pending)))
        attempt = 0
        while True:
            attempt += 1
            answer = self._send(protocol.write(view, [pending[i] for i in todo]), deadline)
            failed: list[int] = []
            error: GatewayError | None = None
            for i, raw in zip(todo, protocol.batch_results(answer)):
                done[i] = protocol.write_result(pending[i].key, pending[i].idempotency_key, raw, answer.request_id)
                if done[i].error is not None and done[i].error.retryable:
                    failed.append(i)
                    error = done[i].error
            wait = None if error is None else self.settings.retry.wait(error, attempt, deadline.left())
            if wait is None:
                return [done[i] for i in range(len(pending))]
            self._sleep(wait)
            todo = failed

    # -- the wire --------------------------------------------------------------------------------

    def _deadline(self, timeout: float | None) -> Deadline:
        return Deadline(self.settings.timeout if timeout is None else timeout, self._clock)

    def _send(self, call: Call, deadline: Deadline) -> Answer:
        """The call's answer, once an attempt succeeds; else the last attempt's error, within the deadline."""
        request_id = protocol.new_key()
        attempt = 0
        while True:
            attempt += 1
            try:
                answer = self._attempt(call, deadline.left(), request_id)
                error = protocol.error_of(answer)
                if error is None:
                    return answer
            except GatewayError as failed:
                error = failed
            wait = self.settings.retry.wait(error, attempt, deadline.left())
            if wait is None:
                raise error
            self._sleep(wait)

    def _attempt(self, call: Call, left: float, request_id: str) -> Answer:
        if left <= 0:
            raise Timeout("the call's deadline passed before an attempt could start", sent=False, request_id=request_id)
        headers = [*self._headers, (b"X-Request-Timeout", Deadline.header(left).encode()), (b"X-Request-Id", request_id.encode())]
        if call.idempotency_key is not None:
            headers.append((b"Idempotency-Key", call.idempotency_key.encode()))
        if call.body is not None:
            headers.append((b"Content-Type", b"application/json"))
        request = httpx.Request(
            call.method, self._url.copy_with(raw_path=call.path.encode("ascii")), headers=headers, content=call.body,
            extensions={"timeout": {"connect": left, "read": left, "write": left, "pool": left}},
        )
        try:
            response = self._transport.handle_request(request)
            try:
                body = response.read()
            finally:
                response.close()
        except httpx.TimeoutException as exc:
            sent = not isinstance(exc, (httpx.ConnectTimeout, httpx.PoolTimeout))
            raise Timeout(f"no answer from {self._url} within the deadline ({exc!r})", sent=sent, request_id=request_id) from None
        except httpx.ConnectError as exc:
            raise ConnectionFailed(f"cannot connect to {self._url}: {exc}", sent=False, request_id=request_id) from None
        except httpx.TransportError as exc:
            raise ConnectionFailed(
                f"the connection to {self._url} broke before an answer: {exc!r}", sent=True, request_id=request_id
            ) from None
        headers_in = response.headers
        return Answer(
            response.status_code, body, protocol.retry_after_of(headers_in.get("retry-after")),
            headers_in.get("x-request-id", request_id),
        )


class Session:
    """Reads its own writes in any region: sends, per key, the newest version it has seen as ``min_version``.

    Not thread-safe: one per logical user or request flow. ``token`` exports it; ``Client.session(token=...)``
    resumes it in another process. Limits: ``session.SessionState``'s docstring.
    """

    def __init__(self, client: Client, state: SessionState) -> None:
        self.client = client
        self.state = state

    @property
    def token(self) -> str:
        return self.state.token()

    def get(
        self, view: str, key: str, features: Iterable[str] | None = None, consistency: str = "eventual", *,
        timeout: float | None = None,
    ) -> Entity:
        return self._get(view, key, features, consistency, self.client._deadline(timeout))

    def _get(self, view: str, key: str, features: Iterable[str] | None, consistency: str, deadline: Deadline) -> Entity:
        min_version, strong = self.state.wanted(view, key)
        found = self.client._get(view, key, features, "strong" if strong else consistency, min_version, deadline)
        self.state.observe(view, key, found.version)
        return found

    def read(
        self, view: str, keys: list[str], features: Iterable[str] | None = None, consistency: str = "eventual", *,
        timeout: float | None = None,
    ) -> list[ReadResult]:
        """A batch read; keys whose answer is older than what the session knows are read again one by one."""
        deadline = self.client._deadline(timeout)
        fixed = []
        for result in self.client._read(view, keys, features, consistency, deadline):
            if not self.state.satisfied_by(view, result.key, result.version if result.found else None):
                try:
                    again = self._get(view, result.key, features, consistency, deadline)
                    result = ReadResult(result.key, True, again.features, again.version)
                except NotFound:
                    result = ReadResult(result.key, False, {}, None)
            elif result.found:
                self.state.observe(view, result.key, result.version)
            fixed.append(result)
        return fixed

    def put(
        self, view: str, key: str, features: Mapping[str, Any], event_time: EventTime = None, *,
        idempotency_key: str | None = None, timeout: float | None = None,
    ) -> WriteResult:
        result = self.client.put(view, key, features, event_time, idempotency_key=idempotency_key, timeout=timeout)
        if result.version is not None:
            self.state.observe(view, key, result.version)
        return result

    def delete(
        self, view: str, key: str, event_time: int | datetime | None = None, *,
        idempotency_key: str | None = None, timeout: float | None = None,
    ) -> WriteResult:
        result = self.client.delete(view, key, event_time, idempotency_key=idempotency_key, timeout=timeout)
        observe_delete(self.state, view, key, result)
        return result

    def write(self, view: str, records: Iterable[Mapping[str, Any]], *, timeout: float | None = None) -> list[WriteResult]:
        results = self.client.write(view, records, timeout=timeout)
        for result in results:
            if result.version is not None:
                self.state.observe(view, result.key, result.version)
        return results


def observe_delete(state: SessionState, view: str, key: str, result: WriteResult) -> None:
    if result.applied or result.reason == "not_found":
        state.observe(view, key, result.version, deleted=True)
    elif result.version is not None:
        state.observe(view, key, result.version)
