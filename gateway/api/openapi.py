"""OpenAPI 3.1 descriptions of this gateway's downstream API and peer API, built from its configuration.

``GET /openapi.json`` on the downstream listener answers ``downstream(config)``
(no token needed: it names views and types, never data); the peer listener
answers ``peer(config)`` at ``/internal/v1/openapi.json``, signed like every
peer request. A document describes *this* gateway: one path per configured
view, with that view's declared features and their types, so a generated
client or a fuzzer (schemathesis, in tests/integration/test_openapi.py) sees
exactly what the gateway accepts.

Invariants:
- Every route the listeners serve is described, and nothing else
  (tests/unit/api/test_openapi.py compares the paths with the routers).
- Input rules are not restated: limits and patterns come from the modules
  that enforce them (gateway/features/records.py, values.py, items.py,
  gateway/deadlines.py), so the description cannot drift from the checks.
  JSON Schema counts characters where the gateway counts UTF-8 bytes (names,
  keys): the two agree on ASCII, and the descriptions say bytes.
- A number is a float64 value in DynamoDB's range. JSON Schema cannot tell
  ``1e20`` from ``100000000000000000000``: the gateway takes the first (a
  float64 literal, exact) and refuses the second (an integer literal beyond
  int64), which the description can say only in words (``Float``).
"""

from __future__ import annotations

from typing import Any

from gateway import errors
from gateway.config import MAX_FEATURE_NAME_BYTES, Config, ViewConfig
from gateway.deadlines import TIMEOUT_HEADER, TIMEOUT_PATTERN
from gateway.features import records
from gateway.features.items import VERSION_PATTERN
from gateway.features.values import INT64_MAX, INT64_MIN, MAX_DEPTH, MAX_MAP_KEY_BYTES
from gateway.obs.logs import MAX_REQUEST_ID, REQUEST_ID_HEADER
from gateway.peer.routes import (
    BUFFER_PATH,
    FENCE_PATH,
    LEASE_PATH,
    READ_PATH,
    ROUTING_PATH,
    RULES_PATH,
    VERSIONS_PATH,
    WRITE_PATH,
)

OPENAPI_PATH = "/openapi.json"
PEER_OPENAPI_PATH = "/internal/v1/openapi.json"
JSON = "application/json"
PROMETHEUS = "text/plain; version=0.0.4; charset=utf-8"
_METHODS = frozenset({"get", "put", "post", "delete"})


def downstream(config: Config) -> dict[str, Any]:
    """The downstream API of a gateway configured by ``config``."""
    views = list(config.views.values())
    paths: dict[str, Any] = {}
    for view in views:
        paths.update(_feature_paths(view))
    paths["/v1/read"] = {"post": _operation(
        "read", "Read up to 100 entities of one view, answered in request order.",
        body=_one_per_view(views, _read_body), answer=_read_many_answer(views), headers=_HEADERS,
    )}
    paths["/v1/write"] = {"post": _operation(
        "write", "Write up to 25 entities of one view; each record is routed and answered on its own.",
        body=_one_per_view(views, _write_body), answer=_write_many_answer(views), headers=_HEADERS,
    )}
    paths["/v1/routing"] = {"get": _operation(
        "routing", "This gateway's region, whether its rules are loaded, the snapshot's age and every rule.",
        answer=_ROUTING_ANSWER, headers=_HEADERS, errors=_COMMON_ERRORS,
    )}
    paths["/v1/members"] = {"get": _operation(
        "members", "The fleet as this gateway's replica of the members table shows it, and the replication lag.",
        answer=_MEMBERS_ANSWER, headers=_HEADERS, errors=_COMMON_ERRORS,
    )}
    paths["/healthz"] = {"get": _operation(
        "healthz", "200 while the process runs.", answer=_object({"status": {"const": "ok"}, "region": _STRING}),
        errors=_COMMON_ERRORS,
    )}
    paths["/readyz"] = {"get": _operation(
        "readyz", "200 when rules are loaded, the local DynamoDB answers for every view and the gateway is not draining.",
        answer=_object({"ready": {"const": True}, "region": _STRING}),
        errors={**_COMMON_ERRORS, "503": _json(
            _object({"ready": {"const": False}, "region": _STRING, "reasons": {"type": "array", "items": _STRING}}),
            "Not ready, with the reasons.",
        )},
    )}
    paths["/metrics"] = {"get": {
        "operationId": "metrics", "summary": "Prometheus text exposition.",
        "responses": {"200": {"description": "The metrics.", "content": {PROMETHEUS: {"schema": _STRING}}}, **_COMMON_ERRORS},
    }}
    paths[OPENAPI_PATH] = {"get": _operation(
        "openapi", "This document.", answer={"type": "object", "required": ["openapi", "paths"]}, errors=_COMMON_ERRORS,
    )}
    document = _document(f"Feature Gateway downstream API ({config.region})", paths)
    if config.auth.mode == "tokens":
        document["components"]["securitySchemes"] = {"bearer": {"type": "http", "scheme": "bearer"}}
        for path, item in paths.items():
            if path.startswith("/v1/"):
                for method in _METHODS & item.keys():
                    item[method]["security"] = [{"bearer": []}]
    return document


