"""The majority control plane's rule (gateway/consensus/ballots.py): promises, acceptances, and what is current."""

from __future__ import annotations

import pytest

from gateway.consensus.ballots import (
    EMPTY,
    Deleted,
    Slot,
    ballot,
    chosen,
    counter_of,
    decode,
    encode,
    on_accept,
    on_prepare,
)
from gateway.routing.rules import Rule, RuleError

RULE = Rule(scope="default", mode="single_primary", primary="us-east-1", epoch=3, version=7, updated_by="ann")


def test_ballots_sort_as_their_counter_then_proposer_pairs_do():
    assert ballot(9, "b") < ballot(10, "a") < ballot(10, "b") < ballot(11, "a")
    assert "" < ballot(1, "a") and counter_of(ballot(1_700_000_000_123, "p")) == 1_700_000_000_123 and counter_of("") == 0


def test_a_prepare_is_promised_only_above_every_ballot_promised_or_accepted():
    one, two = ballot(1, "a"), ballot(2, "a")
    promised = on_prepare(EMPTY, two)
    assert promised == Slot(two)
    assert on_prepare(promised, one) is None and on_prepare(promised, two) is None
    accepted = on_accept(promised, two, RULE)
    assert accepted == Slot(two, two, RULE)
    assert on_prepare(Slot(one, two, RULE), two) is None  # a ballot as high was accepted


def test_an_accept_is_refused_once_a_higher_ballot_was_promised_and_one_ballot_carries_one_value():
    one, two = ballot(1, "a"), ballot(2, "b")
    assert on_accept(Slot(two), one, RULE) is None
    assert on_accept(Slot(one), two, RULE) == Slot(two, two, RULE)  # no prepare of its own needed at a higher ballot
    done = on_accept(Slot(two), two, RULE)
    assert on_accept(done, two, RULE) == done  # a retry of the same accept
    assert on_accept(done, two, Deleted("default", 7)) is None


def test_the_current_value_is_the_one_of_the_highest_ballot_accepted():
    other = Rule(scope="default", mode="single_primary", primary="eu-west-1", epoch=4, version=8)
    assert chosen([EMPTY, Slot(ballot(5, "a"))]) is None
    assert chosen([Slot(ballot(9, "a"), ballot(2, "a"), RULE), Slot(ballot(3, "b"), ballot(3, "b"), other), EMPTY]) == other


@pytest.mark.parametrize("value", [RULE, Deleted("view#items", 4, "bob")])
def test_values_read_back_as_written(value):
    assert decode(encode(value)) == value


@pytest.mark.parametrize(("text", "why"), [
    ("{", r"^an accepted value is not JSON: \S"),
    ("[]", r"^an accepted value is neither a rule nor a deletion$"),
    ('{"deleted": {"scope": "default"}}', r"^an accepted deletion names no version$"),
    ('{"deleted": {"scope": "default", "version": true}}', r"^an accepted deletion names no version$"),
    ('{"rule": {"scope": 3}}', r"."),
    ('{"other": 1}', r"^an accepted value is neither a rule nor a deletion$"),
])
def test_a_stored_value_that_is_not_one_is_refused_saying_what_it_is(text, why):
    # An operator reading the acceptor item by hand, or its log line, learns what is wrong with it.
    with pytest.raises(RuleError, match=why):
        decode(text)
