"""The chaos run: publish, break things on a seeded random schedule, drain, check.

Workers run as separate OS processes, one per stage. During the chaos window
the schedule SIGKILLs random workers and restarts them, restarts the Kafka
broker once and PostgreSQL once, and scales one stage from 1 to 3 consumer
processes and back. Then every stage runs with one worker until the pipeline
drains, and `checks.check_run` verifies nothing was lost or applied twice.
The seed is printed; passing it back replays the same schedule.

The traffic mixes account requests into the payments
(`paystream.chaos.accounts`): fresh accounts opened, funded, paid from,
withdrawn from and some closed, and deposits and withdrawals on the demo
payers, including withdrawals declined for insufficient funds and rejected by
risk. It also carries the payment lifecycle (`paystream.chaos.lifecycle`):
manual-capture payments captured in full or in part, voided, or left to
expire (their deadline half-way through the chaos window, funds' timer every
500 ms), and refunds (partial, full, declined, one repeated) of payments
made earlier in the run: those are published as soon as the payments they
refund are cleared, under the same faults if the window is still open. Each
request's answer, each fresh account's balance, how each hold ends and what
each payment ends refunded are known before the run; the checks compare them,
and count the requests' outcomes on accounts.outcomes by event id.
"""

from __future__ import annotations

import asyncio
import random
import sys
import time
import uuid
from collections.abc import Awaitable, Callable
from dataclasses import asdict, dataclass, field
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import asyncpg
from aiokafka.errors import KafkaError

from paystream.chaos.accounts import (
    AccountKey,
    AccountTraffic,
    TrafficItem,
    interleave,
    plan_account_traffic,
    publish_item,
)
from paystream.chaos.checks import TERMINAL, CheckReport, check_run, unanswered_account_requests
from paystream.chaos.lifecycle import LifecyclePlan, plan_lifecycle_traffic
from paystream.chaos.processes import WorkerFleet
from paystream.db.pool import connect
from paystream.demo_data import build_world
from paystream.errors import PaystreamError
from paystream.generator import PaymentGenerator
from paystream.prepare import isolated_settings, prepare_environment
from paystream.publisher import PaymentPublisher
from paystream.stack.services import restart_kafka, restart_postgres
from schemas.payments import PaymentRequested
from workers import STAGE_NAMES


@dataclass(frozen=True)
class ChaosOptions:
    payments: int = 20_000
    duration_s: float = 120.0
    seed: int | None = None
    kill_interval_s: float = 4.0
    restart_services: bool = True
    scale_stage: str | None = None
    drain_timeout_s: float = 300.0
    batch_records_max: int = 200
    # Fresh accounts walked through their scripts, and rounds of deposits/withdrawals on demo payers.
    fresh_accounts: int = 40
    demo_payer_rounds: int = 10
    # Fresh accounts walked through the lifecycle's scripts: manual captures, voids, expiries; refunds.
    capturing_accounts: int = 10
    refunding_accounts: int = 10
    work_dir: Path = Path(".stack/chaos")


@dataclass
class ChaosReport:
    seed: int
    namespace: str
    payments: int = 0
    duplicates_published: int = 0
    account_requests: int = 0
    account_duplicates_published: int = 0
    kills: int = 0
    worker_restarts: int = 0
    kafka_restarts: int = 0
    postgres_restarts: int = 0
    scale_ups: int = 0
    scale_downs: int = 0
    # Partition assignments the workers logged: each is one side of a rebalance.
    assignments: int = 0
    publish_s: float = 0.0
    chaos_s: float = 0.0
    drain_s: float = 0.0
    events: list[str] = field(default_factory=list)
    check: CheckReport | None = None

    def log(self, started: float, message: str) -> None:
        line = f"[{time.monotonic() - started:7.1f}s] {message}"
        self.events.append(line)
        print(line, file=sys.stderr, flush=True)


