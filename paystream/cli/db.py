"""`paystream db migrate`: bring the database schema up to date."""

from __future__ import annotations

import argparse
from typing import Any

from paystream.db.migrate import migrate
from paystream.db.pool import connect
from paystream.settings import Settings


def register(sub: Any) -> None:
    parser: argparse.ArgumentParser = sub.add_parser("db", help="database schema")
    db_sub = parser.add_subparsers(dest="db_command", metavar="ACTION", required=True)
    migrate_parser = db_sub.add_parser("migrate", help="apply pending migrations (idempotent)")
    migrate_parser.set_defaults(func=run_migrate)


async def run_migrate(args: argparse.Namespace, settings: Settings) -> int:
    connection = await connect(settings)
    try:
        applied = await migrate(connection)
    finally:
        await connection.close()
    if applied:
        for migration in applied:
            print(f"applied {migration.version:03d}_{migration.name}")
    else:
        print("database schema is up to date")
    return 0