def peer(config: Config) -> dict[str, Any]:
    """The peer API (gateway/api/peer.py): what other regions' gateways call, every request signed."""
    views = list(config.views.values())
    forwarded = _object(
        {
            "key": _ref("Key"),
            "attributes": {"type": ["object", "null"], "description": "DynamoDB attribute values by feature name; null for a delete."},
            "event_ms": {"type": "integer", "minimum": 0, "maximum": records.MAX_EVENT_MS},
            "idempotency_key": {"type": "string", "minLength": 1, "maxLength": records.MAX_IDEMPOTENCY_KEY},
        },
    )
    view = {"type": "string", "enum": sorted(config.views)}
    keys = {"type": "array", "minItems": 1, "maxItems": records.MAX_READ_KEYS, "items": _ref("Key")}
    epochs = {"type": "object", "additionalProperties": _object({"epoch": _EPOCH, "state": _STRING, "primary": _NULLABLE_STRING})}
    instance = {"instance": _STRING, "region": _STRING}
    routes: dict[str, tuple[str, dict[str, Any], dict[str, Any]]] = {
        WRITE_PATH: ("Apply forwarded writes, if this region is the scope's active primary at that epoch (else 409).",
                     _object({"view": view, "scope": _STRING, "epoch": _EPOCH, "origin": _STRING,
                              "records": {"type": "array", "minItems": 1, "maxItems": records.MAX_WRITE_RECORDS, "items": forwarded}}),
                     _object({"results": {"type": "array"}})),
        READ_PATH: ("Read with ConsistentRead, as the scope's primary.",
                    _object({"view": view, "keys": keys, "features": {"type": ["array", "null"], "items": _STRING}}),
                    _read_many_answer(views, with_view=False)),
        RULES_PATH: ("Learn the pushed rules that are newer than this gateway's own.",
                     _object({"rules": {"type": "array", "items": _ref("Rule")}}),
                     _object({**instance, "learned": {"type": "integer"}, "rules": epochs})),
        ROUTING_PATH: ("This gateway's whole snapshot of rules.", {"type": "object"},
                       _object({**instance, "rules": {"type": "array", "items": _ref("Rule")}})),
        FENCE_PATH: ("As the old primary of a switching scope: stop its writes, list those acknowledged.",
                     _object({"rule": _ref("Rule"), "timeout": {"type": "number", "exclusiveMinimum": 0}}),
                     _object({**instance, "acknowledged": {"type": "array"}, "complete": {"type": "boolean"}})),
        VERSIONS_PATH: ("The versions this region's replica holds (consistent read).",
                        _object({"view": view, "keys": keys}), {"type": "object"}),
        BUFFER_PATH: ("How many of the scope's writes this gateway still holds or sends on.",
                      _object({"scope": _STRING}), {"type": "object"}),
        LEASE_PATH: ("Confirm the asker region's primacy leases on these scopes, as far as this region's promises allow.",
                     _object({"region": _STRING, "scopes": {"type": "object", "additionalProperties": _EPOCH}}),
                     _object({"region": _STRING, "granted": {"type": "array", "items": _STRING},
                              "refused": {"type": "object", "additionalProperties": _STRING},
                              "newer": {"type": "array", "items": _ref("Rule")}})),
        PEER_OPENAPI_PATH: ("This document.", {"type": "object"}, {"type": "object", "required": ["openapi", "paths"]}),
    }
    signed = [{"signature": []}]
    paths = {
        path: {"post": {
            **_operation(path.rsplit("/", 1)[-1], summary, body=body, answer=answer, errors={
                "400": _error_response("The request is malformed."),
                "401": _error_response("Not signed for this region with the shared secret, expired, or replayed."),
                "408": _error_response("It arrived after its sender's deadline; it was not applied."),
                "409": _error_response("`not_primary`: the body carries this gateway's rule."),
                "503": _error_response("Overloaded or draining.", retry_after=True),
            }),
            "security": signed,
        }}
        for path, (summary, body, answer) in routes.items()
    }
    document = _document(f"Feature Gateway peer API ({config.region})", paths)
    document["components"]["securitySchemes"] = {"signature": {
        "type": "apiKey", "in": "header", "name": "X-Fgw-Signature",
        "description": "HMAC-SHA256 with the shared secret over METHOD, PATH, X-Fgw-Timestamp, X-Fgw-Nonce, the "
        "receiver's region and X-Fgw-Content-Sha256, each on its own line (gateway/peer/auth.py).",
    }}
    return document