async def run_chaos(options: ChaosOptions, base_settings: Any) -> ChaosReport:
    seed = options.seed if options.seed is not None else random.SystemRandom().randrange(1, 2**31)
    rng = random.Random(seed)
    run_id = f"chaos{uuid.uuid4().hex[:6]}"
    settings = isolated_settings(base_settings, run_id).with_overrides(
        batch_records_max=options.batch_records_max,
        settlement_cycle_s=5,
        settlement_grace_s=1,
        settlement_close_interval_ms=500,
        hold_expiry_interval_ms=500,
        retry_duration_ms_max=120_000,
    )
    report = ChaosReport(seed=seed, namespace=settings.namespace)
    started = time.monotonic()
    report.log(started, f"chaos run {run_id}: seed {seed}, {options.payments} payments, {options.duration_s:.0f} s")
    await prepare_environment(settings)
    fleet = WorkerFleet(settings, options.work_dir / run_id)
    for stage in STAGE_NAMES:
        await fleet.start(stage)
    try:
        traffic, publishing = await _start_publishing(settings, options, run_id, rng, report, started)
        await _chaos_window(settings, fleet, options, rng, report, started)
        payment_ids = await publishing
        report.publish_s = time.monotonic() - started
        await _drain(settings, fleet, payment_ids, sorted(traffic.expected), options, report, started)
    finally:
        await fleet.stop_all()
    report.assignments = fleet.count_in_logs('"partitions assigned"')
    report.check = await check_run(settings, payment_ids, traffic)
    report.log(started, "checks " + ("passed" if report.check.ok else "FAILED"))
    return report


