"""Pure arithmetic of the benchmark: sustained rates, medians and ratios."""

from __future__ import annotations

import math
import statistics
from collections.abc import Sequence

# The sustained rate is read between these completion quantiles: the first
# 10% include consumer-group joins and cold caches, the last 10% the tail of
# a draining backlog. Both would measure start-up, not throughput.
STEADY_FROM = 0.10
STEADY_TO = 0.90


def sustained_rate_per_s(completed_at_s: Sequence[float], low: float = STEADY_FROM, high: float = STEADY_TO) -> float:
    """Completions per second between the `low` and `high` quantiles of completion times.

    `completed_at_s` holds one time per completed item, in seconds on any clock.
    """
    assert 0.0 <= low < high <= 1.0, (low, high)
    if len(completed_at_s) < 2:
        return 0.0
    ordered = sorted(completed_at_s)
    first = math.floor(low * (len(ordered) - 1))
    last = math.ceil(high * (len(ordered) - 1))
    span_s = ordered[last] - ordered[first]
    if span_s <= 0:
        return math.inf
    return (last - first) / span_s


def median(values: Sequence[float]) -> float:
    return float(statistics.median(values)) if values else 0.0


def ratio(numerator: float, denominator: float) -> float:
    """numerator / denominator; 0 when there is nothing to divide by (a failed baseline run)."""
    return numerator / denominator if denominator > 0 else 0.0
