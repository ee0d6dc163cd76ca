"""The demo world: payers, merchants, fee schedules and risk rules, derived from a seed.

`accounts seed` writes it to PostgreSQL and the payment generator draws from
it, so generated traffic hits real accounts with a realistic mix of outcomes.
Everything is a pure function of (payer_count, merchant_count, seed).
"""

from __future__ import annotations

import random
from dataclasses import dataclass

CURRENCIES = ("EUR", "USD", "GBP", "JPY")
# Typical ticket (minor units) per currency, used by the generator.
TYPICAL_AMOUNT_MINOR = {"EUR": 4_000, "USD": 4_500, "GBP": 3_500, "JPY": 5_000}
COUNTRIES = {"EUR": ("DE", "FR", "NL", "ES", "IT"), "USD": ("US",), "GBP": ("GB",), "JPY": ("JP",)}
BLOCKED_COUNTRY = "KP"


@dataclass(frozen=True, slots=True)
class DemoPayer:
    account_id: str
    currency: str
    balance_minor: int
    status: str  # open or closed


@dataclass(frozen=True, slots=True)
class DemoMerchant:
    merchant_id: str
    name: str
    currencies: tuple[str, ...]
    fee_bps: int
    fixed_minor: int
    min_minor: int


@dataclass(frozen=True, slots=True)
class DemoLimits:
    currency: str
    txn_amount_max_minor: int
    payer_10m_count_max: int
    payer_10m_amount_max_minor: int
    payer_24h_count_max: int
    payer_24h_amount_max_minor: int
    merchant_daily_amount_max_minor: int


@dataclass(frozen=True, slots=True)
class DemoWorld:
    payers: tuple[DemoPayer, ...]
    merchants: tuple[DemoMerchant, ...]
    limits: tuple[DemoLimits, ...]
    blocked_payers: tuple[str, ...]
    blocked_merchants: tuple[str, ...]
    blocked_countries: tuple[str, ...]
    # Payers seeded with a tiny balance: their payments are declined for funds.
    poor_payers: tuple[str, ...]


def build_world(payer_count: int = 2_000, merchant_count: int = 20, seed: int = 7) -> DemoWorld:
    assert payer_count >= 10 and merchant_count >= 2
    rng = random.Random(seed)
    payers = []
    poor = []
    for index in range(payer_count):
        currency = CURRENCIES[index % len(CURRENCIES)]
        typical = TYPICAL_AMOUNT_MINOR[currency]
        account_id = f"payer-{index:06d}"
        # One payer in fifty is nearly broke; one in two hundred is closed.
        if index % 50 == 7:
            balance = typical // 10
            poor.append(account_id)
        else:
            balance = typical * rng.randint(200, 1_000)
        status = "closed" if index % 200 == 13 else "open"
        payers.append(DemoPayer(account_id, currency, balance, status))
    merchants = []
    for index in range(merchant_count):
        accepted = tuple(c for i, c in enumerate(CURRENCIES) if (index + i) % 3 != 2) or ("EUR",)
        merchants.append(
            DemoMerchant(
                merchant_id=f"merchant-{index:03d}",
                name=f"Demo Merchant {index}",
                currencies=accepted,
                fee_bps=rng.choice((150, 190, 250, 290)),
                fixed_minor=rng.choice((0, 10, 25, 30)),
                min_minor=rng.choice((0, 5, 50)),
            )
        )
    limits = tuple(
        DemoLimits(
            currency=c,
            txn_amount_max_minor=TYPICAL_AMOUNT_MINOR[c] * 50,
            payer_10m_count_max=20,
            payer_10m_amount_max_minor=TYPICAL_AMOUNT_MINOR[c] * 200,
            payer_24h_count_max=200,
            payer_24h_amount_max_minor=TYPICAL_AMOUNT_MINOR[c] * 2_000,
            merchant_daily_amount_max_minor=TYPICAL_AMOUNT_MINOR[c] * 10_000_000,
        )
        for c in CURRENCIES
    )
    return DemoWorld(
        payers=tuple(payers),
        merchants=tuple(merchants),
        limits=limits,
        blocked_payers=tuple(p.account_id for p in payers[3::250]),
        blocked_merchants=(merchants[-1].merchant_id,),
        blocked_countries=(BLOCKED_COUNTRY,),
        poor_payers=tuple(poor),
    )
