"""The real `paystream` command line meets an operating error: one line on stderr, exit 2, never a traceback.

Each case runs the command in its own process, as an operator would, against:
a freshly created empty database (not migrated), one migrated by an older
paystream (behind), a PostgreSQL port and a Kafka port where nothing listens.
`reconcile` then shows its three exit statuses on one database: 2 cannot
check, 0 every invariant holds, 1 a violation.
"""

from __future__ import annotations

import asyncio
import os
import socket
import sys
import time
import uuid
from collections.abc import AsyncIterator
from dataclasses import dataclass
from pathlib import Path

import asyncpg
import pytest

from paystream.db.migrate import available_migrations
from paystream.db.pool import connect
from paystream.prepare import create_database, drop_database, isolated_settings
from paystream.settings import REPO_ROOT, Settings, load_settings

pytestmark = pytest.mark.integration

# A hang guard, not a measurement: reaching it fails the test.
CLI_TIMEOUT_S = 120.0
# "Within a bounded time": a refused broker is reported in about a second; this
# leaves room for a loaded machine and still fails a command that retries for minutes.
KAFKA_REPORT_S_MAX = 60.0

# Every command that reads the database, and the worker commands that open a pool.
DATABASE_COMMANDS = [
    ["reconcile"],
    ["reconcile", "--json"],
    ["payment", "show", "pay-1"],
    ["settlements", "list"],
    ["settlements", "follow", "--once"],
    ["dead-letters", "list"],
    ["accounts", "list"],
    ["accounts", "show", "payer-000001"],
    ["accounts", "seed"],
    ["worker", "risk", "--idle-exit-ms", "1000"],
    ["run", "--idle-exit-ms", "1000"],
]

KAFKA_COMMANDS = [
    ["publish", "--generate", "5", "--quiet"],
    ["follow", "outcomes", "--idle-exit-ms", "1000"],
    ["follow", "settlements", "--json"],
    ["replay", "record", "--topic", "payments.requested", "--out", "{tmp}/r.gz", "--quiet"],
    ["replay", "copy", "--from-topic", "payments.requested", "--quiet"],
    ["loadtest", "--rate", "10", "--duration", "1"],
]


@dataclass(frozen=True)
class Ran:
    code: int
    out: str
    err: str
    seconds: float


async def cli(env: dict[str, str], *argv: str) -> Ran:
    """Run `python -m paystream.cli.main ARGV` with these PAYSTREAM_* variables over the test's environment."""
    started = time.monotonic()
    process = await asyncio.create_subprocess_exec(
        sys.executable,
        "-m",
        "paystream.cli.main",
        *argv,
        env={**os.environ, **env},
        cwd=REPO_ROOT,
        stdin=asyncio.subprocess.DEVNULL,
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.PIPE,
    )
    try:
        out, err = await asyncio.wait_for(process.communicate(), CLI_TIMEOUT_S)
    except TimeoutError:
        process.kill()
        await process.wait()
        raise
    assert process.returncode is not None
    return Ran(process.returncode, out.decode(), err.decode(), time.monotonic() - started)


def assert_one_error_line(ran: Ran, message: str) -> None:
    assert "Traceback" not in ran.err, ran.err
    assert ran.err.splitlines() == [f"paystream: error: {message}"], ran.err
    assert ran.out == ""
    assert ran.code == 2


