"""The crash-point matrix: every stage killed (SIGKILL) at every point of its loop, then restarted.

`in_isolation` is reached only while a poison record is being isolated, so
those cases publish one (a trigger in the case's own database refuses it in
that stage's table) and check it was dead-lettered exactly once. The timer's
points (`after_tick_commit`, `after_tick_produce`: a settlement close
committed, its events produced but not yet marked published) exist only in
the settlement stage.

For each stage the pipeline runs as a separate OS process (`paystream run`)
with PAYSTREAM_CRASH_POINT set; the process must die by SIGKILL at that point
of that stage. A clean process then drains the pipeline, and every invariant
must hold: every payment terminal exactly once, no duplicate effect,
reconcile clean, downstream sees each batch once with the database's totals.
"""

from __future__ import annotations

import asyncio
import os
import signal
import sys

import pytest

from paystream.chaos.checks import check_run
from paystream.chaos.processes import settings_environment
from paystream.db.pool import connect
from paystream.prepare import drop_database
from paystream.settings import CRASH_POINTS, TICK_CRASH_POINTS, Settings
from paystream.topic_scan import read_topic
from tests.support.pipeline import drain, fresh_environment, generate, publish, wait_terminal
from tests.support.stages import payment, publish_requests
from workers import STAGE_NAMES, build_stage

pytestmark = [pytest.mark.integration, pytest.mark.chaos]

PAYMENTS_PER_CASE = 240
CRASH_WAIT_S = 90


@pytest.fixture(scope="module")
async def environments() -> dict[str, Settings]:
    """One environment per stage, shared by that stage's five crash points."""
    created = {stage: await fresh_environment(f"crash{stage[:4]}") for stage in STAGE_NAMES}
    yield created
    if os.environ.get("KEEP_TEST_DB") != "1":
        for settings in created.values():
            await drop_database(settings)


POISON_TABLES = {"risk": "risk_decisions", "funds": "holds", "clearing": "clearings", "settlement": "settlement_items"}


def _cases() -> list[tuple[str, str]]:
    return [
        (stage, point)
        for point in CRASH_POINTS
        for stage in STAGE_NAMES
        if point not in TICK_CRASH_POINTS or stage == "settlement"
    ]


async def _install_poison(settings: Settings, stage: str) -> None:
    """PostgreSQL refuses rows of payment ids ending in -poison in `stage`'s table: a real poison record."""
    table = POISON_TABLES[stage]
    connection = await connect(settings)
    try:
        await connection.execute(
            f"""
            CREATE OR REPLACE FUNCTION poison_rows() RETURNS trigger LANGUAGE plpgsql AS $$
            BEGIN
                IF NEW.payment_id LIKE '%-poison' THEN
                    RAISE EXCEPTION 'test poison: % refused', NEW.payment_id;
                END IF;
                RETURN NEW;
            END $$;
            CREATE TRIGGER poison BEFORE INSERT ON {table} FOR EACH ROW EXECUTE FUNCTION poison_rows();
            """
        )
    finally:
        await connection.close()


async def _poison_dead_letters(
    settings: Settings, stage: str
) -> tuple[list[tuple[str, int, int]], list[tuple[str, int, int]]]:
    """Origins of the stage's `stage_error` dead letters, and of every copy of the poison record on its input topic.

    An upstream stage killed before its offset commit re-sends its events, so
    the poison event may sit on the input topic more than once (same event,
    other offsets): each copy must be dead-lettered exactly once, nothing else.
    """
    topic = settings.topic(build_stage(stage, settings).input_topic)
    copies = sorted(
        (record.topic, record.partition, record.offset)
        for record in await read_topic(settings, topic)
        if b"-poison" in (record.value or b"")
    )
    connection = await connect(settings)
    try:
        rows = await connection.fetch(
            """SELECT origin_topic, origin_partition, origin_offset FROM dead_letters
               WHERE stage = $1 AND rule = 'stage_error' ORDER BY 1, 2, 3""",
            stage,
        )
    finally:
        await connection.close()
    return [(r["origin_topic"], r["origin_partition"], r["origin_offset"]) for r in rows], copies


async def _run_until_crash(settings: Settings, stage: str, point: str) -> tuple[int, str]:
    env = settings_environment(
        settings.with_overrides(batch_records_max=40),
        {
            "PAYSTREAM_CRASH_POINT": point,
            "PAYSTREAM_CRASH_STAGE": stage,
            # Isolation happens in one batch only, and one tick may close and
            # publish every batch of the run: those crash at the first.
            "PAYSTREAM_CRASH_AFTER_BATCHES": "1" if point in ("in_isolation", *TICK_CRASH_POINTS) else "2",
        },
    )
    process = await asyncio.create_subprocess_exec(
        sys.executable, "-m", "paystream.cli.main", "run",
        env=env, stdin=asyncio.subprocess.DEVNULL,
        stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.STDOUT,
    )  # fmt: skip
    try:
        output, _ = await asyncio.wait_for(process.communicate(), CRASH_WAIT_S)
    except TimeoutError:
        process.kill()
        output, _ = await process.communicate()
        return -1, output.decode(errors="replace")
    return process.returncode or 0, output.decode(errors="replace")


@pytest.mark.parametrize(("stage", "point"), _cases())
async def test_crash_point(environments: dict[str, Settings], stage: str, point: str) -> None:
    isolating = point == "in_isolation"
    # A poison record stays in its database for good: those cases get their own.
    settings = await fresh_environment(f"crashiso{stage[:4]}") if isolating else environments[stage]
    try:
        generated = generate(PAYMENTS_PER_CASE, f"{settings.namespace.rstrip('.')}-{point}", seed=len(point))
        ids = [g.payment.payment_id for g in generated]
        if isolating:
            await _install_poison(settings, stage)
            await publish(settings, generated[: PAYMENTS_PER_CASE // 2])
            await publish_requests(settings, [payment(f"{settings.namespace.rstrip('.')}-poison")])
            await publish(settings, generated[PAYMENTS_PER_CASE // 2 :] + generated[:10])
        else:
            await publish(settings, generated + generated[:10])

        returncode, output = await _run_until_crash(settings, stage, point)
        assert returncode == -signal.SIGKILL, output[-3000:]
        assert f"crash point {point} reached" in output

        await drain(settings, idle_exit_ms=3_000)
        statuses = await wait_terminal(settings, ids, timeout_s=float(os.environ.get("WAIT_S", "120")))
        assert len(statuses) == len(ids)
        report = await check_run(settings, ids)
        assert report.problems() == []
        assert report.ok
        if isolating:
            letters, copies = await _poison_dead_letters(settings, stage)
            assert copies, "the poison record never reached the stage"
            assert letters == copies
    finally:
        if isolating and os.environ.get("KEEP_TEST_DB") != "1":
            await drop_database(settings)
