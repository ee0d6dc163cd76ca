"""The demo: the whole pipeline on the local stack, from publishing to reconciliation.

Publishes generated payments (plus duplicates and invalid records), some of
them manual captures followed by their capture or void request (or left to
expire), runs the four stages in this process and waits until every payment
reached its terminal status and its settlement batch closed. Then it refunds
some settled payments (in part, in full, and once more than is left) and
waits until each refund is answered and its settlement batch closed. Prints
a summary; the command then reconciles.
"""

from __future__ import annotations

import asyncio
import contextlib
import sys
import time
import uuid
from collections.abc import Awaitable, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import Any, TypeVar

from tqdm import tqdm

from paystream.db.pool import connect
from paystream.demo_data import build_world
from paystream.errors import PaystreamError
from paystream.generator import GeneratedRefund, PaymentGenerator, SettledPayment, plan_refunds
from paystream.publisher import PaymentPublisher
from paystream.runner import run_stages
from paystream.settings import Settings
from workers import STAGE_NAMES

# `authorized` (a manual capture's hold waiting) and `cleared` (not yet in a closed batch) are not terminal.
TERMINAL_STATUSES = ("rejected", "declined", "failed", "voided", "expired", "settled")
INVALID_RECORDS = (
    b"\xff\xfe not json at all",
    b'{"payment_id": "truncated',
    b'{"schema":"payment.requested","v":1,"payment_id":"bad-amount","payer_account":"payer-000001",'
    b'"merchant_id":"merchant-000","amount_minor":-5,"currency":"EUR","country":"DE","method":"card",'
    b'"created_at":"2026-01-01T00:00:00Z"}',
    b'{"schema":"payment.requested","v":1,"payment_id":"bad-currency","payer_account":"payer-000001",'
    b'"merchant_id":"merchant-000","amount_minor":500,"currency":"XXX","country":"DE","method":"card",'
    b'"created_at":"2026-01-01T00:00:00Z"}',
    b'{"schema":"payment.requested","v":2,"payment_id":"future-version"}',
)
# How the summary names a manual capture's end, in the order it lists them (other statuses follow).
CAPTURE_OUTCOMES = ("captured in full", "captured in part", "voided", "expired")
CAPTURE_PLAN_NAMES = {
    "capture_full": "captures in full",
    "capture_partial": "captures in part",
    "void": "voids",
    "expire": "left to expire",
}
REFUND_PLAN_NAMES = {"partial": "partial", "full": "full", "over": "over what is left"}
NEGATIVE_BATCHES_SHOWN = 10
MANUAL_PERCENT_DEFAULT = 5.0  # of the ordinary payments: manual capture
REFUND_PERCENT_DEFAULT = 2.0  # of the settled payments: refunded
WAIT_POLL_S = 0.5

T = TypeVar("T")


@dataclass(frozen=True, slots=True)
class DemoOptions:
    payments: int = 10_000
    duplicates: int = 100
    seed: int = 1
    drain_timeout_s: int = 600  # each wait: for the payments' terminal statuses, then for the refunds
    manual_percent: float = MANUAL_PERCENT_DEFAULT
    refund_percent: float = REFUND_PERCENT_DEFAULT


def demo_settings(settings: Settings) -> Settings:
    """A short settlement cycle so the demo sees batches close within seconds; holds expire within half a second."""
    return settings.with_overrides(
        settlement_cycle_s=10, settlement_grace_s=2, settlement_close_interval_ms=500, hold_expiry_interval_ms=500
    )


async def publish_demo_traffic(
    settings: Settings, options: DemoOptions, run_id: str
) -> tuple[dict[str, int], dict[str, int]]:
    """Publish the payments, each manual capture's request right after it, duplicates and invalid records.

    Returns the payments per kind (with `duplicates` and `invalid`) and the manual captures per plan.
    """
    world = build_world()
    generator = PaymentGenerator(world, options.seed, run_id, options.manual_percent)
    generated = list(generator.generate(options.payments, datetime.now(UTC), timedelta(microseconds=500)))
    kinds: dict[str, int] = {}
    plans: dict[str, int] = dict.fromkeys(CAPTURE_PLAN_NAMES, 0)
    for item in generated:
        kinds[item.kind] = kinds.get(item.kind, 0) + 1
        if item.plan is not None:
            plans[item.plan] += 1
    progress = tqdm(total=len(generated), unit="pay", desc="publishing", file=sys.stderr)
    async with PaymentPublisher(settings, client_id="paystream-demo") as publisher:
        for item in generated:
            await publisher.publish(item.payment)
            # Same key as the payment, so funds decides the capture or void after the hold.
            for request in item.requests:
                await publisher.publish_account_request(request)
            progress.update(1)
        # The same payment sent again: answered like the original, processed once.
        for item in generated[: options.duplicates]:
            await publisher.publish(item.payment)
        for raw in INVALID_RECORDS:
            await publisher.send_raw(b"demo-invalid", raw)
    progress.close()
    kinds["duplicates"] = options.duplicates
    kinds["invalid"] = len(INVALID_RECORDS)
    return kinds, plans


