"""/readyz while the local stack's PostgreSQL is stopped: 503 naming the database, then ready again once it is back.

It stops the shared PostgreSQL server for a few seconds (hence tests/chaos):
other tests running at that moment ride it out with their retries or fail
with a connection error. The server is started again whatever happens here.
Only the local stack's own server is touched (`uses_local_stack`).
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator

import orjson
import pytest

from paystream.prepare import drop_database
from paystream.runner import run_stages
from paystream.settings import Settings
from paystream.stack import postgres
from paystream.stack.services import uses_local_stack
from tests.support.pipeline import fresh_environment
from tests.support.telemetry import free_port, get, until

pytestmark = [pytest.mark.integration, pytest.mark.chaos]

READY_S_MAX = 120.0
NOT_READY_S_MAX = 60.0
STOP_S_MAX = 60.0


@pytest.fixture
async def environment() -> AsyncIterator[Settings]:
    settings = await fresh_environment("ready")
    if not uses_local_stack(settings):
        pytest.skip("PostgreSQL is not the local stack's: this test does not stop servers it does not own")
    yield settings.with_overrides(metrics_port=free_port())
    await postgres.start(settings)  # idempotent: a no-op when it runs
    await drop_database(settings)


async def test_readyz_names_postgresql_while_it_is_stopped_and_recovers(environment: Settings) -> None:
    port = environment.metrics_port
    stop = asyncio.Event()
    run = asyncio.create_task(run_stages(environment, ["risk"], stop=stop))
    try:
        await until(lambda: get(port, "/readyz"), lambda r: r[0] == 200, "/readyz 200", READY_S_MAX, run)
        try:
            await asyncio.to_thread(postgres.stop, environment, "fast")
            _, _, body = await until(
                lambda: get(port, "/readyz"), lambda r: r[0] == 503, "/readyz 503", NOT_READY_S_MAX, run
            )
            answer = orjson.loads(body)
            assert (answer["ready"], answer["failed"]) == (False, ["postgres"]), answer
            assert answer["checks"]["kafka"] == answer["checks"]["stage:risk"] == "ok"
            assert answer["checks"]["postgres"] != "ok"
            # The stage loop itself goes on (no record needs the database now): still healthy.
            health_status, _, health = await get(port, "/healthz")
            assert health_status == 200, health
        finally:
            await postgres.start(environment)
        _, _, body = await until(
            lambda: get(port, "/readyz"), lambda r: r[0] == 200, "/readyz 200 again", READY_S_MAX, run
        )
        assert orjson.loads(body)["failed"] == []
    finally:
        stop.set()
        await asyncio.wait_for(run, STOP_S_MAX)
