"""Write the demo world into PostgreSQL: idempotent, set-based, one transaction.

Merchants, fee schedules and risk rules are configuration; customer accounts
and their money come from account requests applied by the stages' own code
(`paystream.seed_accounts`): no account or balance is written here.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

from paystream.demo_data import CURRENCIES, DemoWorld, build_world
from paystream.ledger import (
    fee_revenue_account,
    funding_account,
    merchant_pending_account,
    payout_clearing_account,
)
from paystream.seed_accounts import apply_account_requests, demo_account_requests


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
    """Merchants, fee schedules, platform accounts and risk rules: what is missing is inserted."""
    async with connection.transaction():
        platform = [
            (account, kind, "platform", currency)
            for currency in CURRENCIES
            for account, kind in (
                (fee_revenue_account(currency), "fee_revenue"),
                (payout_clearing_account(currency), "payout_clearing"),
                (funding_account(currency), "funding"),
            )
        ] + [
            (merchant_pending_account(m.merchant_id, c), "merchant_pending", m.merchant_id, c)
            for m in world.merchants
            for c in m.currencies
        ]
        await connection.execute(
            """INSERT INTO accounts (account_id, kind, owner_id, currency)
               SELECT * FROM unnest($1::text[], $2::text[], $3::text[], $4::text[])
               ON CONFLICT (account_id) DO NOTHING""",
            [a[0] for a in platform],
            [a[1] for a in platform],
            [a[2] for a in platform],
            [a[3] for a in platform],
        )
        merchants = await connection.fetch(
            """INSERT INTO merchants (merchant_id, name) SELECT * FROM unnest($1::text[], $2::text[])
               ON CONFLICT (merchant_id) DO NOTHING RETURNING merchant_id""",
            [m.merchant_id for m in world.merchants],
            [m.name for m in world.merchants],
        )
        schedules = [
            (m.merchant_id, c, m.fee_bps, m.fixed_minor, m.min_minor) for m in world.merchants for c in m.currencies
        ]
        added_schedules = await connection.fetch(
            """INSERT INTO merchant_fee_schedules (merchant_id, currency, fee_bps, fixed_minor, min_minor)
               SELECT * FROM unnest($1::text[], $2::text[], $3::int[], $4::bigint[], $5::bigint[])
               ON CONFLICT (merchant_id, currency) DO NOTHING RETURNING merchant_id""",
            [s[0] for s in schedules],
            [s[1] for s in schedules],
            [s[2] for s in schedules],
            [s[3] for s in schedules],
            [s[4] for s in schedules],
        )
        limits = world.limits
        await connection.execute(
            """INSERT INTO risk_limits SELECT * FROM unnest($1::text[], $2::bigint[], $3::int[], $4::bigint[],
                                                               $5::int[], $6::bigint[], $7::bigint[])
               ON CONFLICT (currency) DO NOTHING""",
            [x.currency for x in limits],
            [x.txn_amount_max_minor for x in limits],
            [x.payer_10m_count_max for x in limits],
            [x.payer_10m_amount_max_minor for x in limits],
            [x.payer_24h_count_max for x in limits],
            [x.payer_24h_amount_max_minor for x in limits],
            [x.merchant_daily_amount_max_minor for x in limits],
        )
        blocked = (
            [("payer", p, "demo: payer reported for fraud") for p in world.blocked_payers]
            + [("merchant", m, "demo: merchant under review") for m in world.blocked_merchants]
            + [("country", c, "demo: sanctioned country") for c in world.blocked_countries]
        )
        await connection.execute(
            """INSERT INTO risk_blocklist (kind, value, reason) SELECT * FROM unnest($1::text[], $2::text[], $3::text[])
               ON CONFLICT (kind, value) DO NOTHING""",
            [b[0] for b in blocked],
            [b[1] for b in blocked],
            [b[2] for b in blocked],
        )
    return SeedCounts(0, len(merchants), len(added_schedules), 0)
