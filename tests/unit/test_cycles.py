"""Settlement cycles: every instant in exactly one cycle, contiguous cycles, DST-correct days, safe placement."""

from __future__ import annotations

from bisect import bisect_right
from datetime import UTC, datetime, timedelta
from itertools import pairwise
from zoneinfo import ZoneInfo

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from structlog.testing import capture_logs

from paystream.settings import Settings
from workers.cycles import CycleSpec, Window, batch_id, cutoff, known_time_zone, place
from workers.settlement import SettlementStage

BERLIN = CycleSpec.daily(18, "Europe/Berlin")
GRACE = timedelta(minutes=5)
TICK = timedelta(microseconds=1)


def utc(*parts: int) -> datetime:
    return datetime(*parts, tzinfo=UTC)  # type: ignore[misc]


instants = st.datetimes(
    min_value=datetime(1990, 1, 1),  # noqa: DTZ001 - hypothesis bounds are naive
    max_value=datetime(2100, 1, 1),  # noqa: DTZ001
    timezones=st.just(UTC),
)
# Zones that a tz database lists; some change their standard offset by hours in this span.
zones = st.sampled_from(sorted(z for z in ("Europe/Berlin", "America/New_York", "Australia/Lord_Howe",
                                           "Pacific/Apia", "Asia/Kolkata", "America/Santiago", "UTC",
                                           "Asia/Chita", "Africa/Casablanca", "Pacific/Chatham")
                               if known_time_zone(z)))  # fmt: skip
specs = st.one_of(
    st.integers(min_value=1, max_value=31 * 86_400).map(CycleSpec.every),
    st.just(CycleSpec("hourly")),
    st.builds(CycleSpec.daily, st.integers(min_value=0, max_value=23), zones),
)


def test_seconds_cycles_are_aligned_to_the_epoch() -> None:
    spec = CycleSpec.every(600)
    assert spec.window(utc(2026, 11, 24, 17, 34, 59)) == Window(utc(2026, 11, 24, 17, 30), utc(2026, 11, 24, 17, 40))
    assert spec.window(utc(2026, 11, 24, 17, 40)) == Window(utc(2026, 11, 24, 17, 40), utc(2026, 11, 24, 17, 50))
    assert spec.describe() == "seconds 600"


def test_hourly_cycles_are_utc_hours() -> None:
    hourly = CycleSpec("hourly")
    at = datetime(2026, 3, 1, 12, 45, tzinfo=ZoneInfo("Asia/Kolkata"))  # 07:15 UTC
    assert hourly.window(at) == Window(utc(2026, 3, 1, 7), utc(2026, 3, 1, 8))
    assert hourly.describe() == "hourly"


def test_a_daily_cycle_runs_from_one_local_cut_off_to_the_next() -> None:
    # 18:00 in Berlin is 17:00 UTC in winter.
    assert BERLIN.window(utc(2026, 1, 15, 16, 59, 59)) == Window(utc(2026, 1, 14, 17), utc(2026, 1, 15, 17))
    assert BERLIN.window(utc(2026, 1, 15, 17)) == Window(utc(2026, 1, 15, 17), utc(2026, 1, 16, 17))
    # 18:00 in Berlin is 16:00 UTC in summer.
    assert BERLIN.window(utc(2026, 7, 1, 16)) == Window(utc(2026, 7, 1, 16), utc(2026, 7, 2, 16))
    assert BERLIN.describe() == "daily 18:00 Europe/Berlin"


def test_daily_cycles_over_summer_time_changes_last_23_and_25_hours() -> None:
    # Berlin: clocks go forward on 2026-03-29 at 02:00, back on 2026-10-25 at 03:00.
    spring = BERLIN.window(utc(2026, 3, 29, 12))
    assert spring == Window(utc(2026, 3, 28, 17), utc(2026, 3, 29, 16))
    assert spring.end - spring.start == timedelta(hours=23)
    autumn = BERLIN.window(utc(2026, 10, 25, 12))
    assert autumn == Window(utc(2026, 10, 24, 16), utc(2026, 10, 25, 17))
    assert autumn.end - autumn.start == timedelta(hours=25)
    # New York changes on other days (2026-03-08, 2026-11-01).
    new_york = CycleSpec.daily(0, "America/New_York")
    assert new_york.window(utc(2026, 3, 8, 12)) == Window(utc(2026, 3, 8, 5), utc(2026, 3, 9, 4))
    assert new_york.window(utc(2026, 11, 1, 12)) == Window(utc(2026, 11, 1, 4), utc(2026, 11, 2, 5))


