"""Risk configuration: limits per currency and the blocklist, each change recorded with who made it.

The risk stage (workers/risk.py) reads `risk_limits` and `risk_blocklist` at
every batch, so a change committed here decides the payments of the stage's
next batch. The command line (`paystream risk ...`, paystream/cli/risk.py) and
seeding code call these functions; nothing else writes those two tables.

Guarantees:
- A change and its row in `risk_config_audit` (migration 005) commit in one
  transaction: there is no change without its audit row and no audit row of a
  change that did not happen. The audit table refuses UPDATE, DELETE and TRUNCATE.
- The old value recorded is the one the change replaced: the row is locked
  (`FOR UPDATE`) before it is read, so of two concurrent changes of one
  currency or blocklist entry the second waits, then reads and records the
  first one's new value. A row created concurrently by another transaction is
  locked and changed instead of failing on the duplicate key.
- A no-op (every given value already set, a block with the same reason) is
  said as such in the result (`changed` is False) and is not recorded: the
  audit is a list of changes. A block of an entry already blocked with another
  reason changes its reason (recorded).

Constraints (each refused with a `RiskConfigError`, one line, before anything is written):
- currency: an ISO 4217 code paystream knows (schemas/money.py), upper case.
- limits: whole numbers from 1; counts at most 2^31 - 1 (integer columns),
  amounts at most 2^63 - 1 (bigint), the merchant daily amount at most 2^57
  (migration 003: a settlement batch's sums stay inside bigint). Creating a
  currency's limits needs all six fields; changing them needs at least one.
- blocklist kind: payer, merchant or country. Value: a payer or merchant id as
  the payment contract spells it (1 to 64 of A-Z a-z 0-9 _ . : -), a country as
  two upper-case letters (schemas/payments.py). The value need not be known
  yet: a payer can be blocked before its first payment. `unblock` checks only
  that the value (trimmed) is 1 to 64 characters without control characters,
  so an entry written by hand in another spelling can still be removed.
- reason: 1 to 180 characters after trimming, no control characters. The risk
  stage rejects with `blocked_<kind>: <reason>`, and a reason in an outcome
  holds at most 200 characters: 180 always fits whole.
- operator: 1 to 64 characters after trimming, no control characters.

These functions open their own transaction (READ COMMITTED, which the row
locks rely on); called inside a caller's READ COMMITTED transaction they join
it as a savepoint, and their locks are then held until the caller commits.
"""

from __future__ import annotations

import getpass
import os
import unicodedata
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, fields
from datetime import datetime
from typing import Any, Final, Literal, get_args

import msgspec
import orjson

from paystream.demo_data import DemoWorld
from paystream.errors import ConcurrentChangeError, PaystreamError
from schemas.money import MINOR_UNIT_DIGITS
from schemas.payments import CountryCode, IdText

BlockKind = Literal["payer", "merchant", "country"]
BLOCK_KINDS: Final[tuple[BlockKind, ...]] = get_args(BlockKind)
AuditAction = Literal["limits.set", "block", "unblock"]

COUNT_MAX: Final = 2**31 - 1  # PostgreSQL integer
AMOUNT_MAX_MINOR: Final = 2**63 - 1  # PostgreSQL bigint
# Migration 003's merchant_daily_limit_fits_a_batch: 33 merchant-days of it stay inside bigint.
MERCHANT_DAILY_AMOUNT_MAX_MINOR: Final = 2**57
REASON_CHARS_MAX: Final = 180  # "blocked_merchant: " + 180 characters fits the contract's 200
OPERATOR_CHARS_MAX: Final = 64
BLOCK_VALUE_CHARS_MAX: Final = 64
LISTED_ROWS_MAX: Final = 100_000
# A row is read under lock, or created; when a concurrent transaction created it
# first, the next read finds and locks it. Nothing deletes limits rows, and a
# blocklist row deleted between the two would need a third attempt: that is
# reported as a concurrent change for the operator to retry.
ROW_ATTEMPTS_MAX: Final = 2


class RiskConfigError(PaystreamError):
    """A risk configuration request refused as asked: a bad value, a missing field, an unknown entry."""


class NotBlockedError(RiskConfigError):
    """`unblock` of an entry that is not on the blocklist: nothing changed, nothing recorded."""


