"""Merchants in PostgreSQL: onboard one or many (set-based, one transaction), update, suspend, resume, read.

Guarantees:
- Onboarding writes the merchant, its fee schedules and the accounts clearing
  and settlement post to: `merchant:<id>:pending:<CUR>` per currency, and the
  platform's fee revenue, payout clearing and funding accounts per currency
  when missing (`paystream.ledger` names them). All of it or nothing.
- Onboarding is idempotent: a merchant that exists exactly as asked (name,
  fee schedules, cycle; its status does not count) is `unchanged`; one that
  exists with a different body is refused with what differs, never changed:
  changes go through `update`.
- `update` changes only what it is given, under the merchant row's lock, and
  opens the accounts of currencies it adds. Risk reads fee schedules and the
  status at each batch, and settlement the cycle at each batch: a change
  applies within one batch of each stage. An open settlement batch keeps its
  bounds when the cycle changes (`workers.cycles.place`).
- `suspend` / `resume` flip the status; doing it twice changes nothing.

Result codes, in order of precedence: `MerchantInputError` (the input is not
a valid merchant: the command line's exit 2), `MerchantRefused` (valid, but
the database's state says no: unknown merchant, a different merchant under
that id: exit 1), else done (`added`, `unchanged`, `updated`).
"""

from __future__ import annotations

from collections.abc import AsyncIterator, Sequence
from contextlib import asynccontextmanager
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any, Literal

import asyncpg

from paystream.errors import PaystreamError
from paystream.ledger import fee_revenue_account, funding_account, merchant_pending_account, payout_clearing_account
from paystream.merchants.model import (
    FeeSchedule,
    MerchantInputError,
    MerchantSpec,
    differences,
    merchant_spec,
)
from workers.cycles import CycleSpec

Status = Literal["active", "suspended"]
KEEP: Literal["keep"] = "keep"


class MerchantRefused(PaystreamError):
    """The database's state refuses the operation: `<field>: <reason>`."""

    def __init__(self, field: str, reason: str) -> None:
        super().__init__(f"{field}: {reason}")
        self.field = field
        self.reason = reason


@dataclass(frozen=True, slots=True)
class Merchant:
    spec: MerchantSpec
    status: str
    created_at: datetime
    updated_at: datetime


@dataclass(slots=True)
class OnboardReport:
    added: list[str] = field(default_factory=list)
    unchanged: list[str] = field(default_factory=list)
    # merchant_id -> why it was not onboarded (it exists with a different body)
    refused: dict[str, MerchantRefused] = field(default_factory=dict)
    accounts_opened: int = 0


@dataclass(frozen=True, slots=True)
class MerchantChange:
    """What `update` changes: a new name, fee schedules set (added or replaced) or removed, a new cycle."""

    name: str | None = None
    fees: tuple[FeeSchedule, ...] = ()
    removed: tuple[str, ...] = ()
    # None: back to the global default; KEEP: unchanged.
    cycle: CycleSpec | Literal["keep"] | None = KEEP


_SELECT = """
    SELECT m.merchant_id, m.name, m.status, m.cycle_kind, m.cycle_seconds, m.cycle_cutoff_hour,
           m.cycle_time_zone, m.created_at, m.updated_at,
           coalesce(array_agg(s.currency::text ORDER BY s.currency) FILTER (WHERE s.currency IS NOT NULL),
                    '{}') AS currencies,
           coalesce(array_agg(s.fee_bps ORDER BY s.currency) FILTER (WHERE s.currency IS NOT NULL), '{}') AS bps,
           coalesce(array_agg(s.fixed_minor ORDER BY s.currency) FILTER (WHERE s.currency IS NOT NULL),
                    '{}') AS fixed,
           coalesce(array_agg(s.min_minor ORDER BY s.currency) FILTER (WHERE s.currency IS NOT NULL), '{}') AS mins
    FROM merchants m LEFT JOIN merchant_fee_schedules s USING (merchant_id)
"""


