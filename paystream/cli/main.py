"""The `paystream` command line: one entry point, one module per command family.

Each module in COMMAND_MODULES exposes `register(subparsers)` and sets a
handler `func(args, settings) -> int` on its parsers. Operating errors print
one line and exit 2; a programmer error still crashes with its traceback.
"""

from __future__ import annotations

import argparse
import asyncio
import importlib
import inspect
import sys
from collections.abc import Sequence

from paystream.errors import PaystreamError
from paystream.logging import configure_logging
from paystream.settings import load_settings

COMMAND_MODULES = (
    "paystream.cli.stack",
    "paystream.cli.topology",
    "paystream.cli.db",
    "paystream.cli.workers",
    "paystream.cli.accounts",
    "paystream.cli.publish",
    "paystream.cli.inspect",
    "paystream.cli.reconcile",
    "paystream.cli.demo",
    "paystream.cli.chaos",
    "paystream.cli.follow",
    "paystream.cli.loadtest",
    "paystream.cli.bench",
    "paystream.cli.replay",
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
            result = asyncio.run(result)  # type: ignore[arg-type]
        return int(result or 0)
    except PaystreamError as error:
        print(f"paystream: error: {error}", file=sys.stderr)
        return EXIT_OPERATING_ERROR
    except KeyboardInterrupt:
        print("paystream: interrupted", file=sys.stderr)
        return EXIT_INTERRUPTED


if __name__ == "__main__":
    sys.exit(main())
