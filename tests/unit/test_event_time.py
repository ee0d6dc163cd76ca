"""The event-time window: bounds included, one microsecond past refused, never an exception."""

from __future__ import annotations

import json
from datetime import UTC, datetime, timedelta, timezone

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from paystream.settings import Settings
from schemas.codec import Decoder, Invalid, encode
from schemas.event_time import EventTimeWindow
from schemas.payments import PaymentRequested
from schemas.registry import EXAMPLES, example_document

PROPERTY = settings(derandomize=True, max_examples=500, deadline=None)
WINDOW = EventTimeWindow(past=timedelta(days=1), future=timedelta(minutes=5))
REFERENCE = datetime(2026, 3, 1, 12, 0, tzinfo=UTC)
MICROSECOND = timedelta(microseconds=1)
EARLIEST = datetime(1, 1, 1, tzinfo=timezone(timedelta(hours=23, minutes=59)))
LATEST = datetime(9999, 12, 31, 23, 59, 59, 999_999, tzinfo=timezone(-timedelta(hours=23, minutes=59)))


def rule_of(result: Invalid | None) -> tuple[str, str] | None:
    return None if result is None else (result.field, result.rule)


def test_the_bounds_themselves_are_inside_and_one_microsecond_past_is_not() -> None:
    assert WINDOW.check(REFERENCE - timedelta(days=1), REFERENCE) is None
    assert WINDOW.check(REFERENCE + timedelta(minutes=5), REFERENCE) is None
    assert WINDOW.check(REFERENCE, REFERENCE) is None
    assert rule_of(WINDOW.check(REFERENCE - timedelta(days=1) - MICROSECOND, REFERENCE)) == ("created_at", "window")
    assert rule_of(WINDOW.check(REFERENCE + timedelta(minutes=5) + MICROSECOND, REFERENCE)) == (
        "created_at",
        "window",
    )


def test_the_detail_says_the_distance_and_the_bound() -> None:
    past = WINDOW.check(REFERENCE - timedelta(days=1) - MICROSECOND, REFERENCE)
    assert past == Invalid(
        "created_at",
        "window",
        "2026-02-28T11:59:59.999999+00:00 is 86400.000001 s before the record's time 2026-03-01T12:00:00+00:00;"
        " at most 86400 s is allowed (PAYSTREAM_EVENT_TIME_PAST_S_MAX)",
    )
    future = WINDOW.check(datetime(2026, 3, 1, 17, 35, 30, tzinfo=timezone(timedelta(hours=5, minutes=30))), REFERENCE)
    assert future == Invalid(
        "created_at",
        "window",
        "2026-03-01T17:35:30+05:30 is 330 s after the record's time 2026-03-01T12:00:00+00:00;"
        " at most 300 s is allowed (PAYSTREAM_EVENT_TIME_FUTURE_S_MAX)",
    )


def test_offsets_are_compared_as_instants() -> None:
    # 23:59 at +23:59 is 00:00 UTC the same day: exactly at the past bound of the next day's noon... minus 12 h.
    same_instant = datetime(2026, 3, 1, 17, 30, tzinfo=timezone(timedelta(hours=5, minutes=30)))
    assert WINDOW.check(same_instant, REFERENCE) is None
    a_day_before = datetime(2026, 2, 28, 2, 0, tzinfo=timezone(-timedelta(hours=10)))  # 12:00 UTC, 28 Feb
    assert WINDOW.check(a_day_before, REFERENCE) is None
    assert rule_of(WINDOW.check(a_day_before - MICROSECOND, REFERENCE)) == ("created_at", "window")


@pytest.mark.parametrize(
    "created_at",
    [
        EARLIEST,
        datetime(1, 1, 1, tzinfo=UTC),
        datetime(1, 1, 1, tzinfo=timezone(-timedelta(hours=23, minutes=59))),
        LATEST,
        datetime(9999, 12, 31, 23, 59, 59, 999_999, tzinfo=UTC),
        datetime(9999, 12, 31, 23, 59, 59, 999_999, tzinfo=timezone(timedelta(hours=23, minutes=59))),
    ],
)
@pytest.mark.parametrize("reference", [REFERENCE, EARLIEST, LATEST])
def test_years_1_and_9999_with_any_offset_never_raise(created_at: datetime, reference: datetime) -> None:
    result = WINDOW.check(created_at, reference)
    distance = reference - created_at
    assert rule_of(result) == (None if -WINDOW.future <= distance <= WINDOW.past else ("created_at", "window"))


def test_the_extremes_are_refused_with_their_distance() -> None:
    assert WINDOW.check(EARLIEST, LATEST) == Invalid(
        "created_at",
        "window",
        "0001-01-01T00:00:00+23:59 is 315538070279.999999 s before the record's time"
        " 9999-12-31T23:59:59.999999-23:59; at most 86400 s is allowed (PAYSTREAM_EVENT_TIME_PAST_S_MAX)",
    )
    assert rule_of(WINDOW.check(LATEST, EARLIEST)) == ("created_at", "window")
    assert WINDOW.check(EARLIEST, EARLIEST) is None


def _utc_microseconds(moment: datetime) -> int:
    """An instant as microseconds since 0001-01-01 UTC, without datetime arithmetic that could overflow."""
    offset = moment.utcoffset()
    assert offset is not None
    naive = moment.replace(tzinfo=None)
    local = naive.toordinal() * 86_400_000_000 + (naive.hour * 3600 + naive.minute * 60 + naive.second) * 10**6
    return local + naive.microsecond - offset // MICROSECOND


