"""Currencies paystream accepts and the constraints on amounts.

Amounts are integers in the currency's minor unit (cents for EUR, yen for JPY).
The upper bound keeps every sum of a batch far inside PostgreSQL's bigint.
"""

from __future__ import annotations

from typing import Annotated, Literal

import msgspec

# ISO 4217 code -> number of minor-unit digits. A currency outside this table
# is rejected at decode time ("unknown currency"), never guessed.
MINOR_UNIT_DIGITS: dict[str, int] = {
    "AUD": 2,
    "BRL": 2,
    "CAD": 2,
    "CHF": 2,
    "CNY": 2,
    "EUR": 2,
    "GBP": 2,
    "HKD": 2,
    "INR": 2,
    "JPY": 0,
    "KRW": 0,
    "MXN": 2,
    "NOK": 2,
    "SEK": 2,
    "SGD": 2,
    "USD": 2,
}

CurrencyCode = Literal[
    "AUD", "BRL", "CAD", "CHF", "CNY", "EUR", "GBP", "HKD",
    "INR", "JPY", "KRW", "MXN", "NOK", "SEK", "SGD", "USD",
]  # fmt: skip

# 10^15 minor units: a quadrillion cents, far above any single payment. Only
# 9,223 of them fit in a signed 64-bit sum: what keeps a settlement batch's
# sums in bigint is the merchant daily limit's cap (2^57, migration 003), and
# the close sums as numeric and leaves an overflowing batch open regardless.
AMOUNT_MINOR_MAX = 10**15

PositiveAmountMinor = Annotated[int, msgspec.Meta(ge=1, le=AMOUNT_MINOR_MAX)]
NonNegativeAmountMinor = Annotated[int, msgspec.Meta(ge=0, le=AMOUNT_MINOR_MAX)]
# Sums over a settlement batch may exceed one payment's bound.
AmountSumMinor = Annotated[int, msgspec.Meta(ge=0, le=2**63 - 1)]
