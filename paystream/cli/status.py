"""`paystream status [--json] [--watch SECONDS]`: each stage's consumers, lag, last batch, throughput, dead letters.

Reads only (the broker's group descriptions and offsets, PostgreSQL's offset
rows and dead letters): safe to run against a running pipeline, as often as
wanted. `--watch` keeps its connections and refreshes until Ctrl-C (or
SIGTERM), which ends it quietly with exit 0.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import signal
import sys
from typing import Any

import orjson

from paystream.cli.args import bounded_float
from paystream.settings import Settings
from paystream.status.collect import StatusReader
from paystream.status.model import Snapshot
from paystream.status.render import render_json, render_text, snapshot_json

WATCH_S_MIN = 0.5
WATCH_S_MAX = 3_600.0
# ANSI: cursor home, clear the screen. Only on a terminal: a file or a pipe gets each refresh after the last.
CLEAR_SCREEN = "\x1b[H\x1b[2J"


def register(sub: Any) -> None:
    parser = sub.add_parser(
        "status", help="per stage: consumers, lag per partition, last batch, throughput, dead letters"
    )
    parser.add_argument("--json", action="store_true", help="machine-readable, stable keys (one line per refresh)")
    parser.add_argument(
        "--watch",
        type=bounded_float(WATCH_S_MIN, WATCH_S_MAX),
        default=None,
        metavar="SECONDS",
        help="refresh every SECONDS until Ctrl-C",
    )
    parser.set_defaults(func=show_status)


async def show_status(args: argparse.Namespace, settings: Settings) -> int:
    async with StatusReader(settings) as reader:
        if args.watch is None:
            snapshot = await reader.snapshot()
            print(render_json(snapshot) if args.json else render_text(snapshot), flush=True)
            return 0
        await watch(reader, args.watch, args.json)
    return 0


async def watch(reader: StatusReader, interval_s: float, as_json: bool) -> None:
    """Print a snapshot every `interval_s` until SIGINT or SIGTERM; a signal during a read ends after it."""
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    handled = []
    for signum in (signal.SIGINT, signal.SIGTERM):
        # Not the main thread (a test calling this): the caller stops it by cancelling.
        with contextlib.suppress(NotImplementedError, RuntimeError):
            loop.add_signal_handler(signum, stop.set)
            handled.append(signum)
    clear = not as_json and sys.stdout.isatty()
    refreshes = 0
    try:
        while not stop.is_set():
            snapshot = await reader.snapshot()
            sys.stdout.write(_refresh(snapshot, as_json, clear, refreshes))
            sys.stdout.flush()
            refreshes += 1
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(stop.wait(), interval_s)
    finally:
        for signum in handled:
            loop.remove_signal_handler(signum)


def _refresh(snapshot: Snapshot, as_json: bool, clear: bool, refreshes: int) -> str:
    """One refresh's output: JSON Lines for machines; for people the screen cleared, or a blank line between."""
    if as_json:
        return orjson.dumps(snapshot_json(snapshot)).decode() + "\n"
    if clear:
        return CLEAR_SCREEN + render_text(snapshot) + "\n"
    return ("\n" if refreshes else "") + render_text(snapshot) + "\n"
