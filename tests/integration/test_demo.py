"""`paystream demo`, small, on an isolated environment: the summary's lifecycle numbers against the database.

The command runs as a user runs it (`--no-stack`: the session's services),
pointed at a fresh database and topic namespace through PAYSTREAM_*
variables. Each lifecycle table of the summary is compared with what the
database says, read another way than the demo reads it (holds instead of
payments, refund journals' legs instead of `refunds`), and each manual
capture with the plan it carried.
"""

from __future__ import annotations

import asyncio
import os
import re
import sys
import uuid
from collections import Counter
from collections.abc import AsyncIterator
from dataclasses import dataclass
from typing import Any

import aiohttp
import pytest

from paystream.db.pool import connect
from paystream.prepare import delete_topics, drop_database, isolated_settings
from paystream.settings import Settings, load_settings

pytestmark = pytest.mark.integration

PAYMENTS = 400
# How a manual capture's hold ends when its plan is carried out.
PLANNED_OUTCOME = {
    "capture_full": "captured in full",
    "capture_partial": "captured in part",
    "void": "voided",
    "expire": "expired",
}
STAGES = ("risk", "funds", "clearing", "settlement")
NEGATIVE_BATCHES_SHOWN = 10  # paystream/demo.py lists at most these
DEMO_TIMEOUT_S = 240.0  # a hang guard: the run takes well under a minute here


@dataclass
class Ran:
    settings: Settings
    output: str
    returncode: int
    run_id: str
    # /metrics as scraped from the URL the demo printed, while it ran ("" if never answered).
    metrics: str = ""


@pytest.fixture(scope="module")
async def ran() -> AsyncIterator[Ran]:
    settings = isolated_settings(load_settings(), f"demo{uuid.uuid4().hex[:8]}")
    environment = {
        **os.environ,
        "PAYSTREAM_NAMESPACE": settings.namespace,
        "PAYSTREAM_DATABASE_URL": settings.database_url,
    }
    process = await asyncio.create_subprocess_exec(
        sys.executable,
        "-m",
        "paystream.cli.main",
        "demo",
        "--no-stack",
        "--payments",
        str(PAYMENTS),
        "--duplicates",
        "10",
        env=environment,
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.STDOUT,
    )
    try:
        text, metrics = await asyncio.wait_for(_read_and_scrape(process), DEMO_TIMEOUT_S)
        found = re.search(r"^run: (demo[0-9a-f]{8}) ", text, re.MULTILINE)
        yield Ran(settings, text, process.returncode or 0, found.group(1) if found else "", metrics)
    finally:
        if process.returncode is None:
            process.kill()
        await drop_database(settings)
        await delete_topics(settings)


async def _read_and_scrape(process: asyncio.subprocess.Process) -> tuple[str, str]:
    """The demo's whole output; once it prints its metrics URL, that URL is scraped while it runs."""
    assert process.stdout is not None
    lines: list[str] = []
    scraping: asyncio.Task[str] | None = None
    while line := (await process.stdout.readline()).decode(errors="replace"):
        lines.append(line)
        url = re.match(r"\s+metrics\s+(http://\S+/metrics)", line)
        if url and scraping is None:
            scraping = asyncio.create_task(_scrape_until_counted(url.group(1)))
    await process.wait()
    return "".join(lines), await scraping if scraping is not None else ""


async def _scrape_until_counted(url: str) -> str:
    """The last /metrics text read before every stage had counted records, or the run ended."""
    text = ""
    async with aiohttp.ClientSession(timeout=aiohttp.ClientTimeout(total=5)) as session:
        for _ in range(int(DEMO_TIMEOUT_S / 0.5)):
            try:
                async with session.get(url) as response:
                    text = await response.text()
            except (aiohttp.ClientError, TimeoutError):
                if text:  # it answered before: the demo ended
                    return text
            if all(f'paystream_stage_records_total{{stage="{s}"}} ' in text for s in STAGES) and all(
                not re.search(rf'paystream_stage_records_total{{stage="{s}"}} 0\.0$', text, re.MULTILINE)
                for s in STAGES
            ):
                return text
            await asyncio.sleep(0.5)
    return text


def section(output: str, heading: str, header: bool = True) -> list[list[str]]:
    """The rows under the summary's line starting with `heading` (after its column header, if any) up to a
    blank line, split on 2+ spaces: labels such as "captured in full" keep their single spaces."""
    lines = output.splitlines()
    start = next(i for i, line in enumerate(lines) if line.startswith(heading))
    rows: list[list[str]] = []
    for line in lines[start + 1 + header :]:
        if not line.strip():
            break
        rows.append(re.split(r"\s{2,}", line.strip()))
    return rows


async def fetch(settings: Settings, query: str, *args: Any) -> list[Any]:
    connection = await connect(settings)
    try:
        return list(await connection.fetch(query, *args))
    finally:
        await connection.close()


def test_the_demo_ran_and_reconcile_passed(ran: Ran) -> None:
    assert ran.returncode == 0, ran.output[-4000:]
    assert ran.run_id, ran.output[-4000:]
    assert ran.output.count("reconcile: PASS") == 1 and "VIOLATION" not in ran.output, ran.output[-4000:]


