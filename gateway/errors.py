"""The gateway's one exception tree.

Every error the gateway can answer with is a subclass of ``GatewayError`` and
knows its HTTP status, its machine-readable ``code`` (DESIGN.md §4) and whether
a caller may retry it. Handlers never map errors by hand: they render
``error.body()`` with ``error.status``. Third-party exceptions (aiohttp,
botocore, orjson) never cross a module boundary; the module that calls the
library maps them here (``raise StoreThrottled(...) from exc``).

    GatewayError                      500 internal
    ├── RequestError                  400 invalid_request
    │   ├── UnknownView               400 unknown_view
    │   ├── UnknownFeature            400 unknown_feature
    │   ├── KeyTooLong                400 key_too_long
    │   ├── ItemTooLarge              400 item_too_large
    │   ├── BodyTooLarge              413 body_too_large
    │   ├── HeadersTooLarge           431 headers_too_large
    │   ├── RequestTimeout            408 request_timeout     retryable (the body came too slowly; nothing was applied)
    │   ├── RouteNotFound             404 route_not_found
    │   └── MethodNotAllowed          405 method_not_allowed
    ├── NotFound                      404 not_found
    ├── Unauthorized                  401 unauthorized        (peer API: unsigned, forged, expired, replayed)
    │   └── NotAuthenticated          401 unauthorized        (downstream: no bearer token, or an unknown one)
    ├── Forbidden                     403 forbidden           (downstream: the token may not read/write that view)
    ├── NotPrimary                    409 not_primary         (peer API)
    ├── PeerError                     the status and code a peer gateway answered with
    ├── Unavailable                   503 (always with Retry-After)
    │   ├── PrimarySwitching          503 primary_switching
    │   ├── PrimaryUnreachable        503 primary_unreachable
    │   ├── NoRoutingRule             503 no_routing_rule
    │   ├── Draining                  503 draining            (SIGTERM: in-flight past shutdown_grace)
    │   └── Overloaded                503 overloaded          (over gateway.max_concurrent_requests)
    └── StoreError                    502 upstream_error      (DynamoDB said something unexpected)
        ├── StoreValidation           400 invalid_request     (DynamoDB ValidationException)
        ├── StoreThrottled            429 throttled           retryable
        ├── StoreUnavailable          503 upstream_unavailable retryable
        ├── StoreTimeout              504 upstream_timeout    retryable
        └── TableNotFound             503 table_not_found

``ConditionFailed`` is deliberately *not* a ``GatewayError``: a failed
condition is a normal outcome of a write (stale event time, duplicate
idempotency key), reported to the caller as ``applied: false``, never as an
HTTP error.
"""

from __future__ import annotations

from typing import Any, ClassVar

import orjson


class GatewayError(Exception):
    """Base of every error the gateway answers with."""

    status: ClassVar[int] = 500
    code: ClassVar[str] = "internal"
    retryable: ClassVar[bool] = False
    #: Seconds for the ``Retry-After`` header; ``None`` sends no header.
    retry_after: float | None = None

    def __init__(self, message: str, *, retry_after: float | None = None) -> None:
        super().__init__(message)
        self.message = message
        if retry_after is not None:
            self.retry_after = retry_after

    def body(self) -> bytes:
        return orjson.dumps(
            {"error": {"code": self.code, "message": self.message, "retryable": self.retryable}}
        )

    def headers(self) -> dict[str, str]:
        if self.retry_after is None:
            return {}
        # Retry-After takes whole seconds (RFC 9110 §10.2.3); never advertise 0.
        return {"Retry-After": str(max(1, round(self.retry_after)))}


class RequestError(GatewayError):
    """The request itself is wrong; retrying it unchanged will fail again."""

    status = 400
    code = "invalid_request"


class UnknownView(RequestError):
    code = "unknown_view"


class UnknownFeature(RequestError):
    code = "unknown_feature"


class KeyTooLong(RequestError):
    code = "key_too_long"


class ItemTooLarge(RequestError):
    code = "item_too_large"


class BodyTooLarge(RequestError):
    status = 413
    code = "body_too_large"


class HeadersTooLarge(RequestError):
    status = 431
    code = "headers_too_large"


