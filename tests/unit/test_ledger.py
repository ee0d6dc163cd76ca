"""Journals balance by construction; an unbalanced one is a bug and fails loudly."""

from __future__ import annotations

import pytest
from hypothesis import given
from hypothesis import strategies as st

from paystream.ledger import (
    clearing_journal,
    fee_revenue_account,
    journal,
    merchant_pending_account,
)


@given(st.integers(min_value=0, max_value=10**15), st.integers(min_value=0, max_value=10**15))
def test_clearing_journal_balances(fee: int, net: int) -> None:
    if fee + net == 0:
        return
    built = clearing_journal("p1", "payer-1", "m1", "EUR", fee, net)
    assert sum(amount for _, amount in built.legs) == 0
    legs = dict(built.legs)
    assert legs["payer-1"] == -(fee + net)
    assert legs.get(merchant_pending_account("m1", "EUR"), 0) == net
    assert legs.get(fee_revenue_account("EUR"), 0) == fee
    assert all(amount != 0 for amount in legs.values())


def test_unbalanced_journal_is_refused() -> None:
    with pytest.raises(AssertionError, match="does not balance"):
        journal("j1", "correction", "EUR", [("a", 100), ("b", -99)])


def test_zero_legs_are_dropped() -> None:
    built = clearing_journal("p2", "payer-2", "m2", "JPY", 0, 500)
    assert len(built.legs) == 2
