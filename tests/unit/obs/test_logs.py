"""JSON log lines and request ids (gateway/obs/logs.py)."""

import logging

import orjson

from gateway.obs.logs import JsonFormatter


def test_records_become_json_lines_with_extra_fields():
    record = logging.LogRecord("gateway.server", logging.INFO, __file__, 1, "serving %s", ("now",), None)
    record.region = "eu-west-1"
    line = JsonFormatter().format(record)
    assert "\n" not in line
    entry = orjson.loads(line)
    assert entry["msg"] == "serving now" and entry["level"] == "info" and entry["region"] == "eu-west-1"


def test_exceptions_are_one_field():
    try:
        raise ValueError("boom")
    except ValueError:
        import sys

        record = logging.LogRecord("x", logging.ERROR, __file__, 1, "failed", (), sys.exc_info())
    entry = orjson.loads(JsonFormatter().format(record))
    assert "ValueError: boom" in entry["exc"]
