"""What the metrics cost a batch: `python -m paystream.telemetry.overhead` (docs/operations.md, "Metrics").

Times the work the stage loop does for the metrics once per committed batch
(`BatchObservations.batch`: two histogram observations and one latency per
record) on a batch of BATCH_RECORDS decoded payment requests, and one scrape
of a four-stage process. The counters cost nothing extra: the loop counted
them before there were metrics.
"""

from __future__ import annotations

import time
import timeit
from datetime import UTC, datetime, timedelta
from typing import Any

from paystream.demo_data import build_world
from paystream.generator import PaymentGenerator
from paystream.stage.contract import Accepted, Origin
from paystream.stage.observe import BatchObservations
from schemas.payments import PaymentRequested

BATCH_RECORDS = 2_000
REPEATS = 7
RUNS_PER_REPEAT = 200


def _batch() -> list[Accepted[PaymentRequested]]:
    generator = PaymentGenerator(build_world(), 1, "overhead")
    payments = generator.generate(BATCH_RECORDS, datetime.now(UTC), timedelta(milliseconds=1))
    return [Accepted(Origin("payments.requested", 0, i), item.payment) for i, item in enumerate(payments)]


def batch_cost_us(batch: list[Any]) -> float:
    """Best of REPEATS: microseconds for one batch's observations."""
    observed = BatchObservations([PaymentRequested])
    acked_at_s = time.time()
    runs = timeit.repeat(
        lambda: observed.batch(0.25, len(batch), batch, acked_at_s), number=RUNS_PER_REPEAT, repeat=REPEATS
    )
    return min(runs) / RUNS_PER_REPEAT * 1e6


def main() -> None:
    batch = _batch()
    cost_us = batch_cost_us(batch)
    per_record_ns = cost_us * 1000 / len(batch)
    print(f"observations of one {BATCH_RECORDS:,}-record batch: {cost_us:,.0f} us ({per_record_ns:,.0f} ns a record)")


if __name__ == "__main__":
    main()
