"""Helpers for tests of the metrics, health and readiness server: a free port, GET, parse a scrape, poll."""

from __future__ import annotations

import asyncio
import socket
import time
from collections.abc import Awaitable, Callable
from typing import Any, TypeVar

import aiohttp
from aiokafka import AIOKafkaConsumer
from prometheus_client.parser import text_string_to_metric_families

from paystream.settings import Settings
from paystream.topic_scan import topic_partitions

T = TypeVar("T")
REQUEST_S_MAX = 10.0
# A sample: (name, sorted label pairs).
Sample = tuple[str, tuple[tuple[str, str], ...]]


def free_port() -> int:
    """A port nothing listens on now (the OS picks it), for a run's metrics server."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as probe:
        probe.bind(("127.0.0.1", 0))
        port: int = probe.getsockname()[1]
        return port


async def get(port: int, path: str) -> tuple[int, str, str]:
    """(status, content type, body) of GET http://127.0.0.1:<port><path>."""
    timeout = aiohttp.ClientTimeout(total=REQUEST_S_MAX)
    async with (
        aiohttp.ClientSession(timeout=timeout) as session,
        session.get(f"http://127.0.0.1:{port}{path}") as response,
    ):
        return response.status, response.headers.get("Content-Type", ""), await response.text()


def parse(text: str) -> dict[Sample, float]:
    """Every sample of a Prometheus text scrape, by name and labels."""
    samples = {}
    for family in text_string_to_metric_families(text):
        for sample in family.samples:
            samples[(sample.name, tuple(sorted(sample.labels.items())))] = sample.value
    return samples


async def scrape(port: int) -> dict[Sample, float]:
    status, _, body = await get(port, "/metrics")
    assert status == 200, body
    return parse(body)


def value(samples: dict[Sample, float], name: str, **labels: str) -> float:
    key = (name, tuple(sorted(labels.items())))
    assert key in samples, f"{name}{labels} not in the scrape: {sorted(n for n, _ in samples if n.startswith(name))}"
    return samples[key]


def labelled(samples: dict[Sample, float], name: str, **labels: str) -> dict[tuple[tuple[str, str], ...], float]:
    """Samples of `name` whose labels include `labels`."""
    wanted = set(labels.items())
    return {key: v for (n, key), v in samples.items() if n == name and wanted <= set(key)}


async def until(
    probe: Callable[[], Awaitable[T]],
    done: Callable[[T], bool],
    what: str,
    timeout_s: float,
    running: asyncio.Task[Any] | None = None,
) -> T:
    """Poll `probe` until `done` says yes; at the deadline fail naming `what` and the last answer.

    With `running` (the run serving the endpoint), fail at once if it ended: its error says why.
    """
    deadline = time.monotonic() + timeout_s
    last: object = None
    while True:
        if running is not None and running.done():
            raise AssertionError(f"the run ended before {what}: {running}")
        try:
            answer = await probe()
        except (aiohttp.ClientError, OSError) as error:
            last = f"{type(error).__name__}: {error}"  # the server is not up yet, or restarting
        else:
            if done(answer):
                return answer
            last = answer
        if time.monotonic() > deadline:
            raise AssertionError(f"{what} not within {timeout_s:g} s; last answer: {str(last)[:2000]}")
        await asyncio.sleep(0.2)


async def end_offsets_total(settings: Settings, topic: str) -> tuple[int, int]:
    """(records ever appended, partitions) of a namespaced topic: its end offsets summed (no compaction here)."""
    consumer = AIOKafkaConsumer(bootstrap_servers=settings.kafka_bootstrap, enable_auto_commit=False)
    await consumer.start()
    try:
        tps = await topic_partitions(consumer, topic)
        ends = await consumer.end_offsets(tps)
        return sum(ends.values()), len(tps)
    finally:
        await consumer.stop()
