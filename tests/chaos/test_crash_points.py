"""The crash-point matrix: every stage killed (SIGKILL) at every point of its loop, then restarted.

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
from paystream.prepare import drop_database
from paystream.settings import CRASH_POINTS, Settings
from tests.support.pipeline import drain, fresh_environment, generate, publish, wait_terminal
from workers import STAGE_NAMES

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


async def _run_until_crash(settings: Settings, stage: str, point: str) -> tuple[int, str]:
    env = settings_environment(
        settings.with_overrides(batch_records_max=40),
        {
            "PAYSTREAM_CRASH_POINT": point,
            "PAYSTREAM_CRASH_STAGE": stage,
            "PAYSTREAM_CRASH_AFTER_BATCHES": "2",
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


@pytest.mark.parametrize("point", CRASH_POINTS)
@pytest.mark.parametrize("stage", STAGE_NAMES)
async def test_crash_point(environments: dict[str, Settings], stage: str, point: str) -> None:
    settings = environments[stage]
    generated = generate(PAYMENTS_PER_CASE, f"{settings.namespace.rstrip('.')}-{point}", seed=len(point))
    ids = [g.payment.payment_id for g in generated]
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
