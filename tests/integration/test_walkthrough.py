"""docs/walkthrough.md, run as written: every `sh` block, in order, in one shell, on an isolated environment.

Only the lines that install or start the shared services are left out (the
test session has them running); the test checks that those are exactly the
lines skipped, so a command added to the page is a command tested. The
environment is the page's own, pointed at a fresh database and topic
namespace through PAYSTREAM_* variables.
"""

from __future__ import annotations

import asyncio
import os
import re
import sys
import uuid
from collections.abc import AsyncIterator
from dataclasses import dataclass
from pathlib import Path

import pytest

from paystream.prepare import create_database, delete_topics, drop_database, isolated_settings
from paystream.settings import REPO_ROOT, Settings, load_settings

pytestmark = pytest.mark.integration

PAGE = REPO_ROOT / "docs" / "walkthrough.md"
SKIPPED = {
    "make venv                       # .venv with paystream and its dependencies",
    ". .venv/bin/activate",
    "paystream stack up              # a local Kafka broker and PostgreSQL server (no Docker)",
}
SCRIPT_TIMEOUT_S = 600.0  # a hang guard: reaching it fails the test


def sh_blocks(text: str) -> list[str]:
    return re.findall(r"```sh\n(.*?)```", text, flags=re.DOTALL)


@dataclass
class Ran:
    settings: Settings
    output: str
    returncode: int


@pytest.fixture(scope="module")
async def ran(tmp_path_factory: pytest.TempPathFactory) -> AsyncIterator[Ran]:
    settings = isolated_settings(load_settings(), f"walk{uuid.uuid4().hex[:8]}")
    await create_database(settings)
    lines = [line for block in sh_blocks(PAGE.read_text("utf-8")) for line in block.splitlines()]
    assert set(lines) >= SKIPPED, "the page no longer starts the services as the test expects"
    script = "\n".join(["set -euo pipefail", *(line for line in lines if line not in SKIPPED)])
    environment = {
        **os.environ,
        "PATH": f"{Path(sys.executable).parent}:{os.environ['PATH']}",
        "PAYSTREAM_NAMESPACE": settings.namespace,
        "PAYSTREAM_DATABASE_URL": settings.database_url,
    }
    process = await asyncio.create_subprocess_exec(
        "bash", "-c", script, cwd=tmp_path_factory.mktemp("walkthrough"), env=environment,
        stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.STDOUT,
    )  # fmt: skip
    try:
        output, _ = await asyncio.wait_for(process.communicate(), SCRIPT_TIMEOUT_S)
        yield Ran(settings, output.decode(errors="replace"), process.returncode or 0)
    finally:
        if process.returncode is None:
            process.kill()
        await drop_database(settings)
        await delete_topics(settings)


def test_every_command_of_the_page_succeeds(ran: Ran) -> None:
    assert ran.returncode == 0, ran.output[-4000:]


def test_the_account_was_opened_funded_paid_from_paid_out_and_closed(ran: Ran) -> None:
    out = ran.output
    # paystream follow accounts: kind, request id, account, status, amount, currency, reasons.
    for kind, request_id in (("account.open", "open-alice"), ("deposit", "topup-1"), ("withdrawal", "payout-1"),
                             ("account.close", "close-alice")):  # fmt: skip
        assert re.search(rf"^{re.escape(kind)}\s+{request_id}\s+alice\s+succeeded\b", out, re.MULTILINE), (kind, out)
    shows = re.findall(r"^balance\s+(\d+)\s+held\s+(\d+)", out, re.MULTILINE)
    assert shows == [("8750", "0"), ("0", "0")], out
    assert re.search(r"^account\s+alice \(customer, closed, EUR\)", out, re.MULTILINE), out


def test_the_payment_settled_and_reconcile_passed(ran: Ran) -> None:
    out = ran.output
    assert re.search(r"^payment\s+order-1001\s+status: SETTLED$", out, re.MULTILINE), out
    assert re.search(r"^cleared\s+at .*gross 1250\s+fee 61\b", out, re.MULTILINE), out
    assert out.count("reconcile: PASS") == 1 and "reconcile: FAIL" not in out, out
