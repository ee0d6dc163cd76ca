"""Risk configuration on a real PostgreSQL: each change with its audit row, the audit append-only, the commands.

Each test gets its own database, migrated and seeded with the demo world (no
topics: nothing here needs Kafka). The risk stage's use of the configuration
is in test_risk_config_stage.py.
"""

from __future__ import annotations

import asyncio
import dataclasses
import os
import sys
import time
import uuid
from collections.abc import AsyncIterator
from dataclasses import dataclass
from typing import Any

import asyncpg
import orjson
import pytest

from paystream.db.migrate import migrate
from paystream.db.pool import connect
from paystream.demo_data import build_world
from paystream.prepare import create_database, drop_database, isolated_settings
from paystream.risk_config import (
    BlockEntry,
    CurrencyLimits,
    NotBlockedError,
    RiskConfigError,
    block,
    demo_risk_config,
    ensure_blocked,
    ensure_limits,
    history,
    list_blocked,
    set_limits,
    show_limits,
    unblock,
)
from paystream.seed import seed_world
from paystream.settings import REPO_ROOT, Settings, load_settings
from tests.support.stages import wait_until_blocked

pytestmark = pytest.mark.integration

CLI_TIMEOUT_S = 120.0  # a hang guard, not a measurement
WORLD = build_world()
DEMO_LIMITS = {x.currency: x for x in WORLD.limits}


def _values(limits: Any) -> dict[str, int]:
    """A demo world's limits as the audit records them: the six fields, without the currency."""
    values = dataclasses.asdict(limits)
    del values["currency"]
    return values


USD_LIMITS = _values(DEMO_LIMITS["USD"])
EUR_LIMITS = _values(DEMO_LIMITS["EUR"])
CHF_LIMITS = dict(
    txn_amount_max_minor=100_000,
    payer_10m_count_max=5,
    payer_10m_amount_max_minor=200_000,
    payer_24h_count_max=50,
    payer_24h_amount_max_minor=2_000_000,
    merchant_daily_amount_max_minor=2**57,
)


@pytest.fixture
async def database() -> AsyncIterator[Settings]:
    """A database of its own, migrated and seeded with the demo world; dropped afterwards."""
    settings = isolated_settings(load_settings(), f"riskcfg{uuid.uuid4().hex[:8]}")
    assert await create_database(settings)
    try:
        connection = await connect(settings)
        try:
            await migrate(connection)
            await seed_world(connection, WORLD)
        finally:
            await connection.close()
        yield settings
    finally:
        await drop_database(settings)


@pytest.fixture
async def connection(database: Settings) -> AsyncIterator[Any]:
    conn = await connect(database, migrated=True)
    try:
        yield conn
    finally:
        await conn.close()


async def _audit_rows(connection: Any, after: int = 0) -> list[tuple[Any, ...]]:
    rows = await connection.fetch(
        """SELECT action, subject, old_value::text AS old, new_value::text AS new, operator
           FROM risk_config_audit WHERE change_id > $1 ORDER BY change_id""",
        after,
    )
    return [
        (r["action"], r["subject"], _loads(r["old"]), _loads(r["new"]), r["operator"]) for r in rows
    ]  # fmt: skip


def _loads(text: str | None) -> Any:
    return None if text is None else orjson.loads(text)


async def _last_change_id(connection: Any) -> int:
    return int(await connection.fetchval("SELECT coalesce(max(change_id), 0) FROM risk_config_audit"))


# --- The functions and the audit.


