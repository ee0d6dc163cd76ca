"""The database ceiling with one OS process per stage, as the pipeline runs its workers.

In one process the four stages' own Python work (building rows, deciding,
building events) shares one core, and on a 2-core machine that, not the
database, was the limit: the in-process chain applied fewer payments per
second than the whole pipeline with its four worker processes. Here each
stage runs in its own process with its own connection, so both cores serve
the stages and PostgreSQL as they do in production; batches are handed on
through multiprocessing queues (pickled events: cheaper than Kafka's
encode, produce, fetch and decode, which is what the gap to paystream measures).

Measured like paystream's throughput: each payment completes when the stage
that gives its first outcome (rejected by risk, declined by funds, cleared by
clearing) commits it, and the rate is read between the 10th and 90th
percentile of those times (`paystream.bench.measure`). Settlement still
applies every cleared payment meanwhile, loading the database as it does in
the pipeline, but is not on that path; the run's total time is reported too.
"""

from __future__ import annotations

import asyncio
import multiprocessing
import time
from multiprocessing.queues import Queue
from multiprocessing.synchronize import Event
from typing import Any

from paystream.bench.dbceiling import TERMINAL_STATUSES, CeilingRun, Offsets, StageRunner, generated_batches, next_input
from paystream.bench.measure import sustained_rate_per_s
from paystream.db.pool import connect
from paystream.loadtest.observe import FIRST_OUTCOMES
from paystream.settings import Settings
from paystream.stage.contract import Output
from topology.topics import PAYMENTS_OUTCOMES
from workers import STAGE_NAMES, build_stage

START_TIMEOUT_S = 120.0


def first_outcomes(outputs: list[Output]) -> int:
    """How many of a batch's events are a payment's first outcome (the moment the pipeline's run counts)."""
    return sum(
        1
        for output in outputs
        if output.topic == PAYMENTS_OUTCOMES and getattr(output.event, "status", None) in FIRST_OUTCOMES
    )


async def _stage_main(
    settings: Settings,
    index: int,
    inbox: Queue[Any],
    outbox: Queue[Any] | None,
    ready: Event,
    completions: Queue[Any],
) -> None:
    runner = StageRunner(STAGE_NAMES[index], settings)
    next_topic = build_stage(STAGE_NAMES[index + 1], settings).input_topic if outbox is not None else None
    offsets = Offsets()
    connection = await connect(settings)
    try:
        await runner.claim(connection)
        ready.set()
        while (records := await asyncio.to_thread(inbox.get)) is not None:
            outputs = await runner.apply(connection, records) if records else []
            completed = first_outcomes(outputs)
            if completed:
                completions.put((time.monotonic(), completed))
            if outbox is not None and next_topic is not None:
                outbox.put(next_input(next_topic, outputs, offsets))
    finally:
        await connection.close()
    if outbox is not None:
        outbox.put(None)
    completions.put(None)


def _stage_process(
    settings: Settings,
    index: int,
    inbox: Queue[Any],
    outbox: Queue[Any] | None,
    ready: Event,
    completions: Queue[Any],
) -> None:
    asyncio.run(_stage_main(settings, index, inbox, outbox, ready, completions))


async def run_ceiling_processes(settings: Settings, payments: int, seed: int = 11) -> CeilingRun:
    """Apply `payments` generated payments, one process per stage; the time from the first batch to the last."""
    prefix = f"{settings.namespace}processes{seed}-"
    batches = generated_batches(settings, payments, seed, prefix)
    context = multiprocessing.get_context("spawn")
    queues: list[Queue[Any]] = [context.Queue() for _ in STAGE_NAMES]
    readies = [context.Event() for _ in STAGE_NAMES]
    completions: Queue[Any] = context.Queue()
    processes = [
        context.Process(
            target=_stage_process,
            args=(settings, i, queues[i], queues[i + 1] if i + 1 < len(queues) else None, readies[i], completions),
            name=f"dbceiling-{name}",
        )
        for i, name in enumerate(STAGE_NAMES)
    ]
    for process in processes:
        process.start()
    try:
        for ready, process in zip(readies, processes, strict=True):
            if not await asyncio.to_thread(ready.wait, START_TIMEOUT_S):
                raise RuntimeError(f"{process.name} did not start within {START_TIMEOUT_S:g} s")
        started = time.monotonic()
        for batch in batches:
            queues[0].put(batch)
        queues[0].put(None)
        completed_at_s: list[float] = []
        finished = 0
        while finished < len(processes):
            item = await asyncio.to_thread(completions.get)
            if item is None:
                finished += 1
            else:
                completed_at_s.extend([item[0]] * item[1])
        for process in processes:
            await asyncio.to_thread(process.join)
        elapsed = time.monotonic() - started
    finally:
        for process in processes:
            if process.is_alive():
                process.kill()
    failed = [p.name for p in processes if p.exitcode != 0]
    if failed:
        raise RuntimeError(f"{', '.join(failed)} exited with an error")
    connection = await connect(settings)
    try:
        terminal = await connection.fetchval(
            "SELECT count(*) FROM payments WHERE payment_id LIKE $1 || '%' AND status = ANY($2::text[])",
            prefix,
            list(TERMINAL_STATUSES),
        )
    finally:
        await connection.close()
    return CeilingRun("processes", payments, elapsed, int(terminal), sustained_rate_per_s(completed_at_s))
