"""Run the views app in this process until SIGTERM or Ctrl-C, with paystream's logging.

faust's own `Worker` is not used: it installs its own logging set-up over
paystream's and exits the process itself. The app is a mode service, so it is
started and stopped here, in the command's event loop:

1. check the broker answers and payments.outcomes exists (one line, exit 2 if not);
2. build the app: its topics take the replication factor of payments.outcomes,
   so a cluster's views are as durable as the topic they read;
3. start it: it serves HTTP on `views_host:port` at once (503 until it can
   answer), joins the views group and rebuilds its tables from their changelogs;
4. on SIGTERM or SIGINT, stop it within `shutdown_grace_ms`: the consumer
   commits what it processed, the producer flushes, the web server closes.
   A stop during a rebalance waits for the rebalance (seconds).

A crash inside faust (a service that failed), or a stop longer than the grace
period, exits 2 with one line.
"""

from __future__ import annotations

import asyncio
import logging
import signal
import time
from typing import Any

import structlog
from aiokafka.admin import AIOKafkaAdminClient
from aiokafka.errors import KafkaError

from paystream.cli.reach import KAFKA_REACH_S, kafka_unreachable, require_kafka, require_topics
from paystream.errors import PaystreamError
from paystream.logging import quiet_client_logs
from paystream.settings import Settings
from paystream.views.app import build_app, state_dir
from topology.topics import PAYMENTS_OUTCOMES

log = structlog.get_logger("paystream.views")

EXIT_OK = 0
# faust logs "producer buffer full" each time table writes outrun its producer:
# backpressure, expected in a burst of outcomes. One such line a minute says so
# without a line per burst.
BUFFER_FULL_LOG_INTERVAL_S = 60.0


class ViewsError(PaystreamError):
    """The views app could not start, or a faust service inside it failed and it stopped."""


class _AtMostEvery(logging.Filter):
    """Lets one record through per interval."""

    def __init__(self, interval_s: float) -> None:
        super().__init__()
        self.interval_s = interval_s
        self.last_s = -interval_s

    def filter(self, record: logging.LogRecord) -> bool:
        now_s = time.monotonic()
        if now_s - self.last_s < self.interval_s:
            return False
        self.last_s = now_s
        return True


async def run_views(settings: Settings, port: int) -> int:
    await require_kafka(settings)
    await require_topics(settings, [PAYMENTS_OUTCOMES])
    replication_factor = await _replication_factor(settings, settings.topic(PAYMENTS_OUTCOMES))
    state_dir(settings).mkdir(parents=True, exist_ok=True)
    logging.getLogger("faust.transport.producer").addFilter(_AtMostEvery(BUFFER_FULL_LOG_INTERVAL_S))
    views = build_app(settings, port, replication_factor)
    app = views.app
    app.in_worker = True  # what faust's own Worker sets: the app runs as a worker, not as a client
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for signum in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(signum, stop.set)
    log.info("views starting", app_id=app.conf.id, url=str(app.conf.canonical_url), replication=replication_factor)
    try:
        try:
            await app.start()
        except OSError as error:  # the port is taken, the address not this host's
            raise ViewsError(
                f"the views cannot serve on {settings.views_host}:{port}: {error.strerror or error}"
            ) from error
        await app.wait_first(stop.wait())
    finally:
        for signum in (signal.SIGTERM, signal.SIGINT):
            loop.remove_signal_handler(signum)
        stopped_in_time = await _stop(app, settings)
    if app.crash_reason is not None:
        raise ViewsError(f"the views app crashed: {type(app.crash_reason).__name__}: {app.crash_reason}")
    if not stopped_in_time:
        raise ViewsError(
            f"the views did not stop within PAYSTREAM_SHUTDOWN_GRACE_MS={settings.shutdown_grace_ms}; what they"
            " processed since their last offset commit is counted again when they start"
        )
    log.info("views stopped", app_id=app.conf.id)
    return EXIT_OK


async def _stop(app: Any, settings: Settings) -> bool:
    """Stop the app within the grace period; False when it took longer (it is left as it is)."""
    try:
        await asyncio.wait_for(app.stop(), settings.shutdown_grace_ms / 1000)
    except TimeoutError:
        return False
    return True


async def _replication_factor(settings: Settings, topic: str) -> int:
    """The smallest replica count over the topic's partitions."""
    admin = AIOKafkaAdminClient(
        bootstrap_servers=settings.kafka_bootstrap, request_timeout_ms=int(KAFKA_REACH_S * 1000)
    )
    try:
        with quiet_client_logs():
            await admin.start()
        (described,) = await admin.describe_topics([topic])
    except (KafkaError, OSError, TimeoutError) as error:
        raise kafka_unreachable(settings, error) from error
    finally:
        with quiet_client_logs():
            await admin.close()
    return min(len(partition["replicas"]) for partition in described["partitions"])
