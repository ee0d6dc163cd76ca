"""Shared test set-up: tests under tests/integration and tests/chaos need the real services.

Each such test module builds its own isolated environment (its own topic
namespace and its own database, see tests/support/pipeline.py), so tests never
see each other's data. The services themselves come from PAYSTREAM_* settings:
the local stack by default (`paystream stack up`, or `make test` starts it).
"""

from __future__ import annotations

import asyncio
from pathlib import Path
from typing import Any

import pytest

from paystream.settings import load_settings
from paystream.stack.services import reachable

_NEEDS_SERVICES = ("integration", "chaos")


def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    for item in items:
        parts = Path(str(item.fspath)).parts
        if "integration" in parts:
            item.add_marker(pytest.mark.integration)
        if "chaos" in parts:
            item.add_marker(pytest.mark.chaos)
            item.add_marker(pytest.mark.integration)


@pytest.fixture(scope="session", autouse=True)
def _services_reachable(request: pytest.FixtureRequest) -> None:
    """Fail fast with one clear message when the services are down, instead of a timeout per test."""
    wanted = any(item.get_closest_marker("integration") for item in request.session.items)
    if not wanted:
        return
    settings = load_settings()
    kafka_ok, pg_ok = asyncio.run(reachable(settings))
    if not (kafka_ok and pg_ok):
        pytest.exit(
            f"Kafka at {settings.kafka_bootstrap} reachable: {kafka_ok}; PostgreSQL reachable: {pg_ok}."
            " Start the stack with `paystream stack up` (make test does it).",
            returncode=2,
        )


def pytest_sessionfinish(session: pytest.Session, exitstatus: int) -> None:
    """Delete the topics of every environment the tests created (their databases are dropped by each test)."""
    from tests.support.pipeline import CREATED_ENVIRONMENTS

    if not CREATED_ENVIRONMENTS:
        return
    asyncio.run(_delete_topics(list(CREATED_ENVIRONMENTS)))


async def _delete_topics(environments: list[Any]) -> None:
    from paystream.prepare import delete_topics

    for settings in environments:
        try:
            await asyncio.wait_for(delete_topics(settings), timeout=30)
        except Exception as error:  # noqa: BLE001 - cleanup must not turn a run red; say what was left
            print(f"\ncould not delete the topics of {settings.namespace}: {type(error).__name__}: {error}")