async def onboard(connection: Any, specs: Sequence[MerchantSpec], now: datetime | None = None) -> OnboardReport:
    """Add every merchant not there yet, in one transaction with a fixed number of statements.

    Ids must be unique in `specs` (the same merchant twice, identical, is fine).
    Built for bulk: the demo's 1,000 merchants and an import's chunks.
    """
    now = now or datetime.now(UTC)
    unique = list({s.merchant_id: s for s in specs}.values())
    assert len(unique) == len(set(specs)), "one merchant id with two different bodies"
    report = OnboardReport()
    if not unique:
        return report
    async with connection.transaction(), _time_zone_known():
        inserted = await connection.fetch(
            """INSERT INTO merchants (merchant_id, name, cycle_kind, cycle_seconds, cycle_cutoff_hour,
                                      cycle_time_zone, created_at, updated_at)
               SELECT v.id, v.name, v.kind, v.seconds, v.hour, v.zone, $7, $7
               FROM unnest($1::text[], $2::text[], $3::text[], $4::int[], $5::smallint[], $6::text[])
                    AS v(id, name, kind, seconds, hour, zone)
               ON CONFLICT (merchant_id) DO NOTHING RETURNING merchant_id""",
            [s.merchant_id for s in unique],
            [s.name for s in unique],
            *_cycle_columns([s.cycle for s in unique]),
            now,
        )
        new = {row["merchant_id"] for row in inserted}
        stored = await fetch_merchants(connection, [s.merchant_id for s in unique if s.merchant_id not in new])
        for spec in unique:
            if spec.merchant_id in new:
                report.added.append(spec.merchant_id)
                continue
            found = differences(stored[spec.merchant_id].spec, spec)
            if found:
                report.refused[spec.merchant_id] = MerchantRefused(
                    "merchant_id",
                    f"{spec.merchant_id} already exists with {', '.join(found)}, not as given:"
                    " change it with `paystream merchants update`",
                )
            else:
                report.unchanged.append(spec.merchant_id)
        fees = [(s.merchant_id, f) for s in unique if s.merchant_id in new for f in s.fees]
        await _upsert_fees(connection, fees)
        report.accounts_opened = await _open_accounts(
            connection, [s for s in unique if s.merchant_id not in report.refused]
        )
    return report


async def add(connection: Any, spec: MerchantSpec) -> OnboardReport:
    """One merchant: added or unchanged; a different body under its id raises MerchantRefused."""
    report = await onboard(connection, [spec])
    if spec.merchant_id in report.refused:
        raise report.refused[spec.merchant_id]
    return report


async def update(connection: Any, merchant_id: str, change: MerchantChange) -> tuple[Merchant, Merchant]:
    """Apply `change`; returns (before, after), the same twice when nothing changed."""
    both = set(change.removed) & {f.currency for f in change.fees}
    if both:
        raise MerchantInputError("fee", f"{', '.join(sorted(both))} is both set and removed")
    async with connection.transaction():
        locked = await connection.fetchval(
            "SELECT merchant_id FROM merchants WHERE merchant_id = $1 FOR UPDATE", merchant_id
        )
        if locked is None:
            raise _unknown(merchant_id)
        before = (await fetch_merchants(connection, [merchant_id]))[merchant_id]
        fees = {f.currency: f for f in before.spec.fees}
        fees.update((f.currency, f) for f in change.fees)
        for currency in change.removed:
            fees.pop(currency, None)
        cycle = before.spec.cycle if change.cycle == KEEP else change.cycle
        after = merchant_spec(merchant_id, change.name or before.spec.name, fees.values(), cycle)
        if after == before.spec:
            return before, before
        now = datetime.now(UTC)
        async with _time_zone_known():
            await connection.execute(
                """UPDATE merchants SET name = $2, cycle_kind = $3, cycle_seconds = $4, cycle_cutoff_hour = $5,
                                        cycle_time_zone = $6, updated_at = $7
                   WHERE merchant_id = $1""",
                merchant_id,
                after.name,
                *(column[0] for column in _cycle_columns([after.cycle])),
                now,
            )
        await connection.execute(
            "DELETE FROM merchant_fee_schedules WHERE merchant_id = $1 AND currency = ANY($2::bpchar[])",
            merchant_id,
            sorted(set(before.spec.currencies) - set(after.currencies)),
        )
        await _upsert_fees(connection, [(merchant_id, f) for f in after.fees if f not in before.spec.fees])
        await _open_accounts(connection, [after])
        return before, Merchant(after, before.status, before.created_at, now)


async def set_status(connection: Any, merchant_id: str, status: Status) -> bool:
    """Suspend or resume; True when the status changed, False when it already was `status`."""
    changed = await connection.fetchval(
        """UPDATE merchants SET status = $2, updated_at = $3 WHERE merchant_id = $1 AND status <> $2
           RETURNING merchant_id""",
        merchant_id,
        status,
        datetime.now(UTC),
    )
    if changed is not None:
        return True
    if await connection.fetchval("SELECT 1 FROM merchants WHERE merchant_id = $1", merchant_id) is None:
        raise _unknown(merchant_id)
    return False


async def fetch_merchants(connection: Any, merchant_ids: Sequence[str]) -> dict[str, Merchant]:
    rows = await connection.fetch(
        _SELECT + " WHERE m.merchant_id = ANY($1::text[]) GROUP BY m.merchant_id", list(merchant_ids)
    )
    return {row["merchant_id"]: _merchant(row) for row in rows}