# -- building blocks -----------------------------------------------------------------------------

_STRING: dict[str, Any] = {"type": "string"}
_NULLABLE_STRING: dict[str, Any] = {"type": ["string", "null"]}
_EPOCH: dict[str, Any] = {"type": "integer", "minimum": 0}


def _ref(name: str) -> dict[str, str]:
    return {"$ref": f"#/components/schemas/{name}"}


def _param(name: str) -> dict[str, str]:
    return {"$ref": f"#/components/parameters/{name}"}


def _object(properties: dict[str, Any], optional: tuple[str, ...] = ()) -> dict[str, Any]:
    return {"type": "object", "required": [p for p in properties if p not in optional], "properties": properties}


def _json(schema: dict[str, Any], description: str) -> dict[str, Any]:
    return {"description": description, "content": {JSON: {"schema": schema}}}


def _error_response(description: str, retry_after: bool = False) -> dict[str, Any]:
    answer = _json(_ref("Error"), description)
    if retry_after:
        answer["headers"] = {"Retry-After": {
            "description": "Whole seconds to wait before retrying.", "schema": {"type": "string", "pattern": "^[1-9][0-9]*$"},
        }}
    return answer


#: What any request of the downstream listener may be answered besides its own (framing, limits, overload).
_COMMON_ERRORS: dict[str, Any] = {
    "400": _error_response("Malformed HTTP or an invalid request (`invalid_request`, `unknown_view`, `unknown_feature`, "
                           "`key_too_long`, `item_too_large`)."),
    "401": _error_response('With `auth.mode = "tokens"`: no bearer token, or an unknown one.'),
    "403": _error_response('With `auth.mode = "tokens"`: the token may not read or write that view.'),
    "408": _error_response("The request did not arrive within its deadline; nothing was applied."),
    "413": _error_response("The body is over `gateway.max_body_bytes`."),
    "431": _error_response("A request header line is over 8190 bytes."),
    "503": _error_response("Overloaded or draining; for data: DynamoDB or the primary region unreachable, the scope "
                           "switching, no routing rule.", retry_after=True),
}
_DATA_ERRORS: dict[str, Any] = {
    **_COMMON_ERRORS,
    "429": _error_response("DynamoDB kept throttling after the retries.", retry_after=True),
    "502": _error_response("DynamoDB answered an error the gateway has no better name for."),
    "504": _error_response("No answer within the request's deadline; a write may or may not have landed "
                           "(retry with the same idempotency key)."),
}
_HEADERS = (_param("RequestId"), _param("RequestTimeout"))


def _operation(
    operation_id: str,
    summary: str,
    *,
    answer: dict[str, Any],
    body: dict[str, Any] | None = None,
    headers: tuple[dict[str, str], ...] = (),
    params: tuple[dict[str, Any], ...] = (),
    errors: dict[str, Any] = _DATA_ERRORS,
    tags: tuple[str, ...] = (),
) -> dict[str, Any]:
    operation: dict[str, Any] = {"operationId": operation_id, "summary": summary}
    if tags:
        operation["tags"] = list(tags)
    if headers or params:
        operation["parameters"] = [*headers, *params]
    if body is not None:
        operation["requestBody"] = {"required": True, "content": {JSON: {"schema": body}}}
    operation["responses"] = {"200": _json(answer, "Done."), **errors}
    return operation


