"""Payment lifecycle traffic for crash and chaos runs: manual captures, voids, expiries and refunds, scripted.

Like the account scripts (`paystream.chaos.accounts`), each one runs on a
fresh account of its own, so every answer, every hold's end, every refunded
total and the account's final balance follow from the script alone: one
account's payments and requests share a key and the stages decide them in
the order sent (docs/design-decisions.md §13, §15, §16). A crash, restart or
rebalance must not change any of them: a capture applied twice would debit
twice, a refund lost would leave the balance short and flip a later refund
from declined to succeeded.

Scripts (t = the currency's typical ticket, `demo_data.TYPICAL_AMOUNT_MINOR`):
- capturing account (all in the first phase): open; deposit 8t; four
  manual-capture payments: F of 2t, P of 2t, V of t, and E of t whose
  `capture_by` is `expire_after` past its creation (nothing captures it: it
  is left to expire on funds' timer); capture F 2t (all of it); capture P 3t
  (declined, exceeds_authorized); capture P t (part: t captured, t
  released); void V; capture V t (declined, already_voided); capture F 2t
  again under a new id (declined, already_captured); refund V t (declined,
  not_captured: a voided payment captured nothing). Ends: F and P settled
  with 2t and t captured, V voided, E expired (t released each); balance 5t,
  nothing held.
- refunding account: setup (first phase): open; deposit 6t; an automatic
  payment G of 2t; a manual-capture payment H of 2t; capture H t. Later
  phase, once G and H are cleared: refund G t (succeeded: partially
  refunded); refund G t (succeeded: refunded in full); the first refund again,
  same id (answered again, moves nothing); refund G 1 (declined,
  fully_refunded); refund H t + 1 (declined, exceeds_refundable: H captured
  t of its 2t); refund H t (succeeded). Ends: G and H settled, refunded 2t
  and t; balance 6t, nothing held.
"""

from __future__ import annotations

import random
from dataclasses import dataclass
from datetime import datetime, timedelta

from paystream.chaos.accounts import OK, AccountTraffic, Builder, Expected, ExpectedAccount, ExpectedHold, TrafficItem
from paystream.demo_data import COUNTRIES, CURRENCIES, TYPICAL_AMOUNT_MINOR, DemoWorld
from schemas.accounts import CaptureRequested, VoidRequested
from schemas.payments import PaymentRequested
from schemas.refunds import RefundRequested

REFUND_REASON = "chaos refund"


@dataclass(frozen=True, slots=True)
class LifecyclePlan:
    """How many capturing and refunding accounts; how long after its creation payment E's hold expires."""

    capturing_accounts: int
    refunding_accounts: int
    expire_after: timedelta = timedelta(seconds=3)


def plan_lifecycle_traffic(
    traffic: AccountTraffic,
    world: DemoWorld,
    prefix: str,
    plan: LifecyclePlan,
    rng: random.Random,
    created_at: datetime,
) -> None:
    """Add the scripts of the module docstring to `traffic`, with ids under `prefix`-lc (apart from the account
    scripts' ids)."""
    build = _LifecycleBuilder(f"{prefix}-lc", created_at, traffic, world, rng)
    for index in range(plan.capturing_accounts):
        build.capturing_script(index, plan.expire_after)
    for index in range(plan.refunding_accounts):
        build.refunding_script(plan.capturing_accounts + index)