async def _start_publishing(
    settings: Any, options: ChaosOptions, run_id: str, rng: random.Random, report: ChaosReport, started: float
) -> tuple[AccountTraffic, asyncio.Task[list[str]]]:
    """The account traffic, and the task publishing it with the payments; the task returns every payment id.

    The payments refunds will act on go first; then the payments with every
    other script, spread over the window, and copies of 5% of them; meanwhile,
    as soon as those first payments are cleared, the refunds and copies of 5%
    of them, so that they too are decided while faults go on.
    """
    generator = PaymentGenerator(build_world(), rng.randrange(2**31), run_id)
    payments = [g.payment for g in generator.generate(options.payments, datetime.now(UTC), timedelta(milliseconds=1))]
    created_at = datetime.now(UTC)
    traffic = plan_account_traffic(
        build_world(), run_id, options.fresh_accounts, options.demo_payer_rounds, rng, created_at
    )
    # The holds left to expire reach their deadline half-way through the window, some while faults go on.
    lifecycle = LifecyclePlan(
        options.capturing_accounts, options.refunding_accounts, timedelta(seconds=max(3.0, options.duration_s / 2))
    )
    plan_lifecycle_traffic(traffic, build_world(), run_id, lifecycle, rng, created_at)
    setup = interleave([], traffic.setup)
    items = interleave(payments, traffic.sequences)
    first = [item for item in [*setup, *items] if not isinstance(item, PaymentRequested)]
    duplicates: list[TrafficItem] = [*rng.sample(payments, k=max(1, len(payments) // 20))]
    duplicates += rng.sample(first, k=len(first) // 20)
    later = interleave([], traffic.later)
    later_duplicates: list[TrafficItem] = list(rng.sample(later, k=min(len(later), 1 + len(later) // 20)))
    report.payments = len(payments) + len(traffic.payments)
    report.duplicates_published = sum(1 for d in duplicates if isinstance(d, PaymentRequested))
    report.account_requests = len(traffic.expected)
    # Copies published: the sampled ones and the scripts' own repeats (a refund id sent twice).
    report.account_duplicates_published = (
        len(duplicates) - report.duplicates_published + len(later_duplicates)
        + len(traffic.requests) - len(traffic.expected)
    )  # fmt: skip
    # Spread publishing over the first 60% of the window so faults hit traffic in flight.
    pace_s = options.duration_s * 0.6 / max(1, len(items))

    async def publish_refunds() -> None:
        await _until_cleared(settings, traffic.awaited, options.drain_timeout_s)
        await _publish_all(settings, f"{run_id}-refunds", [*later, *later_duplicates])
        report.log(started, f"published {len(later)} refunds (+{len(later_duplicates)} duplicates)")

    async def publish() -> list[str]:
        async with PaymentPublisher(settings, client_id=f"{run_id}-publisher") as publisher:
            for item in setup:
                await _publish_with_retry(publisher, item)
            await publisher.flush()
            refunds = asyncio.create_task(publish_refunds()) if later else None
            try:
                t0 = time.monotonic()
                for index, item in enumerate(items):
                    await _publish_with_retry(publisher, item)
                    if index % 500 == 0:
                        await publisher.flush()
                        await asyncio.sleep(max(0.0, t0 + index * pace_s - time.monotonic()))
                for item in duplicates:
                    await _publish_with_retry(publisher, item)
            except BaseException:
                if refunds is not None:
                    refunds.cancel()
                raise
        if refunds is not None:
            await refunds
        return [p.payment_id for p in payments] + [p.payment_id for p in traffic.payments]

    return traffic, asyncio.create_task(publish())


async def _publish_all(settings: Any, client_id: str, items: list[TrafficItem]) -> None:
    """Publish `items` with a publisher of their own, from the first again if the broker went away meanwhile.

    Sending a request again is harmless (same id, the same answer); so is a
    script's prefix sent twice: each request is decided at its first copy.
    """
    for attempt in range(60):
        try:
            async with PaymentPublisher(settings, client_id=client_id) as publisher:
                for item in items:
                    await _publish_with_retry(publisher, item)
            return
        except (KafkaError, OSError, TimeoutError) as error:
            if attempt == 59:
                raise PaystreamError(f"publishing kept failing: {error}") from error
            await asyncio.sleep(1.0)


async def _until_cleared(settings: Any, payment_ids: list[str], timeout_s: float) -> None:
    """Until every payment is cleared or settled (refunds of them are then decided), across PostgreSQL restarts."""
    deadline = time.monotonic() + timeout_s
    while True:
        try:
            connection = await connect(settings)
            try:
                cleared = await connection.fetchval(
                    """SELECT count(*) FROM payments
                       WHERE payment_id = ANY($1::text[]) AND status IN ('cleared', 'settled')""",
                    payment_ids,
                )
            finally:
                await connection.close()
        except (PaystreamError, OSError, asyncpg.PostgresError, asyncpg.InterfaceError):
            cleared = -1  # PostgreSQL is restarting: ask again
        if cleared == len(payment_ids):
            return
        if time.monotonic() > deadline:
            raise PaystreamError(f"the payments to refund were not cleared within {timeout_s:.0f} s")
        await asyncio.sleep(1.0)


async def _publish_with_retry(publisher: PaymentPublisher, item: TrafficItem) -> None:
    """Upstream retries while the broker restarts: same payment or request id, so retries are harmless."""
    for attempt in range(60):
        try:
            await publish_item(publisher, item)
            return
        except (KafkaError, OSError, TimeoutError) as error:
            if attempt == 59:
                raise PaystreamError(f"publishing kept failing: {error}") from error
            await asyncio.sleep(1.0)


async def _chaos_window(
    settings: Any,
    fleet: WorkerFleet,
    options: ChaosOptions,
    rng: random.Random,
    report: ChaosReport,
    started: float,
) -> None:
    """Kill and restart workers until the window ends; once each: restart Kafka, PostgreSQL, rescale."""
    window_end = time.monotonic() + options.duration_s
    one_offs: list[tuple[float, str]] = []
    if options.restart_services:
        one_offs += [(rng.uniform(0.2, 0.4), "kafka"), (rng.uniform(0.5, 0.7), "postgres")]
    one_offs += [(rng.uniform(0.1, 0.3), "scale_up"), (rng.uniform(0.75, 0.85), "scale_down")]
    scale_stage = options.scale_stage or rng.choice(STAGE_NAMES)
    pending = sorted((started_at(options, fraction), action) for fraction, action in one_offs)
    window_start = time.monotonic()
    actions: dict[str, Callable[[], Awaitable[None]]] = {
        "kafka": lambda: _restart_service(settings, "kafka", report, started),
        "postgres": lambda: _restart_service(settings, "postgres", report, started),
        "scale_up": lambda: _scale(fleet, scale_stage, 3, report, started),
        "scale_down": lambda: _scale(fleet, scale_stage, 1, report, started),
    }
    while time.monotonic() < window_end:
        elapsed = time.monotonic() - window_start
        while pending and pending[0][0] <= elapsed:
            _, action = pending.pop(0)
            await actions[action]()
        await _kill_random_worker(fleet, rng, report, started)
        await asyncio.sleep(rng.uniform(0.5, 1.5) * options.kill_interval_s)
    for _, action in pending:
        await actions[action]()


def started_at(options: ChaosOptions, fraction: float) -> float:
    return options.duration_s * fraction


async def _kill_random_worker(fleet: WorkerFleet, rng: random.Random, report: ChaosReport, started: float) -> None:
    candidates = [w for stage in STAGE_NAMES for w in fleet.running(stage)]
    if not candidates:
        return
    victim = rng.choice(candidates)
    await fleet.kill(victim)
    report.kills += 1
    report.log(started, f"SIGKILL {victim.stage} worker pid {victim.pid}")
    await asyncio.sleep(rng.uniform(0.2, 2.0))
    restarted = await fleet.start(victim.stage)
    report.worker_restarts += 1
    report.log(started, f"restarted {victim.stage} worker pid {restarted.pid}")


async def _restart_service(settings: Any, service: str, report: ChaosReport, started: float) -> None:
    report.log(started, f"restarting {service}")
    if service == "kafka":
        await restart_kafka(settings)
        report.kafka_restarts += 1
    else:
        await restart_postgres(settings)
        report.postgres_restarts += 1
    report.log(started, f"{service} is back")


async def _scale(fleet: WorkerFleet, stage: str, target: int, report: ChaosReport, started: float) -> None:
    running = fleet.running(stage)
    while len(running) < target:
        await fleet.start(stage)
        report.scale_ups += 1
        running = fleet.running(stage)
    while len(running) > target:
        await fleet.stop(running[-1])
        report.scale_downs += 1
        running = fleet.running(stage)
    report.log(started, f"scaled {stage} to {target} consumer processes")


async def _drain(
    settings: Any,
    fleet: WorkerFleet,
    payment_ids: list[str],
    request_keys: list[AccountKey],
    options: ChaosOptions,
    report: ChaosReport,
    started: float,
) -> None:
    """One worker per stage, then wait until payments are terminal, requests answered and batches published."""
    for stage in STAGE_NAMES:
        if not fleet.running(stage):
            await fleet.start(stage)
    drain_start = time.monotonic()
    deadline = drain_start + options.drain_timeout_s
    connection = await connect(settings)
    try:
        while True:
            terminal = await connection.fetchval(
                "SELECT count(*) FROM payments WHERE payment_id = ANY($1::text[]) AND status = ANY($2::text[])",
                payment_ids,
                list(TERMINAL),
            )
            unpublished = await connection.fetchval(
                "SELECT count(*) FROM settlement_batches WHERE published_at IS NULL"
            )
            unanswered = await unanswered_account_requests(connection, request_keys)
            # Refunds not yet in a batch, expiries whose outcome is not yet marked sent: still in flight.
            in_flight = await connection.fetchval(
                """SELECT (SELECT count(*) FROM refunds r
                           WHERE NOT EXISTS (SELECT 1 FROM settlement_refund_items i WHERE i.refund_id = r.refund_id))
                        + (SELECT count(*) FROM holds WHERE status = 'expired' AND expiry_published_at IS NULL)"""
            )
            if terminal == len(payment_ids) and unpublished == 0 and unanswered == 0 and in_flight == 0:
                break
            dead = fleet.exited_unexpectedly()
            if dead:
                logs = ", ".join(str(w.log_path) for w in dead)
                raise PaystreamError(f"{len(dead)} workers exited on their own; see {logs}")
            if time.monotonic() > deadline:
                raise PaystreamError(
                    f"not drained after {options.drain_timeout_s:.0f} s: {terminal}/{len(payment_ids)}"
                    f" terminal, {unpublished} batches unpublished, {unanswered} account requests unanswered,"
                    f" {in_flight} refunds or expiries in flight"
                )
            await asyncio.sleep(1.0)
    finally:
        await connection.close()
    report.drain_s = time.monotonic() - drain_start
    report.log(started, f"drained in {report.drain_s:.1f} s")


def render_report(report: ChaosReport) -> str:
    check = report.check
    lines = [
        "== paystream chaos report ==",
        f"seed                 {report.seed}   (replay: paystream chaos --seed {report.seed})",
        f"namespace            {report.namespace}",
        f"payments published   {report.payments} (+{report.duplicates_published} duplicates)",
        f"account requests     {report.account_requests} (+{report.account_duplicates_published} duplicates)",
        f"workers SIGKILLed    {report.kills}",
        f"worker restarts      {report.worker_restarts}",
        f"kafka restarts       {report.kafka_restarts}",
        f"postgres restarts    {report.postgres_restarts}",
        f"scale up / down      {report.scale_ups} / {report.scale_downs} consumer processes",
        f"rebalances           {report.assignments} partition assignments logged by workers",
        f"time to drain        {report.drain_s:.1f} s",
    ]
    if check is not None:
        lines.append(f"terminal payments    {check.terminal}/{check.payments}")
        answered = ", ".join(f"{n} {status}" for status, n in sorted(check.account_answers.items()))
        lines.append(f"account requests     {sum(check.account_answers.values())}/{check.account_requests} answered"
                     f" ({answered or 'none'})")  # fmt: skip
        for kind in ("capture", "void", "refund"):
            by_status = check.answers_by_kind.get(kind, {})
            counted = ", ".join(f"{n} {status}" for status, n in sorted(by_status.items()))
            lines.append(f"  {kind + 's':<20} {sum(by_status.values())} answered ({counted or 'none'})")
        ended = ", ".join(f"{n} {status}" for status, n in sorted(check.lifecycle_payments.items()))
        lines.append(f"manual capture       scripted payments ended: {ended or 'none'}")
        records, distinct = check.expired_outcomes
        lines.append(
            f"  expired outcomes     {records} records, {distinct} distinct event ids:"
            f" {records - distinct} re-sent by funds' timer, absorbed"
        )
        lines.append(
            f"refunds              {check.refunds_applied} applied, {check.refund_items} settlement refund items"
        )
        for topic, (records, distinct) in check.redelivered.items():
            lines.append(
                f"  {topic:<22} {records} records, {distinct} distinct event ids:"
                f" {records - distinct} repeated deliveries absorbed"
            )
        lines.append(
            f"settlement batches   {check.batches_closed} closed, {check.batches_seen_downstream} seen downstream"
        )
        lines.append("result               " + ("PASS" if check.ok else "FAIL"))
        lines += [f"  problem: {p}" for p in check.problems()]
    return "\n".join(lines)


def report_dict(report: ChaosReport) -> dict[str, Any]:
    data = asdict(report)
    if report.check is not None:
        data["check"]["ok"] = report.check.ok
    return data
