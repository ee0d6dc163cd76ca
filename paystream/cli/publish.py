"""`paystream publish`: send a JSON-lines file of payments and account requests, or generated payments.

Every line is validated against its contract first (`schema` picks it:
payment.requested when absent, or an account request); a bad
line is reported with its number and reason and the good lines still go out.
The exit status is 1 when any line was refused, so scripts notice.
"""

from __future__ import annotations

import argparse
import asyncio
import sys
import time
import uuid
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

from tqdm import tqdm

from paystream.cli.args import SEED, bounded_float, positive_int
from paystream.cli.reach import require_kafka, require_topics
from paystream.demo_data import build_world
from paystream.errors import PaystreamError
from paystream.generator import PaymentGenerator
from paystream.publisher import PaymentPublisher
from paystream.settings import Settings
from schemas.accounts import REQUEST_TYPES, AccountRequest
from schemas.codec import Decoder, Invalid
from schemas.payments import PaymentRequested
from topology.topics import PAYMENTS_REQUESTED

BAD_LINES_SHOWN_MAX = 50
GENERATE_MAX = 10_000_000
RATE_MAX = 1_000_000


def register(sub: Any) -> None:
    parser = sub.add_parser(
        "publish", help="publish payments and account requests from a JSON-lines file, or generated payments"
    )
    source = parser.add_mutually_exclusive_group(required=True)
    source.add_argument("--file", type=Path, help="JSON lines, one payment.requested per line ('-' = stdin)")
    source.add_argument(
        "--generate", type=positive_int(GENERATE_MAX), metavar="N", help="generate N payments from the demo world"
    )
    parser.add_argument("--seed", type=SEED, default=1, help="generator seed (default 1)")
    parser.add_argument("--id-prefix", default=None, help="payment id prefix for generated payments")
    parser.add_argument(
        "--rate", type=bounded_float(0, RATE_MAX), default=0.0, help="payments per second; 0 = as fast as possible"
    )
    parser.add_argument("--quiet", action="store_true", help="no progress bar")
    parser.set_defaults(func=run_publish)


def _file_lines(path: Path) -> Iterator[tuple[int, bytes]]:
    if str(path) == "-":
        yield from enumerate(sys.stdin.buffer, start=1)
        return
    if not path.is_file():
        raise PaystreamError(f"no such file: {path}")
    with path.open("rb") as handle:
        yield from enumerate(handle, start=1)


async def run_publish(args: argparse.Namespace, settings: Settings) -> int:
    if args.file is not None and str(args.file) != "-" and not args.file.is_file():
        raise PaystreamError(f"no such file: {args.file}")
    await require_kafka(settings)
    await require_topics(settings, [PAYMENTS_REQUESTED])
    # A file may hold payments and account requests (open, close, deposit, withdrawal), one per line.
    decoder: Decoder[PaymentRequested | AccountRequest] = Decoder(
        (PaymentRequested, *REQUEST_TYPES.values()), settings.record_bytes_max
    )
    bad = 0
    sent = 0
    started = time.monotonic()
    interval = 1.0 / args.rate if args.rate > 0 else 0.0
    total: int | None = args.generate
    progress = tqdm(total=total, unit="pay", disable=args.quiet, file=sys.stderr, desc="publishing")
    async with PaymentPublisher(settings) as publisher:
        if args.file is not None:
            for number, line in _file_lines(args.file):
                if not line.strip():
                    continue
                decoded = decoder.decode(line.rstrip(b"\r\n"))
                if isinstance(decoded, Invalid):
                    bad += 1
                    if bad <= BAD_LINES_SHOWN_MAX:
                        tqdm.write(f"line {number}: {decoded}", file=sys.stderr)
                    continue
                if isinstance(decoded, PaymentRequested):
                    await publisher.publish(decoded)
                else:
                    await publisher.publish_account_request(decoded)
                sent += 1
                progress.update(1)
                await _pace(started, sent, interval)
        else:
            prefix = args.id_prefix or f"gen-{uuid.uuid4().hex[:8]}"
            generator = PaymentGenerator(build_world(), args.seed, prefix)
            for generated in generator.generate(args.generate, datetime.now(UTC), timedelta(milliseconds=1)):
                await publisher.publish(generated.payment)
                sent += 1
                progress.update(1)
                await _pace(started, sent, interval)
    progress.close()
    elapsed = time.monotonic() - started
    if bad > BAD_LINES_SHOWN_MAX:
        print(f"... and {bad - BAD_LINES_SHOWN_MAX} more bad lines", file=sys.stderr)
    print(
        f"published {sent} {'requests' if args.file is not None else 'payments'} in {elapsed:.1f} s;"
        f" refused {bad} bad lines"
    )
    return 1 if bad else 0


async def _pace(started: float, sent: int, interval: float) -> None:
    if interval <= 0:
        return
    ahead = started + sent * interval - time.monotonic()
    if ahead > 0:
        await asyncio.sleep(ahead)