class _LifecycleBuilder(Builder):
    def __init__(
        self, prefix: str, created_at: datetime, traffic: AccountTraffic, world: DemoWorld, rng: random.Random
    ) -> None:
        super().__init__(prefix, created_at, traffic)
        self.merchants = [m for m in world.merchants if m.merchant_id not in set(world.blocked_merchants)]
        self.rng = rng

    def capturing_script(self, index: int, expire_after: timedelta) -> None:
        currency = CURRENCIES[index % len(CURRENCIES)]
        t = TYPICAL_AMOUNT_MINOR[currency]
        account = f"{self.prefix}-acct{index:04d}"
        merchant = self._merchant(currency)
        sequence: list[TrafficItem] = []
        self.open(sequence, account, currency, OK)
        self.deposit(sequence, account, 8 * t, currency, OK)
        full = self._payment(sequence, f"cap{index:04d}", account, merchant, 2 * t, currency, None)
        part = self._payment(sequence, f"part{index:04d}", account, merchant, 2 * t, currency, None)
        voided = self._payment(sequence, f"void{index:04d}", account, merchant, t, currency, None)
        expiring = self._payment(
            sequence, f"exp{index:04d}", account, merchant, t, currency, self.created_at + expire_after
        )
        self.capture(sequence, account, full, 2 * t, currency, OK)
        self.capture(sequence, account, part, 3 * t, currency, Expected("declined", "exceeds_authorized"))
        self.capture(sequence, account, part, t, currency, OK)
        self.void(sequence, account, voided, OK)
        self.capture(sequence, account, voided, t, currency, Expected("declined", "already_voided"))
        self.capture(sequence, account, full, 2 * t, currency, Expected("declined", "already_captured"))
        self.refund(sequence, account, voided, t, currency, Expected("declined", "not_captured"))
        traffic = self.traffic
        traffic.sequences.append(sequence)
        traffic.expected_payments.update({full: "settled", part: "settled", voided: "voided", expiring: "expired"})
        traffic.expected_holds.update(
            {
                full: ExpectedHold("captured", 2 * t, 0),
                part: ExpectedHold("captured", t, t),
                voided: ExpectedHold("voided", 0, t),
                expiring: ExpectedHold("expired", 0, t),
            }
        )
        traffic.expected_refunded.update({full: 0, part: 0, voided: 0, expiring: 0})
        traffic.expected_accounts[account] = ExpectedAccount("open", 5 * t)

    def refunding_script(self, index: int) -> None:
        currency = CURRENCIES[index % len(CURRENCIES)]
        t = TYPICAL_AMOUNT_MINOR[currency]
        account = f"{self.prefix}-acct{index:04d}"
        merchant = self._merchant(currency)
        setup: list[TrafficItem] = []
        self.open(setup, account, currency, OK)
        self.deposit(setup, account, 6 * t, currency, OK)
        whole = self._payment(setup, f"auto{index:04d}", account, merchant, 2 * t, currency, None, manual=False)
        part = self._payment(setup, f"part{index:04d}", account, merchant, 2 * t, currency, None)
        self.capture(setup, account, part, t, currency, OK)
        later: list[TrafficItem] = []
        first = self.refund(later, account, whole, t, currency, OK)
        self.refund(later, account, whole, t, currency, OK)
        later.append(first)  # the same refund id again: answered like the first, nothing moves twice
        self.refund(later, account, whole, 1, currency, Expected("declined", "fully_refunded"))
        self.refund(later, account, part, t + 1, currency, Expected("declined", "exceeds_refundable"))
        self.refund(later, account, part, t, currency, OK)
        traffic = self.traffic
        traffic.setup.append(setup)
        traffic.later.append(later)
        traffic.awaited += [whole, part]
        traffic.expected_payments.update({whole: "settled", part: "settled"})
        traffic.expected_holds.update({whole: ExpectedHold("captured", 2 * t, 0), part: ExpectedHold("captured", t, t)})
        traffic.expected_refunded.update({whole: 2 * t, part: t})
        traffic.expected_accounts[account] = ExpectedAccount("open", 6 * t)

    def _merchant(self, currency: str) -> str:
        return self.rng.choice([m for m in self.merchants if currency in m.currencies]).merchant_id

    def _payment(
        self,
        sequence: list[TrafficItem],
        name: str,
        account: str,
        merchant: str,
        amount: int,
        currency: str,
        capture_by: datetime | None,
        manual: bool = True,
    ) -> str:
        payment = PaymentRequested(
            payment_id=f"{self.prefix}-{name}",
            payer_account=account,
            merchant_id=merchant,
            amount_minor=amount,
            currency=currency,  # type: ignore[arg-type]
            country=COUNTRIES[currency][0],
            method="card",
            created_at=self.created_at,
            capture="manual" if manual else "automatic",
            capture_by=capture_by,
        )
        sequence.append(payment)
        return payment.payment_id

    def capture(
        self, sequence: list[TrafficItem], account: str, payment_id: str, amount: int, currency: str, expected: Expected
    ) -> None:
        request = CaptureRequested(
            request_id=self.rid("cap"),
            account_id=account,
            payment_id=payment_id,
            amount_minor=amount,
            currency=currency,  # type: ignore[arg-type]
            created_at=self.created_at,
        )
        self.add(sequence, request, expected)

    def void(self, sequence: list[TrafficItem], account: str, payment_id: str, expected: Expected) -> None:
        request = VoidRequested(
            request_id=self.rid("void"), account_id=account, payment_id=payment_id, created_at=self.created_at
        )
        self.add(sequence, request, expected)

    def refund(
        self, sequence: list[TrafficItem], account: str, payment_id: str, amount: int, currency: str, expected: Expected
    ) -> RefundRequested:
        request = RefundRequested(
            request_id=self.rid("refund"),
            account_id=account,
            payment_id=payment_id,
            amount_minor=amount,
            currency=currency,  # type: ignore[arg-type]
            reason=REFUND_REASON,
            created_at=self.created_at,
        )
        self.add(sequence, request, expected)
        return request