@dataclass(frozen=True, slots=True)
class LimitField:
    name: str  # the risk_limits column
    option: str  # the command line's option
    high: int  # the largest value allowed (the lowest is 1)


LIMIT_FIELDS: Final[tuple[LimitField, ...]] = (
    LimitField("txn_amount_max_minor", "--txn-amount-max", AMOUNT_MAX_MINOR),
    LimitField("payer_10m_count_max", "--payer-10m-count-max", COUNT_MAX),
    LimitField("payer_10m_amount_max_minor", "--payer-10m-amount-max", AMOUNT_MAX_MINOR),
    LimitField("payer_24h_count_max", "--payer-24h-count-max", COUNT_MAX),
    LimitField("payer_24h_amount_max_minor", "--payer-24h-amount-max", AMOUNT_MAX_MINOR),
    LimitField("merchant_daily_amount_max_minor", "--merchant-daily-amount-max", MERCHANT_DAILY_AMOUNT_MAX_MINOR),
)
LIMIT_FIELD_NAMES: Final[tuple[str, ...]] = tuple(f.name for f in LIMIT_FIELDS)
_FIELDS_BY_NAME: Final = {f.name: f for f in LIMIT_FIELDS}
_LIMIT_COLUMNS: Final = ", ".join(LIMIT_FIELD_NAMES)


@dataclass(frozen=True, slots=True)
class CurrencyLimits:
    """One `risk_limits` row: the limits the risk stage applies to payments in `currency`."""

    currency: str
    txn_amount_max_minor: int
    payer_10m_count_max: int
    payer_10m_amount_max_minor: int
    payer_24h_count_max: int
    payer_24h_amount_max_minor: int
    merchant_daily_amount_max_minor: int

    def values(self) -> dict[str, int]:
        """The six limits by column name, as the audit records them."""
        return {name: getattr(self, name) for name in LIMIT_FIELD_NAMES}


assert tuple(f.name for f in fields(CurrencyLimits))[1:] == LIMIT_FIELD_NAMES


@dataclass(frozen=True, slots=True)
class LimitsChange:
    """The result of `set_limits`. `old` is None when the currency had no limits (created)."""

    old: CurrencyLimits | None
    new: CurrencyLimits
    changed_fields: tuple[str, ...]  # empty: a no-op, not recorded
    change_id: int | None  # the audit row, None for a no-op

    @property
    def changed(self) -> bool:
        return bool(self.changed_fields)


@dataclass(frozen=True, slots=True)
class BlockEntry:
    """One `risk_blocklist` row: payments of this payer, merchant or country are rejected with `reason`."""

    kind: BlockKind
    value: str
    reason: str

    @property
    def subject(self) -> str:
        return block_subject(self.kind, self.value)


@dataclass(frozen=True, slots=True)
class BlockChange:
    """The result of `block`. `old_reason` is None when the entry was not blocked before."""

    entry: BlockEntry
    old_reason: str | None
    change_id: int | None  # the audit row, None for a no-op

    @property
    def changed(self) -> bool:
        return self.old_reason != self.entry.reason


@dataclass(frozen=True, slots=True)
class AuditEntry:
    """One row of `risk_config_audit`."""

    change_id: int
    changed_at: datetime
    operator: str
    action: AuditAction
    subject: str
    old_value: dict[str, Any] | None
    new_value: dict[str, Any] | None


# --- Validation: pure, so the command line and tests call it without a database.


def check_currency(currency: str) -> str:
    if currency not in MINOR_UNIT_DIGITS:
        raise RiskConfigError(f"unknown currency {currency!r}: expected one of {', '.join(sorted(MINOR_UNIT_DIGITS))}")
    return currency


def check_limit_value(name: str, value: int) -> int:
    field = _FIELDS_BY_NAME.get(name)
    if field is None:
        raise RiskConfigError(f"unknown risk limit {name!r}: expected one of {', '.join(LIMIT_FIELD_NAMES)}")
    # bool is an int to Python; True is not a limit.
    if type(value) is not int or not 1 <= value <= field.high:
        raise RiskConfigError(f"{name} must be a whole number from 1 to {field.high:,}, got {value!r}")
    return value


def check_limit_changes(changes: Mapping[str, int]) -> dict[str, int]:
    """The fields to set, each checked; at least one."""
    if not changes:
        raise RiskConfigError(f"no risk limit to set: give at least one of {', '.join(LIMIT_FIELD_NAMES)}")
    return {name: check_limit_value(name, value) for name, value in changes.items()}


