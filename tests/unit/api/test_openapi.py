"""The OpenAPI descriptions (gateway/api/openapi.py): every route and only routes, valid schemas, true answers.

The fuzzing of a real gateway from the served document is tests/integration/test_openapi.py; these check what
a generated client relies on without one: the paths and methods are the routers', and the answers and errors
the gateway builds validate against the schemas that describe them.
"""

from __future__ import annotations

import re

import jsonschema
import orjson
import pytest

from gateway import errors
from gateway.api import openapi
from gateway.config import from_dict
from gateway.errors import MethodNotAllowed, RouteNotFound
from gateway.features.items import VERSION_PATTERN, Version
from gateway.features.records import EVENT_TIME_PATTERN, parse_event_time
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
from tests.unit.api.test_downstream import ScriptedStore, downstream_api

CONFIG = from_dict({
    "gateway": {"region": "eu-west-1"},
    "views": {
        "items": {"table": "features_items"},
        "users": {"table": "features_users", "features": {"age": "int", "score": "float", "tags": "list"}},
    },
})
METHODS = ("get", "put", "post", "delete", "patch", "head", "options")


def validate(document: dict, schema: dict, value: object) -> None:
    """``value`` against ``schema``, whose ``$ref``s point into ``document``."""
    wrapped = {**schema, "$defs": {}, "components": document["components"]}
    jsonschema.Draft202012Validator(wrapped, format_checker=jsonschema.FormatChecker()).validate(value)


def test_the_downstream_paths_and_methods_are_exactly_what_the_router_serves():
    document = openapi.downstream(CONFIG)
    api, *_ = downstream_api(ScriptedStore(), config=CONFIG)
    for path, item in document["paths"].items():
        concrete = path.replace("{key}", "some-key")
        documented = {m.upper() for m in item if m in METHODS}
        for method in (m.upper() for m in METHODS):
            if method in documented:
                api._route(method, concrete)  # served
            else:
                with pytest.raises(MethodNotAllowed) as refused:
                    api._route(method, concrete)
                assert set(refused.value.headers()["Allow"].split(", ")) == documented
    # Every path the router serves is described: the exact ones, and the feature path of every view.
    assert set(api._exact) == {p for p in document["paths"] if not p.startswith("/v1/features/")}
    assert {f"/v1/features/{v}/{{key}}" for v in CONFIG.views} == {p for p in document["paths"] if p.startswith("/v1/features/")}
    with pytest.raises(RouteNotFound):
        api._route("GET", "/v1/other")


def test_the_peer_paths_are_the_peer_routes():
    document = openapi.peer(CONFIG)
    assert set(document["paths"]) == {
        WRITE_PATH, READ_PATH, RULES_PATH, ROUTING_PATH, FENCE_PATH, VERSIONS_PATH, BUFFER_PATH, LEASE_PATH,
        openapi.PEER_OPENAPI_PATH,
    }
    assert all(set(item) == {"post"} and item["post"]["security"] == [{"signature": []}] for item in document["paths"].values())


@pytest.mark.parametrize("which", [openapi.downstream, openapi.peer])
def test_every_schema_is_valid_json_schema_2020_12_and_every_pattern_compiles_in_python(which):
    document = which(CONFIG)
    assert document["openapi"].startswith("3.1")

    def walk(node):
        if isinstance(node, dict):
            if "schema" in node and isinstance(node["schema"], dict):
                jsonschema.Draft202012Validator.check_schema(node["schema"])
            if isinstance(node.get("pattern"), str):
                re.compile(node["pattern"])
            for value in node.values():
                walk(value)
        elif isinstance(node, list):
            for value in node:
                walk(value)

    walk(document)
    for schema in document["components"]["schemas"].values():
        jsonschema.Draft202012Validator.check_schema(schema)


def test_every_error_the_tree_renders_validates_and_every_code_is_listed():
    document = openapi.downstream(CONFIG)
    schema = {"$ref": "#/components/schemas/Error"}
    stack = [errors.GatewayError]
    seen = 0
    while stack:
        cls = stack.pop()
        stack.extend(cls.__subclasses__())
        error = cls.__new__(cls)  # whatever its constructor takes: only its rendering is under test
        error.message, error.rule = "why", None
        validate(document, schema, orjson.loads(error.body()))
        seen += 1
    assert seen > 20


@pytest.mark.parametrize("token, valid", [
    ("0.1700000000000001.us-east-1", True), ("12.5.ap-southeast-1", True), ("0.5.", True),
    ("+1.5.us-east-1", False), ("1.5.US-EAST-1", False), ("１.5.us-east-1", False), ("1_0.5.us-east-1", False),
    ("1.5", False), ("01.5.us-east-1", False), ("1.5.us-east-1\n", False),
])
def test_the_version_pattern_is_what_parse_accepts(token, valid):
    assert (re.fullmatch(VERSION_PATTERN, token) is not None) == valid
    if valid:
        assert Version.parse(token).token() == token
    else:
        with pytest.raises(ValueError):
            Version.parse(token)


@pytest.mark.parametrize("text, valid", [
    ("2026-01-31T12:00:00Z", True), ("2026-01-31t12:00:00.123456789z", True), ("1970-01-01T00:00:00+00:00", True),
    ("9999-12-31T23:59:59Z", True), ("20260131T120000Z", False), ("2026-01-31", False), ("2026-01-31T12:00:00", False),
    ("1969-12-31T23:59:59Z", False), ("2026-01-31 12:00:00Z", False), ("2026-01-31T12:00:00Z\n", False),
])
def test_event_time_text_is_refused_or_read_as_the_document_says(text, valid):
    document = openapi.downstream(CONFIG)
    schema = document["components"]["schemas"]["EventTime"]
    try:
        validate(document, schema, text)
        documented = True
    except jsonschema.ValidationError:
        documented = False
    try:
        parse_event_time(text, 0)
        accepted = True
    except errors.RequestError:
        accepted = False
    assert documented == accepted == valid, (documented, accepted)
    assert (re.fullmatch(EVENT_TIME_PATTERN, text) is not None) == valid


def test_a_day_the_calendar_lacks_is_refused_as_its_date_time_format_says():
    with pytest.raises(errors.RequestError, match="RFC 3339"):
        parse_event_time("2026-02-30T00:00:00Z", 0)
    assert openapi.downstream(CONFIG)["components"]["schemas"]["EventTime"]["anyOf"][1]["format"] == "date-time"


def test_with_auth_on_every_v1_operation_asks_for_a_bearer_token_and_the_probes_do_not():
    config = from_dict({
        "gateway": {"region": "eu-west-1"}, "auth": {"mode": "tokens", "tokens_file": "/nonexistent"},
        "views": {"items": {"table": "features_items"}},
    })
    document = openapi.downstream(config)
    assert document["components"]["securitySchemes"] == {"bearer": {"type": "http", "scheme": "bearer"}}
    for path, item in document["paths"].items():
        for method in set(item) & {"get", "put", "post", "delete"}:
            assert ("security" in item[method]) == path.startswith("/v1/"), (path, method)