offsets = st.integers(min_value=-(24 * 60 - 1), max_value=24 * 60 - 1).map(
    lambda minutes: timezone(timedelta(minutes=minutes))
)
any_time = st.datetimes(
    min_value=datetime(1, 1, 1),  # noqa: DTZ001 - hypothesis bounds are naive
    max_value=datetime(9999, 12, 31, 23, 59, 59, 999_999),  # noqa: DTZ001
    timezones=st.one_of(st.just(UTC), offsets),
)
bounds = st.one_of(
    st.integers(min_value=0, max_value=10**12).map(lambda us: timedelta(microseconds=us)),
    st.sampled_from([timedelta(0), timedelta(seconds=300), timedelta(days=1), timedelta(days=999_999_999)]),
)


@PROPERTY
@given(any_time, any_time, bounds, bounds)
def test_any_two_times_are_judged_by_their_distance_without_raising(
    created_at: datetime, reference: datetime, past: timedelta, future: timedelta
) -> None:
    window = EventTimeWindow(past, future)
    ahead_us = _utc_microseconds(reference) - _utc_microseconds(created_at)
    inside = -(future // MICROSECOND) <= ahead_us <= past // MICROSECOND
    assert rule_of(window.check(created_at, reference)) == (None if inside else ("created_at", "window"))


@PROPERTY
@given(st.integers(min_value=-5, max_value=5), st.sampled_from([timedelta(days=1), -timedelta(minutes=5)]))
def test_near_each_bound_only_the_inside_passes(step_us: int, bound: timedelta) -> None:
    outward = MICROSECOND if bound > timedelta(0) else -MICROSECOND  # earlier past the past bound, later the future
    created_at = REFERENCE - bound - step_us * outward  # step > 0: further out than the bound
    assert (WINDOW.check(created_at, REFERENCE) is None) is (step_us <= 0)


def test_from_settings_reads_the_two_settings() -> None:
    assert EventTimeWindow.from_settings(Settings()) == EventTimeWindow(
        timedelta(seconds=86_400), timedelta(seconds=300)
    )
    custom = Settings().with_overrides(event_time_past_s_max=60, event_time_future_s_max=0)
    assert EventTimeWindow.from_settings(custom) == EventTimeWindow(timedelta(minutes=1), timedelta(0))


def test_bad_windows_and_naive_references_are_programmer_errors() -> None:
    with pytest.raises(ValueError, match="bounds >= 0"):
        EventTimeWindow(timedelta(seconds=-1), timedelta(0))
    with pytest.raises(ValueError, match="no time zone"):
        WINDOW.check(REFERENCE, datetime(2026, 3, 1, 12, 0))  # noqa: DTZ001 - the naive time is the point


# --- the decoder's admit hook -----------------------------------------------------------------


def requested(created_at: datetime) -> bytes:
    document = example_document("payment.requested")
    document["created_at"] = created_at.isoformat()
    return json.dumps(document).encode()


def windowed(window: EventTimeWindow = WINDOW) -> Decoder[PaymentRequested]:
    return Decoder(PaymentRequested, admit=lambda payment, at: window.check(payment.created_at, at))


def test_the_decoder_judges_created_at_against_the_record_time() -> None:
    decoder = windowed()
    inside = decoder.decode(requested(REFERENCE - timedelta(days=1)), REFERENCE)
    assert isinstance(inside, PaymentRequested)
    result = decoder.decode(requested(REFERENCE - timedelta(days=1) - MICROSECOND), REFERENCE)
    assert rule_of(result) == ("created_at", "window")  # type: ignore[arg-type]
    # The same record a day later is judged against its own (append) time, not the clock.
    assert isinstance(decoder.decode(requested(REFERENCE), REFERENCE + timedelta(hours=23)), PaymentRequested)


def test_without_a_record_time_the_decoder_uses_now() -> None:
    decoder = windowed()
    now = datetime.now(UTC)
    assert isinstance(decoder.decode(requested(now)), PaymentRequested)
    assert rule_of(decoder.decode(requested(now - timedelta(days=2)))) == ("created_at", "window")  # type: ignore[arg-type]
    assert rule_of(decoder.decode(requested(now + timedelta(hours=1)))) == ("created_at", "window")  # type: ignore[arg-type]


def test_admit_sees_only_events_that_passed_every_other_rule() -> None:
    seen: list[tuple[PaymentRequested, datetime]] = []

    def admit(payment: PaymentRequested, at: datetime) -> Invalid | None:
        seen.append((payment, at))
        return None

    decoder = Decoder(PaymentRequested, admit=admit)
    assert isinstance(decoder.decode(encode(EXAMPLES["payment.requested"]).replace(b'"A-1001"', b'"\\u0000"')), Invalid)
    assert isinstance(decoder.decode(encode(EXAMPLES["payment.requested"])[:-1] + b',"v":1}'), Invalid)
    assert isinstance(decoder.decode(b"{}"), Invalid)
    assert seen == []
    assert decoder.decode(encode(EXAMPLES["payment.requested"]), REFERENCE) == EXAMPLES["payment.requested"]
    assert seen == [(EXAMPLES["payment.requested"], REFERENCE)]
    # Without admit, no window at all: the 2026 example is accepted in any year.
    assert Decoder(PaymentRequested).decode(requested(EARLIEST), LATEST) is not None
    assert isinstance(Decoder(PaymentRequested).decode(requested(EARLIEST), LATEST), PaymentRequested)
