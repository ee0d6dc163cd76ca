"""Metrics on during a benchmark run: a port per worker, scraped as Prometheus would.

`make bench` measures paystream with its metrics endpoint off and on (the
`paystream+metrics` system): every worker serves `/metrics`, and a scraper
fetches each one every SCRAPE_INTERVAL_S, as a Prometheus server would, so
the figure includes both the counting and the serving.
"""

from __future__ import annotations

import asyncio
import contextlib
import socket

import aiohttp

# Prometheus' default is 15 s (a minute in many set-ups): 5 s charges the workers more than usual.
SCRAPE_INTERVAL_S = 5.0


def free_port() -> int:
    """A TCP port nobody listens on right now (the worker binds it a moment later)."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as probe:
        probe.bind(("127.0.0.1", 0))
        port: int = probe.getsockname()[1]
        return port


class Scraper:
    """Fetches /metrics from every port until stopped; counts the successful scrapes."""

    def __init__(self, ports: list[int]) -> None:
        self.ports = ports
        self.scrapes = 0
        self.failures = 0
        self._stop = asyncio.Event()
        self._task: asyncio.Task[None] | None = None

    def start(self) -> None:
        self._task = asyncio.create_task(self._run())

    async def stop(self) -> None:
        """Stop scraping after one last round, so even a run shorter than the interval is scraped."""
        self._stop.set()
        if self._task is not None:
            await self._task

    async def _run(self) -> None:
        timeout = aiohttp.ClientTimeout(total=SCRAPE_INTERVAL_S)
        async with aiohttp.ClientSession(timeout=timeout) as session:
            while True:
                await self._round(session)
                if self._stop.is_set():
                    return
                with contextlib.suppress(TimeoutError):
                    await asyncio.wait_for(self._stop.wait(), SCRAPE_INTERVAL_S)

    async def _round(self, session: aiohttp.ClientSession) -> None:
        for port in self.ports:
            try:
                async with session.get(f"http://127.0.0.1:{port}/metrics") as response:
                    await response.read()
                    if response.status == 200:
                        self.scrapes += 1
                    else:
                        self.failures += 1
            except (aiohttp.ClientError, TimeoutError):
                # A worker still starting: the next round finds it.
                self.failures += 1