def _all_codes() -> list[str]:
    """Every code the error tree can answer with (a peer's are passed on as they are)."""
    seen: set[str] = set()
    stack: list[type[errors.GatewayError]] = [errors.GatewayError]
    while stack:
        cls = stack.pop()
        seen.add(cls.code)
        stack.extend(cls.__subclasses__())
    return sorted(seen)


def _document(title: str, paths: dict[str, Any]) -> dict[str, Any]:
    return {
        "openapi": "3.1.0",
        "info": {"title": title, "version": "1"},
        "paths": paths,
        "components": {"schemas": _SCHEMAS, "parameters": _PARAMETERS},
    }


_EVENT_TIME_TEXT = {"type": "string", "format": "date-time", "pattern": records.EVENT_TIME_PATTERN}
_EVENT_MS = {"type": "integer", "minimum": 0, "maximum": records.MAX_EVENT_MS}

_SCHEMAS: dict[str, Any] = {
    "Error": {
        "type": "object",
        "required": ["error"],
        "properties": {
            "error": _object(
                {
                    "code": {"type": "string", "enum": _all_codes()},
                    "message": {"type": "string", "description": "What is wrong, for a person."},
                    "retryable": {"type": "boolean"},
                    "status": {"type": "integer", "description": "In a batch's per-record error: the HTTP status."},
                },
                optional=("status",),
            ),
            "rule": {"description": "With `not_primary` (peer API): the receiver's rule.", "type": ["object", "null"]},
        },
    },
    "Key": {
        "type": "string", "minLength": 1, "maxLength": records.MAX_KEY_BYTES,
        "description": f"An entity key: 1 to {records.MAX_KEY_BYTES} UTF-8 bytes.",
    },
    "Version": {
        "type": "string", "pattern": VERSION_PATTERN,
        "description": "A write's version token; pass it as `min_version` to read at least that write.",
    },
    "Int64": {"type": "integer", "minimum": INT64_MIN, "maximum": INT64_MAX},
    "Float": {
        "description": "A number float64 holds exactly, within DynamoDB's range (0, or 1E-130 to 9.99E+125 in "
        "magnitude). An integer literal must fit int64 (Int64): write larger integral values as floats (1e20).",
        "type": "number",
        "exclusiveMinimum": -1e126,
        "exclusiveMaximum": 1e126,
        "not": {"exclusiveMinimum": -1e-130, "exclusiveMaximum": 1e-130, "not": {"const": 0}},
    },
    "Number": {"anyOf": [_ref("Int64"), _ref("Float")]},
    "Map": {
        "type": "object",
        "propertyNames": {"minLength": 1, "maxLength": MAX_MAP_KEY_BYTES},
        "additionalProperties": _ref("Value"),
        "description": f"Map keys are 1 to {MAX_MAP_KEY_BYTES} UTF-8 bytes.",
    },
    "List": {"type": "array", "items": _ref("Value")},
    "Value": {
        "description": "A feature value, stored as a native DynamoDB attribute and read back equal "
        f"(at most {MAX_DEPTH} lists and maps one inside the other).",
        "anyOf": [{"type": "string"}, {"type": "boolean"}, {"type": "null"}, _ref("Number"), _ref("List"), _ref("Map")],
    },
    "EventTime": {
        "description": "When the features were observed: epoch milliseconds or RFC 3339 with its time zone, "
        "between 1970 and 9999; absent or null, the time the write arrives.",
        "anyOf": [_EVENT_MS, _EVENT_TIME_TEXT, {"type": "null"}],
    },
    "WriteAnswer": _object(
        {
            "applied": {"type": "boolean", "description": "True: DynamoDB in the primary region has the write."},
            "reason": {"type": "string", "enum": ["stale_event_time", "duplicate", "not_found"]},
            "version": {"anyOf": [_ref("Version"), {"type": "null"}]},
            "primary": _NULLABLE_STRING,
            "forwarded": {"type": "boolean"},
        },
        optional=("reason",),
    ),
    "Rule": _object(
        {
            "scope": _STRING, "mode": {"type": "string", "enum": ["single_primary", "any_region"]},
            "primary": _NULLABLE_STRING, "epoch": _EPOCH, "state": _STRING, "version": {"type": "integer"},
        },
    ),
}

