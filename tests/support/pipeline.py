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

TERMINAL = ("rejected", "declined", "settled")


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


async def fresh_environment(prefix: str = "t") -> Settings:
    settings = isolated_settings(fast_settings(), f"{prefix}{uuid.uuid4().hex[:8]}")
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
    """Statuses once every payment is terminal and every closed batch published (or the timeout)."""
    connection = await connect(settings)
    deadline = time.monotonic() + timeout_s
    try:
        while True:
            rows = await connection.fetch(
                "SELECT payment_id, status FROM payments WHERE payment_id = ANY($1::text[])",
                list(payment_ids),
            )
            statuses = {row["payment_id"]: row["status"] for row in rows}
            unpublished = await connection.fetchval(
                "SELECT count(*) FROM settlement_batches WHERE published_at IS NULL"
            )
            terminal = sum(1 for s in statuses.values() if s in TERMINAL)
            if (terminal == len(payment_ids) and not unpublished) or time.monotonic() > deadline:
                return statuses
            await asyncio.sleep(0.3)
    finally:
        await connection.close()
