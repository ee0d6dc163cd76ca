"""The crash and chaos runs' account and lifecycle traffic: its expected answers are what the stages' rules decide.

`paystream.chaos.accounts` and `paystream.chaos.lifecycle` write down each
request's answer, each fresh account's final balance, how each scripted
payment's hold ends and what each payment ends refunded; the crash-point
matrix and `paystream chaos` fail a run that ends otherwise. Here the scripts
are played, in the order they are published, through risk's withdrawal rules
and funds' account, capture and refund rules on the demo world as seeded: a
script that expected the wrong answer would make those runs fail for no crash
at all. Clearing's capture is played either at once or only at the end of the
first phase (its timing is not scripted: the answers must not depend on it).
"""

from __future__ import annotations

import random
from collections.abc import Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta

import pytest

from paystream.chaos.accounts import (
    AccountKey,
    AccountTraffic,
    ExpectedHold,
    TrafficItem,
    interleave,
    key_of,
    plan_account_traffic,
)
from paystream.chaos.lifecycle import LifecyclePlan, plan_lifecycle_traffic
from paystream.demo_data import DemoWorld, build_world
from schemas.accounts import CaptureRequested, VoidRequested, WithdrawalRequested
from schemas.payments import PaymentRequested
from tests.support.pipeline import generate
from workers.account_rules import AccountState, decide_account_request, hold_refusal
from workers.capture_rules import HoldState, hold_deadline
from workers.refund_rules import PaymentState
from workers.risk_accounts import assess_withdrawal

AT = datetime(2026, 3, 1, tzinfo=UTC)
HOLD_EXPIRY_S_MAX = 7 * 86_400
EXPIRE_AFTER = timedelta(seconds=3)


def seeded_accounts(world: DemoWorld) -> dict[str, AccountState]:
    """The demo payers as `accounts seed` leaves them: open and funded, or opened and closed empty."""
    return {
        p.account_id: AccountState(p.account_id, p.currency, p.status, p.balance_minor if p.status == "open" else 0, 0)
        for p in world.payers
    }


@dataclass
class Played:
    """What the rules decided: each request's (status, reason code), and the accounts, holds and payments after."""

    answers: dict[AccountKey, tuple[str, str]] = field(default_factory=dict)
    accounts: dict[str, AccountState] = field(default_factory=dict)
    holds: dict[str, HoldState] = field(default_factory=dict)
    payments: dict[str, PaymentState] = field(default_factory=dict)
    released: dict[str, int] = field(default_factory=dict)


def _clear(played: Played, payment_id: str) -> None:
    """Clearing captures a hold: the captured amount leaves the balance, the whole hold stops being held."""
    hold = played.holds[payment_id]
    captured = hold.capture_minor if hold.capture_minor is not None else hold.amount_minor
    account = played.accounts[hold.account_id]
    account.balance_minor -= captured
    account.held_minor -= hold.amount_minor
    hold.status = "captured"
    played.released[payment_id] = hold.amount_minor - captured
    payment = played.payments[payment_id]
    payment.status, payment.gross_minor, payment.fee_minor = "settled", captured, captured // 50


def _hold(played: Played, item: PaymentRequested) -> None:
    assert hold_refusal(item, played.accounts) is None, item
    manual = item.capture == "manual"
    played.holds[item.payment_id] = HoldState(
        item.payment_id, item.payer_account, item.amount_minor, item.currency, "held",
        "manual" if manual else "automatic", hold_deadline(item, HOLD_EXPIRY_S_MAX),
    )  # fmt: skip
    played.payments[item.payment_id] = PaymentState(
        item.payment_id, item.payer_account, item.merchant_id, item.currency,
        "authorized" if manual else "held", None, None, 0, item.created_at,
    )  # fmt: skip
    if not manual:
        _clear(played, item.payment_id)


def _decide(played: Played, world: DemoWorld, item: object, now: datetime, clear_at_once: bool) -> None:
    blocked = {payer: "blocked" for payer in world.blocked_payers}
    txn_max = {limits.currency: limits.txn_amount_max_minor for limits in world.limits}
    assert not isinstance(item, PaymentRequested)
    key = key_of(item)  # type: ignore[arg-type]
    if key in played.answers:  # a repeated request: answered from what was stored
        return
    reasons = assess_withdrawal(item, blocked, txn_max) if isinstance(item, WithdrawalRequested) else ()
    if reasons:
        played.answers[key] = ("rejected", reasons[0].split(":")[0])
        return
    decision = decide_account_request(item, played.accounts, now, played.holds, played.payments)  # type: ignore[arg-type]
    code = decision.reasons[0].split(":")[0] if decision.reasons else ""
    played.answers[key] = ("succeeded" if decision.succeeded else "declined", code)
    if decision.succeeded and isinstance(item, VoidRequested):
        played.payments[item.payment_id].status = "voided"
        played.released[item.payment_id] = played.holds[item.payment_id].amount_minor
    if decision.succeeded and isinstance(item, CaptureRequested) and clear_at_once:
        _clear(played, item.payment_id)


