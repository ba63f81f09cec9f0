"""Feature Gateway's Python client: ``Client`` and ``AsyncClient``, their sessions, and the errors they raise.

    from feature_gateway_client import Client
    with Client() as gateway:                       # FEATURE_GATEWAY_URL, FEATURE_GATEWAY_TOKEN, or the sidecar
        session = gateway.session()
        session.put("users", "u-42", {"age": 41})
        print(session.get("users", "u-42").features)    # its own write, in whichever region it lands

Module by module: ``client`` / ``async_client`` (calls, retries within a deadline), ``protocol`` (what is sent,
what answers mean), ``retry`` (the retry decision), ``session`` (read-your-writes state and tokens), ``errors``
(the exception tree), ``values`` (exact numbers), ``models`` (answers), ``settings`` (arguments and environment).
"""

from feature_gateway_client.async_client import AsyncClient, AsyncSession
from feature_gateway_client.client import Client, Session
from feature_gateway_client.errors import (
    BodyTooLarge,
    ConnectionFailed,
    Draining,
    Forbidden,
    GatewayError,
    HeadersTooLarge,
    Internal,
    InvalidRequest,
    ItemTooLarge,
    KeyTooLong,
    MethodNotAllowed,
    NoRoutingRule,
    NotFound,
    Overloaded,
    PrimarySwitching,
    PrimaryUnreachable,
    RequestTimeout,
    RouteNotFound,
    TableNotFound,
    Throttled,
    Timeout,
    TransportError,
    Unauthorized,
    Unavailable,
    UnknownFeature,
    UnknownView,
    UpstreamError,
    UpstreamTimeout,
    UpstreamUnavailable,
)
from feature_gateway_client.models import Entity, ReadResult, WriteResult
from feature_gateway_client.retry import RetryPolicy
from feature_gateway_client.session import InvalidSessionToken

__all__ = [
    "AsyncClient", "AsyncSession", "Client", "Session", "Entity", "ReadResult", "WriteResult", "RetryPolicy",
    "InvalidSessionToken", "GatewayError", "InvalidRequest", "UnknownView", "UnknownFeature", "KeyTooLong",
    "ItemTooLarge", "BodyTooLarge", "HeadersTooLarge", "RequestTimeout", "RouteNotFound", "MethodNotAllowed",
    "NotFound", "Unauthorized", "Forbidden", "Unavailable", "PrimarySwitching", "PrimaryUnreachable",
    "NoRoutingRule", "Draining", "Overloaded", "UpstreamError", "Throttled", "UpstreamUnavailable",
    "UpstreamTimeout", "TableNotFound", "Internal", "TransportError", "ConnectionFailed", "Timeout",
]
