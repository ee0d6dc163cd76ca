"""Settlement cycles in event time: which window holds an instant, and where a payment's batch lies.

A merchant's cycle (`CycleSpec`) is one of:
- `seconds`: fixed windows of N seconds aligned to the Unix epoch (UTC); the
  global default is this kind with `PAYSTREAM_SETTLEMENT_CYCLE_S`;
- `hourly`: windows of one UTC hour (so an hour of a zone whose offset is not
  whole hours is split over two cycles);
- `daily`: from one cut-off to the next, the cut-off being the first instant
  each day at which the wall clock of an IANA time zone reads HH:00. A cycle
  over a change to summer time lasts 23 hours, over the change back 25. A
  cut-off hour that a change skips (02:00 when clocks jump from 02:00 to
  03:00) is the instant of the jump; one that happens twice is the first.

A batch is [start, end) and closes at end + grace (`cutoff`). Batches that
exist keep their bounds whatever the merchant's cycle becomes: `place` puts a
payment in the existing batch holding its event time, or else in the current
cycle's window holding it, shortened so it overlaps no existing batch. A
payment older than the end of the newest closed batch is late and is placed
at that end instead: in the next batch.

Everything here is pure: the settlement stage reads the merchant's cycle and
the batches near the event times, and asks these functions where items go.
"""

from __future__ import annotations

from bisect import bisect_right
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import UTC, date, datetime, timedelta
from functools import cache
from typing import Literal, NamedTuple
from zoneinfo import ZoneInfo, available_timezones

EPOCH = datetime(1970, 1, 1, tzinfo=UTC)
HOUR = timedelta(hours=1)
DAY = timedelta(days=1)
# The longest cycle: a settlement batch's sums must stay in bigint (migration 003).
CYCLE_SECONDS_MAX = 31 * 86_400
CYCLE_KINDS = ("daily", "hourly", "seconds")
CycleKind = Literal["daily", "hourly", "seconds"]


class Window(NamedTuple):
    """A batch's span of event time, [start, end)."""

    start: datetime
    end: datetime

    def holds(self, at: datetime) -> bool:
        return self.start <= at < self.end


@dataclass(frozen=True, slots=True)
class CycleSpec:
    """A settlement cycle: `seconds` (with `seconds`), `hourly`, or `daily` (with `cutoff_hour` and `time_zone`)."""

    kind: CycleKind
    seconds: int | None = None
    cutoff_hour: int | None = None
    time_zone: str | None = None

    def __post_init__(self) -> None:
        # The shape mirrors the merchants_cycle_shape constraint (migration 004).
        if self.kind == "seconds":
            assert self.seconds is not None and 1 <= self.seconds <= CYCLE_SECONDS_MAX, self
            assert self.cutoff_hour is None and self.time_zone is None, self
        elif self.kind == "hourly":
            assert self.seconds is None and self.cutoff_hour is None and self.time_zone is None, self
        else:
            assert self.kind == "daily", self
            assert self.cutoff_hour is not None and 0 <= self.cutoff_hour <= 23, self
            assert self.time_zone is not None and self.seconds is None, self

    @classmethod
    def every(cls, seconds: int) -> CycleSpec:
        return cls("seconds", seconds=seconds)

    @classmethod
    def daily(cls, cutoff_hour: int, time_zone: str) -> CycleSpec:
        return cls("daily", cutoff_hour=cutoff_hour, time_zone=time_zone)

    def describe(self) -> str:
        """The text form operators write and read: `daily 18:00 Europe/Berlin`, `hourly`, `seconds 30`."""
        if self.kind == "daily":
            return f"daily {self.cutoff_hour:02d}:00 {self.time_zone}"
        if self.kind == "hourly":
            return "hourly"
        return f"seconds {self.seconds}"

    def window(self, at: datetime) -> Window:
        """The cycle holding `at`: start <= at < end."""
        assert at.tzinfo is not None, at
        if self.kind == "daily":
            assert self.cutoff_hour is not None and self.time_zone is not None
            found = _daily_window(at, self.cutoff_hour, _zone(self.time_zone))
        else:
            length = HOUR if self.kind == "hourly" else timedelta(seconds=self.seconds or 0)
            start = EPOCH + length * ((at - EPOCH) // length)
            found = Window(start, start + length)
        assert found.holds(at), (self, at, found)
        return found


@cache
def _zone(name: str) -> ZoneInfo:
    return ZoneInfo(name)


@cache
def _known_zones() -> frozenset[str]:
    return frozenset(available_timezones())


def known_time_zone(name: str) -> bool:
    """An IANA name in this Python's tz database (zoneinfo would also open odd files under its path)."""
    return name in _known_zones()


def _daily_cutoff(day: date, hour: int, zone: ZoneInfo) -> datetime:
    # fold=0: an hour that happens twice is its first occurrence; an hour that
    # is skipped maps, with the offset before the change, to the change itself.
    return datetime(day.year, day.month, day.day, hour, tzinfo=zone).astimezone(UTC)


def _daily_window(at: datetime, hour: int, zone: ZoneInfo) -> Window:
    day = at.astimezone(zone).date()
    today = _daily_cutoff(day, hour, zone)
    if at >= today:
        return Window(today, _daily_cutoff(day + DAY, hour, zone))
    return Window(_daily_cutoff(day - DAY, hour, zone), today)


def cutoff(window: Window, grace: timedelta) -> datetime:
    """When the batch of this window closes: its end plus the grace for late events."""
    return window.end + grace


def batch_id(merchant_id: str, currency: str, start: datetime) -> str:
    """Unique per (merchant, currency, start). Every cycle's bounds are whole seconds; a start
    with a fraction (a batch written by hand ended there) keeps it, so ids stay unique."""
    utc = start.astimezone(UTC)
    fraction = f".{utc.microsecond:06d}" if utc.microsecond else ""
    return f"{merchant_id}:{currency}:{utc:%Y%m%dT%H%M%S}{fraction}Z"


def place(event_time: datetime, spec: CycleSpec, batches: Sequence[Window], closed_end: datetime | None) -> Window:
    """The window of the batch a payment with this event time belongs to.

    `batches`: the existing batches of the merchant and currency around the
    event time, sorted by start and not overlapping (the one starting at or
    before it, all starting after it up to the other payments' times, and the
    next one). `closed_end`: the end of the newest closed batch, or None.

    An existing batch holding the (possibly late-adjusted) time is returned as
    it is; otherwise the cycle's window holding it, cut to the gap between
    the neighbouring batches, so a new batch never overlaps an existing one.
    """
    at = event_time if closed_end is None or event_time >= closed_end else closed_end
    starts = [b.start for b in batches]
    index = bisect_right(starts, at) - 1
    before = batches[index] if index >= 0 else None
    if before is not None and before.holds(at):
        return before
    after = batches[index + 1] if index + 1 < len(batches) else None
    start, end = spec.window(at)
    if before is not None and before.end > start:
        start = before.end
    if after is not None and after.start < end:
        end = after.start
    placed = Window(start, end)
    assert placed.holds(at), (event_time, spec, batches, closed_end, placed)
    return placed