async def wait_for_terminal(settings: Settings, run_id: str, expected: int, timeout_s: int) -> None:
    """Until `expected` payments of the run are terminal; an expired one once its outcome left the outbox."""
    connection = await connect(settings)
    deadline = time.monotonic() + timeout_s
    progress = tqdm(total=expected, unit="pay", desc="terminal", file=sys.stderr)
    try:
        while True:
            rows = await connection.fetch(
                """SELECT p.status, p.status = ANY($2::text[])
                          AND (p.status <> 'expired' OR h.expiry_published_at IS NOT NULL) AS terminal,
                          count(*) AS n
                   FROM payments p LEFT JOIN holds h USING (payment_id)
                   WHERE p.payment_id LIKE $1 GROUP BY 1, 2 ORDER BY 1, 2""",
                f"{run_id}-%",
                list(TERMINAL_STATUSES),
            )
            done = sum(row["n"] for row in rows if row["terminal"])
            progress.update(done - progress.n)
            if done >= expected:
                return
            if time.monotonic() > deadline:
                still = [f"{row['status']} {row['n']}" for row in rows if not row["terminal"]]
                missing = expected - sum(row["n"] for row in rows)
                if missing:
                    still.append(f"not yet seen {missing}")
                raise PaystreamError(
                    f"only {done} of {expected} payments reached a terminal status in {timeout_s} s"
                    f" (still: {', '.join(still)})"
                )
            await asyncio.sleep(WAIT_POLL_S)
    finally:
        progress.close()
        await connection.close()


async def publish_refunds(settings: Settings, options: DemoOptions, run_id: str) -> list[GeneratedRefund]:
    """Refund some of the run's settled payments (after they settled: a refund of an uncaptured payment is
    declined `not_captured`)."""
    connection = await connect(settings)
    try:
        rows = await connection.fetch(
            """SELECT payment_id, payer_account, currency, gross_minor FROM payments
               WHERE payment_id LIKE $1 AND status = 'settled' ORDER BY payment_id""",
            f"{run_id}-%",
        )
    finally:
        await connection.close()
    settled = [
        SettledPayment(row["payment_id"], row["payer_account"], row["currency"].strip(), row["gross_minor"])
        for row in rows
    ]
    refunds = plan_refunds(settled, options.refund_percent, options.seed, run_id, datetime.now(UTC))
    async with PaymentPublisher(settings, client_id="paystream-demo") as publisher:
        for refund in refunds:
            await publisher.publish_account_request(refund.request)
    return refunds


async def wait_for_refunds(settings: Settings, refund_ids: Sequence[str], timeout_s: int) -> None:
    """Until each refund is answered: declined (or rejected), or succeeded and in a closed, published batch."""
    if not refund_ids:
        return
    connection = await connect(settings)
    deadline = time.monotonic() + timeout_s
    progress = tqdm(total=len(refund_ids), unit="refund", desc="refunds", file=sys.stderr)
    try:
        while True:
            row = await connection.fetchrow(
                """SELECT count(*) FILTER (WHERE q.decision = 'rejected' OR o.status = 'declined'
                                           OR (o.status = 'succeeded' AND b.status = 'closed'
                                               AND b.published_at IS NOT NULL)) AS done,
                          count(*) FILTER (WHERE o.status IS NULL AND q.decision = 'approved') AS unanswered,
                          count(*) FILTER (WHERE o.status = 'succeeded' AND b.published_at IS NULL) AS unsettled
                   FROM account_requests q
                   LEFT JOIN account_operations o ON o.kind = q.kind AND o.request_id = q.request_id
                   LEFT JOIN settlement_refund_items i ON i.refund_id = q.request_id
                   LEFT JOIN settlement_batches b ON b.batch_id = i.batch_id
                   WHERE q.kind = 'refund' AND q.request_id = ANY($1::text[])""",
                list(refund_ids),
            )
            progress.update(row["done"] - progress.n)
            if row["done"] >= len(refund_ids):
                return
            if time.monotonic() > deadline:
                unseen = len(refund_ids) - row["done"] - row["unanswered"] - row["unsettled"]
                raise PaystreamError(
                    f"only {row['done']} of {len(refund_ids)} refunds were answered and settled in {timeout_s} s"
                    f" (still: {row['unanswered']} unanswered by funds, {row['unsettled']} not in a closed batch,"
                    f" {unseen} not yet seen by risk)"
                )
            await asyncio.sleep(WAIT_POLL_S)
    finally:
        progress.close()
        await connection.close()