def test_a_cut_off_hour_skipped_or_repeated_by_a_clock_change() -> None:
    at_two = CycleSpec.daily(2, "Europe/Berlin")
    # 2026-03-29 02:00 does not exist in Berlin: the cut-off is the jump itself, 01:00 UTC (= 03:00 CEST).
    assert at_two.window(utc(2026, 3, 29, 0, 59)).end == utc(2026, 3, 29, 1)
    assert at_two.window(utc(2026, 3, 29, 1)).start == utc(2026, 3, 29, 1)
    # 2026-10-25 02:00 happens twice (CEST, then CET): the cut-off is the first, 00:00 UTC.
    assert at_two.window(utc(2026, 10, 25, 0, 30)) == Window(utc(2026, 10, 25, 0), utc(2026, 10, 26, 1))


def test_cut_off_adds_the_grace_and_batch_ids_name_the_start() -> None:
    window = BERLIN.window(utc(2026, 11, 24, 17, 30))
    assert cutoff(window, GRACE) == utc(2026, 11, 25, 17, 5)
    assert batch_id("m-1", "EUR", window.start) == "m-1:EUR:20261124T170000Z"
    assert batch_id("m-1", "EUR", utc(2026, 1, 1) + timedelta(microseconds=250)) == "m-1:EUR:20260101T000000.000250Z"


@settings(max_examples=300)
@given(specs, instants, st.integers(min_value=0, max_value=86_400))
def test_every_instant_falls_in_one_cycle_and_cycles_are_contiguous(
    spec: CycleSpec, at: datetime, grace_s: int
) -> None:
    window = spec.window(at)
    assert window.start <= at < window.end
    assert cutoff(window, timedelta(seconds=grace_s)) == window.end + timedelta(seconds=grace_s)
    # The same cycle for every instant inside it: its start and its last microsecond.
    assert spec.window(window.start) == window
    assert spec.window(window.end - TICK) == window
    # The next cycle starts where this one ends; the previous one ends where it starts.
    assert spec.window(window.end).start == window.end
    assert spec.window(window.start - TICK).end == window.start
    # Bounds are whole seconds: batch ids and the database see exact instants.
    assert window.start.microsecond == 0 and window.end.microsecond == 0


@given(specs, instants, instants)
def test_two_instants_have_the_same_cycle_or_disjoint_ones(spec: CycleSpec, a: datetime, b: datetime) -> None:
    first, second = spec.window(a), spec.window(b)
    assert first == second or first.end <= second.start or second.end <= first.start


@given(st.integers(min_value=0, max_value=23), instants)
def test_berlin_days_last_23_24_or_25_hours(hour: int, at: datetime) -> None:
    window = CycleSpec.daily(hour, "Europe/Berlin").window(at)
    assert window.end - window.start in (timedelta(hours=23), timedelta(hours=24), timedelta(hours=25))
    local_start = window.start.astimezone(ZoneInfo("Europe/Berlin"))
    # The cut-off is at the hour, or at the jump when the hour was skipped (then 03:00).
    assert (local_start.hour, local_start.minute) in ((hour, 0), (3, 0))


def test_spec_shapes_are_asserted() -> None:
    with pytest.raises(AssertionError):
        CycleSpec.every(0)
    with pytest.raises(AssertionError):
        CycleSpec("daily", cutoff_hour=24, time_zone="UTC")
    with pytest.raises(AssertionError):
        CycleSpec("hourly", seconds=60)


# --- placement: existing batches keep their bounds, new ones never overlap them -----------------

T0 = utc(2026, 1, 1)


def test_an_item_goes_to_the_existing_batch_holding_its_time_whatever_the_cycle_now() -> None:
    open_batch = Window(T0, T0 + timedelta(hours=1))
    # The merchant moved to 10-minute cycles while this hour-long batch was open.
    spec = CycleSpec.every(600)
    assert place(T0 + timedelta(minutes=45), spec, [open_batch], None) == open_batch
    # After its end the new cycle applies.
    after = place(T0 + timedelta(minutes=65), spec, [open_batch], None)
    assert after == Window(T0 + timedelta(hours=1), T0 + timedelta(minutes=70))


def test_a_new_batch_is_cut_to_start_where_the_open_one_ends() -> None:
    open_batch = Window(T0, T0 + timedelta(minutes=10))
    # Moved to daily 00:00 UTC: today's cycle began at T0, inside the open batch.
    spec = CycleSpec.daily(0, "UTC")
    assert place(T0 + timedelta(hours=3), spec, [open_batch], None) == Window(open_batch.end, T0 + timedelta(days=1))


