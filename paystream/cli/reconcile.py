"""`paystream reconcile`: check every invariant.

Exit status: 0 every invariant holds; 1 at least one is violated (examples are
printed); 2 the books could not be checked: PostgreSQL unreachable, the
database missing, not migrated, or migrated by another version of paystream.
"""

from __future__ import annotations

import argparse
from typing import Any

from paystream.db.pool import connect
from paystream.reconcile import INVARIANTS, reconcile
from paystream.settings import Settings
from paystream.tables import to_json


def register(sub: Any) -> None:
    parser = sub.add_parser(
        "reconcile",
        help="check every money invariant; exit 0 all hold, 1 a violation, 2 cannot check",
        description="Exit status: 0 every invariant holds, 1 a violation, 2 cannot check (unreachable, not migrated).",
    )
    parser.add_argument("--json", action="store_true")
    parser.set_defaults(func=run)


async def run(args: argparse.Namespace, settings: Settings) -> int:
    connection = await connect(settings, migrated=True)
    try:
        report = await reconcile(connection, hold_open_s_max=settings.hold_open_s_max)
    finally:
        await connection.close()
    failed = {v.invariant: v for v in report.violations}
    if args.json:
        print(to_json({"ok": report.ok, "checked": report.checked,
                       "violations": [{"invariant": v.invariant, "total": v.total, "examples": v.examples}
                                      for v in report.violations]}))  # fmt: skip
        return 0 if report.ok else 1
    for invariant in INVARIANTS:
        violation = failed.get(invariant.name)
        state = "ok" if violation is None else f"{violation.total} VIOLATIONS"
        print(f"{state:>14}  {invariant.name}: {invariant.description}")
        if violation is not None:
            for example in violation.examples:
                print("                  " + ", ".join(f"{k}={v}" for k, v in example.items()))
    print("reconcile: " + ("PASS" if report.ok else "FAIL"))
    return 0 if report.ok else 1