async def test_set_limits_changes_creates_and_records_old_and_new(connection: Any) -> None:
    before = await _last_change_id(connection)
    usd = await show_limits(connection, "USD")
    assert [x.values() for x in usd] == [USD_LIMITS]

    change = await set_limits(connection, "USD", {"txn_amount_max_minor": 1_000, "payer_10m_count_max": 3}, "alice")
    assert change.changed_fields == ("txn_amount_max_minor", "payer_10m_count_max")
    assert change.old is not None and change.old.values() == USD_LIMITS
    lowered = {**USD_LIMITS, "txn_amount_max_minor": 1_000, "payer_10m_count_max": 3}
    assert change.new.values() == lowered
    assert [x.values() for x in await show_limits(connection, "USD")] == [lowered]

    # The same values again: a no-op, said as such, not recorded.
    again = await set_limits(connection, "USD", {"txn_amount_max_minor": 1_000}, "alice")
    assert (again.changed, again.change_id, again.new.values()) == (False, None, lowered)

    # A currency without limits: all six are needed to create them.
    with pytest.raises(RiskConfigError) as refused:
        await set_limits(connection, "CHF", {"txn_amount_max_minor": 5}, "alice")
    assert str(refused.value) == (
        "CHF has no risk limits yet: creating them needs every limit; missing --payer-10m-count-max,"
        " --payer-10m-amount-max, --payer-24h-count-max, --payer-24h-amount-max, --merchant-daily-amount-max"
    )
    assert await show_limits(connection, "CHF") == []
    created = await set_limits(connection, "CHF", CHF_LIMITS, "bob")
    assert (created.old, created.new) == (None, CurrencyLimits("CHF", **CHF_LIMITS))

    assert await _audit_rows(connection, before) == [
        ("limits.set", "USD", USD_LIMITS, lowered, "alice"),
        ("limits.set", "CHF", None, CHF_LIMITS, "bob"),
    ]
    entries = await history(connection, limit=2)
    assert [(e.change_id, e.action, e.subject, e.operator) for e in entries] == [
        (created.change_id, "limits.set", "CHF", "bob"),
        (change.change_id, "limits.set", "USD", "alice"),
    ]
    # Filtered by subject: USD's changes only, newest first (the seed created USD's limits before the test).
    usd_history = await history(connection, limit=10, subject="USD")
    assert [e.subject for e in usd_history] == ["USD"] * len(usd_history)
    assert [e.change_id for e in usd_history if e.change_id > before] == [change.change_id]


async def test_block_unblock_and_list_record_each_change(connection: Any) -> None:
    before = await _last_change_id(connection)
    added = await block(connection, "payer", "payer-000001", "chargebacks", "alice")
    assert (added.old_reason, added.changed) == (None, True)
    same = await block(connection, "payer", "payer-000001", "chargebacks", "bob")
    assert (same.changed, same.change_id) == (False, None)
    renamed = await block(connection, "payer", "payer-000001", "chargeback ring", "bob")
    assert (renamed.old_reason, renamed.entry.reason, renamed.changed) == ("chargebacks", "chargeback ring", True)

    payers, more = await list_blocked(connection, "payer", limit=100)
    assert more is False
    assert BlockEntry("payer", "payer-000001", "chargeback ring") in payers
    assert {e.value for e in payers} == {*WORLD.blocked_payers, "payer-000001"}
    first_two, more = await list_blocked(connection, limit=2)
    assert (len(first_two), more) == (2, True)
    assert [e.kind for e in first_two] == ["country", "merchant"]  # by kind, then value

    removed, change_id = await unblock(connection, "payer", "payer-000001", "carol")
    assert removed == BlockEntry("payer", "payer-000001", "chargeback ring")
    with pytest.raises(NotBlockedError) as refused:
        await unblock(connection, "payer", "payer-000001", "carol")
    assert str(refused.value) == "payer payer-000001 is not blocked: nothing to unblock"
    with pytest.raises(RiskConfigError, match=r"^country 'kp' is not valid: expected two upper-case letters"):
        await block(connection, "country", "kp", "sanctions", "alice")

    assert await _audit_rows(connection, before) == [
        ("block", "payer:payer-000001", None, {"reason": "chargebacks"}, "alice"),
        ("block", "payer:payer-000001", {"reason": "chargebacks"}, {"reason": "chargeback ring"}, "bob"),
        ("unblock", "payer:payer-000001", {"reason": "chargeback ring"}, None, "carol"),
    ]
    assert await _last_change_id(connection) == change_id


async def test_the_audit_refuses_update_delete_and_truncate(connection: Any) -> None:
    await set_limits(connection, "EUR", {"txn_amount_max_minor": 777}, "alice")
    rows_before = await _audit_rows(connection)
    for statement, operation in (
        ("UPDATE risk_config_audit SET operator = 'mallory'", "UPDATE"),
        ("DELETE FROM risk_config_audit", "DELETE"),
        ("TRUNCATE risk_config_audit", "TRUNCATE"),
    ):
        with pytest.raises(asyncpg.RaiseError) as refused:
            await connection.execute(statement)
        assert str(refused.value) == f"risk_config_audit is append-only: {operation} refused"
    assert await _audit_rows(connection) == rows_before
    assert rows_before[-1] == ("limits.set", "EUR", EUR_LIMITS, {**EUR_LIMITS, "txn_amount_max_minor": 777}, "alice")


