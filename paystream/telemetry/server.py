"""One HTTP port per worker process: /metrics, /healthz, /readyz (docs/operations.md).

Served by aiohttp inside the worker's own event loop, not in a thread: an
answer from /healthz proves that loop still runs its tasks. Each run gets its
own CollectorRegistry, so several runs in one process (the tests) never see
each other's metrics.
"""

from __future__ import annotations

import asyncio
import contextlib
import time
from collections.abc import Mapping
from typing import Any

import orjson
import structlog
from aiohttp import web
from prometheus_client import CollectorRegistry
from prometheus_client.exposition import CONTENT_TYPE_PLAIN_0_0_4, generate_latest

from paystream.errors import PaystreamError
from paystream.settings import Settings
from paystream.telemetry.collector import SettlementCounts, StageCollector
from paystream.telemetry.health import OK, KafkaProbe, readiness, stall_reasons

log = structlog.get_logger("paystream.telemetry")

# How long a request in flight may take to finish when the worker stops.
SHUTDOWN_S_MAX = 2.0


class Telemetry:
    """The metrics, health and readiness server of one run of stage loops."""

    def __init__(self, settings: Settings, loops: Mapping[str, Any], pool: Any, *, count_settlement: bool) -> None:
        """`loops` is read at each request: the runner fills it once the port is bound."""
        self.settings = settings
        self.loops = loops
        self.pool = pool
        # Only a process that runs the settlement stage counts its batches (one query every few seconds).
        self.settlement = SettlementCounts() if count_settlement else None
        self.registry = CollectorRegistry(auto_describe=False)
        self.registry.register(StageCollector(loops, pool, self.settlement))
        self.kafka = KafkaProbe(settings)
        self._runner: web.AppRunner | None = None
        self._counting: asyncio.Task[None] | None = None

    def app(self) -> web.Application:
        app = web.Application()
        app.router.add_get("/metrics", self.metrics)
        app.router.add_get("/healthz", self.healthz)
        app.router.add_get("/readyz", self.readyz)
        return app

    async def start(self) -> None:
        host, port = self.settings.metrics_host, self.settings.metrics_port
        # No access log: a scraper every few seconds would drown the worker's own lines.
        runner = web.AppRunner(self.app(), access_log=None, handle_signals=False, shutdown_timeout=SHUTDOWN_S_MAX)
        await runner.setup()
        try:
            await web.TCPSite(runner, host, port).start()
        except OSError as error:
            await runner.cleanup()
            raise PaystreamError(
                f"cannot serve metrics on {host}:{port}: {error} (PAYSTREAM_METRICS_HOST, PAYSTREAM_METRICS_PORT)"
            ) from error
        self._runner = runner
        if self.settlement is not None:
            self._counting = asyncio.create_task(self.settlement.refresh_forever(self.pool), name="settlement-count")
        log.info("metrics, health and readiness served", address=f"http://{host}:{port}", stages=sorted(self.loops))

    async def stop(self) -> None:
        if self._counting is not None:
            self._counting.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._counting
        if self._runner is not None:
            await self._runner.cleanup()
        await self.kafka.close()

    async def metrics(self, _request: web.Request) -> web.Response:
        return web.Response(body=generate_latest(self.registry), headers={"Content-Type": CONTENT_TYPE_PLAIN_0_0_4})

    async def healthz(self, _request: web.Request) -> web.Response:
        now = time.monotonic()
        progress = {name: loop.stats.progress_at for name, loop in self.loops.items()}
        stalled = stall_reasons(progress, now, self.settings.health_stall_s_max)
        if stalled:
            return web.Response(status=503, text="\n".join(stalled) + "\n")
        lines = [f"{name}: ok, progress {now - at:.1f} s ago" for name, at in sorted(progress.items())]
        return web.Response(text="\n".join(lines) + "\n")

    async def readyz(self, _request: web.Request) -> web.Response:
        checks = await readiness(self.loops, self.kafka, self.pool)
        failed = [name for name, result in checks.items() if result != OK]
        body = orjson.dumps({"ready": not failed, "failed": failed, "checks": checks})
        return web.Response(status=503 if failed else 200, body=body, content_type="application/json")