def check_limits(limits: CurrencyLimits) -> CurrencyLimits:
    check_currency(limits.currency)
    for name, value in limits.values().items():
        check_limit_value(name, value)
    return limits


def check_block_kind(kind: str) -> BlockKind:
    for known in BLOCK_KINDS:
        if kind == known:
            return known
    raise RiskConfigError(f"unknown blocklist kind {kind!r}: expected one of {', '.join(BLOCK_KINDS)}")


def check_block_value(kind: BlockKind, value: str) -> str:
    """The value as the payment contract spells it, so a block can match a payment's field."""
    try:
        msgspec.convert(value, CountryCode if kind == "country" else IdText)
    except msgspec.ValidationError:
        wanted = (
            "two upper-case letters (ISO 3166-1 alpha-2)"
            if kind == "country"
            else f"1 to 64 of A-Z a-z 0-9 _ . : - (the {kind} id of a payment request)"
        )
        raise RiskConfigError(f"{kind} {value!r} is not valid: expected {wanted}") from None
    return value


def check_reason(reason: str) -> str:
    return _check_text("reason", reason, REASON_CHARS_MAX)


def check_operator(operator: str) -> str:
    return _check_text("operator", operator, OPERATOR_CHARS_MAX)


def _check_text(what: str, text: str, chars_max: int) -> str:
    trimmed = text.strip()
    if not trimmed:
        raise RiskConfigError(f"{what} must not be empty")
    if len(trimmed) > chars_max:
        raise RiskConfigError(f"{what} must be at most {chars_max} characters, got {len(trimmed)}")
    # Control characters (a NUL PostgreSQL refuses, newlines that would break a table or a log line).
    if any(unicodedata.category(char) in ("Cc", "Cs") for char in trimmed):
        raise RiskConfigError(f"{what} must not contain control characters, got {trimmed!r}")
    return trimmed


def default_operator() -> str:
    """The OS user running the command; `uid:<n>` when it has no name (a container's bare uid)."""
    try:
        name = getpass.getuser()
        return check_operator(name)
    except (OSError, KeyError, ImportError, RiskConfigError):
        # getpass.getuser raises OSError (3.13) or KeyError (3.11) for a uid without a passwd entry.
        return f"uid:{os.getuid()}" if hasattr(os, "getuid") else "unknown"


def block_entry(kind: str, value: str, reason: str) -> BlockEntry:
    """A blocklist entry as `block` takes it, every part checked."""
    checked_kind = check_block_kind(kind)
    return BlockEntry(checked_kind, check_block_value(checked_kind, value), check_reason(reason))


def unblock_key(kind: str, value: str) -> tuple[BlockKind, str]:
    """The (kind, value) `unblock` looks for: the kind checked, the value trimmed and bounded, not its format."""
    checked_kind = check_block_kind(kind)
    return checked_kind, _check_text(checked_kind, value, BLOCK_VALUE_CHARS_MAX)


def block_subject(kind: str, value: str) -> str:
    return f"{kind}:{value}"


# --- Reading.


async def show_limits(connection: Any, currency: str | None = None) -> list[CurrencyLimits]:
    """Every currency's limits, or one currency's (an empty list when it has none), by currency."""
    if currency is not None:
        check_currency(currency)
    rows = await connection.fetch(
        f"""SELECT currency, {_LIMIT_COLUMNS} FROM risk_limits
            WHERE $1::text IS NULL OR currency = $1 ORDER BY currency""",
        currency,
    )
    return [_limits_from_row(row) for row in rows]


async def list_blocked(connection: Any, kind: str | None = None, limit: int = 1_000) -> tuple[list[BlockEntry], bool]:
    """Blocklist entries by kind and value, of one kind or all: the first `limit`, and whether there are more."""
    assert 1 <= limit <= LISTED_ROWS_MAX, limit
    if kind is not None:
        check_block_kind(kind)
    rows = await connection.fetch(
        """SELECT kind, value, reason FROM risk_blocklist
           WHERE $1::text IS NULL OR kind = $1 ORDER BY kind, value LIMIT $2""",
        kind,
        limit + 1,
    )
    entries = [BlockEntry(check_block_kind(row["kind"]), row["value"], row["reason"]) for row in rows]
    return entries[:limit], len(entries) > limit


