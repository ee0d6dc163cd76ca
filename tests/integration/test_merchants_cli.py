"""`paystream merchants ...` on a real database, each command in its own process as an operator runs it.

Also: onboarding the demo's 1,000 merchants in one call, and a suspended
merchant on the real pipeline: risk rejects its new payments with a reason,
and its open settlement batch still closes.
"""

from __future__ import annotations

import asyncio
import json
import os
import sys
import time
import uuid
from collections.abc import AsyncIterator
from dataclasses import dataclass
from datetime import timedelta
from pathlib import Path
from typing import Any

import pytest

from paystream.db.pool import connect
from paystream.demo_data import build_world
from paystream.merchants import onboard, spec_from_demo
from paystream.merchants.model import FeeSchedule, merchant_spec
from paystream.prepare import create_database, drop_database, isolated_settings
from paystream.reconcile import reconcile
from paystream.settings import REPO_ROOT, Settings, load_settings
from tests.support.pipeline import drain, fresh_environment
from tests.support.stages import payment, publish_requests
from workers.settlement_close import advance_cursors, close_due_batches, next_chunk

pytestmark = pytest.mark.integration

CLI_TIMEOUT_S = 120.0  # a hang guard, not a measurement
ONBOARD_1000_S_MAX = 20.0  # a few statements in one transaction; generous for a shared 2-core machine


@dataclass(frozen=True)
class Ran:
    code: int
    out: str
    err: str


@pytest.fixture(scope="module")
async def environment() -> AsyncIterator[Settings]:
    settings = await fresh_environment("merch")
    yield settings
    await drop_database(settings)


