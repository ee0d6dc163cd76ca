"""The crash and chaos runs' account traffic: its expected answers are what the stages' rules decide.

`paystream.chaos.accounts` writes down each request's answer and each fresh
account's final balance; the crash-point matrix and `paystream chaos` fail a
run that ends otherwise. Here the scripts are played, in the order they are
published, through risk's withdrawal rules and funds' account rules on the
demo world as seeded: a script that expected the wrong answer would make
those runs fail for no crash at all.
"""

from __future__ import annotations

import random
from datetime import UTC, datetime

import pytest

from paystream.chaos.accounts import AccountTraffic, interleave, key_of, plan_account_traffic
from paystream.demo_data import DemoWorld, build_world
from schemas.accounts import WithdrawalRequested
from schemas.payments import PaymentRequested
from tests.support.pipeline import generate
from workers.account_rules import AccountState, decide_account_request, hold_refusal
from workers.risk_accounts import assess_withdrawal

AT = datetime(2026, 3, 1, tzinfo=UTC)


def seeded_accounts(world: DemoWorld) -> dict[str, AccountState]:
    """The demo payers as `accounts seed` leaves them: open and funded, or opened and closed empty."""
    return {
        p.account_id: AccountState(p.account_id, p.currency, p.status, p.balance_minor if p.status == "open" else 0, 0)
        for p in world.payers
    }


def play(
    world: DemoWorld, traffic: AccountTraffic
) -> tuple[dict[tuple[str, str], tuple[str, str]], dict[str, AccountState]]:
    """Each request's (status, reason code) and the accounts afterwards, deciding in published order."""
    accounts = seeded_accounts(world)
    blocked = {payer: "blocked" for payer in world.blocked_payers}
    txn_max = {limits.currency: limits.txn_amount_max_minor for limits in world.limits}
    answers: dict[tuple[str, str], tuple[str, str]] = {}
    for item in interleave([], traffic):
        if isinstance(item, PaymentRequested):
            assert hold_refusal(item, accounts) is None, item
            # Captured at clearing: the hold becomes a debit; what is available does not change.
            payer = accounts[item.payer_account]
            payer.held_minor -= item.amount_minor
            payer.balance_minor -= item.amount_minor
            continue
        reasons = assess_withdrawal(item, blocked, txn_max) if isinstance(item, WithdrawalRequested) else ()
        if reasons:
            answers[key_of(item)] = ("rejected", reasons[0].split(":")[0])
            continue
        decision = decide_account_request(item, accounts, AT)
        code = decision.reasons[0].split(":")[0] if decision.reasons else ""
        answers[key_of(item)] = ("succeeded" if decision.succeeded else "declined", code)
    return answers, accounts


@pytest.mark.parametrize(("fresh", "rounds"), [(12, 4), (40, 10), (7, 1), (0, 0)])
def test_the_scripted_answers_are_what_the_rules_decide(fresh: int, rounds: int) -> None:
    world = build_world()
    traffic = plan_account_traffic(world, "run1", fresh, rounds, random.Random(fresh), AT)
    answers, accounts = play(world, traffic)
    assert answers == {key: (e.status, e.reason) for key, e in traffic.expected.items()}
    for account_id, expected in traffic.expected_accounts.items():
        state = accounts[account_id]
        assert (state.status, state.balance_minor, state.held_minor) == (expected.status, expected.balance_minor, 0)
    assert len(traffic.expected_accounts) == fresh
    assert len(traffic.expected_payments) == fresh // 2
    assert len(traffic.requests) == len(traffic.expected)  # request ids are never reused


def test_every_answer_appears_in_a_crash_case() -> None:
    """The matrix's traffic declines for insufficient funds, closes accounts and is rejected by risk."""
    traffic = plan_account_traffic(build_world(), "run1", 12, 4, random.Random(1), AT)
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
    }
    kinds = {kind for kind, _ in traffic.expected}
    assert kinds == {"account.open", "account.close", "deposit", "withdrawal"}


def test_interleaving_keeps_each_accounts_order_and_everything_once() -> None:
    traffic = plan_account_traffic(build_world(), "run1", 12, 4, random.Random(2), AT)
    payments = [g.payment for g in generate(240, "p")]
    mixed = interleave(payments, traffic)
    assert sorted(map(id, mixed)) == sorted(map(id, payments + [i for s in traffic.sequences for i in s]))
    position = {id(item): index for index, item in enumerate(mixed)}
    for sequence in [payments, *traffic.sequences]:
        places = [position[id(item)] for item in sequence]
        assert places == sorted(places)
    # Spread over the whole run, not bunched: account traffic in every tenth of it.
    tenths = {position[id(item)] * 10 // len(mixed) for s in traffic.sequences for item in s}
    assert tenths == set(range(10))
