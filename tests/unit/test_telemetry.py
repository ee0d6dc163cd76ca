"""The pure parts of the metrics, health and progress lines: lag, buckets, payment times, stall bound, log fields."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from types import SimpleNamespace
from typing import Any

import pytest
import structlog
from aiokafka import TopicPartition
from prometheus_client import CollectorRegistry, generate_latest

from paystream.stage.contract import Accepted, Origin
from paystream.stage.observe import BatchObservations, Buckets, payment_time_reader
from paystream.stage.stats import LoopStats
from paystream.telemetry.collector import STAGE_COUNTERS, SettlementCounts, StageCollector, bucket_label
from paystream.telemetry.health import OK, stage_readiness, stall_reasons, unclaimed_partitions
from paystream.telemetry.lag import partition_lag, partition_lags
from paystream.telemetry.progress import Mark, progress_fields, total_lag
from schemas.accounts import AccountRequestApproved, CaptureRequested, DepositRequested
from schemas.payments import FundsHeld, PaymentCleared, PaymentRequested, RiskAssessed
from schemas.refunds import RefundCleared, RefundRequested
from tests.support.telemetry import parse, value
from workers import build_stage
from workers.funds import FundsStage
from workers.risk import RiskStage
from workers.settlement import SettlementStage

CREATED = datetime(2026, 3, 1, 12, 0, tzinfo=UTC)
TOPIC = "t.payments.requested"


def _payment(payment_id: str = "p-1", capture: str = "automatic", created_at: datetime = CREATED) -> PaymentRequested:
    return PaymentRequested(
        payment_id=payment_id, payer_account="payer-1", merchant_id="merchant-1", amount_minor=1_000,
        currency="EUR", country="DE", method="card", created_at=created_at, capture=capture,  # type: ignore[arg-type]
    )  # fmt: skip


def _accepted(events: list[Any]) -> list[Accepted[Any]]:
    return [Accepted(Origin(TOPIC, 0, offset), event) for offset, event in enumerate(events)]


# -- lag ---------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("highwater", "position", "lag"),
    [(100, 40, 60), (100, 100, 0), (90, 100, 0), (None, 5, None), (5, None, None), (0, 0, 0)],
)
def test_partition_lag_is_the_high_water_mark_minus_the_next_offset(
    highwater: int | None, position: int | None, lag: int | None
) -> None:
    assert partition_lag(highwater, position) == lag


def test_lags_are_per_claimed_assigned_partition_with_a_known_high_water_mark() -> None:
    assignment = {TopicPartition(TOPIC, p) for p in (0, 1, 2)}
    highwater = {TopicPartition(TOPIC, 0): 50, TopicPartition(TOPIC, 1): None, TopicPartition(TOPIC, 2): 7}
    # Partition 3 is claimed but revoked since: its consumer would refuse to answer for it.
    positions = {0: 20, 1: 3, 2: 7, 3: 0}
    assert partition_lags(TOPIC, positions, assignment, highwater.__getitem__) == {0: 30, 2: 0}
    assert total_lag({0: 30, 2: 0}) == 30
    assert total_lag({}) is None


# -- histograms --------------------------------------------------------------------------------


def test_buckets_count_a_value_equal_to_a_bound_in_that_bound() -> None:
    buckets = Buckets((1.0, 5.0, 10.0))
    for observation in (0.5, 1.0, 1.5, 5.0, 11.0, 11.0):
        buckets.observe(observation)
    assert buckets.counts == [2, 2, 0, 2]
    assert buckets.cumulative() == [(1.0, 2), (5.0, 4), (10.0, 4), (float("inf"), 6)]
    assert (buckets.count, buckets.total) == (6, 30.0)
    assert [bucket_label(bound) for bound, _ in buckets.cumulative()] == ["1.0", "5.0", "10.0", "+Inf"]


def test_bucket_bounds_must_increase() -> None:
    with pytest.raises(AssertionError):
        Buckets((1.0, 1.0, 2.0))


def test_each_stage_input_has_a_payment_time_or_is_not_observed() -> None:
    payment = _payment()
    manual = _payment(capture="manual")
    times = {
        PaymentRequested: (payment, CREATED),
        DepositRequested: (DepositRequested(request_id="r", account_id="a", amount_minor=5, currency="EUR",
                                            source_ref="s", created_at=CREATED), CREATED),
        RefundRequested: (RefundRequested(request_id="r", account_id="a", payment_id="p", amount_minor=5,
                                          currency="EUR", reason="customer_request", created_at=CREATED), CREATED),
        RiskAssessed: (RiskAssessed(event_id="e", decision="approved", reasons=[], assessed_at=CREATED,
                                    payment=payment), CREATED),
        FundsHeld: (FundsHeld(event_id="e", hold_id="h", held_at=CREATED, payment=payment), CREATED),
        PaymentCleared: (PaymentCleared(event_id="e", payment_id="p", payer_account="a", merchant_id="m",
                                        currency="EUR", gross_minor=5, fee_minor=0, net_minor=5, journal_id="j",
                                        event_time=CREATED, cleared_at=CREATED), CREATED),
    }  # fmt: skip
    for event_type, (event, expected) in times.items():
        reader = payment_time_reader(event_type)
        assert reader is not None and reader(event) == expected, event_type
    # A manual capture's hold waited for its capture by design: not a pipeline latency.
    held_manual = FundsHeld(event_id="e", hold_id="h", held_at=CREATED, payment=manual)
    reader = payment_time_reader(FundsHeld)
    assert reader is not None and reader(held_manual) is None
    # No payment time of their own: an account request's approval, a refund's clearing (its payment's time).
    assert payment_time_reader(AccountRequestApproved) is None
    assert payment_time_reader(RefundCleared) is None


def test_every_stage_input_type_is_classified() -> None:
    """A new input contract must say whether it carries a payment time (payment_time_reader)."""
    from paystream.settings import Settings

    settings = Settings()
    observed = {}
    for stage in (RiskStage(settings), FundsStage(settings), build_stage("clearing", settings),
                  SettlementStage(settings)):  # fmt: skip
        types = getattr(stage, "input_types", None) or (stage.input_type,)
        observed[stage.name] = sorted(t.__name__ for t in BatchObservations(types).readers)
    assert observed["funds"] == ["RiskAssessed"]
    assert observed["clearing"] == ["FundsHeld"]
    assert observed["settlement"] == ["PaymentCleared"]
    assert "PaymentRequested" in observed["risk"]
    assert "CaptureRequested" in observed["risk"]
    assert len(observed["risk"]) == len(RiskStage.input_types)


def test_a_batch_observes_its_duration_size_and_each_latency() -> None:
    observed = BatchObservations([PaymentRequested, CaptureRequested, AccountRequestApproved])
    acked_at = CREATED + timedelta(seconds=2)
    events = [
        _payment("a"),
        _payment("b", created_at=CREATED + timedelta(seconds=1.5)),
        _payment("c", created_at=CREATED + timedelta(seconds=9)),  # an upstream clock ahead of ours: zero
        AccountRequestApproved(event_id="e", kind="deposit", request_id="r", account_id="a", assessed_at=CREATED),
    ]
    observed.batch(0.3, len(events), _accepted(events), acked_at.timestamp())
    assert (observed.duration_s.count, observed.duration_s.total) == (1, 0.3)
    assert (observed.records.count, observed.records.total) == (1, 4.0)
    assert observed.latency_s.count == 3
    assert observed.latency_s.total == pytest.approx(2.5)
    assert dict(observed.latency_s.cumulative())[0.01] == 1  # the clamped one
    assert dict(observed.latency_s.cumulative())[0.5] == 2
    assert dict(observed.latency_s.cumulative())[2.5] == 3


# -- health ------------------------------------------------------------------------------------


def test_a_stage_is_stalled_only_past_the_bound() -> None:
    progress = {"risk": 1_000.0, "funds": 1_000.0 - 120.0, "settlement": 1_000.0 - 120.5}
    assert stall_reasons(progress, 1_000.0, 120) == [
        "settlement: no loop iteration or retry attempt for 120.5 s (bound 120 s)"
    ]
    assert stall_reasons({"risk": 999.0}, 1_000.0, 120) == []


def test_unclaimed_partitions_are_assigned_without_a_current_epoch() -> None:
    assignment = {TopicPartition(TOPIC, p) for p in (0, 1, 2, 3)}
    assert unclaimed_partitions(assignment, {0: 4, 1: 4, 3: 2}, fenced={3}) == [2, 3]
    assert unclaimed_partitions(assignment, {p: 1 for p in range(4)}, fenced=set()) == []
    assert unclaimed_partitions(set(), {}, set()) == []


def _loop(**changes: Any) -> SimpleNamespace:
    stats = LoopStats(rebalances=1)
    consumer = SimpleNamespace(assignment=lambda: {TopicPartition(TOPIC, 0)}, highwater=lambda tp: 12)
    loop = SimpleNamespace(fatal=None, stats=stats, consumer=consumer, epochs={0: 1}, fenced=set(), topic=TOPIC,
                           positions={0: 10}, observed=BatchObservations([PaymentRequested]))  # fmt: skip
    for name, new in changes.items():
        setattr(loop, name, new)
    return loop


def test_stage_readiness_names_what_is_missing() -> None:
    assert stage_readiness(_loop()) == OK
    assert stage_readiness(_loop(stats=LoopStats())) == (
        "its consumer has not joined the group yet (no assignment received)"
    )
    assert stage_readiness(_loop(epochs={})) == (
        "partitions [0] assigned but not claimed (a rebalance or a claim in progress)"
    )
    assert stage_readiness(_loop(fatal=RuntimeError("claim failed"))) == "failed: RuntimeError: claim failed"


# -- the collector -----------------------------------------------------------------------------


def test_a_scrape_reports_the_loops_counts_exactly() -> None:
    risk = _loop()
    risk.stats.records, risk.stats.batches, risk.stats.dead_letters = 2_003, 3, 4
    risk.observed.batch(0.2, 2_003, _accepted([_payment()]), CREATED.timestamp() + 1)
    pool = SimpleNamespace(get_size=lambda: 3, get_idle_size=lambda: 1, get_max_size=lambda: 8)
    settlement = SettlementCounts(open=2, closed=40, counted_at=1.0)
    registry = CollectorRegistry(auto_describe=False)
    registry.register(StageCollector({"risk": risk}, pool, settlement))
    samples = parse(generate_latest(registry).decode())

    assert value(samples, "paystream_stage_records_total", stage="risk") == 2_003
    assert value(samples, "paystream_stage_batches_total", stage="risk") == 3
    assert value(samples, "paystream_stage_dead_letters_total", stage="risk") == 4
    assert value(samples, "paystream_stage_rebalances_total", stage="risk") == 1
    assert {name for name, _ in samples} >= {name for name, _, _ in STAGE_COUNTERS}
    assert value(samples, "paystream_stage_batch_records_bucket", stage="risk", le="5000.0") == 1
    assert value(samples, "paystream_stage_batch_records_bucket", stage="risk", le="2000.0") == 0
    assert value(samples, "paystream_stage_event_latency_seconds_count", stage="risk") == 1
    assert value(samples, "paystream_stage_event_latency_seconds_sum", stage="risk") == 1.0
    assert value(samples, "paystream_stage_consumer_lag_records", stage="risk", topic=TOPIC, partition="0") == 2
    assert value(samples, "paystream_stage_assigned_partitions", stage="risk") == 1
    assert value(samples, "paystream_settlement_batches", status="open") == 2
    assert value(samples, "paystream_settlement_batches", status="closed") == 40
    assert value(samples, "paystream_db_pool_connections_in_use") == 2
    assert value(samples, "paystream_db_pool_connections_max") == 8


def test_settlement_batches_are_absent_until_first_counted() -> None:
    registry = CollectorRegistry(auto_describe=False)
    pool = SimpleNamespace(get_size=lambda: 0, get_idle_size=lambda: 0, get_max_size=lambda: 4)
    registry.register(StageCollector({"settlement": _loop()}, pool, SettlementCounts()))
    names = {name for name, _ in parse(generate_latest(registry).decode())}
    assert "paystream_settlement_batches" not in names
    assert "paystream_db_pool_connections_max" in names


# -- the progress line -------------------------------------------------------------------------


def test_progress_fields_are_a_rate_since_the_last_line_the_lag_and_the_batch_age() -> None:
    assert progress_fields(Mark(100.0, 1_000), Mark(130.0, 4_000), 250, 0.44) == {
        "records_per_s": 100.0,
        "lag_records": 250,
        "last_batch_age_s": 0.4,
    }
    assert progress_fields(Mark(5.0, 0), Mark(5.0, 0), None, 12.0)["records_per_s"] == 0.0


async def test_the_progress_task_logs_one_line_per_stage() -> None:
    import asyncio

    from paystream.telemetry.progress import log_progress

    risk = _loop()
    with structlog.testing.capture_logs() as logs:
        task = asyncio.create_task(log_progress({"risk": risk}, 0.01))
        try:
            while not logs:
                risk.stats.records += 1
                await asyncio.sleep(0.005)
        finally:
            task.cancel()
            await asyncio.gather(task, return_exceptions=True)
    line = logs[0]
    assert (line["event"], line["log_level"], line["stage"], line["lag_records"]) == (
        "stage progress",
        "info",
        "risk",
        2,
    )
    assert line["records_per_s"] > 0


def test_operations_doc_lists_exactly_the_exported_metrics() -> None:
    """docs/operations.md ("Metrics") is the operators' list: every metric with its type and labels, no other."""
    import re

    from prometheus_client.parser import text_string_to_metric_families

    from paystream.settings import REPO_ROOT

    pool = SimpleNamespace(get_size=lambda: 0, get_idle_size=lambda: 0, get_max_size=lambda: 4)
    registry = CollectorRegistry(auto_describe=False)
    registry.register(StageCollector({"settlement": _loop()}, pool, SettlementCounts(open=0, closed=0, counted_at=1.0)))
    exported = {}
    for family in text_string_to_metric_families(generate_latest(registry).decode()):
        name = family.name + ("_total" if family.type == "counter" else "")
        labels = {key for sample in family.samples for key in sample.labels if key != "le"}
        exported[name] = (family.type, sorted(labels))
    documented = {}
    for line in (REPO_ROOT / "docs" / "operations.md").read_text(encoding="utf-8").splitlines():
        row = re.match(r"\| `(paystream_[a-z_]+)` \| (counter|histogram|gauge) \|([^|]*)\|", line)
        if row:
            documented[row.group(1)] = (row.group(2), sorted(re.findall(r"`([a-z_]+)`", row.group(3))[:3]))
    # The status label's values are listed beside it in backticks: only the label name counts.
    documented["paystream_settlement_batches"] = (documented["paystream_settlement_batches"][0], ["status"])
    assert documented == exported


class _AnsweringPool:
    """A pool whose connection answers SELECT 1."""

    def acquire(self, timeout: float) -> Any:
        import contextlib

        @contextlib.asynccontextmanager
        async def connection() -> Any:
            yield SimpleNamespace(fetchval=self._select_one)

        return connection()

    async def _select_one(self, query: str, **_options: float) -> int:
        assert query == "SELECT 1"
        return 1


async def test_readiness_names_each_failed_check() -> None:
    from paystream.telemetry.health import readiness

    async def broker_answers() -> None:
        return None

    async def broker_down() -> None:
        raise ConnectionRefusedError("connect call failed")

    checks = await readiness({"risk": _loop()}, broker_answers, _AnsweringPool())
    assert checks == {"stage:risk": OK, "kafka": OK, "postgres": OK}
    checks = await readiness({"risk": _loop(epochs={})}, broker_down, _AnsweringPool())
    assert checks["kafka"] == "ConnectionRefusedError: connect call failed"
    assert checks["stage:risk"].startswith("partitions [0] assigned but not claimed")
    # Before the runner made its loops nothing is ready, rather than everything of nothing.
    assert (await readiness({}, broker_answers, _AnsweringPool()))["stages"] == "no stage loop made yet"