async def summary(settings: Settings, run_id: str) -> dict[str, Any]:
    connection = await connect(settings)
    pattern = f"{run_id}-%"
    try:
        statuses = await connection.fetch(
            "SELECT status, count(*) AS n FROM payments WHERE payment_id LIKE $1 GROUP BY 1 ORDER BY 1",
            pattern,
        )
        totals = await connection.fetch(
            """SELECT currency, count(*) AS n, sum(gross_minor)::bigint AS gross,
                      sum(fee_minor)::bigint AS fee, sum(net_minor)::bigint AS net
               FROM payments WHERE payment_id LIKE $1 AND status = 'settled' GROUP BY 1 ORDER BY 1""",
            pattern,
        )
        manual = await connection.fetch(
            """SELECT outcome, currency, count(*) AS n, sum(amount_minor)::bigint AS amount,
                      coalesce(sum(gross_minor), 0)::bigint AS captured,
                      coalesce(sum(released_minor), 0)::bigint AS released
               FROM (SELECT CASE WHEN p.status = 'settled' AND p.gross_minor = p.amount_minor THEN 'captured in full'
                                 WHEN p.status = 'settled' THEN 'captured in part'
                                 ELSE p.status END AS outcome,
                            p.currency, p.amount_minor, p.gross_minor, h.released_minor
                     FROM payments p LEFT JOIN holds h USING (payment_id)
                     WHERE p.payment_id LIKE $1 AND p.capture_mode = 'manual') AS manual
               GROUP BY 1, 2 ORDER BY coalesce(array_position($2::text[], outcome), 99), 1, 2""",
            pattern,
            list(CAPTURE_OUTCOMES),
        )
        # Capture, void and refund requests: funds' answer, else risk's rejection (first reason, its code).
        requests = await connection.fetch(
            """SELECT q.kind, coalesce(o.status, CASE WHEN q.decision = 'rejected' THEN 'rejected'
                                                     ELSE 'unanswered' END) AS status,
                      split_part(coalesce(o.reasons[1], q.reasons[1], ''), ':', 1) AS reason, count(*) AS n
               FROM account_requests q
               LEFT JOIN account_operations o ON o.kind = q.kind AND o.request_id = q.request_id
               WHERE q.kind IN ('capture', 'void', 'refund') AND q.request_id LIKE $1
               GROUP BY 1, 2, 3 ORDER BY 1, 2, 3""",
            pattern,
        )
        refunds = await connection.fetch(
            """SELECT r.currency, count(*) AS n, count(DISTINCT r.payment_id) AS payments,
                      count(DISTINCT r.payment_id) FILTER (WHERE p.refunded_minor = p.gross_minor) AS in_full,
                      sum(r.amount_minor)::bigint AS amount, sum(r.fee_back_minor)::bigint AS fee_back,
                      sum(r.net_back_minor)::bigint AS net_back
               FROM refunds r JOIN payments p USING (payment_id)
               WHERE r.refund_id LIKE $1 GROUP BY 1 ORDER BY 1""",
            pattern,
        )
        # The batches holding the run's payments or refunds; a refund after its payment's batch
        # closed is a negative item of a later batch, which may hold nothing else (a negative net).
        batches = await connection.fetch(
            """WITH ours AS (SELECT batch_id FROM payments WHERE payment_id LIKE $1 AND batch_id IS NOT NULL
                             UNION SELECT batch_id FROM settlement_refund_items WHERE refund_id LIKE $1)
               SELECT b.merchant_id, b.currency, count(*) AS batches, sum(b.item_count)::bigint AS items,
                      coalesce(sum(b.refund_count), 0)::bigint AS refunds,
                      count(*) FILTER (WHERE b.refund_count > 0) AS with_refunds,
                      count(*) FILTER (WHERE b.net_minor < 0) AS negative, sum(b.net_minor)::bigint AS net
               FROM settlement_batches b JOIN ours USING (batch_id)
               WHERE b.status = 'closed' GROUP BY 1, 2 ORDER BY 1, 2""",
            pattern,
        )
        negative = await connection.fetch(
            """SELECT b.merchant_id, b.currency, b.cycle_start, b.item_count, b.refund_count, b.net_minor
               FROM settlement_batches b
               WHERE b.status = 'closed' AND b.net_minor < 0
                     AND b.batch_id IN (SELECT batch_id FROM settlement_refund_items WHERE refund_id LIKE $1)
               ORDER BY b.net_minor, b.batch_id LIMIT $2""",
            pattern,
            NEGATIVE_BATCHES_SHOWN,
        )
        dead = await connection.fetch("SELECT stage, rule, count(*) AS n FROM dead_letters GROUP BY 1, 2 ORDER BY 1, 2")
        reasons = await connection.fetch(
            """SELECT split_part(r, ':', 1) AS reason, count(*) AS n
               FROM payments, unnest(risk_reasons || decline_reasons) AS r
               WHERE payment_id LIKE $1 GROUP BY 1 ORDER BY 2 DESC, 1""",
            pattern,
        )
    finally:
        await connection.close()
    return {
        "statuses": [dict(r) for r in statuses],
        "settled_totals": [dict(r) for r in totals],
        "manual_captures": [dict(r) for r in manual],
        "requests": [dict(r) for r in requests],
        "refunds": [dict(r) for r in refunds],
        "batches": [dict(r) for r in batches],
        "negative_batches": [dict(r) for r in negative],
        "dead_letters": [dict(r) for r in dead],
        "reasons": [dict(r) for r in reasons],
    }


