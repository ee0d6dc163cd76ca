"""Replayed payment requests and the event-time window (docs/replay.md, "Event time").

The risk stage judges `created_at` against the record's append time, which for a
replay is when the replayed record reaches the broker. With `--rewrite-ids`
(and `loadtest --from`) `created_at` is the send time, so any recording meets
the window; played verbatim, a request keeps its recorded `created_at`.
"""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

import msgspec
import pytest

from paystream.replay.rewrite import IdRewriter
from paystream.settings import Settings
from schemas.codec import Decoder, Invalid, encode
from schemas.event_time import EventTimeWindow
from schemas.payments import PaymentRequested
from schemas.registry import EXAMPLES

WINDOW = EventTimeWindow.from_settings(Settings())
RISK_EDGE = Decoder(PaymentRequested, admit=lambda payment, at: WINDOW.check(payment.created_at, at))
SENT = datetime(2026, 3, 9, 12, 0, 0, 250_000, tzinfo=UTC)
LATENCY = timedelta(milliseconds=40)  # from the player's clock to the broker's append


def recorded(created_at: datetime) -> bytes:
    payment = EXAMPLES["payment.requested"]
    assert isinstance(payment, PaymentRequested)
    return encode(msgspec.structs.replace(payment, created_at=created_at))


@pytest.mark.parametrize(
    "age",
    [timedelta(0), timedelta(days=1), timedelta(days=8), timedelta(days=400)],
    ids=["just now", "a day old", "past retention", "a year old"],
)
def test_rewritten_requests_meet_the_window_however_old_the_recording(age: timedelta) -> None:
    value = recorded(SENT - age)
    rewritten = IdRewriter("s1", 64 * 1024).rewrite(value, SENT)
    decoded = RISK_EDGE.decode(rewritten, SENT + LATENCY)
    assert isinstance(decoded, PaymentRequested), decoded
    assert decoded.created_at == SENT


def test_a_request_refused_for_its_created_at_is_accepted_once_rewritten() -> None:
    # The rewrite makes new traffic: its created_at is the send time, whatever was recorded.
    far_future = recorded(SENT + timedelta(days=30))
    assert isinstance(RISK_EDGE.decode(far_future, SENT), Invalid)
    assert isinstance(RISK_EDGE.decode(IdRewriter("s1", 64 * 1024).rewrite(far_future, SENT), SENT), PaymentRequested)


def test_a_verbatim_request_meets_the_window_only_within_its_past_bound_of_the_replay() -> None:
    # Played without --rewrite-ids the value goes byte for byte; the record's time is the replay's append time.
    within = recorded(SENT + LATENCY - timedelta(days=1))
    assert isinstance(RISK_EDGE.decode(within, SENT + LATENCY), PaymentRequested)
    too_old = recorded(SENT + LATENCY - timedelta(days=1, microseconds=1))
    result = RISK_EDGE.decode(too_old, SENT + LATENCY)
    assert isinstance(result, Invalid)
    assert (result.field, result.rule) == ("created_at", "window")
    assert "(PAYSTREAM_EVENT_TIME_PAST_S_MAX)" in result.detail
