"""The error tree: statuses, codes, bodies and Retry-After (gateway/errors.py)."""

import orjson
import pytest

from gateway import errors


@pytest.mark.parametrize(
    "cls, status, code, retryable",
    [
        (errors.RequestError, 400, "invalid_request", False),
        (errors.UnknownView, 400, "unknown_view", False),
        (errors.UnknownFeature, 400, "unknown_feature", False),
        (errors.KeyTooLong, 400, "key_too_long", False),
        (errors.ItemTooLarge, 400, "item_too_large", False),
        (errors.BodyTooLarge, 413, "body_too_large", False),
        (errors.NotFound, 404, "not_found", False),
        (errors.PrimarySwitching, 503, "primary_switching", True),
        (errors.PrimaryUnreachable, 503, "primary_unreachable", True),
        (errors.Draining, 503, "draining", True),
        (errors.StoreThrottled, 429, "throttled", True),
        (errors.StoreUnavailable, 503, "upstream_unavailable", True),
        (errors.StoreTimeout, 504, "upstream_timeout", True),
        (errors.StoreValidation, 400, "invalid_request", False),
        (errors.GatewayError, 500, "internal", False),
    ],
)
def test_each_error_knows_its_status_code_and_body(cls, status, code, retryable):
    error = cls("Something a person can act on.")
    assert (error.status, error.code, error.retryable) == (status, code, retryable)
    assert orjson.loads(error.body()) == {
        "error": {"code": code, "message": "Something a person can act on.", "retryable": retryable}
    }


def test_unavailable_errors_always_carry_retry_after():
    for cls in (errors.PrimarySwitching, errors.Draining, errors.StoreUnavailable, errors.StoreThrottled):
        assert cls("x").headers() == {"Retry-After": "1"}
    assert errors.PrimarySwitching("x", retry_after=2.6).headers() == {"Retry-After": "3"}
    assert errors.PrimarySwitching("x", retry_after=0.01).headers() == {"Retry-After": "1"}
    assert errors.RequestError("x").headers() == {}


def test_not_primary_carries_the_rule():
    error = errors.NotPrimary("Not the primary at epoch 3.", rule={"scope": "view#users", "epoch": 4})
    assert error.status == 409
    assert orjson.loads(error.body())["rule"] == {"scope": "view#users", "epoch": 4}


def test_condition_failed_is_an_outcome_not_an_http_error():
    assert not issubclass(errors.ConditionFailed, errors.GatewayError)
    assert errors.ConditionFailed({"pk": {"S": "a"}}).old_item == {"pk": {"S": "a"}}
