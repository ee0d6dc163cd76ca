"""Window arithmetic of the live views, in seconds of event time (UTC epoch).

Two windowings, both on the outcome's `occurred_at`:

- tumbling minutes: one window per minute, no overlap;
- hopping hours: one hour long, a new one every `HOUR_STEP_S` (10 minutes).
  An event falls in 6 of them. The hour shown as "current" is the one that
  ends at the next 10-minute boundary: it holds the last 50 to 60 minutes, up
  to now.

Why 10 minutes: faust writes one changelog record per window an event
updates, and those writes bound a worker's throughput (measured here with
20,000 outcomes, docs/views.md: a 5-minute step, 13 window updates per table,
about 300 outcomes/s; 10 minutes, 7 updates, about 500/s). A shorter step
would keep more of the last hour in the window shown (5 minutes: 55 to 60
minutes) at that cost; a 15-minute step would save two updates more and show
as little as 45 minutes.

faust keys a windowed table by `(key, (start, end))` with
`end = start + size - 0.1` (`faust.types.windows.WindowRange_from_start`).
A web view that reads one window must build that pair the same way, which is
what `window_range` does; tests/unit/test_views_windows.py checks it against
faust's own window classes.
"""

from __future__ import annotations

import math

MINUTE_S = 60
HOUR_S = 3_600
HOUR_STEP_S = 600
assert HOUR_S % HOUR_STEP_S == 0, "an hour must be a whole number of steps"
HOURS_PER_EVENT = HOUR_S // HOUR_STEP_S

# How long faust keeps a window after it ends (its `expires`): the last hour
# of minutes can be listed, and an hour window is kept an hour after it closed.
MINUTE_KEEP_S = HOUR_S
HOUR_KEEP_S = HOUR_S
# An event older than this touches only windows already dropped (or about to
# be): it is not counted (logged once), which also spares the first start the
# 30 days of outcomes the topic retains.
EVENT_AGE_S_MAX = HOUR_S + HOUR_KEEP_S

# How many closed minutes `GET /merchants/{id}/live` lists: `?minutes=N`.
MINUTES_SHOWN_DEFAULT = 5
MINUTES_SHOWN_MAX = MINUTE_KEEP_S // MINUTE_S

WindowRange = tuple[float, float]


def window_range(start_s: float, size_s: int) -> WindowRange:
    """The `(start, end)` pair faust stores a window under (end = start + size - 0.1, as faust writes it)."""
    start = float(start_s)
    return (start, start + size_s - 0.1)


def minute_start(at_s: float) -> int:
    """The start of the tumbling minute that holds `at_s`."""
    return math.floor(at_s / MINUTE_S) * MINUTE_S


def minute_ranges(now_s: float, closed_count: int) -> list[WindowRange]:
    """The current minute, then `closed_count` closed minutes, newest first."""
    assert 0 <= closed_count <= MINUTES_SHOWN_MAX, closed_count
    current = minute_start(now_s)
    return [window_range(current - i * MINUTE_S, MINUTE_S) for i in range(closed_count + 1)]


def hour_start(now_s: float) -> int:
    """The start of the hopping hour that ends at the next step boundary after `now_s` (holds now)."""
    return math.floor(now_s / HOUR_STEP_S) * HOUR_STEP_S - HOUR_S + HOUR_STEP_S


def hour_range(now_s: float) -> WindowRange:
    return window_range(hour_start(now_s), HOUR_S)


def hour_starts_of(at_s: float) -> list[int]:
    """Every hopping hour an event at `at_s` falls in, oldest first (HOURS_PER_EVENT of them)."""
    newest = math.floor(at_s / HOUR_STEP_S) * HOUR_STEP_S
    return [newest - i * HOUR_STEP_S for i in reversed(range(HOURS_PER_EVENT))]


def window_end_s(window: WindowRange) -> float:
    """The exclusive end of a window (faust stores it 0.1 s early)."""
    return window[1] + 0.1
