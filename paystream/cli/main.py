"""The `paystream` command line: one entry point, one module per command family.

Each module in COMMAND_MODULES exposes `register(subparsers)` and sets a
handler `func(args, settings) -> int` on its parsers. Operating errors print
one line and exit 2; a programmer error still crashes with its traceback.

Exit status: 0 done; 1 the answer is no (a reconcile violation, refused input
lines, topology drift, no such payment or account); 2 an operating error: a
bad argument or setting, a service unreachable, a database not migrated;
130 interrupted.

The client libraries' errors an operator can meet are translated here, once
for every command: a missing table or column (the database is not migrated,
or behind this code) and a Kafka connection that fails.
"""

from __future__ import annotations

import argparse
import asyncio
import importlib
import inspect
import sys
from collections.abc import Awaitable, Sequence
from typing import Any

import asyncpg
from aiokafka.errors import KafkaConnectionError

from paystream.cli.reach import kafka_unreachable
from paystream.db.migrate import applied_versions, schema_error
from paystream.db.pool import connect, redacted
from paystream.errors import PaystreamError
from paystream.logging import configure_logging
from paystream.settings import Settings, load_settings

COMMAND_MODULES = (
    "paystream.cli.stack",
    "paystream.cli.topology",
    "paystream.cli.db",
    "paystream.cli.workers",
    "paystream.cli.status",
    "paystream.cli.accounts",
    "paystream.cli.merchants",
    "paystream.cli.risk",
    "paystream.cli.publish",
    "paystream.cli.inspect",
    "paystream.cli.reconcile",
    "paystream.cli.demo",
    "paystream.cli.chaos",
    "paystream.cli.follow",
    "paystream.cli.loadtest",
    "paystream.cli.bench",
    "paystream.cli.replay",
    "paystream.cli.views",
)

EXIT_OPERATING_ERROR = 2
EXIT_INTERRUPTED = 130


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="paystream",
        description="paystream: payment pipeline on Kafka and PostgreSQL",
    )
    sub = parser.add_subparsers(dest="command", metavar="COMMAND", required=True)
    for module_name in COMMAND_MODULES:
        try:
            module = importlib.import_module(module_name)
        except ModuleNotFoundError as missing:
            if missing.name != module_name:
                raise
            continue
        module.register(sub)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    try:
        settings = load_settings()
        configure_logging(settings)
        result = args.func(args, settings)
        if inspect.isawaitable(result):
            result = asyncio.run(_translated(result, settings))
        return int(result or 0)
    except PaystreamError as error:
        print(f"paystream: error: {error}", file=sys.stderr)
        return EXIT_OPERATING_ERROR
    except KeyboardInterrupt:
        print("paystream: interrupted", file=sys.stderr)
        return EXIT_INTERRUPTED


async def _translated(command: Awaitable[Any], settings: Settings) -> Any:
    """Await a command; the database and broker errors an operator can meet become one-line PaystreamErrors."""
    try:
        return await command
    except (asyncpg.UndefinedTableError, asyncpg.UndefinedColumnError) as error:
        raise schema_error(redacted(settings.database_url), await _applied_or_none(settings), error) from error
    except KafkaConnectionError as error:
        raise kafka_unreachable(settings, error) from error


async def _applied_or_none(settings: Settings) -> list[int] | None:
    """How far the database is migrated, or None when that cannot be read either."""
    try:
        connection = await connect(settings)
    except PaystreamError:
        return None
    try:
        return await applied_versions(connection)
    except (asyncpg.PostgresError, OSError):
        return None
    finally:
        await connection.close()


if __name__ == "__main__":
    sys.exit(main())