async def history(connection: Any, limit: int = 50, subject: str | None = None) -> list[AuditEntry]:
    """The last `limit` changes, newest first; of one subject (`USD`, `payer:payer-000001`) or all."""
    assert 1 <= limit <= LISTED_ROWS_MAX, limit
    rows = await connection.fetch(
        """SELECT change_id, changed_at, operator, action, subject, old_value::text AS old, new_value::text AS new
           FROM risk_config_audit WHERE $1::text IS NULL OR subject = $1
           ORDER BY change_id DESC LIMIT $2""",
        subject,
        limit,
    )
    return [
        AuditEntry(
            row["change_id"],
            row["changed_at"],
            row["operator"],
            row["action"],
            row["subject"],
            _json_or_none(row["old"]),
            _json_or_none(row["new"]),
        )
        for row in rows
    ]


# --- Changing: one transaction per call, with its audit row.


async def set_limits(connection: Any, currency: str, changes: Mapping[str, int], operator: str) -> LimitsChange:
    """Set some of a currency's limits, or create them all; recorded unless nothing changes."""
    currency = check_currency(currency)
    wanted = check_limit_changes(changes)
    operator = check_operator(operator)
    async with connection.transaction(isolation="read_committed"):
        for _attempt in range(ROW_ATTEMPTS_MAX):
            row = await connection.fetchrow(
                f"SELECT currency, {_LIMIT_COLUMNS} FROM risk_limits WHERE currency = $1 FOR UPDATE", currency
            )
            if row is None:
                missing = [f.option for f in LIMIT_FIELDS if f.name not in wanted]
                if missing:
                    raise RiskConfigError(
                        f"{currency} has no risk limits yet: creating them needs every limit; missing"
                        f" {', '.join(missing)}"
                    )
                created = _limits_of(currency, wanted)
                if not await _insert_limits(connection, [created]):
                    continue  # created meanwhile by another transaction: lock it and change it
                change_id = await _audit(connection, "limits.set", currency, None, created.values(), operator)
                return LimitsChange(None, created, LIMIT_FIELD_NAMES, change_id)
            old = _limits_from_row(row)
            new = _limits_of(currency, {**old.values(), **wanted})
            changed = tuple(name for name in LIMIT_FIELD_NAMES if getattr(old, name) != getattr(new, name))
            if not changed:
                return LimitsChange(old, old, (), None)
            await connection.execute(
                f"""UPDATE risk_limits SET ({_LIMIT_COLUMNS}) = ($2, $3, $4, $5, $6, $7)
                    WHERE currency = $1""",
                currency,
                *new.values().values(),
            )
            change_id = await _audit(connection, "limits.set", currency, old.values(), new.values(), operator)
            return LimitsChange(old, new, changed, change_id)
    raise ConcurrentChangeError(f"the risk limits of {currency} kept changing while being set: try again")


async def block(connection: Any, kind: str, value: str, reason: str, operator: str) -> BlockChange:
    """Put an entry on the blocklist, or change its reason; recorded unless blocked already with that reason."""
    entry = block_entry(kind, value, reason)
    operator = check_operator(operator)
    async with connection.transaction(isolation="read_committed"):
        for _attempt in range(ROW_ATTEMPTS_MAX):
            old_reason = await connection.fetchval(
                "SELECT reason FROM risk_blocklist WHERE kind = $1 AND value = $2 FOR UPDATE", entry.kind, entry.value
            )
            if old_reason is None:
                if not await _insert_blocked(connection, [entry]):
                    continue  # blocked meanwhile by another transaction: lock it and compare
                change_id = await _audit(connection, "block", entry.subject, None, {"reason": entry.reason}, operator)
                return BlockChange(entry, None, change_id)
            if old_reason == entry.reason:
                return BlockChange(entry, old_reason, None)
            await connection.execute(
                "UPDATE risk_blocklist SET reason = $3 WHERE kind = $1 AND value = $2",
                entry.kind,
                entry.value,
                entry.reason,
            )
            change_id = await _audit(
                connection, "block", entry.subject, {"reason": old_reason}, {"reason": entry.reason}, operator
            )
            return BlockChange(entry, old_reason, change_id)
    raise ConcurrentChangeError(f"{entry.subject} kept changing while being blocked: try again")


