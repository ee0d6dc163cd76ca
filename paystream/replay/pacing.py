"""When each replayed record may go: the recorded gaps scaled by a speed, under an optional rate cap.

Pure arithmetic on seconds passed in by the caller, so the rules are tested
without a clock. `SPEED_MAX` (0) means as fast as possible.
"""

from __future__ import annotations

import math

SPEED_MAX = 0.0
# The cap allows this much of a second's records at once: the player sends in
# groups and asyncio sleeps are ~1 ms coarse, so one record per wake-up would
# not reach high caps. 10 ms keeps any second within 1% of the cap.
BURST_S = 0.01
_EPSILON = 1e-9


class Schedule:
    """Seconds after the first record at which each record is due: its recorded gap divided by `speed`.

    A record stamped earlier than the one before it (partitions with skewed
    producer clocks) is due right after it: the schedule never goes back.
    """

    def __init__(self, speed: float) -> None:
        assert speed >= 0 and math.isfinite(speed), speed
        self.speed = speed
        self._first_ms: int | None = None
        self._last_s = 0.0

    def due_s(self, timestamp_ms: int) -> float:
        if self.speed == SPEED_MAX:
            return 0.0
        if self._first_ms is None:
            self._first_ms = timestamp_ms
        due_s = max(self._last_s, (timestamp_ms - self._first_ms) / 1000 / self.speed)
        self._last_s = due_s
        return due_s


class RateCap:
    """A token bucket: in any interval of W seconds at most `rate_per_s_max` x W + `burst` records go."""

    def __init__(self, rate_per_s_max: float, now_s: float, burst_s: float = BURST_S) -> None:
        assert rate_per_s_max > 0 and math.isfinite(rate_per_s_max), rate_per_s_max
        self.rate_per_s_max = rate_per_s_max
        self.burst = max(1.0, rate_per_s_max * burst_s)
        self._tokens = self.burst
        self._at_s = now_s

    def wait_s(self, count: int, now_s: float) -> float:
        """How long until `count` records may go at once; infinite when `count` exceeds the burst."""
        if count > self.burst + _EPSILON:
            return math.inf
        missing = count - self._refill(now_s)
        return 0.0 if missing <= _EPSILON else missing / self.rate_per_s_max

    def take(self, count: int, now_s: float) -> None:
        tokens = self._refill(now_s)
        assert count <= tokens + _EPSILON, (count, tokens)
        self._tokens = max(0.0, tokens - count)

    def _refill(self, now_s: float) -> float:
        if now_s > self._at_s:
            self._tokens = min(self.burst, self._tokens + (now_s - self._at_s) * self.rate_per_s_max)
            self._at_s = now_s
        return self._tokens


def speed_for_mean_rate(records: int, span_ms: int, rate_per_s: float) -> float:
    """The speed at which `records` recorded over `span_ms` go out at `rate_per_s` on average.

    Zero (as fast as possible) when the recording has no span to scale: the
    caller then spaces the records with a RateCap of `rate_per_s` instead.
    """
    assert rate_per_s > 0, rate_per_s
    if records < 2 or span_ms <= 0:
        return SPEED_MAX
    recorded_rate_per_s = (records - 1) / (span_ms / 1000)
    return rate_per_s / recorded_rate_per_s