def test_the_demo_says_where_to_look_and_serves_metrics_while_it_runs(ran: Ran) -> None:
    assert re.search(r"^  metrics   http://127\.0\.0\.1:\d+/metrics", ran.output, re.MULTILINE), ran.output[:500]
    assert "  progress  paystream status" in ran.output
    after = ran.output.split("where to look next:", 1)[1]
    assert "paystream status" in after
    assert "paystream views" in after and "/platform/live" in after and "/merchants/<id>/live" in after
    assert "PAYSTREAM_METRICS_PORT=" in after
    # Every stage had counted records on the demo's own /metrics while it ran.
    for stage in STAGES:
        counted = re.search(rf'^paystream_stage_records_total{{stage="{stage}"}} (\d+)\.0$', ran.metrics, re.MULTILINE)
        assert counted is not None and int(counted.group(1)) > 0, (stage, ran.metrics[:300])


async def test_every_payment_is_terminal_and_the_manual_plans_are_as_published(ran: Ran) -> None:
    statuses = dict(
        await fetch(
            ran.settings, "SELECT status, count(*) FROM payments WHERE payment_id LIKE $1 GROUP BY 1", f"{ran.run_id}-%"
        )
    )
    assert sum(statuses.values()) == PAYMENTS and not {"authorized", "held", "cleared"} & set(statuses), statuses
    assert {"voided", "expired", "settled"} <= set(statuses), statuses
    assert dict((row[0], int(row[1])) for row in section(ran.output, "payments by status", header=False)) == statuses
    plans = dict(
        await fetch(
            ran.settings,
            "SELECT metadata->>'plan', count(*) FROM payments WHERE payment_id LIKE $1"
            " AND capture_mode = 'manual' GROUP BY 1",
            f"{ran.run_id}-%",
        )
    )
    published = re.search(
        r"manual capture: (\d+) payments \((\d+) captures in full, (\d+) captures in part, (\d+) voids,"
        r" (\d+) left to expire\)",
        ran.output,
    )
    assert published, ran.output
    counts = [int(n) for n in published.groups()]
    assert counts[1:] == [plans.get(p, 0) for p in ("capture_full", "capture_partial", "void", "expire")]
    assert counts[0] == sum(plans.values()) and min(counts[1:]) >= 1, (counts, plans)


async def test_the_manual_captures_table_matches_the_holds(ran: Ran) -> None:
    rows = await fetch(
        ran.settings,
        """SELECT p.payment_id, p.currency, p.amount_minor, p.status, p.metadata->>'plan' AS plan,
                  h.status AS hold, h.captured_minor, h.released_minor, (q.request->>'amount_minor')::bigint AS asked
           FROM payments p LEFT JOIN holds h USING (payment_id)
           LEFT JOIN account_requests q ON q.kind = 'capture' AND q.request_id = p.payment_id || '-capture'
           WHERE p.payment_id LIKE $1 AND p.capture_mode = 'manual'""",
        f"{ran.run_id}-%",
    )
    expected: dict[tuple[str, str], list[int]] = {}
    for row in rows:
        if row["hold"] == "captured":
            outcome = "captured in full" if row["captured_minor"] == row["amount_minor"] else "captured in part"
        else:
            outcome = row["hold"] if row["hold"] in ("voided", "expired") else row["status"]
        totals = expected.setdefault((outcome, row["currency"].strip()), [0, 0, 0, 0])
        for i, value in enumerate((1, row["amount_minor"], row["captured_minor"] or 0, row["released_minor"] or 0)):
            totals[i] += value
        if row["hold"] in (None, "declined"):
            continue  # never authorized (risk or funds said no): nothing to carry out
        # Every hold that was placed ended as its payment's plan said.
        assert outcome == PLANNED_OUTCOME[row["plan"]], dict(row)
        if row["hold"] == "captured":
            assert row["captured_minor"] == row["asked"] and row["status"] == "settled", dict(row)
    shown = {(r[0], r[1]): [int(v) for v in r[2:]] for r in section(ran.output, "manual captures")}
    assert shown == expected
    assert {outcome for outcome, _ in shown} >= {"captured in full", "captured in part", "voided", "expired"}


async def test_the_requests_table_matches_what_funds_answered(ran: Ran) -> None:
    rows = await fetch(
        ran.settings,
        """SELECT kind, status, coalesce(split_part(reasons[1], ':', 1), '-') AS reason, count(*) AS n
           FROM account_operations WHERE kind IN ('capture', 'void', 'refund') AND request_id LIKE $1
           GROUP BY 1, 2, 3""",
        f"{ran.run_id}-%",
    )
    asked = await fetch(
        ran.settings,
        "SELECT count(*) FROM account_requests WHERE kind IN ('capture', 'void', 'refund') AND request_id LIKE $1",
        f"{ran.run_id}-%",
    )
    assert sum(r["n"] for r in rows) == asked[0][0]  # every request answered by funds (none rejected by risk)
    shown = {(r[0], r[1], r[2]): int(r[3]) for r in section(ran.output, "capture, void and refund requests")}
    assert shown == {(r["kind"], r["status"], r["reason"]): r["n"] for r in rows}
    # The one over-refund, declined; its payment's partial refund, published before it, went through.
    declined = [k for k in shown if k[0] == "refund" and k[1] == "declined"]
    assert declined == [("refund", "declined", "exceeds_refundable")] and shown[declined[0]] == 1


