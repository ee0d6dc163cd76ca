"""Synthetic payment traffic with a realistic mix of outcomes, drawn from the demo world.

Most payments are approved and settle; the rest hit each rule once in a
while: blocked payer/merchant/country, amounts over the per-transaction
limit, merchants that don't take the currency, payers without funds, closed
or unknown accounts. Deterministic for a given seed and start time.
"""

from __future__ import annotations

import math
import random
from collections.abc import Iterator
from dataclasses import dataclass
from datetime import datetime, timedelta

from paystream.demo_data import BLOCKED_COUNTRY, COUNTRIES, TYPICAL_AMOUNT_MINOR, DemoMerchant, DemoWorld
from schemas.payments import PaymentRequested

# Share of each kind of payment, in percent; the rest are ordinary payments.
MIX_PERCENT = {
    "over_txn_limit": 2.0,
    "blocked_payer": 1.0,
    "blocked_country": 1.0,
    "blocked_merchant": 1.0,
    "merchant_not_accepting": 1.0,
    "poor_payer": 2.0,
    "closed_account": 0.5,
    "unknown_account": 0.5,
}
METHODS = ("card", "card", "card", "wallet", "bank_transfer")


@dataclass(frozen=True, slots=True)
class GeneratedPayment:
    kind: str
    payment: PaymentRequested


class PaymentGenerator:
    def __init__(self, world: DemoWorld, seed: int, id_prefix: str) -> None:
        self.world = world
        self.rng = random.Random(seed)
        self.id_prefix = id_prefix
        blocked = set(world.blocked_payers) | set(world.poor_payers)
        self.ordinary_payers = [p for p in world.payers if p.status == "open" and p.account_id not in blocked]
        self.closed_payers = [p for p in world.payers if p.status == "closed"]
        self.poor_payers = [p for p in world.payers if p.account_id in set(world.poor_payers) and p.status == "open"]
        self.blocked_payers = [p for p in world.payers if p.account_id in set(world.blocked_payers)]
        self.active_merchants = [m for m in world.merchants if m.merchant_id not in set(world.blocked_merchants)]
        self.kinds = list(MIX_PERCENT)
        self.thresholds = []
        total = 0.0
        for kind in self.kinds:
            total += MIX_PERCENT[kind]
            self.thresholds.append(total)

    def _kind(self) -> str:
        roll = self.rng.random() * 100
        for kind, threshold in zip(self.kinds, self.thresholds, strict=True):
            if roll < threshold:
                return kind
        return "ordinary"

    def _merchant_for(self, currency: str, accepting: bool = True) -> DemoMerchant:
        pool = [m for m in self.active_merchants if (currency in m.currencies) == accepting]
        return self.rng.choice(pool or self.active_merchants)

    def _amount(self, currency: str) -> int:
        typical = TYPICAL_AMOUNT_MINOR[currency]
        return max(100, min(typical * 10, int(typical * math.exp(self.rng.gauss(0, 0.6)))))

    def generate(self, count: int, start: datetime, spacing: timedelta) -> Iterator[GeneratedPayment]:
        for index in range(count):
            kind = self._kind()
            payer = self.rng.choice(self.ordinary_payers)
            if kind == "blocked_payer":
                payer = self.rng.choice(self.blocked_payers)
            elif kind == "poor_payer" and self.poor_payers:
                payer = self.rng.choice(self.poor_payers)
            elif kind == "closed_account" and self.closed_payers:
                payer = self.rng.choice(self.closed_payers)
            currency = payer.currency
            account = payer.account_id if kind != "unknown_account" else f"ghost-{index:06d}"
            merchant = self._merchant_for(currency, accepting=kind != "merchant_not_accepting")
            if kind == "blocked_merchant":
                merchant = next(m for m in self.world.merchants if m.merchant_id in self.world.blocked_merchants)
            amount = self._amount(currency)
            if kind == "over_txn_limit":
                amount = TYPICAL_AMOUNT_MINOR[currency] * 60
            country = BLOCKED_COUNTRY if kind == "blocked_country" else self.rng.choice(COUNTRIES[currency])
            yield GeneratedPayment(
                kind,
                PaymentRequested(
                    payment_id=f"{self.id_prefix}-{index:07d}",
                    payer_account=account,
                    merchant_id=merchant.merchant_id,
                    amount_minor=amount,
                    currency=currency,  # type: ignore[arg-type]
                    country=country,
                    method=self.rng.choice(METHODS),  # type: ignore[arg-type]
                    created_at=start + spacing * index,
                    metadata={"source": "generator", "kind": kind},
                ),
            )
