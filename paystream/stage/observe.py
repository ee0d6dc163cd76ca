"""What one batch took, for the metrics: its duration, its size, and each payment's end-to-end latency.

Counted into fixed buckets by the loop itself, once per committed batch: no
lock (one event loop), no registry look-up, no label resolution per record.
A scrape (`paystream.telemetry.collector`) only reads the counts. The
latency costs one dict look-up, one subtraction and one bisect per record
(measured in docs/operations.md, "Metrics").

End-to-end latency runs from the payment's (or request's) `created_at` to
the moment this stage's outputs for it were acknowledged by the broker
(Step 3). Which input carries that time:

- risk: every request carries its own `created_at` (payments, account
  requests, captures, voids, refunds);
- funds: a payment's approval carries the payment; an account request's
  approval carries no time and is not observed;
- clearing: the held payment, except manual-capture ones, whose hold waited
  for a capture by design (their latency would be the customer's wait);
- settlement: a cleared payment's `event_time` is its `created_at` (a manual
  capture's included: the event does not say); a cleared refund's
  `event_time` is its payment's, not the refund's, and is not observed.
"""

from __future__ import annotations

from bisect import bisect_left
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any

from schemas.payments import FundsHeld, PaymentCleared

# Bucket upper bounds (Prometheus `le`), in the metric's base unit. A batch of
# 2,000 takes about half a second here (docs/performance.md); a retried one
# may take minutes (PAYSTREAM_RETRY_DURATION_MS_MAX).
BATCH_DURATION_BUCKETS_S = (0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0, 60.0, 300.0)
BATCH_RECORDS_BUCKETS = (1.0, 10.0, 50.0, 100.0, 250.0, 500.0, 1_000.0, 2_000.0, 5_000.0, 10_000.0, 100_000.0)
# From tens of milliseconds (a quiet pipeline) to a day (a backlog replayed).
EVENT_LATENCY_BUCKETS_S = (
    0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0, 60.0, 300.0, 900.0, 3_600.0, 21_600.0, 86_400.0,
)  # fmt: skip

PaymentTime = Callable[[Any], datetime | None]


@dataclass(slots=True)
class Buckets:
    """A histogram's state: a count per bucket (the last is +Inf), the sum and the count."""

    bounds: tuple[float, ...]
    counts: list[int] = field(default_factory=list)
    total: float = 0.0

    def __post_init__(self) -> None:
        assert list(self.bounds) == sorted(set(self.bounds)), "bucket bounds must increase"
        self.counts = [0] * (len(self.bounds) + 1)

    def observe(self, value: float) -> None:
        # bisect_left: a value equal to a bound belongs to that bound's bucket (`le`).
        self.counts[bisect_left(self.bounds, value)] += 1
        self.total += value

    @property
    def count(self) -> int:
        return sum(self.counts)

    def cumulative(self) -> list[tuple[float, int]]:
        """(upper bound, observations at or below it) for each bound, then (+Inf, all)."""
        running = 0
        result = []
        for bound, count in zip((*self.bounds, float("inf")), self.counts, strict=True):
            running += count
            result.append((bound, running))
        return result


def _created_at(event: Any) -> datetime | None:
    return event.created_at  # type: ignore[no-any-return]


def _payment_created_at(event: Any) -> datetime | None:
    return event.payment.created_at  # type: ignore[no-any-return]


def _held_payment_created_at(event: FundsHeld) -> datetime | None:
    return None if event.payment.capture == "manual" else event.payment.created_at


def _cleared_event_time(event: PaymentCleared) -> datetime | None:
    return event.event_time


def payment_time_reader(event_type: type[Any]) -> PaymentTime | None:
    """How to read the payment's (or request's) creation time from an input event; None: it has none."""
    if event_type is FundsHeld:
        return _held_payment_created_at
    if event_type is PaymentCleared:
        return _cleared_event_time
    fields = getattr(event_type, "__struct_fields__", ())
    if "created_at" in fields:
        return _created_at
    if "payment" in fields:
        return _payment_created_at
    return None


class BatchObservations:
    """The three histograms of one stage loop."""

    def __init__(self, input_types: Iterable[type[Any]]) -> None:
        self.duration_s = Buckets(BATCH_DURATION_BUCKETS_S)
        self.records = Buckets(BATCH_RECORDS_BUCKETS)
        self.latency_s = Buckets(EVENT_LATENCY_BUCKETS_S)
        self.readers = {t: reader for t in input_types if (reader := payment_time_reader(t)) is not None}

    def batch(self, duration_s: float, records: int, accepted: Sequence[Any], acked_at_s: float) -> None:
        """One committed batch: `accepted` are its decoded records, `acked_at_s` the wall time of Step 3's acks."""
        self.duration_s.observe(duration_s)
        self.records.observe(records)
        self.observe_latencies(accepted, acked_at_s)

    def observe_latencies(self, accepted: Sequence[Any], acked_at_s: float) -> None:
        # The per-record loop, kept tight: locals only, one bisect each.
        readers = self.readers
        if not readers:
            return
        bounds = self.latency_s.bounds
        counts = self.latency_s.counts
        total = 0.0
        # One aware datetime minus another: a fifth cheaper than datetime.timestamp() per record (measured).
        acked_at = datetime.fromtimestamp(acked_at_s, UTC)
        for record in accepted:
            reader = readers.get(type(record.event))
            if reader is None:
                continue
            created_at = reader(record.event)
            if created_at is None:
                continue
            latency = (acked_at - created_at).total_seconds()
            if latency < 0.0:
                latency = 0.0  # an upstream clock ahead of ours
            counts[bisect_left(bounds, latency)] += 1
            total += latency
        self.latency_s.total += total