async def test_the_refunds_table_matches_the_refund_journals(ran: Ran) -> None:
    legs = await fetch(
        ran.settings,
        """SELECT j.currency, count(DISTINCT j.journal_id) AS n,
                  coalesce(sum(e.amount_minor) FILTER (WHERE a.kind = 'customer'), 0) AS refunded,
                  -coalesce(sum(e.amount_minor) FILTER (WHERE e.account_id LIKE 'platform:fees:%'), 0) AS fee_back,
                  -coalesce(sum(e.amount_minor) FILTER (WHERE e.account_id LIKE 'merchant:%'), 0) AS net_back
           FROM journals j JOIN entries e USING (journal_id) JOIN accounts a ON a.account_id = e.account_id
           WHERE j.kind = 'refund' AND j.request_id LIKE $1 GROUP BY 1""",
        f"{ran.run_id}-%",
    )
    payments = await fetch(
        ran.settings,
        """SELECT currency, count(*) AS n, count(*) FILTER (WHERE refunded_minor = gross_minor) AS in_full
           FROM payments WHERE payment_id LIKE $1 AND refunded_minor > 0 GROUP BY 1""",
        f"{ran.run_id}-%",
    )
    by_currency = {p["currency"].strip(): (p["n"], p["in_full"]) for p in payments}
    expected = {}
    for leg in legs:
        currency = leg["currency"].strip()
        expected[currency] = [leg["n"], *by_currency[currency], leg["refunded"], leg["fee_back"], leg["net_back"]]
    shown = {r[0]: [int(v) for v in r[1:]] for r in section(ran.output, "refunds per currency")}
    assert shown == expected and shown
    published = re.search(
        r"refunds of settled payments: (\d+) requests \((\d+) partial, (\d+) full, (\d+) over", ran.output
    )
    assert published, ran.output
    requests, partial, full, over = (int(n) for n in published.groups())
    assert (requests, over) == (partial + full + over, 1) and partial >= 1 and full >= 1
    # Refunds of 2% of the settled payments (the first of them refunded twice: in part, then the over-refund).
    settled = await fetch(
        ran.settings, "SELECT count(*) FROM payments WHERE payment_id LIKE $1 AND status = 'settled'", f"{ran.run_id}-%"
    )
    assert sum(row[0] for row in shown.values()) == partial + full == round(settled[0][0] * 0.02)


async def test_refunds_are_in_closed_batches_and_the_negative_ones_are_shown(ran: Ran) -> None:
    batches = await fetch(
        ran.settings,
        """SELECT b.batch_id, b.status, b.published_at, b.refund_count, b.net_minor, b.merchant_id, b.currency,
                  coalesce((SELECT sum(net_minor) FROM settlement_items i WHERE i.batch_id = b.batch_id), 0)
                  - (SELECT sum(net_minor) FROM settlement_refund_items r WHERE r.batch_id = b.batch_id) AS items_net
           FROM settlement_batches b
           WHERE b.batch_id IN (SELECT batch_id FROM settlement_refund_items WHERE refund_id LIKE $1)""",
        f"{ran.run_id}-%",
    )
    refunds = await fetch(ran.settings, "SELECT count(*) FROM refunds WHERE refund_id LIKE $1", f"{ran.run_id}-%")
    assert sum(b["refund_count"] for b in batches) == refunds[0][0]
    assert all(b["status"] == "closed" and b["published_at"] is not None for b in batches), batches
    assert all(b["net_minor"] == b["items_net"] for b in batches), batches
    negative = [b for b in batches if b["net_minor"] < 0]
    # The refunds came after their payments' batches closed: each is an item of a later batch, of refunds only.
    assert negative, batches
    line = re.search(
        r"^batches with refunds: (\d+); with a negative net \(the merchant owes it\): (\d+)$", ran.output, re.MULTILINE
    )
    assert line and (int(line.group(1)), int(line.group(2))) == (len(batches), len(negative)), ran.output
    most_negative = sorted(negative, key=lambda b: b["net_minor"])[:NEGATIVE_BATCHES_SHOWN]
    heading = "  all of them:" if len(negative) <= NEGATIVE_BATCHES_SHOWN else "  the 10 most negative:"
    shown = section(ran.output, heading)
    assert sorted(int(r[-1]) for r in shown) == [b["net_minor"] for b in most_negative]
    per_merchant: Counter[tuple[str, str]] = Counter((b["merchant_id"], b["currency"].strip()) for b in negative)
    table = {(r[0], r[1]): int(r[5]) for r in section(ran.output, "settlement batches per merchant")}
    assert {k: v for k, v in table.items() if v} == dict(per_merchant)