def free_port() -> int:
    """A local port nothing listens on (bound once by us, then released)."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as probe:
        probe.bind(("127.0.0.1", 0))
        return int(probe.getsockname()[1])


def shown_url(settings: Settings) -> str:
    """The database URL as messages show it (the local stack's URL has no password)."""
    assert ":" not in settings.database_url.split("://", 1)[1].split("@", 1)[0], "a password would be redacted"
    return settings.database_url


@pytest.fixture
async def empty_database() -> AsyncIterator[Settings]:
    """A database created for this test, with nothing in it; dropped afterwards."""
    settings = isolated_settings(load_settings(), f"clierr{uuid.uuid4().hex[:8]}")
    assert await create_database(settings)
    try:
        yield settings
    finally:
        await drop_database(settings)


@pytest.mark.parametrize("argv", DATABASE_COMMANDS, ids=" ".join)
async def test_an_unmigrated_database_is_one_line(empty_database: Settings, argv: list[str]) -> None:
    ran = await cli({"PAYSTREAM_DATABASE_URL": empty_database.database_url}, *argv)
    assert_one_error_line(ran, f"database {shown_url(empty_database)} is not migrated: run `paystream db migrate`")


async def test_a_database_behind_this_code_is_one_line(empty_database: Settings) -> None:
    migrations = available_migrations()
    assert len(migrations) >= 2
    older, newest = migrations[:-1], migrations[-1]
    connection = await asyncpg.connect(empty_database.database_url)
    try:
        await connection.execute(
            "CREATE TABLE schema_migrations (version integer PRIMARY KEY, name text NOT NULL,"
            " applied_at timestamptz NOT NULL DEFAULT now())"
        )
        for migration in older:
            await connection.execute(migration.sql)
            await connection.execute(
                "INSERT INTO schema_migrations (version, name) VALUES ($1, $2)", migration.version, migration.name
            )
    finally:
        await connection.close()
    expected = (
        f"database {shown_url(empty_database)} is migrated only to {older[-1].version:03d} of {newest.version:03d}:"
        " run `paystream db migrate`"
    )
    env = {"PAYSTREAM_DATABASE_URL": empty_database.database_url}
    for argv in (["reconcile"], ["payment", "show", "pay-1"], ["accounts", "list"], ["worker", "risk"]):
        assert_one_error_line(await cli(env, *argv), expected)


async def test_reconcile_exits_2_cannot_check_then_0_holds_then_1_violated(empty_database: Settings) -> None:
    env = {"PAYSTREAM_DATABASE_URL": empty_database.database_url}
    not_migrated = f"database {shown_url(empty_database)} is not migrated: run `paystream db migrate`"
    assert_one_error_line(await cli(env, "reconcile"), not_migrated)

    migrated = await cli(env, "db", "migrate")
    assert (migrated.code, migrated.err) == (0, "")
    assert migrated.out.splitlines() == [f"applied {m.version:03d}_{m.name}" for m in available_migrations()]

    holds = await cli(env, "reconcile")
    assert (holds.code, holds.err) == (0, "")
    assert holds.out.splitlines()[-1] == "reconcile: PASS"

    connection = await connect(empty_database, migrated=True)
    try:
        # A journal without entries: `journal_balances` is violated.
        await connection.execute(
            "INSERT INTO journals (journal_id, kind, currency, created_at)"
            " VALUES ('j-empty', 'correction', 'EUR', now())"
        )
    finally:
        await connection.close()
    violated = await cli(env, "reconcile")
    assert (violated.code, violated.err) == (1, "")
    assert violated.out.splitlines()[-1] == "reconcile: FAIL"
    assert "1 VIOLATIONS  journal_balances:" in violated.out


async def test_a_missing_database_is_one_line() -> None:
    settings = isolated_settings(load_settings(), f"clinone{uuid.uuid4().hex[:8]}")
    name = settings.database_url.rpartition("/")[2]
    ran = await cli({"PAYSTREAM_DATABASE_URL": settings.database_url}, "accounts", "list")
    assert_one_error_line(
        ran,
        f'PostgreSQL at {shown_url(settings)}: database "{name}" does not exist;'
        " create it, then run `paystream db migrate`",
    )


@pytest.mark.parametrize("argv", [["reconcile"], ["payment", "show", "pay-1"], ["db", "migrate"]], ids=" ".join)
async def test_an_unreachable_postgresql_is_one_line(argv: list[str]) -> None:
    port = free_port()
    url = f"postgresql://paystream@127.0.0.1:{port}/paystream"
    ran = await cli({"PAYSTREAM_DATABASE_URL": url}, *argv)
    assert_one_error_line(
        ran,
        f"cannot connect to PostgreSQL at {url}: [Errno 111] Connect call failed ('127.0.0.1', {port})"
        " (is the stack up? try: paystream stack up)",
    )


@pytest.mark.parametrize("argv", KAFKA_COMMANDS, ids=lambda argv: " ".join(argv[:2]))
async def test_no_broker_is_one_line_within_bounded_time(argv: list[str], tmp_path: Path) -> None:
    bootstrap = f"127.0.0.1:{free_port()}"
    ran = await cli({"PAYSTREAM_KAFKA_BOOTSTRAP": bootstrap}, *(arg.format(tmp=tmp_path) for arg in argv))
    assert_one_error_line(
        ran, f"cannot reach Kafka at {bootstrap}: no broker answered (is the stack up? try: paystream stack up)"
    )
    assert ran.seconds < KAFKA_REPORT_S_MAX


async def test_a_bad_setting_is_one_line() -> None:
    ran = await cli({"PAYSTREAM_RECORD_BYTES_MAX": "0"}, "reconcile")
    assert_one_error_line(ran, "PAYSTREAM_RECORD_BYTES_MAX=0 is outside 32768..1000000")
