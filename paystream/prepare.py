"""Everything a run needs before workers start: database, schema, topics, demo accounts.

`isolated_settings` gives a run (a test session, a chaos run) its own topic
namespace and its own database, so runs never see each other's data.
"""

from __future__ import annotations

import re
from datetime import UTC, datetime

import asyncpg
from aiokafka.admin import AIOKafkaAdminClient

from paystream.db.migrate import migrate
from paystream.db.pool import connect
from paystream.demo_data import DemoWorld, build_world
from paystream.errors import ServiceUnavailableError
from paystream.seed import seed_configuration, seed_world
from paystream.seed_accounts import demo_account_requests, publish_account_requests
from paystream.settings import Settings
from topology.apply import apply_topology

_SAFE_NAME = re.compile(r"^[a-z0-9_]+$")


def isolated_settings(base: Settings, run_id: str) -> Settings:
    """Settings whose topics live under `run_id.` and whose database is `paystream_<run_id>`."""
    name = run_id.lower().replace("-", "_")
    assert _SAFE_NAME.match(name), run_id
    return base.with_overrides(
        namespace=f"{run_id}.", database_url=_with_database(base.database_url, f"paystream_{name}")
    )


def _with_database(url: str, database: str) -> str:
    head, _, tail = url.rpartition("/")
    query = f"?{tail.split('?', 1)[1]}" if "?" in tail else ""
    return f"{head}/{database}{query}"


def _database_name(url: str) -> str:
    return url.rpartition("/")[2].split("?", 1)[0]


async def create_database(settings: Settings) -> bool:
    """Create the settings' database if it does not exist; True when created now."""
    name = _database_name(settings.database_url)
    assert _SAFE_NAME.match(name), name
    admin_url = _with_database(settings.database_url, "postgres")
    try:
        admin = await asyncpg.connect(admin_url, timeout=10)
    except (OSError, asyncpg.PostgresError) as error:
        raise ServiceUnavailableError(f"cannot connect to PostgreSQL to create {name}: {error}") from error
    try:
        exists = await admin.fetchval("SELECT 1 FROM pg_database WHERE datname = $1", name)
        if not exists:
            await admin.execute(f'CREATE DATABASE "{name}"')
        return not exists
    finally:
        await admin.close()


async def drop_database(settings: Settings) -> None:
    name = _database_name(settings.database_url)
    assert _SAFE_NAME.match(name), name
    admin = await asyncpg.connect(_with_database(settings.database_url, "postgres"), timeout=10)
    try:
        await admin.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')
    finally:
        await admin.close()


async def delete_topics(settings: Settings) -> int:
    """Delete every topic of a run's namespace (never an un-namespaced one); returns how many."""
    assert settings.namespace, "refusing to delete topics without a run namespace"
    admin = AIOKafkaAdminClient(bootstrap_servers=settings.kafka_bootstrap, request_timeout_ms=30_000)
    await admin.start()
    try:
        ours = [name for name in await admin.list_topics() if name.startswith(settings.namespace)]
        if ours:
            await admin.delete_topics(ours)
        return len(ours)
    finally:
        await admin.close()


async def prepare_environment(
    settings: Settings, seed: bool = True, publish_accounts: bool = False, world: DemoWorld | None = None
) -> None:
    """Database, migrations, topics and (by default) the demo world; idempotent.

    The world's customer accounts are opened and funded by account requests:
    applied in-process through the stages' code (the default: tests and
    benchmarks need them in place at once), or, with `publish_accounts`,
    published to the request topic for the running stages to apply (the demo).
    `world` replaces the demo world (a load test sizes its own).
    """
    await create_database(settings)
    connection = await connect(settings)
    try:
        await migrate(connection)
    finally:
        await connection.close()
    await apply_topology(settings)
    if not seed:
        return
    world = world or build_world()
    connection = await connect(settings)
    try:
        if publish_accounts:
            await seed_configuration(connection, world)
        else:
            await seed_world(connection, world)
    finally:
        await connection.close()
    if publish_accounts:
        await publish_account_requests(settings, demo_account_requests(world, datetime.now(UTC)))