def print_summary(report: dict[str, Any], kinds: dict[str, int], elapsed_s: float) -> None:
    plans: dict[str, int] = report.get("capture_plans", {})
    refund_plans: dict[str, int] = report.get("refund_plans", {})
    print("\n== paystream demo summary ==")
    print(f"run: {report['run_id']} (payment ids {report['run_id']}-0000000 and up: paystream payment show ID)")
    print(
        f"published: {sum(v for k, v in kinds.items() if k not in ('duplicates', 'invalid'))} payments,"
        f" {kinds.get('duplicates', 0)} duplicates, {kinds.get('invalid', 0)} invalid records"
    )
    print(
        f"  manual capture: {sum(plans.values())} payments ("
        + ", ".join(f"{plans.get(plan, 0)} {name}" for plan, name in CAPTURE_PLAN_NAMES.items())
        + ")"
    )
    print(
        f"  refunds of settled payments: {sum(refund_plans.values())} requests ("
        + ", ".join(f"{refund_plans.get(plan, 0)} {name}" for plan, name in REFUND_PLAN_NAMES.items())
        + ")"
    )
    print("\npayments by status:")
    for row in report["statuses"]:
        print(f"  {row['status']:<10} {row['n']:>8}")
    print("\nreasons (rejected by risk / declined by funds):")
    for row in report["reasons"]:
        print(f"  {row['reason']:<26} {row['n']:>8}")
    print("\nsettled totals per currency (minor units; gross is what was captured):")
    print(f"  {'currency':<8} {'payments':>9} {'gross':>14} {'fees':>12} {'net':>14}")
    for row in report["settled_totals"]:
        print(f"  {row['currency']:<8} {row['n']:>9} {row['gross']:>14} {row['fee']:>12} {row['net']:>14}")
    print("\nmanual captures (minor units; released: what the hold gave back to the payer):")
    print(f"  {'outcome':<17} {'cur':<4} {'payments':>8} {'amount':>12} {'captured':>12} {'released':>12}")
    for row in report["manual_captures"]:
        print(
            f"  {row['outcome']:<17} {row['currency']:<4} {row['n']:>8} {row['amount']:>12}"
            f" {row['captured']:>12} {row['released']:>12}"
        )
    print("\ncapture, void and refund requests (declined: by funds; rejected: by risk):")
    print(f"  {'request':<8} {'status':<10} {'reason':<22} {'n':>6}")
    for row in report["requests"]:
        print(f"  {row['kind']:<8} {row['status']:<10} {row['reason'] or '-':<22} {row['n']:>6}")
    print("\nrefunds per currency (minor units; fee back: the platform's fee returned, net back: the merchant's):")
    print(
        f"  {'currency':<8} {'refunds':>7} {'payments':>8} {'in full':>7} {'refunded':>12}"
        f" {'fee back':>10} {'net back':>12}"
    )
    for row in report["refunds"]:
        print(
            f"  {row['currency']:<8} {row['n']:>7} {row['payments']:>8} {row['in_full']:>7} {row['amount']:>12}"
            f" {row['fee_back']:>10} {row['net_back']:>12}"
        )
    print("\nsettlement batches per merchant (closed; a refund is a negative item, so a net may be negative):")
    print(f"  {'merchant':<14} {'cur':<4} {'batches':>7} {'items':>7} {'refunds':>7} {'negative':>8} {'net':>14}")
    for row in report["batches"]:
        print(
            f"  {row['merchant_id']:<14} {row['currency']:<4} {row['batches']:>7} {row['items']:>7}"
            f" {row['refunds']:>7} {row['negative']:>8} {row['net']:>14}"
        )
    with_refunds = sum(row["with_refunds"] for row in report["batches"])
    negatives = sum(row["negative"] for row in report["batches"])
    print(f"\nbatches with refunds: {with_refunds}; with a negative net (the merchant owes it): {negatives}")
    if report["negative_batches"]:
        shown = len(report["negative_batches"])
        print(f"  the {shown} most negative:" if shown < negatives else "  all of them:")
        print(f"  {'merchant':<14} {'cur':<4} {'cycle start (UTC)':<19} {'items':>6} {'refunds':>7} {'net':>12}")
        for row in report["negative_batches"]:
            start = row["cycle_start"].astimezone(UTC).strftime("%Y-%m-%d %H:%M:%S")
            print(
                f"  {row['merchant_id']:<14} {row['currency']:<4} {start:<19} {row['item_count']:>6}"
                f" {row['refund_count']:>7} {row['net_minor']:>12}"
            )
    print("\ndead letters (all runs):")
    for row in report["dead_letters"]:
        print(f"  {row['stage']:<10} {row['rule']:<22} {row['n']:>6}")
    print(f"\nwall time: {elapsed_s:.1f} s")


