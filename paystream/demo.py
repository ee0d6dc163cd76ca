"""The demo: the whole pipeline on the local stack, from publishing to reconciliation.

Publishes generated payments (plus duplicates and invalid records), runs the
four stages in this process, waits until every payment reached its terminal
status and its settlement batch closed, prints a summary and reconciles.
"""

from __future__ import annotations

import asyncio
import contextlib
import sys
import time
import uuid
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import Any

from tqdm import tqdm

from paystream.db.pool import connect
from paystream.demo_data import build_world
from paystream.errors import PaystreamError
from paystream.generator import PaymentGenerator
from paystream.publisher import PaymentPublisher
from paystream.runner import run_stages
from paystream.settings import Settings
from workers import STAGE_NAMES

TERMINAL_STATUSES = ("rejected", "declined", "failed", "settled")
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


@dataclass(frozen=True, slots=True)
class DemoOptions:
    payments: int = 10_000
    duplicates: int = 100
    seed: int = 1
    drain_timeout_s: int = 600


def demo_settings(settings: Settings) -> Settings:
    """A short settlement cycle so the demo sees batches close within seconds."""
    return settings.with_overrides(settlement_cycle_s=10, settlement_grace_s=2, settlement_close_interval_ms=500)


async def publish_demo_traffic(settings: Settings, options: DemoOptions, run_id: str) -> dict[str, int]:
    world = build_world()
    generator = PaymentGenerator(world, options.seed, run_id)
    generated = list(generator.generate(options.payments, datetime.now(UTC), timedelta(microseconds=500)))
    kinds: dict[str, int] = {}
    for item in generated:
        kinds[item.kind] = kinds.get(item.kind, 0) + 1
    progress = tqdm(total=len(generated), unit="pay", desc="publishing", file=sys.stderr)
    async with PaymentPublisher(settings, client_id="paystream-demo") as publisher:
        for item in generated:
            await publisher.publish(item.payment)
            progress.update(1)
        # The same payment sent again: answered like the original, processed once.
        for item in generated[: options.duplicates]:
            await publisher.publish(item.payment)
        for raw in INVALID_RECORDS:
            await publisher.send_raw(b"demo-invalid", raw)
    progress.close()
    kinds["duplicates"] = options.duplicates
    kinds["invalid"] = len(INVALID_RECORDS)
    return kinds


async def wait_for_terminal(settings: Settings, run_id: str, expected: int, timeout_s: int) -> None:
    connection = await connect(settings)
    deadline = time.monotonic() + timeout_s
    progress = tqdm(total=expected, unit="pay", desc="terminal", file=sys.stderr)
    try:
        while True:
            done = await connection.fetchval(
                "SELECT count(*) FROM payments WHERE payment_id LIKE $1 AND status = ANY($2::text[])",
                f"{run_id}-%",
                list(TERMINAL_STATUSES),
            )
            progress.update(done - progress.n)
            if done >= expected:
                return
            if time.monotonic() > deadline:
                raise PaystreamError(f"only {done} of {expected} payments reached a terminal status in {timeout_s} s")
            await asyncio.sleep(0.5)
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
        batches = await connection.fetch(
            """SELECT b.merchant_id, b.currency, count(DISTINCT b.batch_id) AS batches,
                      sum(b.item_count)::bigint AS items, sum(b.net_minor)::bigint AS net
               FROM settlement_batches b
               WHERE b.status = 'closed' AND b.batch_id IN
                     (SELECT batch_id FROM payments WHERE payment_id LIKE $1 AND batch_id IS NOT NULL)
               GROUP BY 1, 2 ORDER BY 1, 2""",
            pattern,
        )
        dead = await connection.fetch("SELECT stage, rule, count(*) AS n FROM dead_letters GROUP BY 1, 2 ORDER BY 1, 2")
        reasons = await connection.fetch(
            """SELECT split_part(r, ':', 1) AS reason, count(*) AS n
               FROM payments, unnest(risk_reasons || decline_reasons) AS r
               WHERE payment_id LIKE $1 GROUP BY 1 ORDER BY 2 DESC""",
            pattern,
        )
    finally:
        await connection.close()
    return {
        "statuses": [dict(r) for r in statuses],
        "settled_totals": [dict(r) for r in totals],
        "batches": [dict(r) for r in batches],
        "dead_letters": [dict(r) for r in dead],
        "reasons": [dict(r) for r in reasons],
    }


def print_summary(report: dict[str, Any], kinds: dict[str, int], elapsed_s: float) -> None:
    print("\n== paystream demo summary ==")
    print(
        f"published: {sum(v for k, v in kinds.items() if k not in ('duplicates', 'invalid'))} payments,"
        f" {kinds.get('duplicates', 0)} duplicates, {kinds.get('invalid', 0)} invalid records"
    )
    print("\npayments by status:")
    for row in report["statuses"]:
        print(f"  {row['status']:<10} {row['n']:>8}")
    print("\nreasons (rejected by risk / declined by funds):")
    for row in report["reasons"]:
        print(f"  {row['reason']:<26} {row['n']:>8}")
    print("\nsettled totals per currency (minor units):")
    print(f"  {'currency':<8} {'payments':>9} {'gross':>14} {'fees':>12} {'net':>14}")
    for row in report["settled_totals"]:
        print(f"  {row['currency']:<8} {row['n']:>9} {row['gross']:>14} {row['fee']:>12} {row['net']:>14}")
    print("\nsettlement batches per merchant:")
    print(f"  {'merchant':<14} {'cur':<4} {'batches':>7} {'items':>7} {'net':>14}")
    for row in report["batches"]:
        print(f"  {row['merchant_id']:<14} {row['currency']:<4} {row['batches']:>7} {row['items']:>7} {row['net']:>14}")
    print("\ndead letters (all runs):")
    for row in report["dead_letters"]:
        print(f"  {row['stage']:<10} {row['rule']:<22} {row['n']:>6}")
    print(f"\nwall time: {elapsed_s:.1f} s")


async def run_demo(settings: Settings, options: DemoOptions) -> dict[str, Any]:
    """Publish, process and wait; returns the summary. The stack, topics, schema and seed must exist."""
    settings = demo_settings(settings)
    run_id = f"demo{uuid.uuid4().hex[:8]}"
    started = time.monotonic()
    stop = asyncio.Event()
    pipeline = asyncio.create_task(run_stages(settings, STAGE_NAMES, stop=stop))
    try:
        kinds = await publish_demo_traffic(settings, options, run_id)
        waiting = asyncio.create_task(wait_for_terminal(settings, run_id, options.payments, options.drain_timeout_s))
        done, _ = await asyncio.wait({pipeline, waiting}, return_when=asyncio.FIRST_COMPLETED)
        if pipeline in done:
            waiting.cancel()
            pipeline.result()  # raises the stage's error
            raise PaystreamError("the pipeline stopped before the demo finished")
        waiting.result()
    finally:
        stop.set()
        with contextlib.suppress(asyncio.CancelledError):
            await pipeline
    report = await summary(settings, run_id)
    report["kinds"] = kinds
    report["run_id"] = run_id
    report["elapsed_s"] = time.monotonic() - started
    return report
