"""Account traffic for crash and chaos runs: requests whose answers are known before they are sent.

Each run opens fresh accounts (ids under the run's prefix) and walks each one
through a fixed script of opens, deposits, withdrawals, a payment and a close,
and sends deposits and withdrawals to the demo world's payers. Every answer
(status and reason code) and every fresh account's final balance follows
from the script alone, because one account's requests and payments share a
key and the stages apply them in the order sent. A crash, restart or
rebalance must not change any of them: a deposit applied twice would change
a balance, one lost would flip a later withdrawal from succeeded to
declined.

Scripts (t = the currency's typical ticket, `demo_data.TYPICAL_AMOUNT_MINOR`):
- closing account: open; deposit 3t; deposit 2t; withdraw 5t + 1 (declined,
  insufficient_funds); deposit in another currency (declined,
  currency_mismatch); open again (declined, account_exists); withdraw 2t;
  withdraw 3t; close (the balance is 0); deposit t (declined, account_closed).
- paying account: open; deposit 4t; a payment of 3t to a merchant taking the
  currency (settled); withdraw t + 1 (declined: 3t is held or captured, t is
  available); withdraw t (balance 0); deposit t (balance t).
- demo payers: a deposit into rich payers (succeeded); a withdrawal of t from
  rich payers (succeeded: they hold at least 200t and a run's payments take far
  less); a withdrawal of t from a payer seeded with t/10 (declined,
  insufficient_funds); a withdrawal from a blocked payer (rejected at risk,
  blocked_payer) and over the currency's transaction limit (rejected,
  txn_amount_limit); a deposit into a closed payer (declined, account_closed)
  and into an account that does not exist (declined, unknown_account).
Demo payers are never deposited into twice by one traffic and the poor payers
never at all, so traffics of several runs may share one database.

The payment lifecycle (manual captures, voids, expiries, refunds) adds its
own scripts to the same traffic (`paystream.chaos.lifecycle`). Refunds can
only be decided once their payment is cleared, so a traffic has phases:
`setup` (the payments refunds will act on) and `sequences` (everything else)
go out first; `later` (the refunds) only once every payment in `awaited` is
cleared or settled.
"""

from __future__ import annotations

import random
from collections.abc import Sequence
from dataclasses import dataclass, field
from datetime import datetime

from paystream.demo_data import COUNTRIES, CURRENCIES, TYPICAL_AMOUNT_MINOR, DemoWorld
from paystream.publisher import PaymentPublisher
from schemas.accounts import (
    AccountCloseRequested,
    AccountOpenRequested,
    AccountRequest,
    DepositRequested,
    WithdrawalRequested,
    request_kind,
)
from schemas.payments import PaymentRequested

AccountKey = tuple[str, str]  # (kind, request_id)
TrafficItem = PaymentRequested | AccountRequest

# External references of the requests: the stages store them and never interpret them.
SOURCE_REF = "chaos-source"
DESTINATION_REF = "chaos-destination"


@dataclass(frozen=True, slots=True)
class Expected:
    """An account request's answer: status (succeeded, declined, rejected) and reason code ('' when succeeded)."""

    status: str
    reason: str = ""


@dataclass(frozen=True, slots=True)
class ExpectedAccount:
    """A fresh account at the end of the run."""

    status: str
    balance_minor: int


@dataclass(frozen=True, slots=True)
class ExpectedHold:
    """A payment's hold at the end of the run: its status, what it captured and what it released."""

    status: str
    captured_minor: int
    released_minor: int


@dataclass
class AccountTraffic:
    """The requests of one run, by account in the order they must be applied, with what each must end as.

    A request may appear twice in a script (a repeated refund id): `expected`
    has it once, `requests` every copy.
    """

    sequences: list[list[TrafficItem]] = field(default_factory=list)
    # Published with `sequences`: the payments `later` acts on (see the module docstring).
    setup: list[list[TrafficItem]] = field(default_factory=list)
    # Published once every payment in `awaited` is cleared or settled.
    later: list[list[TrafficItem]] = field(default_factory=list)
    awaited: list[str] = field(default_factory=list)
    expected: dict[AccountKey, Expected] = field(default_factory=dict)
    # Payments of fresh accounts (their final status) and the fresh accounts' final state.
    expected_payments: dict[str, str] = field(default_factory=dict)
    expected_accounts: dict[str, ExpectedAccount] = field(default_factory=dict)
    # The lifecycle's payments: how each hold ends, and what each payment ends refunded (0 when never).
    expected_holds: dict[str, ExpectedHold] = field(default_factory=dict)
    expected_refunded: dict[str, int] = field(default_factory=dict)

    @property
    def phases(self) -> list[list[TrafficItem]]:
        """The scripts of every phase: `sequences`, `setup`, `later`."""
        return [*self.sequences, *self.setup, *self.later]

    @property
    def requests(self) -> list[AccountRequest]:
        return [item for sequence in self.phases for item in sequence if not isinstance(item, PaymentRequested)]

    @property
    def payments(self) -> list[PaymentRequested]:
        return [item for sequence in self.phases for item in sequence if isinstance(item, PaymentRequested)]

    def extend(self, other: AccountTraffic) -> None:
        """Add another traffic's scripts and expectations (its ids must be apart from these)."""
        assert not set(other.expected) & set(self.expected), "the two traffics share request ids"
        self.sequences += other.sequences
        self.setup += other.setup
        self.later += other.later
        self.awaited += other.awaited
        self.expected.update(other.expected)
        self.expected_payments.update(other.expected_payments)
        self.expected_accounts.update(other.expected_accounts)
        self.expected_holds.update(other.expected_holds)
        self.expected_refunded.update(other.expected_refunded)

    def counts(self) -> dict[str, int]:
        """Requests by expected status."""
        counted: dict[str, int] = {}
        for answer in self.expected.values():
            counted[answer.status] = counted.get(answer.status, 0) + 1
        return counted