async def _while_pipeline_runs(pipeline: asyncio.Task[Any], work: Awaitable[T]) -> T:
    """`work`'s result; if the pipeline stops first, its error (or that it stopped) instead."""
    waiting = asyncio.ensure_future(work)
    done, _ = await asyncio.wait({pipeline, waiting}, return_when=asyncio.FIRST_COMPLETED)
    if waiting not in done:
        waiting.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await waiting
        pipeline.result()  # raises the stage's error
        raise PaystreamError("the pipeline stopped before the demo finished")
    return waiting.result()


async def run_demo(settings: Settings, options: DemoOptions) -> dict[str, Any]:
    """Publish, process and wait, then refund and wait; returns the summary. The stack, topics, schema and seed
    must exist."""
    settings = demo_settings(settings)
    run_id = f"demo{uuid.uuid4().hex[:8]}"
    started = time.monotonic()
    stop = asyncio.Event()
    pipeline = asyncio.create_task(run_stages(settings, STAGE_NAMES, stop=stop))
    try:
        kinds, plans = await publish_demo_traffic(settings, options, run_id)
        await _while_pipeline_runs(
            pipeline, wait_for_terminal(settings, run_id, options.payments, options.drain_timeout_s)
        )
        refunds = await publish_refunds(settings, options, run_id)
        await _while_pipeline_runs(
            pipeline, wait_for_refunds(settings, [r.request.request_id for r in refunds], options.drain_timeout_s)
        )
    finally:
        stop.set()
        with contextlib.suppress(asyncio.CancelledError):
            await pipeline
    report = await summary(settings, run_id)
    report["kinds"] = kinds
    report["capture_plans"] = plans
    report["refund_plans"] = {plan: sum(r.plan == plan for r in refunds) for plan in REFUND_PLAN_NAMES}
    report["run_id"] = run_id
    report["elapsed_s"] = time.monotonic() - started
    return report