async def test_a_change_and_its_audit_row_commit_together(connection: Any, database: Settings) -> None:
    before = await _last_change_id(connection)
    # The caller's transaction rolls back: neither the change nor its audit row stays.
    transaction = connection.transaction()
    await transaction.start()
    await set_limits(connection, "USD", {"txn_amount_max_minor": 5}, "alice")
    await block(connection, "merchant", "merchant-001", "review", "alice")
    assert await _last_change_id(connection) == before + 2  # written, not committed
    await transaction.rollback()
    assert [x.values() for x in await show_limits(connection, "USD")] == [USD_LIMITS]
    assert BlockEntry("merchant", "merchant-001", "review") not in (await list_blocked(connection, "merchant"))[0]
    assert await _last_change_id(connection) == before
    # An audit row that cannot be written (here: refused by a trigger added for the test) undoes the change.
    await connection.execute(
        """CREATE FUNCTION test_refuse_audit() RETURNS trigger LANGUAGE plpgsql AS $$
           BEGIN RAISE EXCEPTION 'audit unavailable'; END $$;
           CREATE TRIGGER test_refuse_audit BEFORE INSERT ON risk_config_audit
               FOR EACH ROW EXECUTE FUNCTION test_refuse_audit();"""
    )
    with pytest.raises(asyncpg.RaiseError, match=r"^audit unavailable$"):
        await set_limits(connection, "USD", {"txn_amount_max_minor": 5}, "alice")
    with pytest.raises(asyncpg.RaiseError, match=r"^audit unavailable$"):
        await block(connection, "merchant", "merchant-001", "review", "alice")
    await connection.execute("DROP TRIGGER test_refuse_audit ON risk_config_audit")
    assert [x.values() for x in await show_limits(connection, "USD")] == [USD_LIMITS]
    assert BlockEntry("merchant", "merchant-001", "review") not in (await list_blocked(connection, "merchant"))[0]


async def test_concurrent_changes_of_one_currency_record_the_old_value_each_replaced(database: Settings) -> None:
    first, second, observer = [await connect(database) for _ in range(3)]
    try:
        before = await _last_change_id(observer)
        # The first change holds the row (inside its caller's transaction) while the second starts.
        async with first.transaction():
            await set_limits(first, "USD", {"txn_amount_max_minor": 111}, "alice")
            racing = asyncio.create_task(set_limits(second, "USD", {"txn_amount_max_minor": 222}, "bob"))
            await wait_until_blocked(observer, second.get_server_pid())
            assert not racing.done()
        change = await racing
        assert change.old is not None and change.old.txn_amount_max_minor == 111
        assert [
            (a, s, o["txn_amount_max_minor"], n["txn_amount_max_minor"], op)
            for a, s, o, n, op in await _audit_rows(observer, before)
        ] == [
            ("limits.set", "USD", USD_LIMITS["txn_amount_max_minor"], 111, "alice"),
            ("limits.set", "USD", 111, 222, "bob"),
        ]

        # Two creations of one currency: the second finds the first's row once it commits and changes it.
        before = await _last_change_id(observer)
        async with first.transaction():
            await set_limits(first, "CHF", CHF_LIMITS, "alice")
            racing = asyncio.create_task(set_limits(second, "CHF", {**CHF_LIMITS, "payer_10m_count_max": 9}, "bob"))
            await wait_until_blocked(observer, second.get_server_pid())
        change = await racing
        assert (change.changed_fields, change.old) == (("payer_10m_count_max",), CurrencyLimits("CHF", **CHF_LIMITS))
        assert await _audit_rows(observer, before) == [
            ("limits.set", "CHF", None, CHF_LIMITS, "alice"),
            ("limits.set", "CHF", CHF_LIMITS, {**CHF_LIMITS, "payer_10m_count_max": 9}, "bob"),
        ]

        # The same for the reason of one blocklist entry.
        before = await _last_change_id(observer)
        async with first.transaction():
            await block(first, "payer", "payer-000002", "first", "alice")
            racing = asyncio.create_task(block(second, "payer", "payer-000002", "second", "bob"))
            await wait_until_blocked(observer, second.get_server_pid())
        assert (await racing).old_reason == "first"
        assert await _audit_rows(observer, before) == [
            ("block", "payer:payer-000002", None, {"reason": "first"}, "alice"),
            ("block", "payer:payer-000002", {"reason": "first"}, {"reason": "second"}, "bob"),
        ]
    finally:
        for conn in (first, second, observer):
            await conn.close()


