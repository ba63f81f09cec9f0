"""The client's one exception tree: the gateway's error codes (its README's table), and failures with no answer.

Every exception a call raises is a ``GatewayError`` with ``code``, ``message``,
``retryable``, ``retry_after`` (seconds, from the answer's ``Retry-After``),
``request_id`` (the ``X-Request-Id`` the gateway logged the call under) and
``status`` (0 when no answer came). httpx's exceptions never reach the caller:
the clients map them to ``ConnectionFailed`` and ``Timeout`` here.

    GatewayError                      any code this tree does not name (by status: 5xx retryable)
    ├── InvalidRequest                400 invalid_request     (also raised before sending: a value no int64/float64 holds)
    │   ├── UnknownView               400 unknown_view
    │   ├── UnknownFeature            400 unknown_feature
    │   ├── KeyTooLong                400 key_too_long
    │   ├── ItemTooLarge              400 item_too_large
    │   ├── BodyTooLarge              413 body_too_large
    │   ├── HeadersTooLarge           431 headers_too_large
    │   ├── RequestTimeout            408 request_timeout     retryable (nothing was applied)
    │   ├── RouteNotFound             404 route_not_found
    │   └── MethodNotAllowed          405 method_not_allowed
    ├── NotFound                      404 not_found
    ├── Unauthorized                  401 unauthorized
    ├── Forbidden                     403 forbidden
    ├── Unavailable                   503                     retryable, Retry-After
    │   ├── PrimarySwitching          503 primary_switching
    │   ├── PrimaryUnreachable        503 primary_unreachable  may have landed when its message says so
    │   ├── NoRoutingRule             503 no_routing_rule
    │   ├── Draining                  503 draining             may have landed
    │   └── Overloaded                503 overloaded
    ├── UpstreamError                 502 upstream_error
    │   ├── Throttled                 429 throttled            retryable
    │   ├── UpstreamUnavailable       503 upstream_unavailable retryable, may have landed
    │   ├── UpstreamTimeout           504 upstream_timeout     retryable, may have landed
    │   └── TableNotFound             503 table_not_found
    ├── Internal                      500 internal
    └── TransportError                no answer from the gateway (status 0)
        ├── ConnectionFailed          no connection, or it broke before an answer   retryable
        └── Timeout                   no answer within the call's deadline

``may_have_landed`` says, for a write, whether it may have been applied although
the call failed (the README's "Did my write land?"): the clients retry those
with the same idempotency key, so a write that raises one of them was applied
at most once, and reading the key tells which.
"""

from __future__ import annotations

from typing import Any, ClassVar

#: The gateway's wording when a forward reached a peer that gave no answer (gateway/peer/client.py).
_PEER_MAY_HAVE_LANDED = "may or may not have"


class GatewayError(Exception):
    """Base of every error a call raises."""

    status: int = 0
    code: str = "error"
    retryable: bool = False
    #: Codes whose write may have been applied although the call failed.
    _MAYBE: ClassVar[frozenset[str]] = frozenset({"upstream_timeout", "upstream_unavailable", "draining"})

    def __init__(
        self,
        message: str,
        *,
        status: int | None = None,
        code: str | None = None,
        retryable: bool | None = None,
        retry_after: float | None = None,
        request_id: str | None = None,
    ) -> None:
        super().__init__(message)
        self.message = message
        if status is not None:
            self.status = status
        if code is not None:
            self.code = code
        if retryable is not None:
            self.retryable = retryable
        self.retry_after = retry_after
        self.request_id = request_id

    @property
    def may_have_landed(self) -> bool:
        """For a write: whether it may have been applied although this error was the answer."""
        return self.code in self._MAYBE

    def __str__(self) -> str:
        where = f" (request {self.request_id})" if self.request_id else ""
        return f"{self.code}: {self.message}{where}"

    def __repr__(self) -> str:
        return f"{type(self).__name__}(code={self.code!r}, message={self.message!r}, request_id={self.request_id!r})"


class InvalidRequest(GatewayError):
    status, code = 400, "invalid_request"


class UnknownView(InvalidRequest):
    code = "unknown_view"


class UnknownFeature(InvalidRequest):
    code = "unknown_feature"


class KeyTooLong(InvalidRequest):
    code = "key_too_long"


