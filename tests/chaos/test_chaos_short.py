"""A short chaos run: SIGKILLs, one Kafka restart, one PostgreSQL restart, a stage scaled 1 -> 3 -> 1.

`paystream chaos` (and `make chaos`) runs the same thing at full length.
"""

from __future__ import annotations

import pytest

from paystream.chaos.run import ChaosOptions, render_report, run_chaos
from paystream.prepare import drop_database, isolated_settings
from paystream.settings import load_settings
from paystream.stack.services import uses_local_stack

pytestmark = [pytest.mark.integration, pytest.mark.chaos]


async def test_short_chaos_run_loses_nothing_and_applies_nothing_twice() -> None:
    settings = load_settings()
    restarts = uses_local_stack(settings)  # never restart services the stack does not own
    options = ChaosOptions(
        payments=1_500, duration_s=25.0, seed=20261124, kill_interval_s=3.0, restart_services=restarts,
        scale_stage="funds", drain_timeout_s=240.0, work_dir=settings.stack_dir / "chaos",
    )  # fmt: skip
    report = await run_chaos(options, settings)
    print(render_report(report))
    try:
        assert report.check is not None
        assert report.check.problems() == []
        assert report.check.ok
        assert report.check.terminal == 1_500
        assert report.kills >= 3
        assert report.worker_restarts == report.kills
        assert report.scale_ups == 2
        assert report.scale_downs == 2
        if restarts:
            assert (report.kafka_restarts, report.postgres_restarts) == (1, 1)
        assert report.check.batches_seen_downstream == report.check.batches_closed > 0
    finally:
        await drop_database(isolated_settings(settings, report.namespace.rstrip(".")))
