"""The event-time window: how far a payment's `created_at` may be from the time its record was appended.

The risk stage's velocity windows and the settlement cycles are placed by
event time. A `created_at` far in the past would escape the velocity limits
(its window is long closed) and land in a settlement cycle that has closed;
one far in the future would sit in windows and cycles nobody has reached.
Both are refused at the edge (`created_at`, rule `window`).

The reference is the Kafka record's timestamp, which on `payments.requested`
is the broker's append time (`message.timestamp.type=LogAppendTime`,
`topology/topics.py`): a record read again after an outage, or replayed from
an older offset, is judged against the same instant as the first time and
decided alike. The bounds are settings: `PAYSTREAM_EVENT_TIME_PAST_S_MAX`
(default one day, the longest velocity window) and
`PAYSTREAM_EVENT_TIME_FUTURE_S_MAX` (default five minutes of clock skew).
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Protocol

from schemas.codec import Invalid

_MICROSECOND = timedelta(microseconds=1)


class EventTimeSettings(Protocol):
    """The two settings the window is made from (`paystream.settings.Settings` has them)."""

    @property
    def event_time_past_s_max(self) -> int: ...

    @property
    def event_time_future_s_max(self) -> int: ...


@dataclass(frozen=True, slots=True)
class EventTimeWindow:
    """`created_at` may be at most `past` before, and at most `future` after, the reference; the bounds included."""

    past: timedelta
    future: timedelta

    def __post_init__(self) -> None:
        if self.past < timedelta(0) or self.future < timedelta(0):
            raise ValueError(f"an event-time window needs bounds >= 0, not past={self.past} future={self.future}")

    @classmethod
    def from_settings(cls, settings: EventTimeSettings) -> EventTimeWindow:
        return cls(
            past=timedelta(seconds=settings.event_time_past_s_max),
            future=timedelta(seconds=settings.event_time_future_s_max),
        )

    def check(self, created_at: datetime, reference: datetime) -> Invalid | None:
        """None when `created_at` is inside the window around `reference`, else why not.

        Never raises for a timezone-aware `created_at` (every one msgspec
        decodes, years 1 to 9999 with any offset): the distance is a
        subtraction of instants, whose result always fits a timedelta, and no
        bound is ever added to a datetime. `reference` must be aware too.
        """
        if reference.utcoffset() is None:
            raise ValueError(f"the reference time {reference.isoformat()} has no time zone")
        distance = reference - created_at  # > 0: created before the reference
        if distance > self.past:
            return Invalid(
                "created_at",
                "window",
                f"{created_at.isoformat()} is {_seconds(distance)} before the record's time"
                f" {reference.isoformat()}; at most {_seconds(self.past)} is allowed"
                " (PAYSTREAM_EVENT_TIME_PAST_S_MAX)",
            )
        if -distance > self.future:
            return Invalid(
                "created_at",
                "window",
                f"{created_at.isoformat()} is {_seconds(-distance)} after the record's time"
                f" {reference.isoformat()}; at most {_seconds(self.future)} is allowed"
                " (PAYSTREAM_EVENT_TIME_FUTURE_S_MAX)",
            )
        return None


def _seconds(span: timedelta) -> str:
    """A non-negative span in seconds, exact to the microsecond: `86400 s`, `86400.000001 s`."""
    whole, micros = divmod(span // _MICROSECOND, 1_000_000)
    return f"{whole} s" if micros == 0 else f"{whole}.{micros:06d}".rstrip("0") + " s"