def test_a_new_batch_is_cut_to_end_where_the_next_existing_one_starts() -> None:
    later = Window(T0 + timedelta(minutes=30), T0 + timedelta(minutes=40))
    spec = CycleSpec("hourly")
    assert place(T0 + timedelta(minutes=5), spec, [later], None) == Window(T0, later.start)


def test_a_late_item_goes_to_the_batch_after_the_newest_closed_one() -> None:
    spec = CycleSpec.every(600)
    closed = Window(T0, T0 + timedelta(minutes=10))
    assert place(T0 + timedelta(minutes=3), spec, [closed], closed.end) == Window(
        closed.end, closed.end + timedelta(minutes=10)
    )
    following = Window(closed.end, closed.end + timedelta(minutes=10))
    assert place(T0 - timedelta(hours=2), spec, [closed, following], closed.end) == following


def nearby(batches: list[Window], low: datetime, high: datetime) -> list[Window]:
    """What NEARBY_BATCHES_SQL returns for event times in [low, high] (after the late adjustment)."""
    starts = [b.start for b in batches]
    first = bisect_right(starts, low) - 1
    last = bisect_right(starts, high)  # index of the first starting after `high`
    return batches[max(first, 0) : last + 1]


offsets = st.integers(min_value=0, max_value=6 * 3_600)
placement_specs = st.one_of(
    st.sampled_from([60, 90, 600, 3_600, 5_400]).map(CycleSpec.every),
    st.just(CycleSpec("hourly")),
    st.builds(CycleSpec.daily, st.integers(min_value=0, max_value=23), st.sampled_from(["UTC", "Asia/Kolkata"])),
)


@settings(max_examples=300)
@given(
    st.lists(
        st.tuples(placement_specs, st.lists(offsets, min_size=1, max_size=20), st.booleans()),
        min_size=1,
        max_size=8,
    )
)
def test_batches_never_overlap_and_every_item_lands_in_its_batch(
    rounds: list[tuple[CycleSpec, list[int], bool]],
) -> None:
    """Input batches under changing cycles, with closes between them, as the settlement stage sees them."""
    batches: list[Window] = []
    closed: list[Window] = []
    for spec, item_offsets, close_due in rounds:
        closed_end = max((b.end for b in closed), default=None)
        times = [T0 + timedelta(seconds=s) for s in item_offsets]
        adjusted = [t if closed_end is None or t >= closed_end else closed_end for t in times]
        # One read per input batch: every item of it is placed against the same batches.
        existing = list(batches)
        near = nearby(existing, min(adjusted), max(adjusted))
        for at, effective in zip(times, adjusted, strict=True):
            window = place(at, spec, near, closed_end)
            # The SQL's nearby batches decide exactly as the merchant's whole history would.
            assert window == place(at, spec, existing, closed_end)
            assert window.start <= effective < window.end
            if window not in batches:
                assert all(window.end <= b.start or b.end <= window.start for b in batches), (window, batches)
                assert spec.window(effective).start <= window.start and window.end <= spec.window(effective).end
                batches.append(window)
                batches.sort()
            if closed_end is not None:
                assert window.start >= closed_end  # never into a closed batch
        if close_due:
            # The oldest open batches close first (their cut-offs come first).
            still_open = [b for b in batches if b not in closed]
            closed.extend(still_open[: max(1, len(still_open) // 2)])
    for earlier, later in pairwise(batches):
        assert earlier.end <= later.start


# --- the settlement stage's reading of a merchant's cycle ----------------------------------------


def test_settlement_reads_the_merchants_cycle_and_falls_back_for_a_zone_unknown_here() -> None:
    stage = SettlementStage(Settings(settlement_cycle_s=600))
    row = {"merchant_id": "m-1", "cycle_kind": None, "cycle_seconds": None, "cycle_cutoff_hour": None,
           "cycle_time_zone": None}  # fmt: skip
    assert stage._cycle_of(row) == CycleSpec.every(600)
    assert stage._cycle_of(row | {"cycle_kind": "hourly"}) == CycleSpec("hourly")
    berlin = row | {"cycle_kind": "daily", "cycle_cutoff_hour": 18, "cycle_time_zone": "Europe/Berlin"}
    assert stage._cycle_of(berlin) == BERLIN
    # A zone PostgreSQL knew and this Python's tz database does not: the default, and an error logged.
    with capture_logs() as logs:
        assert stage._cycle_of(berlin | {"cycle_time_zone": "Mars/Olympus"}) == CycleSpec.every(600)
    assert [(e["event"], e["log_level"], e["time_zone"]) for e in logs] == [
        ("merchant time zone unknown here; default cycle used", "error", "Mars/Olympus")
    ]
