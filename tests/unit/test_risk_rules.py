"""Risk rules: each rule fires on its own, decisions are deterministic, approvals feed velocity."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

from hypothesis import given, settings
from hypothesis import strategies as st

from schemas.payments import PaymentRequested
from workers.risk_rules import RiskContext, RiskLimits, assess, assess_batch

T0 = datetime(2026, 11, 24, 12, 0, tzinfo=UTC)
LIMITS = RiskLimits(
    txn_amount_max_minor=10_000,
    payer_10m_count_max=3,
    payer_10m_amount_max_minor=20_000,
    payer_24h_count_max=5,
    payer_24h_amount_max_minor=40_000,
    merchant_daily_amount_max_minor=50_000,
)


def payment(n: int = 0, amount: int = 1_000, at: datetime = T0, **changes: str) -> PaymentRequested:
    fields = {"payer_account": "payer-1", "merchant_id": "m-1", "country": "DE", **changes}
    return PaymentRequested(
        payment_id=f"p-{n}",
        amount_minor=amount,
        currency="EUR",
        method="card",
        created_at=at,
        **fields,  # type: ignore[arg-type]
    )


def context() -> RiskContext:
    return RiskContext(limits={"EUR": LIMITS}, blocked={}, accepting={("m-1", "EUR"), ("m-2", "EUR")})


def codes(reasons: tuple[str, ...]) -> list[str]:
    return [r.split(":")[0] for r in reasons]


def test_ordinary_payment_is_approved() -> None:
    assert assess(payment(), context()) == ()


def test_each_blocklist_fires() -> None:
    ctx = context()
    ctx.blocked = {
        ("payer", "payer-1"): "fraud",
        ("merchant", "m-2"): "chargebacks",
        ("country", "KP"): "sanctions",
    }
    assert codes(assess(payment(), ctx)) == ["blocked_payer"]
    assert codes(assess(payment(payer_account="payer-2", merchant_id="m-2"), ctx)) == ["blocked_merchant"]
    assert codes(assess(payment(payer_account="payer-2", country="KP"), ctx)) == ["blocked_country"]


def test_transaction_limit() -> None:
    assert codes(assess(payment(amount=10_000), context())) == []
    assert codes(assess(payment(amount=10_001), context())) == ["txn_amount_limit"]


def test_unknown_merchant_or_currency() -> None:
    assert codes(assess(payment(merchant_id="m-9"), context())) == ["merchant_not_accepting"]


def test_a_suspended_merchant_is_named_as_such_not_as_missing_a_schedule() -> None:
    ctx = context()
    ctx.accepting = {pair for pair in ctx.accepting if pair[0] != "m-1"}
    ctx.suspended = {"m-1"}
    assert codes(assess(payment(merchant_id="m-1"), ctx)) == ["merchant_suspended"]
    assert assess(payment(merchant_id="m-1"), ctx)[0] == "merchant_suspended: m-1 is suspended"
    ctx = context()
    ctx.limits = {}
    assert "currency_not_configured" in codes(assess(payment(), ctx))


def test_velocity_count_counts_only_the_window_and_approvals() -> None:
    decisions = assess_batch([payment(i, at=T0 + timedelta(minutes=i)) for i in range(5)], context())
    assert [d.approved for d in decisions] == [True, True, True, False, False]
    assert codes(decisions[3].reasons) == ["payer_velocity_10m_count"]
    # Eleven minutes later the first approvals left the 10-minute window.
    ctx = context()
    assess_batch([payment(i, at=T0) for i in range(3)], ctx)
    assert assess(payment(9, at=T0 + timedelta(minutes=11)), ctx) == ()


def test_velocity_amount_24h() -> None:
    ctx = context()
    at = [T0 + timedelta(hours=h) for h in range(5)]
    decisions = assess_batch([payment(i, amount=9_000, at=t) for i, t in enumerate(at)], ctx)
    assert [d.approved for d in decisions] == [True, True, True, True, False]
    assert "payer_velocity_24h_amount" in codes(decisions[4].reasons)


def test_merchant_daily_limit_across_payers() -> None:
    ctx = context()
    batch = [payment(i, amount=9_000, payer_account=f"payer-{i}") for i in range(6)]
    decisions = assess_batch(batch, ctx)
    assert [d.approved for d in decisions] == [True] * 5 + [False]
    assert codes(decisions[5].reasons) == ["merchant_daily_limit"]


@settings(max_examples=50)
@given(st.lists(st.tuples(st.integers(1, 15_000), st.integers(0, 600)), min_size=1, max_size=30))
def test_same_batch_same_decisions(items: list[tuple[int, int]]) -> None:
    batch = [payment(i, amount=a, at=T0 + timedelta(seconds=s)) for i, (a, s) in enumerate(items)]
    first = assess_batch(batch, context())
    second = assess_batch(batch, context())
    assert first == second
    approved_amount = sum(p.amount_minor for p, d in zip(batch, first, strict=True) if d.approved)
    assert approved_amount <= LIMITS.payer_24h_amount_max_minor


def test_merchant_day_is_the_utc_day_whatever_the_offset() -> None:
    from datetime import timezone

    tokyo = timezone(timedelta(hours=9))
    ctx = context()
    # 08:00 in Tokyo on the 25th is 23:00 UTC on the 24th: the same UTC day as T0.
    late = payment(1, amount=45_000, at=datetime(2026, 11, 25, 8, 0, tzinfo=tokyo), payer_account="payer-9")
    assess_batch([payment(0, amount=9_000, payer_account="payer-8")], ctx)
    ctx.limits = {"EUR": LIMITS}
    assert codes(assess(late, ctx)) == [
        "txn_amount_limit",
        "payer_velocity_10m_amount",
        "payer_velocity_24h_amount",
        "merchant_daily_limit",
    ]


def test_long_blocklist_reason_is_cut_to_the_contract_bound() -> None:
    ctx = context()
    ctx.blocked = {("payer", "payer-1"): "x" * 500}
    reasons = assess(payment(), ctx)
    assert len(reasons[0]) == 200
