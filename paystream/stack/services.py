"""The stack as a whole: up, down, status, and the restarts the chaos run needs."""

from __future__ import annotations

import asyncio
from dataclasses import dataclass
from urllib.parse import urlparse

import asyncpg

from paystream.errors import ServiceUnavailableError
from paystream.logging import quiet_client_logs
from paystream.settings import STACK_KAFKA_PORT, STACK_POSTGRES_PORT, Settings
from paystream.stack import kafka, postgres
from paystream.stack.process import read_pid

STACK_KAFKA_BOOTSTRAP = f"127.0.0.1:{STACK_KAFKA_PORT}"
STACK_DATABASE_URL = f"postgresql://paystream@127.0.0.1:{STACK_POSTGRES_PORT}/paystream"


@dataclass(frozen=True, slots=True)
class ServiceStatus:
    name: str
    running: bool
    pid: int | None
    address: str
    version: str | None

    def line(self) -> str:
        state = "running" if self.running else "stopped"
        pid = f"pid {self.pid}" if self.pid else "-"
        return f"{self.name:<10} {state:<8} {pid:<11} {self.address:<22} {self.version or '-'}"


def uses_local_stack(settings: Settings) -> bool:
    """True when the settings point at the stack's own ports on loopback."""
    db = urlparse(settings.database_url)
    return settings.kafka_bootstrap in (STACK_KAFKA_BOOTSTRAP, f"localhost:{STACK_KAFKA_PORT}") and (
        db.hostname in ("127.0.0.1", "localhost") and db.port == STACK_POSTGRES_PORT
    )


async def stack_up(settings: Settings) -> None:
    settings.stack_dir.mkdir(parents=True, exist_ok=True)
    print("starting PostgreSQL ...", flush=True)
    await postgres.start(settings)
    print("starting Kafka ...", flush=True)
    await kafka.start(settings)
    write_env_file(settings)


def stack_down(settings: Settings) -> list[str]:
    stopped = []
    if kafka.stop(settings):
        stopped.append("kafka")
    if postgres.stop(settings):
        stopped.append("postgres")
    return stopped


def write_env_file(settings: Settings) -> None:
    (settings.stack_dir / "env").write_text(
        f"export PAYSTREAM_KAFKA_BOOTSTRAP={STACK_KAFKA_BOOTSTRAP}\n"
        f"export PAYSTREAM_DATABASE_URL={STACK_DATABASE_URL}\n"
    )


async def status(settings: Settings) -> list[ServiceStatus]:
    kafka_pid = read_pid(kafka.pid_file(settings))
    kafka_version = None
    if kafka_pid is not None:
        try:
            await kafka.describe(settings)
            kafka_version = kafka.version(settings)
        except Exception:  # noqa: BLE001 - a broker that does not answer shows as not ready
            kafka_version = "(not answering)"
    pg_pid = postgres.running(settings)
    pg_version = None
    if pg_pid is not None:
        try:
            pg_version = f"PostgreSQL {await postgres.version()}"
        except (OSError, asyncpg.PostgresError, TimeoutError):
            pg_version = "(not answering)"
    return [
        ServiceStatus("kafka", kafka_pid is not None, kafka_pid, STACK_KAFKA_BOOTSTRAP,
                      f"Apache Kafka {kafka_version}" if kafka_version else None),
        ServiceStatus("postgres", pg_pid is not None, pg_pid, f"127.0.0.1:{STACK_POSTGRES_PORT}", pg_version),
    ]  # fmt: skip


async def reachable(settings: Settings) -> tuple[bool, bool]:
    """Whether the configured Kafka and PostgreSQL answer right now."""
    try:
        with quiet_client_logs():
            await kafka.describe(settings)
        kafka_ok = True
    except Exception:  # noqa: BLE001 - any failure is "not reachable"
        kafka_ok = False
    try:
        connection = await asyncpg.connect(settings.database_url, timeout=5)
        await connection.close()
        pg_ok = True
    except (OSError, asyncpg.PostgresError, TimeoutError):
        pg_ok = False
    return kafka_ok, pg_ok


async def ensure_stack(settings: Settings) -> None:
    """Start the local stack if the settings point at it and it is not up; else check the services."""
    kafka_ok, pg_ok = await reachable(settings)
    if kafka_ok and pg_ok:
        return
    if uses_local_stack(settings):
        await stack_up(settings)
        return
    missing = [name for name, ok in (("Kafka", kafka_ok), ("PostgreSQL", pg_ok)) if not ok]
    raise ServiceUnavailableError(
        f"{' and '.join(missing)} not reachable at the configured address"
        f" (PAYSTREAM_KAFKA_BOOTSTRAP={settings.kafka_bootstrap}); unset the variables to use the local stack"
    )


async def restart_kafka(settings: Settings) -> None:
    await asyncio.to_thread(kafka.stop, settings)
    await kafka.start(settings)


async def restart_postgres(settings: Settings) -> None:
    await asyncio.to_thread(postgres.stop, settings, "fast")
    await postgres.start(settings)
