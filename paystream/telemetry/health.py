"""/healthz and /readyz: what each checks, as functions of the loops' state.

Health says the process should be left running: its event loop answers (the
handler runs on it) and every stage loop showed progress (an iteration or a
retry attempt) within `PAYSTREAM_HEALTH_STALL_S_MAX`. A stage waiting out an
outage with retries is healthy; one stuck without retrying is not.

Readiness says it does its work now: every stage's consumer joined its group
and claimed every partition it was assigned (its epoch taken, not fenced),
the broker answers a metadata request and PostgreSQL answers `SELECT 1`,
each within READY_CHECK_S_MAX.
"""

from __future__ import annotations

import asyncio
import os
from collections.abc import Awaitable, Callable, Collection, Mapping
from typing import Any

from aiokafka import AIOKafkaClient, TopicPartition

from paystream.settings import Settings

READY_CHECK_S_MAX = 2.0
OK = "ok"


def stall_reasons(progress_at: Mapping[str, float], now: float, bound_s: float) -> list[str]:
    """One line per stage whose loop showed no progress for more than `bound_s`; [] when all are healthy."""
    return [
        f"{stage}: no loop iteration or retry attempt for {now - at:.1f} s (bound {bound_s:g} s)"
        for stage, at in sorted(progress_at.items())
        if now - at > bound_s
    ]


def unclaimed_partitions(
    assignment: Collection[TopicPartition], epochs: Mapping[int, int], fenced: Collection[int]
) -> list[int]:
    """Assigned partitions this consumer holds no current epoch for: no batch of theirs can commit yet."""
    return sorted(tp.partition for tp in assignment if tp.partition not in epochs or tp.partition in fenced)


def stage_readiness(loop: Any) -> str:
    """OK, or why the stage does not process its partitions now."""
    if loop.fatal is not None:
        return f"failed: {type(loop.fatal).__name__}: {loop.fatal}"
    if loop.stats.rebalances == 0:
        return "its consumer has not joined the group yet (no assignment received)"
    unclaimed = unclaimed_partitions(loop.consumer.assignment(), loop.epochs, loop.fenced)
    if unclaimed:
        return f"partitions {unclaimed} assigned but not claimed (a rebalance or a claim in progress)"
    return OK


async def timed_check(check: Callable[[], Awaitable[None]], timeout_s: float = READY_CHECK_S_MAX) -> str:
    """OK, or the check's error (a timeout included) in one line."""
    try:
        await asyncio.wait_for(check(), timeout_s)
    except TimeoutError:
        return f"no answer within {timeout_s:g} s"
    except Exception as error:  # noqa: BLE001 - any failure means not ready; the reason is reported
        return f"{type(error).__name__}: {error}".replace("\n", " ")
    return OK


async def postgres_answers(pool: Any) -> None:
    async with pool.acquire(timeout=READY_CHECK_S_MAX) as connection:
        await connection.fetchval("SELECT 1", timeout=READY_CHECK_S_MAX)


class KafkaProbe:
    """A metadata request to the brokers, on a client of its own.

    Not the stages' clients: a probe cut short by its timeout must not leave
    a stage's consumer or producer with a cancelled request in flight.
    """

    def __init__(self, settings: Settings) -> None:
        self.settings = settings
        self.client: AIOKafkaClient | None = None

    async def __call__(self) -> None:
        if self.client is None:
            client = AIOKafkaClient(
                bootstrap_servers=self.settings.kafka_bootstrap,
                client_id=f"paystream-readyz-{os.getpid()}",
                request_timeout_ms=int(READY_CHECK_S_MAX * 1000),
            )
            try:
                await client.bootstrap()
            except BaseException:
                await client.close()
                raise
            self.client = client
        await self.client.fetch_all_metadata()

    async def close(self) -> None:
        if self.client is not None:
            await self.client.close()
            self.client = None


async def readiness(loops: Mapping[str, Any], kafka: Callable[[], Awaitable[None]], pool: Any) -> dict[str, str]:
    """Every check's result by name (`stage:<name>`, `kafka`, `postgres`); the services are asked concurrently."""
    checks = {f"stage:{name}": stage_readiness(loop) for name, loop in loops.items()}
    if not checks:
        checks["stages"] = "no stage loop made yet"
    checks["kafka"], checks["postgres"] = await asyncio.gather(
        timed_check(kafka), timed_check(lambda: postgres_answers(pool))
    )
    return checks
