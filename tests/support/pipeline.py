"""Shared helpers for tests that run the real pipeline on the real stack."""

from __future__ import annotations

import asyncio
import time
import uuid
from collections.abc import Sequence
from datetime import UTC, datetime, timedelta

from paystream.db.pool import connect
from paystream.demo_data import build_world
from paystream.generator import GeneratedPayment, PaymentGenerator
from paystream.prepare import isolated_settings, prepare_environment
from paystream.publisher import PaymentPublisher
from paystream.runner import run_stages
from paystream.settings import Settings, load_settings
from workers import STAGE_NAMES

# "failed": a payment whose hold was released after a refusal; "voided", "expired": a manual-capture
# payment whose hold was voided or expired (nothing captured).
TERMINAL = ("rejected", "declined", "failed", "voided", "expired", "settled")
EXAMPLES_SHOWN = 5


def fast_settings(base: Settings | None = None) -> Settings:
    """Small batches and a 2-second settlement cycle, so tests see many batches and closes."""
    return (base or load_settings()).with_overrides(
        batch_records_max=100,
        batch_wait_ms=50,
        settlement_cycle_s=2,
        settlement_grace_s=1,
        settlement_close_interval_ms=300,
        kafka_session_timeout_ms=6_000,
    )


# Every namespace a test created in this session: its topics are deleted when
# the session ends (tests/conftest.py), so a developer's broker does not pile
# up partition directories run after run until it runs out of file handles.
CREATED_ENVIRONMENTS: list[Settings] = []


async def fresh_environment(prefix: str = "t", base: Settings | None = None) -> Settings:
    settings = isolated_settings(base or fast_settings(), f"{prefix}{uuid.uuid4().hex[:8]}")
    CREATED_ENVIRONMENTS.append(settings)
    await prepare_environment(settings)
    return settings


def generate(count: int, id_prefix: str, seed: int = 3) -> list[GeneratedPayment]:
    generator = PaymentGenerator(build_world(), seed, id_prefix)
    return list(generator.generate(count, datetime.now(UTC), timedelta(milliseconds=1)))


async def publish(settings: Settings, payments: Sequence[GeneratedPayment], raw: Sequence[bytes] = ()) -> None:
    async with PaymentPublisher(settings, client_id="paystream-tests") as publisher:
        for item in payments:
            await publisher.publish(item.payment)
        for value in raw:
            await publisher.send_raw(b"tests-raw", value)


async def drain(settings: Settings, stages: Sequence[str] = STAGE_NAMES, idle_exit_ms: int = 4_000) -> None:
    """Run the stages in this process until each was idle `idle_exit_ms` (burst mode)."""
    await run_stages(settings, stages, idle_exit_ms=idle_exit_ms)


async def wait_terminal(settings: Settings, payment_ids: Sequence[str], timeout_s: float = 120) -> dict[str, str]:
    """Statuses once every payment is terminal and every settlement batch is closed and published.

    At the timeout, raises AssertionError naming what is still missing (how many
    payments, a few with their statuses, the unpublished batches): a caller never
    goes on with a half-processed run.
    """
    connection = await connect(settings)
    deadline = time.monotonic() + timeout_s
    try:
        while True:
            rows = await connection.fetch(
                "SELECT payment_id, status FROM payments WHERE payment_id = ANY($1::text[])",
                list(payment_ids),
            )
            statuses = {row["payment_id"]: row["status"] for row in rows}
            # Batches not yet published: still open, or closed with their event not yet produced (outbox).
            batches = await connection.fetchrow(
                "SELECT count(*) FILTER (WHERE status = 'open') AS open,"
                " count(*) FILTER (WHERE status = 'closed') AS closed"
                " FROM settlement_batches WHERE published_at IS NULL"
            )
            waiting = [p for p in dict.fromkeys(payment_ids) if statuses.get(p) not in TERMINAL]
            if not waiting and not batches["open"] and not batches["closed"]:
                return statuses
            if time.monotonic() > deadline:
                raise AssertionError(
                    _not_terminal_message(
                        timeout_s, len(set(payment_ids)), waiting, statuses, batches["open"], batches["closed"]
                    )
                )
            await asyncio.sleep(0.3)
    finally:
        await connection.close()


def _not_terminal_message(
    timeout_s: float,
    expected: int,
    waiting: Sequence[str],
    statuses: dict[str, str],
    open_batches: int,
    closed_unpublished: int,
) -> str:
    examples = ", ".join(f"{p}={statuses.get(p, '(no payments row)')}" for p in waiting[:EXAMPLES_SHOWN])
    return (
        f"after {timeout_s:g} s, {len(waiting)} of {expected} payments are not terminal"
        f" ({'/'.join(TERMINAL)})"
        + (f", e.g. {examples}" if waiting else "")
        + f"; {open_batches + closed_unpublished} settlement batches unpublished"
        f" ({open_batches} open, {closed_unpublished} closed but not published)"
    )