_PARAMETERS: dict[str, Any] = {
    "RequestId": {
        "name": REQUEST_ID_HEADER, "in": "header", "required": False, "schema": _STRING,
        "description": f"The caller's request id (at most {MAX_REQUEST_ID} printable ASCII characters; any other "
        "value is replaced by a generated id). Returned on every answer and logged.",
    },
    "RequestTimeout": {
        "name": TIMEOUT_HEADER, "in": "header", "required": False,
        "schema": {"type": "string", "pattern": TIMEOUT_PATTERN},
        "description": "Seconds the caller will wait; the deadline is the smaller of this and `gateway.request_timeout`.",
    },
    "IdempotencyKey": {
        "name": "Idempotency-Key", "in": "header", "required": False,
        "schema": {"type": "string", "maxLength": records.MAX_IDEMPOTENCY_KEY, "pattern": "^[^\\x00-\\x1f\\x7f]*$"},
        "description": f"Printable text of at most {records.MAX_IDEMPOTENCY_KEY} characters, one per logical write: "
        "a retry with the same key is applied once. Without one the write is never deduplicated.",
    },
    "Key": {"name": "key", "in": "path", "required": True, "schema": _ref("Key")},
}


def _feature_name(view: ViewConfig) -> dict[str, Any]:
    if view.features is not None:
        return {"type": "string", "enum": sorted(view.features)}
    return {
        "type": "string", "minLength": 1, "maxLength": MAX_FEATURE_NAME_BYTES,
        "not": {"anyOf": [{"pattern": "^_"}, {"const": view.key_attribute}]},
        "description": f"1 to {MAX_FEATURE_NAME_BYTES} UTF-8 bytes, never starting with '_' nor equal to the key "
        f"attribute {view.key_attribute!r} (the gateway's own attributes).",
    }


def _features(view: ViewConfig) -> dict[str, Any]:
    """What ``features`` of ``view`` may hold, written or read."""
    if view.features is None:
        return {"type": "object", "propertyNames": _feature_name(view), "additionalProperties": _ref("Value")}
    kinds = {
        "string": _STRING, "int": _ref("Int64"), "float": _ref("Number"), "bool": {"type": "boolean"},
        "list": _ref("List"), "map": _ref("Map"), "any": _ref("Value"),
    }
    return {
        "type": "object",
        "properties": {name: kinds[kind] for name, kind in view.features.items()},
        "additionalProperties": False,
    }


def _feature_list_pattern(view: ViewConfig) -> str:
    """``?features=a,b``: the view's feature names separated by commas (empty items are ignored)."""
    if view.features is not None:
        name = "(?:" + "|".join(_escape(n) for n in sorted(view.features)) + ")"
    else:
        name = f"(?!{_escape(view.key_attribute)}(?:,|$))[^_,][^,]{{0,{MAX_FEATURE_NAME_BYTES - 1}}}"
    return f"^(?:{name})?(?:,(?:{name})?)*$"


def _escape(text: str) -> str:
    """A regular-expression literal of ``text`` in the syntax both ECMA-262 and Python read."""
    return "".join(f"\\{c}" if c in "\\^$.|?*+()[]{}-/" else c for c in text)


