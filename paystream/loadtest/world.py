"""A synthetic world sized for the offered load, so a long run stays a realistic mix.

With the demo's fixed 2,000 payers, 1,000 payments/s for a minute gives each
payer 30 payments in ten minutes against the demo's limit of 20: after about
40 s most payments were rejected for velocity (6% at the start, 93% at the
end), and the run measured one-hop rejections instead of payments. The world
here has enough payers that the busiest ten minutes of the run give each payer
on average a quarter of its 10-minute count limit (and of its 24-hour one),
so velocity rejections stay as rare as in the demo's own mix.
"""

from __future__ import annotations

import math

from paystream.demo_data import DemoWorld, build_world

DEMO_PAYERS = 2_000
# Of each payer's count limits, the share an average payer may use during the run.
LIMIT_SHARE = 0.25
TEN_MINUTES_S = 600.0
DAY_S = 86_400.0
PAYERS_PER_MERCHANT = 100


def payers_for_load(rate_per_s: float, seconds: float, count_10m_max: int, count_24h_max: int) -> int:
    """Payers needed so that the mean payer stays at LIMIT_SHARE of both velocity count limits."""
    in_10m = rate_per_s * min(seconds, TEN_MINUTES_S)
    in_24h = rate_per_s * min(seconds, DAY_S)
    needed = max(in_10m / (count_10m_max * LIMIT_SHARE), in_24h / (count_24h_max * LIMIT_SHARE))
    return max(DEMO_PAYERS, math.ceil(needed))


def world_for_load(rate_per_s: float, seconds: float) -> DemoWorld:
    """The demo world with as many payers (and merchants, one per hundred payers) as the load needs."""
    demo = build_world()
    count_10m = min(limit.payer_10m_count_max for limit in demo.limits)
    count_24h = min(limit.payer_24h_count_max for limit in demo.limits)
    payers = payers_for_load(rate_per_s, seconds, count_10m, count_24h)
    if payers == DEMO_PAYERS:
        return demo
    return build_world(payer_count=payers, merchant_count=max(20, payers // PAYERS_PER_MERCHANT))
