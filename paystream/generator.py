"""Synthetic payment traffic with a realistic mix of outcomes, drawn from the demo world.

Most payments are approved and settle; the rest hit each rule once in a
while: blocked payer/merchant/country, amounts over the per-transaction
limit, merchants that don't take the currency, payers without funds, closed
or unknown accounts. Deterministic for a given seed and start time.

The payment lifecycle is opt-in (the demo turns it on): with
`manual_percent`, that share of the ordinary payments asks for manual
capture, each with a plan it carries in its metadata (`plan`) and the
capture or void request that carries it out; `plan_refunds` picks refunds of
settled payments. Both draw from random streams of their own, so the mix of
outcomes above is the same with or without them.
"""

from __future__ import annotations

import math
import random
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from datetime import datetime, timedelta

import msgspec

from paystream.demo_data import BLOCKED_COUNTRY, COUNTRIES, TYPICAL_AMOUNT_MINOR, DemoMerchant, DemoWorld
from schemas.accounts import CaptureRequested, VoidRequested
from schemas.payments import PaymentRequested
from schemas.refunds import RefundRequested

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

# What happens to a manual-capture payment's hold, in rotation (not drawn), so
# that a run with four manual payments or more has each: 40% captured in full,
# 30% in part, 20% voided, 10% left to expire.
CAPTURE_PLANS = (
    "capture_full",
    "capture_partial",
    "void",
    "expire",
    "capture_full",
    "capture_partial",
    "capture_full",
    "void",
    "capture_partial",
    "capture_full",
)
# A hold left to expire has this deadline (`capture_by`) after its payment's
# created_at: seconds, so a demo sees it expire. The others keep the default
# deadline (PAYSTREAM_HOLD_EXPIRY_S_MAX) and are captured or voided long before.
EXPIRE_AFTER = timedelta(seconds=5)
# A partial capture takes this share of the authorized amount, a partial refund of the captured amount.
PARTIAL_SHARE_MIN, PARTIAL_SHARE_MAX = 0.3, 0.9
REFUND_REASONS = ("demo: goods returned", "demo: order cancelled", "demo: price adjusted")

LifecycleRequest = CaptureRequested | VoidRequested


@dataclass(frozen=True, slots=True)
class GeneratedPayment:
    kind: str
    payment: PaymentRequested
    # Manual capture: the plan (one of CAPTURE_PLANS) and the request to publish
    # after the payment, on its payer's key (none for a hold left to expire).
    plan: str | None = None
    requests: tuple[LifecycleRequest, ...] = ()


@dataclass(frozen=True, slots=True)
class SettledPayment:
    """What a refund needs of a settled payment: its payer and what was captured."""

    payment_id: str
    payer_account: str
    currency: str
    gross_minor: int


@dataclass(frozen=True, slots=True)
class GeneratedRefund:
    # partial, full, or over: more than what is left of the payment (declined exceeds_refundable).
    plan: str
    request: RefundRequested


class PaymentGenerator:
    def __init__(self, world: DemoWorld, seed: int, id_prefix: str, manual_percent: float = 0.0) -> None:
        assert 0.0 <= manual_percent <= 100.0, manual_percent
        self.world = world
        self.rng = random.Random(seed)
        self.id_prefix = id_prefix
        self.manual_percent = manual_percent
        # Its own stream: turning manual capture on changes no other draw.
        self.lifecycle_rng = random.Random(f"{seed}:manual-capture")
        self.manual_count = 0
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
            payment = PaymentRequested(
                payment_id=f"{self.id_prefix}-{index:07d}",
                payer_account=account,
                merchant_id=merchant.merchant_id,
                amount_minor=amount,
                currency=currency,  # type: ignore[arg-type]
                country=country,
                method=self.rng.choice(METHODS),  # type: ignore[arg-type]
                created_at=start + spacing * index,
                metadata={"source": "generator", "kind": kind},
            )
            if kind == "ordinary" and self.manual_percent and self.lifecycle_rng.random() * 100 < self.manual_percent:
                yield self._manual(kind, payment)
            else:
                yield GeneratedPayment(kind, payment)

    def _manual(self, kind: str, payment: PaymentRequested) -> GeneratedPayment:
        """The payment as a manual capture with the next plan, and the request that carries the plan out."""
        plan = CAPTURE_PLANS[self.manual_count % len(CAPTURE_PLANS)]
        self.manual_count += 1
        manual = msgspec.structs.replace(
            payment,
            capture="manual",
            capture_by=payment.created_at + EXPIRE_AFTER if plan == "expire" else None,
            metadata={**payment.metadata, "plan": plan},
        )
        metadata = {"source": "generator", "plan": plan}
        requests: tuple[LifecycleRequest, ...] = ()
        if plan in ("capture_full", "capture_partial"):
            amount = (
                payment.amount_minor if plan == "capture_full" else _part_of(payment.amount_minor, self.lifecycle_rng)
            )
            capture = CaptureRequested(
                request_id=f"{payment.payment_id}-capture",
                account_id=payment.payer_account,
                payment_id=payment.payment_id,
                amount_minor=amount,
                currency=payment.currency,
                created_at=payment.created_at,
                metadata=metadata,
            )
            requests = (capture,)
        elif plan == "void":
            void = VoidRequested(
                request_id=f"{payment.payment_id}-void",
                account_id=payment.payer_account,
                payment_id=payment.payment_id,
                created_at=payment.created_at,
                metadata=metadata,
            )
            requests = (void,)
        return GeneratedPayment(kind, manual, plan, requests)


def _part_of(amount_minor: int, rng: random.Random) -> int:
    """Some of the amount, never all of it (an amount of 1 cannot be split: all of it)."""
    if amount_minor < 2:
        return amount_minor
    share = rng.uniform(PARTIAL_SHARE_MIN, PARTIAL_SHARE_MAX)
    return max(1, min(amount_minor - 1, round(amount_minor * share)))


def plan_refunds(
    settled: Sequence[SettledPayment], percent: float, seed: int, id_prefix: str, now: datetime
) -> list[GeneratedRefund]:
    """Refunds of `percent` of the settled payments (at least one when there are any), in publishing order.

    The first chosen payment gets a partial refund and then one more than what
    is left (the over-refund, declined `exceeds_refundable`); the others
    alternate full and partial refunds. Deterministic for a given seed and
    list of payments.
    """
    assert 0.0 <= percent <= 100.0, percent
    if not settled or not percent:
        return []
    rng = random.Random(f"{seed}:refunds")
    count = min(len(settled), max(1, round(len(settled) * percent / 100)))
    chosen = rng.sample(sorted(settled, key=lambda p: p.payment_id), count)
    refunds: list[GeneratedRefund] = []

    def refund(plan: str, payment: SettledPayment, amount_minor: int) -> None:
        refunds.append(
            GeneratedRefund(
                plan,
                RefundRequested(
                    request_id=f"{id_prefix}-refund-{len(refunds):05d}",
                    account_id=payment.payer_account,
                    payment_id=payment.payment_id,
                    amount_minor=amount_minor,
                    currency=payment.currency,  # type: ignore[arg-type]
                    reason=rng.choice(REFUND_REASONS),
                    created_at=now,
                    metadata={"source": "generator", "plan": plan},
                ),
            )
        )

    for index, payment in enumerate(chosen):
        if index % 2 == 1 or payment.gross_minor < 2:
            refund("full", payment, payment.gross_minor)
            continue
        part = _part_of(payment.gross_minor, rng)
        refund("partial", payment, part)
        if index == 0:
            # Published after the partial one on the same key: funds sees it second and declines it.
            refund("over", payment, payment.gross_minor - part + 1)
    return refunds