def _feature_paths(view: ViewConfig) -> dict[str, Any]:
    name = view.name
    writes = (*_HEADERS, _param("IdempotencyKey"))
    answer = _object({
        "view": {"const": name}, "key": _ref("Key"), "features": _features(view),
        "version": {"anyOf": [_ref("Version"), {"type": "null"}]}, "region": _STRING,
    })
    write_answer = _ref("WriteAnswer")
    return {f"/v1/features/{name}/{{key}}": {
        "parameters": [_param("Key")],
        "get": _operation(
            f"get_{name}", f"Read an entity of view {name!r}: from this region's replica, or the primary's if strong.",
            answer=answer, headers=_HEADERS, tags=(name,), errors={
                "404": _error_response("No entity with that key (`not_found`)."), **_DATA_ERRORS,
            },
            params=(
                {"name": "features", "in": "query", "required": False,
                 "description": "Comma-separated names of the features to answer (default: all).",
                 "schema": {"type": "string", "pattern": _feature_list_pattern(view)}},
                {"name": "consistency", "in": "query", "required": False,
                 "schema": {"type": "string", "enum": list(records.CONSISTENCIES)}},
                {"name": "min_version", "in": "query", "required": False, "schema": _ref("Version"),
                 "description": "Answer at least this version (a write's `version`): read your writes in any region."},
            ),
        ),
        "put": _operation(
            f"put_{name}", f"Write an entity of view {name!r} (its whole feature set) in the primary region.",
            body=_object({"features": _features(view), "event_time": _ref("EventTime")}, optional=("event_time",)),
            answer=write_answer, headers=writes, tags=(name,),
        ),
        "delete": _operation(
            f"delete_{name}", f"Delete an entity of view {name!r} in the primary region.",
            answer=write_answer, headers=writes, tags=(name,),
            params=({"name": "event_time", "in": "query", "required": False,
                     "description": "Epoch milliseconds or RFC 3339 (default: now); a delete older than the stored "
                     "write is not applied.",
                     "schema": {"anyOf": [_EVENT_MS, _EVENT_TIME_TEXT]}},),
        ),
    }}


def _one_per_view(views: list[ViewConfig], body: Any) -> dict[str, Any]:
    return {"oneOf": [body(view) for view in views]} if len(views) > 1 else body(views[0])


def _read_body(view: ViewConfig) -> dict[str, Any]:
    return _object(
        {
            "view": {"const": view.name},
            "keys": {"type": "array", "minItems": 1, "maxItems": records.MAX_READ_KEYS, "items": _ref("Key")},
            "features": {"anyOf": [{"type": "array", "items": _feature_name(view)}, {"type": "null"}]},
            "consistency": {"anyOf": [{"type": "string", "enum": list(records.CONSISTENCIES)}, {"type": "null"}]},
        },
        optional=("features", "consistency"),
    )


def _write_body(view: ViewConfig) -> dict[str, Any]:
    record = _object(
        {
            "key": _ref("Key"),
            "features": _features(view),
            "event_time": _ref("EventTime"),
            "idempotency_key": {"anyOf": [_PARAMETERS["IdempotencyKey"]["schema"], {"type": "null"}]},
        },
        optional=("event_time", "idempotency_key"),
    )
    return _object({
        "view": {"const": view.name},
        "records": {"type": "array", "minItems": 1, "maxItems": records.MAX_WRITE_RECORDS, "items": record},
    })


def _read_many_answer(views: list[ViewConfig], with_view: bool = True) -> dict[str, Any]:
    result = _object({
        "key": _ref("Key"),
        "status": {"type": "string", "enum": ["PRESENT", "NOT_FOUND"]},
        "features": {"type": ["object", "null"]},
        "version": {"anyOf": [_ref("Version"), {"type": "null"}]},
    })
    properties: dict[str, Any] = {"results": {"type": "array", "items": result}}
    if with_view:
        properties = {"view": {"type": "string", "enum": sorted(v.name for v in views)}, **properties}
    return _object(properties)


def _write_many_answer(views: list[ViewConfig]) -> dict[str, Any]:
    applied = {"allOf": [_ref("WriteAnswer"), _object({"key": _ref("Key")})]}
    failed = _object({"key": _ref("Key"), "error": _SCHEMAS["Error"]["properties"]["error"]})
    return _object({
        "view": {"type": "string", "enum": sorted(v.name for v in views)},
        "results": {"type": "array", "items": {"oneOf": [applied, failed]}},
    })


_ROUTING_ANSWER = _object({
    "region": _STRING,
    "loaded": {"type": "boolean"},
    "snapshot_age_seconds": {"type": ["number", "null"]},
    "rules": {"type": "array", "items": _ref("Rule")},
})

_MEMBERS_ANSWER = _object({
    "region": _STRING,
    "instance": _STRING,
    "replication_lag_seconds": {"type": "object", "additionalProperties": {"type": "number"}},
    "members": {"type": "array", "items": _object({
        "instance": _STRING, "region": _STRING, "downstream": _NULLABLE_STRING, "peer": _NULLABLE_STRING,
        "started_at_ms": {"type": "integer"}, "heartbeat_age_seconds": {"type": "number"},
        "epochs": {"type": "object"}, "buffer_depth": {"type": "integer"},
        "replication_lag_seconds": {"type": "object"},
    })},
})
