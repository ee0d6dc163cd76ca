"""The demo world: configuration through the configuration code, accounts through the stages; idempotent.

Merchants, fee schedules and risk rules go through the functions behind
`paystream merchants` and `paystream risk`; customer accounts and their money
come from account requests applied by the stages' own code
(`paystream.seed_accounts`): no account or balance is written here.
"""

from __future__ import annotations

import sys
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

from paystream.demo_data import DemoWorld, build_world
from paystream.merchants.model import spec_from_demo
from paystream.merchants.store import onboard
from paystream.risk_config import demo_risk_config, ensure_blocked, ensure_limits
from paystream.seed_accounts import apply_account_requests, demo_account_requests

# Who the risk configuration's audit names for the demo's limits and blocklist.
SEED_OPERATOR = "seed"


@dataclass(frozen=True, slots=True)
class SeedCounts:
    payers: int
    merchants: int
    fee_schedules: int
    account_requests: int

    def __str__(self) -> str:
        return (
            f"{self.payers} payer accounts, {self.merchants} merchants, {self.fee_schedules} fee schedules,"
            f" {self.account_requests} account requests applied"
        )


async def seed_world(connection: Any, world: DemoWorld | None = None) -> SeedCounts:
    """The configuration, then the payers' account requests applied in-process; re-running changes nothing."""
    world = world or build_world()
    configured = await seed_configuration(connection, world)
    now = datetime.now(UTC)
    opened_before = await _count(connection, "SELECT count(*) FROM accounts WHERE kind = 'customer'")
    applied_before = await _count(connection, "SELECT count(*) FROM account_operations")
    await apply_account_requests(connection, demo_account_requests(world, now), now)
    opened = await _count(connection, "SELECT count(*) FROM accounts WHERE kind = 'customer'") - opened_before
    applied = await _count(connection, "SELECT count(*) FROM account_operations") - applied_before
    return SeedCounts(opened, configured.merchants, configured.fee_schedules, applied)


async def _count(connection: Any, query: str) -> int:
    value = await connection.fetchval(query)
    return int(value)


async def seed_configuration(connection: Any, world: DemoWorld) -> SeedCounts:
    """Merchants (with their accounts and fee schedules) and risk rules, through the configuration code.

    The same functions `paystream merchants add` and `paystream risk` use; what
    exists is left as it is. A demo merchant stored with another body (changed
    by an operator) is kept, and said.
    """
    report = await onboard(connection, [spec_from_demo(m) for m in world.merchants])
    for merchant_id, refused in report.refused.items():
        print(f"seed: merchant {merchant_id} kept as configured: {refused.reason}", file=sys.stderr)
    limits, blocked = demo_risk_config(world)
    await ensure_limits(connection, limits, SEED_OPERATOR)
    await ensure_blocked(connection, blocked, SEED_OPERATOR)
    fee_schedules = sum(len(m.currencies) for m in world.merchants if m.merchant_id in report.added)
    return SeedCounts(0, len(report.added), fee_schedules, 0)