async def unblock(connection: Any, kind: str, value: str, operator: str) -> tuple[BlockEntry, int]:
    """Remove an entry from the blocklist: the entry removed and its audit row's id.

    Raises NotBlockedError when it is not on the blocklist (nothing changed, nothing recorded).
    """
    checked_kind, value = unblock_key(kind, value)
    operator = check_operator(operator)
    async with connection.transaction(isolation="read_committed"):
        # DELETE locks the row: of two concurrent unblocks, the second finds nothing.
        reason = await connection.fetchval(
            "DELETE FROM risk_blocklist WHERE kind = $1 AND value = $2 RETURNING reason", checked_kind, value
        )
        if reason is None:
            raise NotBlockedError(f"{checked_kind} {value} is not blocked: nothing to unblock")
        entry = BlockEntry(checked_kind, value, reason)
        change_id = await _audit(connection, "unblock", entry.subject, {"reason": reason}, None, operator)
    return entry, change_id


# --- Set-based writes for seeding: insert what is missing, never change a row, record what was added.


async def ensure_limits(connection: Any, limits: Sequence[CurrencyLimits], operator: str) -> list[CurrencyLimits]:
    """Create the limits of currencies that have none; existing limits are left as they are.

    Returns the limits created now (recorded in the audit, one row each).
    """
    for item in limits:
        check_limits(item)
    currencies = [item.currency for item in limits]
    if len(set(currencies)) != len(currencies):
        raise RiskConfigError(f"limits given twice for one currency: {sorted(currencies)}")
    operator = check_operator(operator)
    async with connection.transaction():
        rows = await connection.fetch(
            f"""WITH added AS (
                    INSERT INTO risk_limits (currency, {_LIMIT_COLUMNS})
                    SELECT * FROM unnest($1::text[], $2::bigint[], $3::int[], $4::bigint[], $5::int[],
                                         $6::bigint[], $7::bigint[])
                    ON CONFLICT (currency) DO NOTHING
                    RETURNING currency, {_LIMIT_COLUMNS}
                )
                INSERT INTO risk_config_audit (action, subject, old_value, new_value, operator)
                SELECT 'limits.set', currency, NULL, to_jsonb(added) - 'currency', $8 FROM added ORDER BY currency
                RETURNING subject""",
            currencies,
            *([getattr(item, name) for item in limits] for name in LIMIT_FIELD_NAMES),
            operator,
        )
    added = {row["subject"] for row in rows}
    return [item for item in limits if item.currency in added]


async def ensure_blocked(connection: Any, entries: Sequence[BlockEntry], operator: str) -> list[BlockEntry]:
    """Block the entries not blocked yet; an existing entry keeps its reason.

    Returns the entries added now (recorded in the audit, one row each).
    """
    for entry in entries:
        check_block_value(check_block_kind(entry.kind), entry.value)
        if check_reason(entry.reason) != entry.reason:
            raise RiskConfigError(f"reason of {entry.subject} has leading or trailing spaces: {entry.reason!r}")
    keys = [(entry.kind, entry.value) for entry in entries]
    if len(set(keys)) != len(keys):
        raise RiskConfigError("a blocklist entry is given twice")
    operator = check_operator(operator)
    async with connection.transaction():
        rows = await connection.fetch(
            """WITH added AS (
                   INSERT INTO risk_blocklist (kind, value, reason)
                   SELECT * FROM unnest($1::text[], $2::text[], $3::text[])
                   ON CONFLICT (kind, value) DO NOTHING
                   RETURNING kind, value, reason
               )
               INSERT INTO risk_config_audit (action, subject, old_value, new_value, operator)
               SELECT 'block', kind || ':' || value, NULL, jsonb_build_object('reason', reason), $4
               FROM added ORDER BY kind, value
               RETURNING subject""",
            [entry.kind for entry in entries],
            [entry.value for entry in entries],
            [entry.reason for entry in entries],
            operator,
        )
    added = {row["subject"] for row in rows}
    return [entry for entry in entries if entry.subject in added]