async def test_ensure_writes_what_is_missing_set_based_and_records_it(connection: Any) -> None:
    limits, entries = demo_risk_config(WORLD)
    # Start from an empty configuration (the demo seed wrote it without audit rows).
    await connection.execute("DELETE FROM risk_limits; DELETE FROM risk_blocklist")
    before = await _last_change_id(connection)

    assert await ensure_limits(connection, limits, "seed") == limits
    assert await ensure_blocked(connection, entries, "seed") == entries
    assert await show_limits(connection) == sorted(limits, key=lambda x: x.currency)
    assert (await list_blocked(connection, limit=1_000))[0] == sorted(entries, key=lambda e: (e.kind, e.value))
    audit = await _audit_rows(connection, before)
    assert sorted(audit[: len(limits)]) == sorted(("limits.set", x.currency, None, x.values(), "seed") for x in limits)
    assert audit[len(limits) :] == sorted(
        (("block", e.subject, None, {"reason": e.reason}, "seed") for e in entries), key=lambda row: row[1]
    )

    # Again, with one currency changed since: nothing is added or changed, nothing recorded.
    await set_limits(connection, "JPY", {"txn_amount_max_minor": 9}, "alice")
    before = await _last_change_id(connection)
    assert await ensure_limits(connection, limits, "seed") == []
    assert await ensure_blocked(connection, entries, "seed") == []
    assert (await show_limits(connection, "JPY"))[0].txn_amount_max_minor == 9
    assert await _last_change_id(connection) == before

    # Only the missing ones are added.
    await unblock(connection, "country", "KP", "alice")
    before = await _last_change_id(connection)
    assert await ensure_blocked(connection, entries, "seed") == [
        BlockEntry("country", "KP", "demo: sanctioned country")
    ]
    assert await _audit_rows(connection, before) == [
        ("block", "country:KP", None, {"reason": "demo: sanctioned country"}, "seed")
    ]
    with pytest.raises(RiskConfigError, match=r"^limits given twice for one currency"):
        await ensure_limits(connection, [limits[0], limits[0]], "seed")


# --- The commands, run as an operator runs them.


@dataclass(frozen=True)
class Ran:
    code: int
    out: str
    err: str


async def cli(settings: Settings, *argv: str, env: dict[str, str] | None = None) -> Ran:
    process = await asyncio.create_subprocess_exec(
        sys.executable,
        "-m",
        "paystream.cli.main",
        *argv,
        env={**os.environ, "PAYSTREAM_DATABASE_URL": settings.database_url, **(env or {})},
        cwd=REPO_ROOT,
        stdin=asyncio.subprocess.DEVNULL,
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.PIPE,
    )
    started = time.monotonic()
    try:
        out, err = await asyncio.wait_for(process.communicate(), CLI_TIMEOUT_S)
    except TimeoutError:
        process.kill()
        await process.wait()
        raise
    assert process.returncode is not None, time.monotonic() - started
    assert "Traceback" not in err.decode(), err.decode()
    return Ran(process.returncode, out.decode(), err.decode())


def _table(text: str) -> list[list[str]]:
    return [line.split() for line in text.splitlines()]


