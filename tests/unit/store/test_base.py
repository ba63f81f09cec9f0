"""What both store clients share: key identity and projection expressions (gateway/store/base.py)."""

from __future__ import annotations

import pytest

from gateway import errors
from gateway.store.base import key_identity, projection_expression


def test_number_keys_are_identified_by_value() -> None:
    assert key_identity({"id": {"N": "1.0"}}, ["id"]) == key_identity({"id": {"N": "1"}}, ["id"])
    assert key_identity({"id": {"N": "1"}}, ["id"]) != key_identity({"id": {"S": "1"}}, ["id"])


def test_projection_uses_placeholders_for_every_name() -> None:
    assert projection_expression(["a", "_ts", "a", "size"]) == ("#p0,#p1,#p2", {"#p0": "a", "#p1": "_ts", "#p2": "size"})
    with pytest.raises(errors.StoreValidation):
        projection_expression([])