def demo_risk_config(world: DemoWorld) -> tuple[list[CurrencyLimits], list[BlockEntry]]:
    """The demo world's limits and blocklist, with the reasons `paystream accounts seed` has always used."""
    limits = [
        CurrencyLimits(
            x.currency,
            x.txn_amount_max_minor,
            x.payer_10m_count_max,
            x.payer_10m_amount_max_minor,
            x.payer_24h_count_max,
            x.payer_24h_amount_max_minor,
            x.merchant_daily_amount_max_minor,
        )
        for x in world.limits
    ]
    entries = (
        [BlockEntry("payer", p, "demo: payer reported for fraud") for p in world.blocked_payers]
        + [BlockEntry("merchant", m, "demo: merchant under review") for m in world.blocked_merchants]
        + [BlockEntry("country", c, "demo: sanctioned country") for c in world.blocked_countries]
    )
    return limits, entries


# --- Helpers.


def describe_change(old: Mapping[str, Any] | None, new: Mapping[str, Any] | None) -> str:
    """One line for people: `txn_amount_max_minor 225000 -> 1000`, `reason 'a'`, `reason 'a' -> (removed)`."""
    keys = [*(old or {}), *(key for key in (new or {}) if key not in (old or {}))]
    order = {name: index for index, name in enumerate(LIMIT_FIELD_NAMES)}
    parts = []
    for key in sorted(keys, key=lambda k: (order.get(k, len(order)), k)):
        before = (old or {}).get(key)
        after = (new or {}).get(key)
        if old is None:
            parts.append(f"{key} {_shown(after)}")
        elif new is None:
            parts.append(f"{key} {_shown(before)} -> (removed)")
        elif before != after:
            parts.append(f"{key} {_shown(before)} -> {_shown(after)}")
    return "; ".join(parts) or "(no difference)"


def _shown(value: Any) -> str:
    return repr(value) if isinstance(value, str) else str(value)


def _limits_of(currency: str, values: Mapping[str, int]) -> CurrencyLimits:
    return CurrencyLimits(currency, *(values[name] for name in LIMIT_FIELD_NAMES))


def _limits_from_row(row: Any) -> CurrencyLimits:
    # currency is char(3): exactly three letters, nothing to strip, but strip() keeps that true for any width.
    return CurrencyLimits(row["currency"].strip(), *(row[name] for name in LIMIT_FIELD_NAMES))


def _json_or_none(text: str | None) -> dict[str, Any] | None:
    if text is None:
        return None
    value = orjson.loads(text)
    assert isinstance(value, dict), value
    return value


async def _insert_limits(connection: Any, limits: Sequence[CurrencyLimits]) -> int:
    """Insert rows not there yet; how many were inserted."""
    rows = await connection.fetch(
        f"""INSERT INTO risk_limits (currency, {_LIMIT_COLUMNS})
            SELECT * FROM unnest($1::text[], $2::bigint[], $3::int[], $4::bigint[], $5::int[],
                                 $6::bigint[], $7::bigint[])
            ON CONFLICT (currency) DO NOTHING RETURNING currency""",
        [item.currency for item in limits],
        *([getattr(item, name) for item in limits] for name in LIMIT_FIELD_NAMES),
    )
    return len(rows)


async def _insert_blocked(connection: Any, entries: Sequence[BlockEntry]) -> int:
    rows = await connection.fetch(
        """INSERT INTO risk_blocklist (kind, value, reason)
           SELECT * FROM unnest($1::text[], $2::text[], $3::text[])
           ON CONFLICT (kind, value) DO NOTHING RETURNING kind""",
        [entry.kind for entry in entries],
        [entry.value for entry in entries],
        [entry.reason for entry in entries],
    )
    return len(rows)


async def _audit(
    connection: Any,
    action: AuditAction,
    subject: str,
    old_value: Mapping[str, Any] | None,
    new_value: Mapping[str, Any] | None,
    operator: str,
) -> int:
    """Append one audit row in the caller's transaction; its change_id.

    JSON goes as text and is cast in SQL, so this works whatever codecs the connection has.
    """
    assert old_value != new_value, (subject, old_value)
    change_id = await connection.fetchval(
        """INSERT INTO risk_config_audit (action, subject, old_value, new_value, operator)
           VALUES ($1, $2, $3::text::jsonb, $4::text::jsonb, $5) RETURNING change_id""",
        action,
        subject,
        None if old_value is None else orjson.dumps(dict(old_value)).decode(),
        None if new_value is None else orjson.dumps(dict(new_value)).decode(),
        operator,
    )
    assert isinstance(change_id, int)
    return change_id
