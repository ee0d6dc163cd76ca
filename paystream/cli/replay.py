"""`paystream replay record|play|copy`: record a topic range to a file, play it back, or copy topic to topic.

Every argument is checked before anything is read or sent, and a bad one is
one line and exit status 2. docs/replay.md describes the file format, the
pacing and the id rewriting rule.
"""

from __future__ import annotations

import argparse
import sys
import time
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from tqdm import tqdm

from paystream.cli.reach import require_kafka
from paystream.errors import PaystreamError
from paystream.replay.options import declared_topic, parse_rate_cap, parse_speed, parse_window
from paystream.replay.player import Pace, PlayReport, play
from paystream.replay.recording import Recording, RecordingSummary, RecordingWriter, new_header
from paystream.replay.rewrite import IdRewriter, check_salt, new_salt
from paystream.replay.source import TopicSource
from paystream.settings import Settings
from topology.topics import PAYMENTS_REQUESTED

SPEED_HELP = "divide the recorded gaps by X (2 = twice as fast); max or 0 = as fast as possible (default 1)"


def register(sub: Any) -> None:
    parser = sub.add_parser("replay", help="record a topic range to a file; play it back or copy topic to topic")
    commands = parser.add_subparsers(dest="replay_command", metavar="COMMAND", required=True)

    record = commands.add_parser("record", help="write a topic's records in a time window to a compressed file")
    record.add_argument("--topic", required=True, help="declared topic name, e.g. payments.requested")
    record.add_argument("--out", required=True, type=Path, metavar="FILE", help="the recording (gzip JSON lines)")
    _window_arguments(record)
    record.add_argument("--quiet", action="store_true", help="no progress bar")
    record.set_defaults(func=run_record)

    player = commands.add_parser("play", help="republish a recording at the recorded pace, scaled")
    player.add_argument("file", type=Path, metavar="FILE")
    player.add_argument("--topic", default=None, help="declared topic to play into (default: the recorded one)")
    _play_arguments(player)
    player.set_defaults(func=run_play)

    copy = commands.add_parser("copy", help="republish a topic range to a topic without a file")
    copy.add_argument("--from-topic", required=True, help="declared topic to read")
    copy.add_argument("--to-topic", default=None, help="declared topic to write (default: --from-topic)")
    copy.add_argument(
        "--from-namespace", default=None, help="topic prefix to read from (default: PAYSTREAM_NAMESPACE, as written)"
    )
    _window_arguments(copy)
    _play_arguments(copy)
    copy.set_defaults(func=run_copy)


def _window_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--since", default=None, metavar="ISO8601", help="keep records stamped at or after this")
    parser.add_argument("--until", default=None, metavar="ISO8601", help="keep records stamped before this")


def _play_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--speed", default="1", metavar="X", help=SPEED_HELP)
    parser.add_argument("--rate-cap", default=None, metavar="N", help="never more than N records per second")
    parser.add_argument(
        "--rewrite-ids", action="store_true", help="fresh payment ids and created_at, so the replay is new traffic"
    )
    parser.add_argument("--id-salt", default=None, help="salt of the new ids (default: a random one per run)")
    parser.add_argument("--quiet", action="store_true", help="no progress bar")


async def run_record(args: argparse.Namespace, settings: Settings) -> int:
    topic = declared_topic(args.topic)
    window = parse_window(args.since, args.until)
    started = time.monotonic()
    header = new_header(topic, settings.topic(topic), window.since_ms, window.until_ms)
    await require_kafka(settings)
    async with TopicSource(settings, settings.topic(topic), window, "paystream-replay-record") as source:
        bar = tqdm(total=source.records_to_read, unit="rec", desc="reading", disable=args.quiet, file=sys.stderr)
        with bar, RecordingWriter(args.out, header) as writer:
            async for record in source.records(bar):
                writer.write(record)
        read = source.records_to_read
    summary = writer.summary()
    print(
        f"recorded {summary.records} of {read} records read from {header.source_topic} into {args.out}"
        f" ({_size(args.out.stat().st_size)}): {_span(summary)}, in {time.monotonic() - started:.1f} s"
    )
    return 0


async def run_play(args: argparse.Namespace, settings: Settings) -> int:
    recording = Recording(args.file)
    topic = declared_topic(args.topic or recording.header.topic)
    pace = Pace(parse_speed(args.speed), parse_rate_cap(args.rate_cap))
    rewriter = _rewriter(args, recording.header.topic, settings)
    summary = recording.verify()
    await require_kafka(settings)
    with tqdm(total=summary.records, unit="rec", desc="playing", disable=args.quiet, file=sys.stderr) as bar:
        report = await play(settings, settings.topic(topic), recording.records(), pace, rewriter, bar)
    print(_play_line(report, rewriter))
    return 0


async def run_copy(args: argparse.Namespace, settings: Settings) -> int:
    from_topic = declared_topic(args.from_topic)
    to_topic = declared_topic(args.to_topic or args.from_topic)
    window = parse_window(args.since, args.until)
    pace = Pace(parse_speed(args.speed), parse_rate_cap(args.rate_cap))
    rewriter = _rewriter(args, from_topic, settings)
    namespace = settings.namespace if args.from_namespace is None else args.from_namespace
    source_topic = f"{namespace}{from_topic}"
    await require_kafka(settings)
    async with TopicSource(settings, source_topic, window, "paystream-replay-copy") as source:
        with tqdm(total=source.records_to_read, unit="rec", desc="copying", disable=args.quiet, file=sys.stderr) as bar:
            report = await play(settings, settings.topic(to_topic), source.records(bar), pace, rewriter)
    print(f"read {source.records_to_read} records from {source.topic}; " + _play_line(report, rewriter))
    return 0


def _rewriter(args: argparse.Namespace, recorded_topic: str, settings: Settings) -> IdRewriter | None:
    if not args.rewrite_ids:
        if args.id_salt is not None:
            raise PaystreamError("--id-salt needs --rewrite-ids")
        return None
    if recorded_topic != PAYMENTS_REQUESTED:
        raise PaystreamError(f"--rewrite-ids applies to {PAYMENTS_REQUESTED} records; these are from {recorded_topic}")
    salt = new_salt() if args.id_salt is None else check_salt(args.id_salt)
    return IdRewriter(salt, settings.record_bytes_max)


def _play_line(report: PlayReport, rewriter: IdRewriter | None) -> str:
    line = f"sent {report.sent} records to {report.topic} in {report.wall_s:.2f} s ({report.rate_per_s:.1f}/s)"
    if rewriter is None:
        line += "; payment ids kept"
    else:
        line += (
            f"; ids rewritten with --id-salt {rewriter.salt}: {report.rewritten} rewritten,"
            f" {report.untouched} untouched (not a valid payment.requested)"
        )
    if report.skipped:
        line += f"; skipped {report.skipped} with neither key nor value"
    return line


def _span(summary: RecordingSummary) -> str:
    if summary.first_ms is None or summary.last_ms is None:
        return "no records in the window"
    first = datetime.fromtimestamp(summary.first_ms / 1000, UTC).isoformat(timespec="milliseconds")
    last = datetime.fromtimestamp(summary.last_ms / 1000, UTC).isoformat(timespec="milliseconds")
    return f"timestamps {first} .. {last} ({summary.span_ms / 1000:.1f} s)"


def _size(size_bytes: int) -> str:
    if size_bytes < 1024 * 1024:
        return f"{size_bytes / 1024:.1f} KiB"
    return f"{size_bytes / 1024 / 1024:.1f} MiB"
