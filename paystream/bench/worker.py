"""One benchmark worker process: `python -m paystream.bench.worker SYSTEM STAGE`.

Each system runs its four stages as four processes, the way `paystream
worker STAGE` runs in production, so all three use the machine alike.
SIGTERM stops the worker after the batch (or message) in flight.
"""

from __future__ import annotations

import asyncio
import signal
import sys

from paystream.bench.naive import run_naive_stage
from paystream.bench.passthrough import run_passthrough_hop
from paystream.logging import configure_logging
from paystream.runner import run_stages
from paystream.settings import Settings, load_settings

SYSTEMS = ("paystream", "naive", "passthrough")


async def run_worker(settings: Settings, system: str, stage: str) -> None:
    if system == "paystream":
        await run_stages(settings, [stage])  # handles SIGTERM itself
        return
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for signum in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(signum, stop.set)
    if system == "naive":
        await run_naive_stage(settings, stage, stop)
    else:
        await run_passthrough_hop(settings, stage, stop)


def main(argv: list[str]) -> int:
    if len(argv) != 2 or argv[0] not in SYSTEMS:
        print(f"usage: python -m paystream.bench.worker {{{','.join(SYSTEMS)}}} STAGE", file=sys.stderr)
        return 2
    settings = load_settings()
    configure_logging(settings)
    asyncio.run(run_worker(settings, argv[0], argv[1]))
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