class RequestTimeout(RequestError):
    """The caller sent its body too slowly for the request's deadline; nothing was applied, so a retry is safe."""

    status = 408
    code = "request_timeout"
    retryable = True


class RouteNotFound(RequestError):
    status = 404
    code = "route_not_found"


class MethodNotAllowed(RequestError):
    """The path exists but not with that method; the answer's ``Allow`` header lists those it takes (RFC 9110)."""

    status = 405
    code = "method_not_allowed"

    def __init__(self, method: str, path: str, allow: tuple[str, ...]) -> None:
        super().__init__(f"{method[:32]} is not allowed on {path[:256]}; use {', '.join(allow)}.")
        self.allow = allow

    def headers(self) -> dict[str, str]:
        return {"Allow": ", ".join(self.allow)}


class NotFound(GatewayError):
    status = 404
    code = "not_found"


class Unauthorized(GatewayError):
    """Peer API: the request is not signed with the shared secret, or its signature is stale or replayed."""

    status = 401
    code = "unauthorized"


class NotAuthenticated(Unauthorized):
    """Downstream, with auth on: no bearer token, or one the tokens file does not hold."""

    def headers(self) -> dict[str, str]:
        return {"WWW-Authenticate": 'Bearer realm="feature-gateway"'}


class Forbidden(GatewayError):
    """Downstream, with auth on: the caller's token may not read (or write) that view."""

    status = 403
    code = "forbidden"


class PeerError(GatewayError):
    """A peer gateway answered a forward with an error; it is passed on with the peer's status and code."""

    def __init__(self, status: int, code: str, message: str, retryable: bool, retry_after: float | None = None) -> None:
        super().__init__(message, retry_after=retry_after)
        self.status = status  # type: ignore[misc]
        self.code = code  # type: ignore[misc]
        self.retryable = retryable  # type: ignore[misc]


class NotPrimary(GatewayError):
    """Peer API: this region is not the active primary for the scope at that epoch."""

    status = 409
    code = "not_primary"
    retryable = True

    def __init__(self, message: str, *, rule: dict[str, Any] | None = None) -> None:
        super().__init__(message)
        self.rule = rule

    def body(self) -> bytes:
        return orjson.dumps(
            {
                "error": {"code": self.code, "message": self.message, "retryable": self.retryable},
                "rule": self.rule,
            }
        )


class Unavailable(GatewayError):
    """Temporarily unable to serve; always sent with ``Retry-After``."""

    status = 503
    code = "unavailable"
    retryable = True
    retry_after = 1.0


class PrimarySwitching(Unavailable):
    code = "primary_switching"


class PrimaryUnreachable(Unavailable):
    code = "primary_unreachable"


class NoRoutingRule(Unavailable):
    """No rule (not even ``default``) covers the write's scope: an operator must add one with gatewayctl."""

    code = "no_routing_rule"
    retry_after = 5.0


class Draining(Unavailable):
    code = "draining"


class Overloaded(Unavailable):
    """The worker already serves ``gateway.max_concurrent_requests`` requests; refused at once, never queued."""

    code = "overloaded"


class StoreError(GatewayError):
    """DynamoDB answered with an error the gateway has no better name for."""

    status = 502
    code = "upstream_error"


class StoreValidation(StoreError):
    """DynamoDB refused the request as invalid (``ValidationException``)."""

    status = 400
    code = "invalid_request"


class StoreThrottled(StoreError):
    status = 429
    code = "throttled"
    retryable = True
    retry_after = 1.0


class StoreUnavailable(StoreError):
    """DynamoDB could not be reached, or answered 5xx."""

    status = 503
    code = "upstream_unavailable"
    retryable = True
    retry_after = 1.0


class StoreTimeout(StoreError):
    status = 504
    code = "upstream_timeout"
    retryable = True


class TableNotFound(StoreError):
    """The view's table does not exist in this region: a deployment problem."""

    status = 503
    code = "table_not_found"
    retry_after = 5.0


class ConditionFailed(Exception):
    """A conditional write was not applied. ``old_item`` is the stored item, if DynamoDB returned it."""

    def __init__(self, old_item: dict[str, Any] | None) -> None:
        super().__init__("condition not met")
        self.old_item = old_item