class ItemTooLarge(InvalidRequest):
    code = "item_too_large"


class BodyTooLarge(InvalidRequest):
    status, code = 413, "body_too_large"


class HeadersTooLarge(InvalidRequest):
    status, code = 431, "headers_too_large"


class RequestTimeout(InvalidRequest):
    status, code, retryable = 408, "request_timeout", True


class RouteNotFound(InvalidRequest):
    status, code = 404, "route_not_found"


class MethodNotAllowed(InvalidRequest):
    status, code = 405, "method_not_allowed"


class NotFound(GatewayError):
    status, code = 404, "not_found"


class Unauthorized(GatewayError):
    status, code = 401, "unauthorized"


class Forbidden(GatewayError):
    status, code = 403, "forbidden"


class Unavailable(GatewayError):
    status, code, retryable = 503, "unavailable", True


class PrimarySwitching(Unavailable):
    code = "primary_switching"


class PrimaryUnreachable(Unavailable):
    code = "primary_unreachable"

    @property
    def may_have_landed(self) -> bool:
        # The gateway says which: "Nothing was sent; retrying is safe" or that the write may have landed.
        return _PEER_MAY_HAVE_LANDED in self.message


class NoRoutingRule(Unavailable):
    code = "no_routing_rule"


class Draining(Unavailable):
    code = "draining"


class Overloaded(Unavailable):
    code = "overloaded"


class UpstreamError(GatewayError):
    status, code = 502, "upstream_error"


class Throttled(UpstreamError):
    status, code, retryable = 429, "throttled", True


class UpstreamUnavailable(UpstreamError):
    status, code, retryable = 503, "upstream_unavailable", True


class UpstreamTimeout(UpstreamError):
    status, code, retryable = 504, "upstream_timeout", True


class TableNotFound(UpstreamError):
    status, code = 503, "table_not_found"


class Internal(GatewayError):
    status, code = 500, "internal"


class TransportError(GatewayError):
    """No answer came from the gateway."""

    status = 0

    def __init__(self, message: str, *, sent: bool, **kwargs: Any) -> None:
        super().__init__(message, **kwargs)
        #: Whether any byte of the request may have reached the gateway.
        self.sent = sent

    @property
    def may_have_landed(self) -> bool:
        return self.sent


class ConnectionFailed(TransportError):
    """The gateway could not be reached, or the connection broke before its answer."""

    code, retryable = "connection_failed", True


class Timeout(TransportError):
    """No answer within the call's deadline (the ``timeout`` of the call or of the client)."""

    code = "timeout"


#: Every gateway code this tree names, to its class.
BY_CODE: dict[str, type[GatewayError]] = {
    cls.code: cls
    for cls in (
        InvalidRequest, UnknownView, UnknownFeature, KeyTooLong, ItemTooLarge, BodyTooLarge, HeadersTooLarge,
        RequestTimeout, RouteNotFound, MethodNotAllowed, NotFound, Unauthorized, Forbidden, PrimarySwitching,
        PrimaryUnreachable, NoRoutingRule, Draining, Overloaded, UpstreamError, Throttled, UpstreamUnavailable,
        UpstreamTimeout, TableNotFound, Internal,
    )
}


def from_answer(
    status: int, error: Any, *, retry_after: float | None, request_id: str | None
) -> GatewayError:
    """The exception for an error answer: ``error`` is the body's ``error`` object (or anything else a proxy sent)."""
    if isinstance(error, dict) and isinstance(error.get("code"), str):
        code = error["code"]
        message = str(error.get("message", ""))
        retryable = bool(error.get("retryable", False))
        cls = BY_CODE.get(code, GatewayError)
        return cls(message, status=status, code=code, retryable=retryable, retry_after=retry_after, request_id=request_id)
    # Not the gateway's JSON (a proxy in between, a truncated body): judged by its status alone. A 503 that
    # names a time to come back is a temporary refusal whoever sent it.
    retryable = status == 503 and retry_after is not None
    cls = Unavailable if status == 503 else GatewayError
    return cls(
        f"HTTP {status} without a gateway error body", status=status, code=f"http_{status}", retryable=retryable,
        retry_after=retry_after, request_id=request_id,
    )
