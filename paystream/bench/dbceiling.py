"""The database ceiling: the four stages' own database work, chained in-process, no Kafka.

Each stage applies batches with its own `apply()` and advances its fenced
offset rows in one transaction per batch, exactly as the stage loop's Step 2
does; nothing is produced or consumed. The events one stage returns become the
next stage's input batch directly (the loop would encode, produce, fetch and
decode them). Two arrangements:

- `sequential`: one batch through risk, funds, clearing, settlement, then the next;
- `pipelined`: one connection and one task per stage, batches handed on
  through queues, so four transactions can be in flight at once, as with four
  worker processes.

What the pipeline cannot beat while its stages do this work: the gap between
paystream's throughput and this figure is what Kafka, decoding and the loop cost.
Settlement's timer (batch closes) is not run: closes happen once per cycle,
outside a payment's path.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import Any

from aiokafka.partitioner import murmur2

from paystream.db.pool import create_pool
from paystream.demo_data import build_world
from paystream.generator import PaymentGenerator
from paystream.settings import Settings
from paystream.stage.contract import Accepted, Origin, Output
from paystream.stage.fencing import advance, claim_partitions
from schemas.codec import Decoder, Invalid, encode
from topology.topics import TOPICS
from workers import STAGE_NAMES, build_stage

BATCH_RECORDS = 2_000
# Where a generated (automatic-capture) payment's path ends in the database.
TERMINAL_STATUSES = ("cleared", "rejected", "declined", "failed")
_PARTITIONS = {spec.name: spec.partitions for spec in TOPICS}
_END = None


@dataclass(frozen=True, slots=True)
class CeilingRun:
    mode: str
    payments: int
    elapsed_s: float
    # Payments that reached a terminal status: all of them, or the figure is wrong.
    terminal: int
    # Measured as paystream's throughput is (first outcomes, 10th-90th percentile), when known.
    sustained_per_s: float | None = None

    @property
    def rate_per_s(self) -> float:
        if self.sustained_per_s is not None:
            return self.sustained_per_s
        return self.payments / self.elapsed_s if self.elapsed_s > 0 else 0.0


class Offsets:
    """Kafka-like positions per (topic, partition): records get the partition their key hashes to."""

    def __init__(self) -> None:
        self.next: dict[tuple[str, int], int] = {}

    def origins(self, topic: str, keys: Sequence[bytes]) -> list[Origin]:
        partitions = _PARTITIONS[topic]
        origins = []
        for key in keys:
            partition = (murmur2(key) & 0x7FFFFFFF) % partitions
            offset = self.next.get((topic, partition), 0)
            self.next[(topic, partition)] = offset + 1
            origins.append(Origin(topic, partition, offset))
        return origins


class StageRunner:
    """One stage's apply plus fenced advance, one transaction per batch."""

    def __init__(self, name: str, settings: Settings) -> None:
        self.stage = build_stage(name, settings)
        self.settings = settings
        self.topic = settings.topic(self.stage.input_topic)
        self.group_id = settings.group(name)
        self.epochs: dict[int, int] = {}

    async def claim(self, connection: Any) -> None:
        partitions = list(range(_PARTITIONS[self.stage.input_topic]))
        claims = await claim_partitions(connection, self.group_id, self.topic, partitions)
        self.epochs = {p: claim.epoch for p, claim in claims.items()}

    async def apply(self, connection: Any, records: list[Accepted[Any]]) -> list[Output]:
        spans: dict[int, tuple[int, int]] = {}
        for record in records:
            first, end = spans.get(record.origin.partition, (record.origin.offset, record.origin.offset + 1))
            spans[record.origin.partition] = (min(first, record.origin.offset), max(end, record.origin.offset + 1))
        async with connection.transaction():
            result = await self.stage.apply(connection, records, datetime.now(UTC))
            await advance(connection, self.group_id, self.topic, spans, self.epochs)
        outputs: list[Output] = result.outputs
        return outputs