async def list_merchants(connection: Any, status: Status | None, limit: int) -> list[Merchant]:
    rows = await connection.fetch(
        _SELECT + " WHERE $1::text IS NULL OR m.status = $1 GROUP BY m.merchant_id ORDER BY m.merchant_id LIMIT $2",
        status,
        limit,
    )
    return [_merchant(row) for row in rows]


async def open_batches(connection: Any, merchant_id: str, limit: int) -> list[dict[str, Any]]:
    """The merchant's open settlement batches, oldest first, with their item counts."""
    rows = await connection.fetch(
        """SELECT b.batch_id, b.currency::text AS currency, b.cycle_start, b.cycle_end, b.cutoff_at,
                  (SELECT count(*) FROM settlement_items i WHERE i.batch_id = b.batch_id) AS items
           FROM settlement_batches b WHERE b.merchant_id = $1 AND b.status = 'open'
           ORDER BY b.cycle_start, b.currency LIMIT $2""",
        merchant_id,
        limit,
    )
    return [dict(row) for row in rows]


def merchant_accounts(spec: MerchantSpec) -> list[tuple[str, str, str, str]]:
    """(account_id, kind, owner, currency) of every account the merchant's payments post to."""
    accounts = []
    for currency in spec.currencies:
        accounts.append((merchant_pending_account(spec.merchant_id, currency), "merchant_pending", spec.merchant_id,
                         currency))  # fmt: skip
        accounts.extend(
            (account, kind, "platform", currency)
            for account, kind in (
                (fee_revenue_account(currency), "fee_revenue"),
                (payout_clearing_account(currency), "payout_clearing"),
                (funding_account(currency), "funding"),
            )
        )
    return accounts


async def _open_accounts(connection: Any, specs: Sequence[MerchantSpec]) -> int:
    wanted = sorted({a for s in specs for a in merchant_accounts(s)})
    if not wanted:
        return 0
    opened = await connection.fetch(
        """INSERT INTO accounts (account_id, kind, owner_id, currency)
           SELECT * FROM unnest($1::text[], $2::text[], $3::text[], $4::text[])
           ON CONFLICT (account_id) DO NOTHING RETURNING account_id""",
        [a[0] for a in wanted],
        [a[1] for a in wanted],
        [a[2] for a in wanted],
        [a[3] for a in wanted],
    )
    return len(opened)


async def _upsert_fees(connection: Any, fees: Sequence[tuple[str, FeeSchedule]]) -> None:
    if not fees:
        return
    await connection.execute(
        """INSERT INTO merchant_fee_schedules (merchant_id, currency, fee_bps, fixed_minor, min_minor)
           SELECT * FROM unnest($1::text[], $2::text[], $3::int[], $4::bigint[], $5::bigint[])
           ON CONFLICT (merchant_id, currency) DO UPDATE
               SET fee_bps = excluded.fee_bps, fixed_minor = excluded.fixed_minor, min_minor = excluded.min_minor""",
        [m for m, _ in fees],
        [f.currency for _, f in fees],
        [f.fee_bps for _, f in fees],
        [f.fixed_minor for _, f in fees],
        [f.min_minor for _, f in fees],
    )


@asynccontextmanager
async def _time_zone_known() -> AsyncIterator[None]:
    """A zone Python's tz database has and PostgreSQL's lacks (they are separate copies): one clear refusal."""
    try:
        yield
    except asyncpg.InvalidParameterValueError as error:
        raise MerchantInputError("cycle", f"PostgreSQL refuses the time zone: {error}") from error


def _cycle_columns(cycles: Sequence[CycleSpec | None]) -> tuple[list[Any], list[Any], list[Any], list[Any]]:
    """(kind, seconds, cutoff hour, time zone) columns, NULL for the default cycle."""
    return (
        [c.kind if c else None for c in cycles],
        [c.seconds if c else None for c in cycles],
        [c.cutoff_hour if c else None for c in cycles],
        [c.time_zone if c else None for c in cycles],
    )


def _merchant(row: Any) -> Merchant:
    kind = row["cycle_kind"]
    cycle = (
        None
        if kind is None
        else CycleSpec(kind, row["cycle_seconds"], row["cycle_cutoff_hour"], row["cycle_time_zone"])
    )
    fees = tuple(
        FeeSchedule(c, b, f, m)
        for c, b, f, m in zip(row["currencies"], row["bps"], row["fixed"], row["mins"], strict=True)
    )
    spec = MerchantSpec(row["merchant_id"], row["name"], fees, cycle)
    return Merchant(spec, row["status"], row["created_at"], row["updated_at"])


def _unknown(merchant_id: str) -> MerchantRefused:
    return MerchantRefused("merchant_id", f"no merchant {merchant_id}: add it with `paystream merchants add`")