def key_of(request: AccountRequest) -> AccountKey:
    return (request_kind(request), request.request_id)


class Builder:
    """Requests with ids under `prefix`, added to `traffic` with their expected answers."""

    def __init__(self, prefix: str, created_at: datetime, traffic: AccountTraffic | None = None) -> None:
        self.prefix = prefix
        self.created_at = created_at
        self.traffic = traffic if traffic is not None else AccountTraffic()
        self.serial = 0

    def rid(self, what: str) -> str:
        self.serial += 1
        return f"{self.prefix}-{what}{self.serial:04d}"

    def add(self, sequence: list[TrafficItem], request: AccountRequest, expected: Expected) -> None:
        sequence.append(request)
        self.traffic.expected[key_of(request)] = expected

    def open(self, sequence: list[TrafficItem], account: str, currency: str, expected: Expected) -> None:
        request = AccountOpenRequested(
            request_id=self.rid("open"),
            account_id=account,
            owner_id=f"{self.prefix}-owner",
            currency=currency,  # type: ignore[arg-type]
            created_at=self.created_at,
        )
        self.add(sequence, request, expected)

    def deposit(
        self, sequence: list[TrafficItem], account: str, amount: int, currency: str, expected: Expected
    ) -> None:
        request = DepositRequested(
            request_id=self.rid("dep"),
            account_id=account,
            amount_minor=amount,
            currency=currency,  # type: ignore[arg-type]
            source_ref=SOURCE_REF,
            created_at=self.created_at,
        )
        self.add(sequence, request, expected)

    def withdraw(
        self, sequence: list[TrafficItem], account: str, amount: int, currency: str, expected: Expected
    ) -> None:
        request = WithdrawalRequested(
            request_id=self.rid("wd"),
            account_id=account,
            amount_minor=amount,
            currency=currency,  # type: ignore[arg-type]
            destination_ref=DESTINATION_REF,
            created_at=self.created_at,
        )
        self.add(sequence, request, expected)

    def close(self, sequence: list[TrafficItem], account: str, expected: Expected) -> None:
        request = AccountCloseRequested(request_id=self.rid("close"), account_id=account, created_at=self.created_at)
        self.add(sequence, request, expected)


OK = Expected("succeeded")


def plan_account_traffic(
    world: DemoWorld, prefix: str, fresh_accounts: int, demo_payers: int, rng: random.Random, created_at: datetime
) -> AccountTraffic:
    """The scripts of the module docstring: `fresh_accounts` new accounts, `demo_payers` of each demo case."""
    build = Builder(prefix, created_at)
    traffic = build.traffic
    merchants = [m for m in world.merchants if m.merchant_id not in set(world.blocked_merchants)]
    for index in range(fresh_accounts):
        currency = CURRENCIES[index % len(CURRENCIES)]
        other = CURRENCIES[(index + 1) % len(CURRENCIES)]
        t = TYPICAL_AMOUNT_MINOR[currency]
        account = f"{prefix}-acct{index:04d}"
        sequence: list[TrafficItem] = []
        build.open(sequence, account, currency, OK)
        if index % 2 == 0:
            build.deposit(sequence, account, 3 * t, currency, OK)
            build.deposit(sequence, account, 2 * t, currency, OK)
            build.withdraw(sequence, account, 5 * t + 1, currency, Expected("declined", "insufficient_funds"))
            build.deposit(sequence, account, t, other, Expected("declined", "currency_mismatch"))
            build.open(sequence, account, currency, Expected("declined", "account_exists"))
            build.withdraw(sequence, account, 2 * t, currency, OK)
            build.withdraw(sequence, account, 3 * t, currency, OK)
            build.close(sequence, account, OK)
            build.deposit(sequence, account, t, currency, Expected("declined", "account_closed"))
            traffic.expected_accounts[account] = ExpectedAccount("closed", 0)
        else:
            merchant = rng.choice([m for m in merchants if currency in m.currencies])
            build.deposit(sequence, account, 4 * t, currency, OK)
            payment = PaymentRequested(
                payment_id=f"{prefix}-pay{index:04d}",
                payer_account=account,
                merchant_id=merchant.merchant_id,
                amount_minor=3 * t,
                currency=currency,  # type: ignore[arg-type]
                country=COUNTRIES[currency][0],
                method="wallet",
                created_at=created_at,
            )
            sequence.append(payment)
            traffic.expected_payments[payment.payment_id] = "settled"
            build.withdraw(sequence, account, t + 1, currency, Expected("declined", "insufficient_funds"))
            build.withdraw(sequence, account, t, currency, OK)
            build.deposit(sequence, account, t, currency, OK)
            traffic.expected_accounts[account] = ExpectedAccount("open", t)
        traffic.sequences.append(sequence)
    _demo_payer_requests(world, build, demo_payers, rng)
    return traffic