def next_input(topic: str, outputs: list[Output], offsets: Offsets) -> list[Accepted[Any]]:
    """The outputs the next stage (reading `topic`) would consume, as its loop would hand them over."""
    chosen = [output for output in outputs if output.topic == topic]
    origins = offsets.origins(topic, [output.key.encode() for output in chosen])
    return [Accepted(origin, output.event) for origin, output in zip(origins, chosen, strict=True)]


def generated_batches(settings: Settings, payments: int, seed: int, id_prefix: str) -> list[list[Accepted[Any]]]:
    """The requests, decoded by risk's own decoder, in batches of BATCH_RECORDS."""
    risk = build_stage("risk", settings)
    decoder: Decoder[Any] = Decoder(
        getattr(risk, "input_types", None) or risk.input_type, settings.record_bytes_max, admit=risk.admit
    )
    generator = PaymentGenerator(build_world(), seed, id_prefix)
    offsets = Offsets()
    now = datetime.now(UTC)
    accepted: list[Accepted[Any]] = []
    generated = [g.payment for g in generator.generate(payments, now, timedelta(microseconds=100))]
    origins = offsets.origins(risk.input_topic, [p.payer_account.encode() for p in generated])
    for origin, payment in zip(origins, generated, strict=True):
        raw = encode(payment)
        event = decoder.decode(raw, now)
        if isinstance(event, Invalid):
            raise ValueError(f"generated payment refused by risk's decoder: {event}")
        accepted.append(Accepted(origin, event, raw))
    return [accepted[i : i + BATCH_RECORDS] for i in range(0, len(accepted), BATCH_RECORDS)]


async def run_ceiling(settings: Settings, payments: int, mode: str, seed: int = 11) -> CeilingRun:
    """Apply `payments` generated payments through the four stages; the time from first to last commit."""
    # Ids of their own: a second run in the same database must not replay the first one's payments.
    prefix = f"{settings.namespace}{mode}{seed}-"
    batches = generated_batches(settings, payments, seed, prefix)
    runners = [StageRunner(name, settings) for name in STAGE_NAMES]
    pool = await create_pool(settings, size_max=len(runners))
    try:
        connections = [await pool.acquire() for _ in runners]
        try:
            for runner, connection in zip(runners, connections, strict=True):
                await runner.claim(connection)
            started = time.monotonic()
            if mode == "sequential":
                await _sequential(runners, connections, batches)
            else:
                await _pipelined(runners, connections, batches)
            elapsed = time.monotonic() - started
            terminal = await connections[0].fetchval(
                "SELECT count(*) FROM payments WHERE payment_id LIKE $1 || '%' AND status = ANY($2::text[])",
                prefix,
                list(TERMINAL_STATUSES),
            )
        finally:
            for connection in connections:
                await pool.release(connection)
    finally:
        await pool.close()
    return CeilingRun(mode, payments, elapsed, terminal)


async def _sequential(runners: list[StageRunner], connections: list[Any], batches: list[list[Accepted[Any]]]) -> None:
    offsets = Offsets()
    for batch in batches:
        records = batch
        for index, (runner, connection) in enumerate(zip(runners, connections, strict=True)):
            outputs = await runner.apply(connection, records) if records else []
            if index + 1 < len(runners):
                records = next_input(runners[index + 1].stage.input_topic, outputs, offsets)


async def _pipelined(runners: list[StageRunner], connections: list[Any], batches: list[list[Accepted[Any]]]) -> None:
    queues: list[asyncio.Queue[list[Accepted[Any]] | None]] = [asyncio.Queue() for _ in runners]
    offsets = Offsets()

    async def stage_task(index: int) -> None:
        runner, connection = runners[index], connections[index]
        while (records := await queues[index].get()) is not _END:
            assert records is not None
            outputs = await runner.apply(connection, records) if records else []
            if index + 1 < len(runners):
                await queues[index + 1].put(next_input(runners[index + 1].stage.input_topic, outputs, offsets))
        if index + 1 < len(runners):
            await queues[index + 1].put(_END)

    for batch in batches:
        queues[0].put_nowait(batch)
    queues[0].put_nowait(_END)
    await asyncio.gather(*(stage_task(i) for i in range(len(runners))))