async def cli(settings: Settings, *argv: str) -> Ran:
    process = await asyncio.create_subprocess_exec(
        sys.executable,
        "-m",
        "paystream.cli.main",
        *argv,
        env={**os.environ, "PAYSTREAM_DATABASE_URL": settings.database_url, "PAYSTREAM_NAMESPACE": settings.namespace},
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
    ran = Ran(process.returncode, out.decode(), err.decode())
    assert "Traceback" not in ran.err, ran.err
    return ran


async def shown(settings: Settings, merchant_id: str) -> dict[str, Any]:
    ran = await cli(settings, "merchants", "show", merchant_id, "--json")
    assert (ran.code, ran.err) == (0, ""), ran
    value: dict[str, Any] = json.loads(ran.out)
    return value


async def accounts_of(settings: Settings, currencies: list[str], merchant_id: str) -> list[tuple[str, str, str, str]]:
    connection = await connect(settings)
    try:
        rows = await connection.fetch(
            """SELECT account_id, kind, owner_id, currency::text AS currency FROM accounts
               WHERE owner_id = $1 OR (owner_id = 'platform' AND currency = ANY($2::bpchar[]))
               ORDER BY account_id""",
            merchant_id,
            currencies,
        )
    finally:
        await connection.close()
    return [(r["account_id"], r["kind"], r["owner_id"], r["currency"]) for r in rows]


async def test_add_show_update_and_the_refusals(environment: Settings) -> None:
    added = await cli(
        environment, "merchants", "add", "shop-1", "--name", "Shop One",
        "--fee", "EUR:250:25", "--fee", "CHF:290:30:50", "--cycle", "daily 18:00 Europe/Berlin",
    )  # fmt: skip
    # CHF is new to this database: its three platform accounts are opened with the merchant's.
    assert added == Ran(
        0, "added merchant shop-1: accepts CHF, EUR; cycle daily 18:00 Europe/Berlin; 5 accounts opened\n", ""
    )
    first = await shown(environment, "shop-1")
    assert {k: first[k] for k in ("merchant_id", "name", "status", "cycle", "currencies")} == {
        "merchant_id": "shop-1",
        "name": "Shop One",
        "status": "active",
        "cycle": "daily 18:00 Europe/Berlin",
        "currencies": ["CHF", "EUR"],
    }
    assert first["fees"] == [
        {"currency": "CHF", "fee_bps": 290, "fixed_minor": 30, "min_minor": 50},
        {"currency": "EUR", "fee_bps": 250, "fixed_minor": 25, "min_minor": 0},
    ]
    assert first["open_batches"] == []
    assert await accounts_of(environment, ["CHF", "EUR"], "shop-1") == [
        ("merchant:shop-1:pending:CHF", "merchant_pending", "shop-1", "CHF"),
        ("merchant:shop-1:pending:EUR", "merchant_pending", "shop-1", "EUR"),
        ("platform:fees:CHF", "fee_revenue", "platform", "CHF"),
        ("platform:fees:EUR", "fee_revenue", "platform", "EUR"),
        ("platform:funding:CHF", "funding", "platform", "CHF"),
        ("platform:funding:EUR", "funding", "platform", "EUR"),
        ("platform:payouts:CHF", "payout_clearing", "platform", "CHF"),
        ("platform:payouts:EUR", "payout_clearing", "platform", "EUR"),
    ]

    # The same merchant again (fees in another order, the hour written without minutes): nothing to do.
    again = await cli(
        environment, "merchants", "add", "shop-1", "--name", "Shop One",
        "--fee", "CHF:290:30:50", "--fee", "EUR:250:25:0", "--cycle", "daily 18 Europe/Berlin",
    )  # fmt: skip
    assert again == Ran(0, "merchant shop-1 exists as given: nothing changed\n", "")
    # Another body under the same id: refused, saying what is stored, and nothing changes.
    other = await cli(environment, "merchants", "add", "shop-1", "--name", "Shop 1", "--fee", "EUR:250:25")
    assert other == Ran(
        1,
        "",
        "paystream: merchant_id: shop-1 already exists with name 'Shop One', cycle 'daily 18:00 Europe/Berlin',"
        " fees CHF:290:30:50 EUR:250:25:0, not as given: change it with `paystream merchants update`\n",
    )
    assert await shown(environment, "shop-1") == first

    updated = await cli(
        environment, "merchants", "update", "shop-1", "--name", "Shop Uno",
        "--fee", "GBP:100", "--remove-fee", "CHF", "--cycle", "hourly",
    )  # fmt: skip
    assert updated == Ran(
        0,
        "updated merchant shop-1:\n"
        "  name   'Shop One' -> 'Shop Uno'\n"
        "  fees   CHF:290:30:50 EUR:250:25:0 -> EUR:250:25:0 GBP:100:0:0\n"
        "  cycle  daily 18:00 Europe/Berlin -> hourly\n"
        "  (open settlement batches keep their bounds; the new cycle applies from where they end)\n",
        "",
    )
    second = await shown(environment, "shop-1")
    assert (second["name"], second["cycle"], second["currencies"]) == ("Shop Uno", "hourly", ["EUR", "GBP"])
    assert second["created_at"] == first["created_at"] and second["updated_at"] > first["updated_at"]
    # The new currency's pending account is opened; the removed one's stays (it may hold money).
    accounts = [a[0] for a in await accounts_of(environment, [], "shop-1")]
    assert accounts == ["merchant:shop-1:pending:CHF", "merchant:shop-1:pending:EUR", "merchant:shop-1:pending:GBP"]

    unchanged = await cli(environment, "merchants", "update", "shop-1", "--cycle", "hourly", "--fee", "GBP:100:0:0")
    assert unchanged == Ran(0, "merchant shop-1 is already as given: nothing changed\n", "")
    assert (await shown(environment, "shop-1"))["updated_at"] == second["updated_at"]
    back = await cli(environment, "merchants", "update", "shop-1", "--cycle", "default")
    assert back.code == 0 and "  cycle  hourly -> default\n" in back.out
    last_fee = await cli(environment, "merchants", "update", "shop-1", "--remove-fee", "EUR", "--remove-fee", "GBP")
    assert last_fee == Ran(
        2, "", "paystream: error: fee: a merchant needs at least one fee schedule (the currencies it accepts)\n"
    )

    for argv in (["update", "nobody", "--name", "X"], ["suspend", "nobody"], ["resume", "nobody"]):
        missing = await cli(environment, "merchants", *argv)
        assert missing == Ran(
            1, "", "paystream: merchant_id: no merchant nobody: add it with `paystream merchants add`\n"
        )
    assert await cli(environment, "merchants", "show", "nobody") == Ran(
        1, "", "paystream: merchant_id: no merchant nobody\n"
    )


async def test_a_bad_value_is_refused_before_the_database_is_touched(environment: Settings) -> None:
    ran = await cli(
        environment,
        "merchants",
        "add",
        "bad-1",
        "--name",
        "Bad",
        "--fee",
        "EUR:250",
        "--cycle",
        "daily 18 Mars/Olympus",
    )
    assert ran.code == 2 and ran.out == ""
    assert ran.err.splitlines()[-1] == (
        "paystream merchants add: error: argument --cycle: cycle: unknown time zone 'Mars/Olympus':"
        " give an IANA name such as Europe/Berlin, or UTC"
    )
    assert (await cli(environment, "merchants", "show", "bad-1")).code == 1


@pytest.mark.parametrize(
    "argv",
    [["list"], ["show", "m-1"], ["add", "m-1", "--name", "M", "--fee", "EUR:1"], ["suspend", "m-1"]],
    ids=" ".join,
)
async def test_an_unmigrated_database_is_one_line(argv: list[str]) -> None:
    settings = isolated_settings(load_settings(), f"merchnomig{uuid.uuid4().hex[:8]}")
    assert await create_database(settings)
    try:
        ran = await cli(settings, "merchants", *argv)
    finally:
        await drop_database(settings)
    assert ran == Ran(
        2, "", f"paystream: error: database {settings.database_url} is not migrated: run `paystream db migrate`\n"
    )


async def test_suspend_resume_and_list(environment: Settings) -> None:
    assert (await cli(environment, "merchants", "add", "list-1", "--name", "Listed", "--fee", "JPY:300")).code == 0
    assert await cli(environment, "merchants", "suspend", "list-1") == Ran(
        0, "suspended merchant list-1: risk rejects its new payments; open batches still close\n", ""
    )
    assert await cli(environment, "merchants", "suspend", "list-1") == Ran(
        0, "merchant list-1 is already suspended: nothing changed\n", ""
    )
    suspended = json.loads((await cli(environment, "merchants", "list", "--status", "suspended", "--json")).out)
    assert [m["merchant_id"] for m in suspended] == ["list-1"]
    assert await cli(environment, "merchants", "resume", "list-1") == Ran(
        0, "resumed merchant list-1: its payments are accepted again\n", ""
    )
    active = json.loads(
        (await cli(environment, "merchants", "list", "--status", "active", "--limit", "100000", "--json")).out
    )
    assert "list-1" in [m["merchant_id"] for m in active]
    assert all(m["status"] == "active" for m in active)
    table = await cli(environment, "merchants", "list", "--limit", "2")
    lines = table.out.splitlines()
    assert lines[0].split() == ["merchant_id", "status", "cycle", "currencies", "name"]
    assert len(lines) == 3  # the header and two merchants


async def test_import_applies_good_lines_and_reports_every_refused_one(environment: Settings, tmp_path: Path) -> None:
    path = tmp_path / "merchants.csv"
    path.write_text(
        "merchant_id,name,currency,fee_bps,fixed_minor,min_minor,cycle\n"  # 1
        "imp-1,Import One,EUR,250,25,0,daily 18:00 Europe/Berlin\n"  # 2
        "imp-1,Import One,USD,290,30,5,daily 18:00 Europe/Berlin\n"  # 3
        'imp-2,"Two, Ltd",SEK,100,0,0,\n'  # 4
        "imp-3,Three,EUR,100,0,0,seconds 7\n"  # 5: refused with line 6
        "imp-3,Three,EUR,100,0,0,seconds 7\n"  # 6: EUR twice
        "imp-4,Four,EUR,10001,0,0,\n"  # 7
        "shop-x,Someone Else,EUR,1,0,0,\n"  # 8: exists with another body (added below)
    )
    assert (await cli(environment, "merchants", "add", "shop-x", "--name", "Shop X", "--fee", "EUR:1")).code == 0
    refusals = [
        "line 5: merchant_id: not applied: line 6 of merchant imp-3 was refused",
        "line 6: currency: EUR is already on line 5 for this merchant",
        "line 7: fee_bps: must be from 0 to 10,000 (got 10,001)",
        "line 8: merchant_id: shop-x already exists with name 'Shop X', not as given: change it with"
        " `paystream merchants update`",
    ]

    first = await cli(environment, "merchants", "import", str(path))
    assert first.code == 1
    assert first.out == (
        f"imported {path}: 7 lines; 3 applied (2 merchants added, 0 unchanged, 6 accounts opened); 4 refused\n"
    )
    assert [line for line in first.err.splitlines() if line.startswith("line ")] == refusals
    assert "importing" in first.err  # the progress bar, on stderr
    one = await shown(environment, "imp-1")
    assert (one["name"], one["cycle"], one["currencies"]) == ("Import One", "daily 18:00 Europe/Berlin", ["EUR", "USD"])
    assert one["fees"][1] == {"currency": "USD", "fee_bps": 290, "fixed_minor": 30, "min_minor": 5}
    assert (await shown(environment, "imp-2"))["name"] == "Two, Ltd"
    for refused in ("imp-3", "imp-4"):
        assert (await cli(environment, "merchants", "show", refused)).code == 1
    # Six accounts: imp-1's two pending ones, imp-2's, and SEK's three platform accounts (EUR's and USD's exist).
    assert await accounts_of(environment, ["SEK"], "imp-2") == [
        ("merchant:imp-2:pending:SEK", "merchant_pending", "imp-2", "SEK"),
        ("platform:fees:SEK", "fee_revenue", "platform", "SEK"),
        ("platform:funding:SEK", "funding", "platform", "SEK"),
        ("platform:payouts:SEK", "payout_clearing", "platform", "SEK"),
    ]

    # Importing the same file again: the applied lines are unchanged, the same lines refused.
    second = await cli(environment, "merchants", "import", str(path), "--quiet")
    assert second == Ran(
        1,
        f"imported {path}: 7 lines; 3 applied (0 merchants added, 2 unchanged, 0 accounts opened); 4 refused\n",
        "".join(f"{r}\n" for r in refusals),
    )

    fixed = tmp_path / "fixed.csv"
    fixed.write_text(
        "merchant_id,name,currency,fee_bps,fixed_minor,min_minor,cycle\n"
        "imp-3,Three,EUR,100,0,0,seconds 7\n"
        "imp-3,Three,GBP,100,0,0,seconds 7\n"
        "imp-4,Four,EUR,1000,0,0,\n"
    )
    done = await cli(environment, "merchants", "import", str(fixed), "--quiet")
    assert done == Ran(
        0, f"imported {fixed}: 3 lines; 3 applied (2 merchants added, 0 unchanged, 3 accounts opened); 0 refused\n", ""
    )
    assert (await shown(environment, "imp-3"))["cycle"] == "seconds 7"


async def test_import_refuses_a_bad_file_as_a_whole(environment: Settings, tmp_path: Path) -> None:
    path = tmp_path / "bad.csv"
    path.write_text("merchant,name\nx,y\n")
    ran = await cli(environment, "merchants", "import", str(path), "--quiet")
    assert ran == Ran(
        2,
        "",
        "paystream: error: line 1: header: unknown column(s) merchant; missing column(s) merchant_id, currency,"
        " fee_bps, fixed_minor, min_minor (the header is merchant_id,name,currency,fee_bps,fixed_minor,min_minor,"
        "cycle; cycle is optional)\n",
    )
    missing = await cli(environment, "merchants", "import", str(tmp_path / "none.csv"))
    assert missing == Ran(2, "", f"paystream: error: no such file: {tmp_path / 'none.csv'}\n")


async def test_onboarding_the_demos_1000_merchants_is_one_quick_call(environment: Settings) -> None:
    specs = [spec_from_demo(m) for m in build_world(merchant_count=1_000).merchants]
    clash = merchant_spec("shop-1", "Not Shop One", [FeeSchedule("EUR", 1, 0, 0)], None)
    connection = await connect(environment)
    try:
        already = await connection.fetchval("SELECT count(*) FROM merchants WHERE merchant_id LIKE 'merchant-%'")
        started = time.monotonic()
        report = await onboard(connection, [*specs, clash])
        elapsed = time.monotonic() - started
        pending = await connection.fetchval(
            "SELECT count(*) FROM accounts WHERE kind = 'merchant_pending' AND account_id LIKE 'merchant:merchant-%'"
        )
        schedules = await connection.fetchval(
            "SELECT count(*) FROM merchant_fee_schedules WHERE merchant_id LIKE 'merchant-%'"
        )
        again = await onboard(connection, specs)
    finally:
        await connection.close()
    # The environment's demo world (the first 20 of the same 1,000) was seeded already and is unchanged.
    assert already == 20
    assert len(report.added) == 980 and len(report.unchanged) == 20
    assert list(report.refused) == ["shop-1"]
    assert str(report.refused["shop-1"]).startswith("merchant_id: shop-1 already exists with name 'Shop Uno'")
    assert pending == schedules == sum(len(s.fees) for s in specs)
    assert elapsed < ONBOARD_1000_S_MAX
    assert (len(again.added), len(again.unchanged), again.refused, again.accounts_opened) == (0, 1_000, {}, 0)


async def test_a_suspended_merchants_payments_are_rejected_and_its_open_batch_still_closes(
    environment: Settings,
) -> None:
    # A 31-day cycle: its batch cannot close by itself while the test runs.
    added = await cli(
        environment,
        "merchants",
        "add",
        "susp-1",
        "--name",
        "Suspended",
        "--fee",
        "EUR:100",
        "--cycle",
        "seconds 2678400",
    )
    assert added.code == 0, added
    before = payment("susp-before", payer="payer-000004", merchant="susp-1")
    await publish_requests(environment, [before])
    await drain(environment, idle_exit_ms=3_000)

    assert (await cli(environment, "merchants", "suspend", "susp-1")).code == 0
    open_batch = (await shown(environment, "susp-1"))["open_batches"]
    assert [(b["currency"], b["items"]) for b in open_batch] == [("EUR", 1)]
    after = payment("susp-after", payer="payer-000004", merchant="susp-1")
    await publish_requests(environment, [after])
    await drain(environment, idle_exit_ms=3_000)

    connection = await connect(environment)
    try:
        rows = await connection.fetch(
            "SELECT payment_id, status, risk_reasons, batch_id FROM payments WHERE merchant_id = 'susp-1'"
            " ORDER BY payment_id"
        )
        statuses = {r["payment_id"]: (r["status"], list(r["risk_reasons"])) for r in rows}
        assert statuses == {
            "susp-after": ("rejected", ["merchant_suspended: susp-1 is suspended"]),
            "susp-before": ("cleared", []),
        }
        batch = await connection.fetchrow(
            "SELECT batch_id, status, cutoff_at, cycle_end - cycle_start AS length FROM settlement_batches"
            " WHERE merchant_id = 'susp-1'"
        )
        assert (batch["status"], batch["length"]) == ("open", timedelta(days=31))
        assert batch["batch_id"] == next(r["batch_id"] for r in rows if r["payment_id"] == "susp-before")

        # The cut-off passes while the merchant is suspended: the timer's close and publish steps run.
        later = batch["cutoff_at"] + timedelta(seconds=1)
        closed: list[str] = []
        while batch["batch_id"] not in closed:
            step = await close_due_batches(connection, later)
            assert step, "no due batch left, and the suspended merchant's batch is not closed"
            closed.extend(step)
        while (chunk := await next_chunk(connection, later)) is not None:
            await advance_cursors(connection, chunk)
        done = await connection.fetchrow(
            "SELECT b.status, b.item_count, b.net_minor, p.status AS payment, sum(e.amount_minor) AS pending"
            " FROM settlement_batches b JOIN payments p ON p.batch_id = b.batch_id"
            " JOIN entries e ON e.account_id = 'merchant:susp-1:pending:EUR'"
            " WHERE b.batch_id = $1 GROUP BY 1, 2, 3, 4",
            batch["batch_id"],
        )
        merchant_status = await connection.fetchval("SELECT status FROM merchants WHERE merchant_id = 'susp-1'")
        report = await reconcile(connection)
    finally:
        await connection.close()
    assert merchant_status == "suspended"
    assert (done["status"], done["item_count"], done["payment"]) == ("closed", 1, "settled")
    assert done["net_minor"] == before.amount_minor - 10  # 1% of 1,000
    assert done["pending"] == 0  # the payout took the net out of the merchant's pending account
    assert report.ok, [str(v) for v in report.violations]