async def test_limits_commands(database: Settings, connection: Any) -> None:
    shown = await cli(database, "risk", "limits", "show")
    assert (shown.code, shown.err) == (0, "")
    table = _table(shown.out)
    assert table[0] == [
        "currency",
        "txn_amount_max_minor",
        "payer_10m_count_max",
        "payer_10m_amount_max_minor",
        "payer_24h_count_max",
        "payer_24h_amount_max_minor",
        "merchant_daily_amount_max_minor",
    ]
    assert table[1:] == [[c, *(str(v) for v in _values(DEMO_LIMITS[c]).values())] for c in sorted(DEMO_LIMITS)]

    missing = await cli(database, "risk", "limits", "show", "--currency", "CHF")
    assert (missing.code, missing.out) == (1, "paystream: no risk limits for CHF: its payments are rejected"
                                                " (currency_not_configured)\n")  # fmt: skip

    before = await _last_change_id(connection)
    lowered = await cli(database, "risk", "limits", "set", "USD", "--txn-amount-max", "1000", "--operator", "alice")
    assert (lowered.code, lowered.err) == (0, "")
    assert lowered.out == f"USD limits changed by alice (change {before + 1}): txn_amount_max_minor 225000 -> 1000\n"
    assert (await show_limits(connection, "USD"))[0].txn_amount_max_minor == 1_000
    same = await cli(database, "risk", "limits", "set", "USD", "--txn-amount-max", "1000", "--operator", "alice")
    assert (same.code, same.out) == (0, "USD limits unchanged: every value given is already set (nothing recorded)\n")

    refused = await cli(database, "risk", "limits", "set", "CHF", "--txn-amount-max", "5")
    assert (refused.code, refused.out) == (2, "")
    assert refused.err == (
        "paystream: error: CHF has no risk limits yet: creating them needs every limit; missing --payer-10m-count-max,"
        " --payer-10m-amount-max, --payer-24h-count-max, --payer-24h-amount-max, --merchant-daily-amount-max\n"
    )
    too_high = await cli(database, "risk", "limits", "set", "USD", "--merchant-daily-amount-max", str(2**57 + 1))
    assert too_high.code == 2
    assert too_high.err.splitlines()[-1] == (
        "paystream risk limits set: error: argument --merchant-daily-amount-max: must be a whole number from 1 to"
        f" 144,115,188,075,855,872, got '{2**57 + 1}'"
    )
    options = [x for name, value in CHF_LIMITS.items() for x in (f"--{name.removesuffix('_minor')}".replace("_", "-"),
                                                                 str(value))]  # fmt: skip
    created = await cli(database, "risk", "limits", "set", "CHF", *options, "--operator", "bob")
    assert (created.code, created.err) == (0, "")
    assert created.out.startswith(f"CHF limits created by bob (change {before + 2}): txn_amount_max_minor 100000; ")
    assert (await show_limits(connection, "CHF"))[0] == CurrencyLimits("CHF", **CHF_LIMITS)

    assert await _audit_rows(connection, before) == [
        ("limits.set", "USD", USD_LIMITS, {**USD_LIMITS, "txn_amount_max_minor": 1_000}, "alice"),
        ("limits.set", "CHF", None, CHF_LIMITS, "bob"),
    ]