def _demo_payer_requests(world: DemoWorld, build: Builder, count: int, rng: random.Random) -> None:
    excluded = set(world.blocked_payers) | set(world.poor_payers)
    rich = [p for p in world.payers if p.status == "open" and p.account_id not in excluded]
    poor = [p for p in world.payers if p.status == "open" and p.account_id in set(world.poor_payers)]
    blocked = [p for p in world.payers if p.account_id in set(world.blocked_payers)]
    closed = [p for p in world.payers if p.status == "closed"]
    count = min(count, len(rich) // 3)  # three different rich payers a round
    picked = rng.sample(rich, k=3 * count)
    for i in range(count):
        sequence: list[TrafficItem] = []
        depositor, withdrawer, over_limit = picked[3 * i : 3 * i + 3]
        t = TYPICAL_AMOUNT_MINOR[depositor.currency]
        build.deposit(sequence, depositor.account_id, rng.randint(1, 20) * t, depositor.currency, OK)
        t = TYPICAL_AMOUNT_MINOR[withdrawer.currency]
        build.withdraw(sequence, withdrawer.account_id, t, withdrawer.currency, OK)
        t = TYPICAL_AMOUNT_MINOR[over_limit.currency]
        limit = next(lim.txn_amount_max_minor for lim in world.limits if lim.currency == over_limit.currency)
        build.withdraw(
            sequence, over_limit.account_id, limit + 1, over_limit.currency, Expected("rejected", "txn_amount_limit")
        )
        payer = rng.choice(poor)
        t = TYPICAL_AMOUNT_MINOR[payer.currency]
        build.withdraw(sequence, payer.account_id, t, payer.currency, Expected("declined", "insufficient_funds"))
        payer = rng.choice(blocked)
        t = TYPICAL_AMOUNT_MINOR[payer.currency]
        build.withdraw(sequence, payer.account_id, t, payer.currency, Expected("rejected", "blocked_payer"))
        payer = rng.choice(closed)
        t = TYPICAL_AMOUNT_MINOR[payer.currency]
        build.deposit(sequence, payer.account_id, t, payer.currency, Expected("declined", "account_closed"))
        build.deposit(sequence, f"{build.prefix}-ghost{i:04d}", 100, "EUR", Expected("declined", "unknown_account"))
        # Each request stands for a different account: spread them like the fresh accounts' steps.
        build.traffic.sequences += [[item] for item in sequence]


def interleave(payments: Sequence[PaymentRequested], sequences: Sequence[Sequence[TrafficItem]]) -> list[TrafficItem]:
    """Payments with the scripts (`AccountTraffic.sequences`, ...) spread evenly among them; each keeps its order.

    Step-major: every account's first step, then every account's second, and so
    on, so each script spans the whole run and crashes land between its steps;
    one-request sequences (the demo payers') are spread over the same span.
    """
    scripts = [s for s in sequences if len(s) > 1]
    singles = [s[0] for s in sequences if len(s) == 1]
    steps: list[TrafficItem] = []
    for step in range(max((len(s) for s in scripts), default=0)):
        steps += [script[step] for script in scripts if step < len(script)]
    return _spread(list(payments), _spread(steps, singles))


def _spread(base: list[TrafficItem], extra: list[TrafficItem]) -> list[TrafficItem]:
    """`base` with `extra` spread evenly among it; both keep their order."""
    merged: list[TrafficItem] = []
    total = len(base) + len(extra)
    taken = 0
    for position in range(total):
        placed = len(merged) - taken
        # Extra item j goes at position ~ j * total / len(extra).
        if placed < len(extra) and (position * len(extra) >= placed * total or taken == len(base)):
            merged.append(extra[placed])
        else:
            merged.append(base[taken])
            taken += 1
    return merged


async def publish_item(publisher: PaymentPublisher, item: TrafficItem) -> None:
    """Queue a payment or an account request, keyed by its account like the rest of that account's traffic."""
    if isinstance(item, PaymentRequested):
        await publisher.publish(item)
    else:
        await publisher.publish_account_request(item)