def play(world: DemoWorld, traffic: AccountTraffic, clear_at_once: bool = True) -> Played:
    """Decide in published order: the first phase, then (captures cleared, due holds expired) the later one."""
    played = Played(accounts=seeded_accounts(world))
    for item in interleave([], [*traffic.sequences, *traffic.setup]):
        if isinstance(item, PaymentRequested):
            _hold(played, item)
        else:
            _decide(played, world, item, AT, clear_at_once)
    for hold in played.holds.values():
        if hold.status == "capturing":
            _clear(played, hold.payment_id)
    # Funds' timer, past every short deadline: the holds nothing captured or voided expire.
    expiry = AT + EXPIRE_AFTER
    for hold in played.holds.values():
        if hold.status == "held" and hold.expires_at is not None and hold.expires_at <= expiry:
            hold.status = "expired"
            played.accounts[hold.account_id].held_minor -= hold.amount_minor
            played.payments[hold.payment_id].status = "expired"
            played.released[hold.payment_id] = hold.amount_minor
    assert all(played.payments[p].status == "settled" for p in traffic.awaited)
    for item in interleave([], traffic.later):
        _decide(played, world, item, AT, clear_at_once)
    return played


def plan(world: DemoWorld, fresh: int, rounds: int, lifecycle: tuple[int, int], seed: int) -> AccountTraffic:
    rng = random.Random(seed)
    traffic = plan_account_traffic(world, "run1", fresh, rounds, rng, AT)
    plan_lifecycle_traffic(traffic, world, "run1", LifecyclePlan(*lifecycle, EXPIRE_AFTER), rng, AT)
    return traffic


@pytest.mark.parametrize("clear_at_once", [True, False])
@pytest.mark.parametrize(
    ("fresh", "rounds", "lifecycle"), [(12, 4, (4, 4)), (40, 10, (8, 8)), (7, 1, (1, 3)), (0, 0, (0, 0))]
)
def test_the_scripted_answers_are_what_the_rules_decide(
    fresh: int, rounds: int, lifecycle: tuple[int, int], clear_at_once: bool
) -> None:
    world = build_world()
    traffic = plan(world, fresh, rounds, lifecycle, fresh)
    played = play(world, traffic, clear_at_once)
    assert played.answers == {key: (e.status, e.reason) for key, e in traffic.expected.items()}
    for account_id, expected in traffic.expected_accounts.items():
        state = played.accounts[account_id]
        assert (state.status, state.balance_minor, state.held_minor) == (expected.status, expected.balance_minor, 0)
    for payment_id, expected_hold in traffic.expected_holds.items():
        hold = played.holds[payment_id]
        released = played.released.get(payment_id, 0)
        assert ExpectedHold(hold.status, hold.amount_minor - released, released) == expected_hold
        assert played.payments[payment_id].refunded_minor == traffic.expected_refunded[payment_id]
        assert played.payments[payment_id].status == traffic.expected_payments[payment_id]
    capturing, refunding = lifecycle
    assert len(traffic.expected_accounts) == fresh + capturing + refunding
    assert len(traffic.expected_payments) == fresh // 2 + 4 * capturing + 2 * refunding
    # Request ids are never reused, but for the one repeated refund of each refunding account.
    assert len(traffic.requests) == len(traffic.expected) + refunding
    assert len({key_of(r) for r in traffic.requests}) == len(traffic.expected)


def test_every_answer_appears_in_a_crash_case() -> None:
    """The matrix's traffic declines for insufficient funds, closes accounts and is rejected by risk."""
    traffic = plan(build_world(), 12, 4, (4, 4), 1)
    answers = {(e.status, e.reason) for e in traffic.expected.values()}
    assert answers >= {
        ("succeeded", ""),
        ("declined", "insufficient_funds"),
        ("declined", "currency_mismatch"),
        ("declined", "account_exists"),
        ("declined", "account_closed"),
        ("declined", "unknown_account"),
        ("rejected", "blocked_payer"),
        ("rejected", "txn_amount_limit"),
        ("declined", "exceeds_authorized"),
        ("declined", "already_voided"),
        ("declined", "already_captured"),
        ("declined", "not_captured"),
        ("declined", "fully_refunded"),
        ("declined", "exceeds_refundable"),
    }
    kinds = {kind for kind, _ in traffic.expected}
    assert kinds == {"account.open", "account.close", "deposit", "withdrawal", "capture", "void", "refund"}
    # Captured in full and in part, voided, left to expire; refunded in part and in full.
    assert set(traffic.expected_holds.values()) >= {
        ExpectedHold("captured", 8_000, 0), ExpectedHold("captured", 4_000, 4_000),
        ExpectedHold("voided", 0, 4_000), ExpectedHold("expired", 0, 4_000),
    }  # fmt: skip
    assert {status for status in traffic.expected_payments.values()} == {"settled", "voided", "expired"}


def test_interleaving_keeps_each_accounts_order_and_everything_once() -> None:
    traffic = plan(build_world(), 12, 4, (4, 4), 2)
    payments = [g.payment for g in generate(240, "p")]
    scripts = [*traffic.sequences, *traffic.later]
    mixed = interleave(payments, scripts)
    assert sorted(map(id, mixed)) == sorted(map(id, payments + [i for s in scripts for i in s]))
    # Each script's items come out in the script's order.
    sequences: list[Sequence[TrafficItem]] = [payments, *scripts]
    for sequence in sequences:
        members = {id(item) for item in sequence}
        assert [item for item in mixed if id(item) in members] == list(sequence)
    position = {id(item): index for index, item in enumerate(mixed)}
    # Spread over the whole run, not bunched: account traffic in every tenth of it.
    tenths = {position[id(item)] * 10 // len(mixed) for s in scripts for item in s}
    assert tenths == set(range(10))