async def test_blocklist_commands(database: Settings, connection: Any) -> None:
    before = await _last_change_id(connection)
    blocked = await cli(
        database, "risk", "block", "payer", "payer-000001", "--reason", "chargebacks", "--operator", "alice"
    )
    assert (blocked.code, blocked.err) == (0, "")
    assert blocked.out == f"blocked payer payer-000001 by alice (change {before + 1}): chargebacks\n"
    again = await cli(database, "risk", "block", "payer", "payer-000001", "--reason", "chargebacks")
    assert (again.code, again.out) == (0, "payer payer-000001 is already blocked with this reason (nothing recorded)\n")
    renamed = await cli(database, "risk", "block", "payer", "payer-000001", "--reason", "ring", "--operator", "bob")
    assert renamed.out == (
        f"payer payer-000001 was blocked already; reason changed by bob (change {before + 2}):"
        " 'chargebacks' -> 'ring'\n"
    )

    bad = await cli(database, "risk", "block", "payer", "payer 1", "--reason", "x")
    assert (bad.code, bad.out) == (2, "")
    assert bad.err == (
        "paystream: error: payer 'payer 1' is not valid: expected 1 to 64 of A-Z a-z 0-9 _ . : -"
        " (the payer id of a payment request)\n"
    )
    no_reason = await cli(database, "risk", "block", "country", "RU", "--reason", "")
    assert (no_reason.code, no_reason.err) == (2, "paystream: error: reason must not be empty\n")

    listed = await cli(database, "risk", "list", "--kind", "payer")
    assert listed.code == 0
    lines = listed.out.splitlines()
    assert lines[0].split() == ["kind", "value", "reason"]
    assert [line.rstrip().split(maxsplit=2) for line in lines[1:]] == sorted(
        [["payer", p, "demo: payer reported for fraud"] for p in WORLD.blocked_payers]
        + [["payer", "payer-000001", "ring"]]
    )
    first = await cli(database, "risk", "list", "--limit", "1")
    assert first.out.splitlines()[1:] == [
        "country  KP     demo: sanctioned country",
        "(the first 1 shown; raise --limit to see more)",
    ]

    unblocked = await cli(database, "risk", "unblock", "payer", "payer-000001", "--operator", "carol")
    assert (unblocked.code, unblocked.err) == (0, "")
    assert unblocked.out == f"unblocked payer payer-000001 by carol (change {before + 3}); it was: ring\n"
    unknown = await cli(database, "risk", "unblock", "payer", "payer-000001", "--operator", "carol")
    assert (unknown.code, unknown.out) == (1, "")
    assert unknown.err == "paystream: payer payer-000001 is not blocked: nothing to unblock\n"

    assert await _audit_rows(connection, before) == [
        ("block", "payer:payer-000001", None, {"reason": "chargebacks"}, "alice"),
        ("block", "payer:payer-000001", {"reason": "chargebacks"}, {"reason": "ring"}, "bob"),
        ("unblock", "payer:payer-000001", {"reason": "ring"}, None, "carol"),
    ]


async def test_history_command_and_the_default_operator(database: Settings, connection: Any) -> None:
    before = await _last_change_id(connection)
    # No --operator: the OS user (getpass reads LOGNAME first).
    ran = await cli(database, "risk", "block", "merchant", "merchant-002", "--reason", "review",
                    env={"LOGNAME": "ops-on-call"})  # fmt: skip
    assert ran.code == 0
    assert ran.out == f"blocked merchant merchant-002 by ops-on-call (change {before + 1}): review\n"
    await cli(database, "risk", "limits", "set", "EUR", "--payer-24h-count-max", "7", "--operator", "alice")

    shown = await cli(database, "risk", "history", "--limit", "2")
    assert (shown.code, shown.err) == (0, "")
    lines = [line.rstrip() for line in shown.out.splitlines()]
    assert lines[0].split() == ["change_id", "changed_at", "operator", "action", "subject", "change"]
    newest = lines[1].split(maxsplit=5)
    assert (newest[0], newest[2:]) == (
        str(before + 2),
        ["alice", "limits.set", "EUR", f"payer_24h_count_max {DEMO_LIMITS['EUR'].payer_24h_count_max} -> 7"],
    )
    older = lines[2].split(maxsplit=5)
    assert (older[0], older[2:]) == (
        str(before + 1),
        ["ops-on-call", "block", "merchant:merchant-002", "reason 'review'"],
    )
    assert len(lines) == 3
    one = await cli(database, "risk", "history", "--subject", "merchant:merchant-002")
    assert [line.split()[0] for line in one.out.splitlines()[1:]] == [str(before + 1)]


@pytest.mark.parametrize(
    "argv",
    [
        ["risk", "limits", "show"],
        ["risk", "limits", "set", "USD", "--txn-amount-max", "5"],
        ["risk", "block", "payer", "payer-000001", "--reason", "r"],
        ["risk", "unblock", "payer", "payer-000001"],
        ["risk", "list"],
        ["risk", "history"],
    ],
    ids=" ".join,
)
async def test_an_unmigrated_database_is_one_line(argv: list[str]) -> None:
    settings = isolated_settings(load_settings(), f"riskcfgempty{uuid.uuid4().hex[:8]}")
    assert await create_database(settings)
    try:
        ran = await cli(settings, *argv)
    finally:
        await drop_database(settings)
    assert (ran.code, ran.out) == (2, "")
    assert (
        ran.err == f"paystream: error: database {settings.database_url} is not migrated: run `paystream db migrate`\n"
    )
