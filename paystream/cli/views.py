"""`paystream views`: live windowed views of payment outcomes over HTTP (docs/views.md)."""

from __future__ import annotations

import argparse
from typing import Any

from paystream.settings import Settings
from paystream.views.worker import run_views


def _port(raw: str) -> int:
    if not raw.isdigit() or not 1 <= int(raw) <= 65_535:
        raise argparse.ArgumentTypeError(f"must be a TCP port from 1 to 65535, got {raw!r}")
    return int(raw)


def register(sub: Any) -> None:
    parser = sub.add_parser(
        "views",
        help="serve live per-merchant and platform views of payment outcomes (approximate; faust)",
        description="Run one views worker: GET /merchants/{merchant_id}/live and /platform/live."
        " Run several with the same namespace on other ports to share the work; each answers for every key.",
    )
    parser.add_argument("--port", type=_port, default=None, help="HTTP port (default: PAYSTREAM_VIEWS_PORT)")
    parser.set_defaults(func=run)


async def run(args: argparse.Namespace, settings: Settings) -> int:
    return await run_views(settings, args.port if args.port is not None else settings.views_port)
