"""asyncpg pools with a bounded connect wait and JSON codecs set once."""

from __future__ import annotations

from typing import Any

import asyncpg
import orjson

from paystream.db.migrate import require_current_schema
from paystream.errors import PaystreamError, ServiceUnavailableError
from paystream.settings import Settings

CONNECT_TIMEOUT_S = 10.0
# PostgreSQL's own choice between a custom and a generic plan (`auto`). The two
# statements a generic plan made slow (a sequential scan planned while the
# table was small) ask for a custom plan themselves (`paystream.db.plans`);
# forcing it on every statement cost about a fifth of the database ceiling.
# asyncpg re-prepares a cached statement after max_cached_statement_lifetime
# (300 s), so no other generic plan outlives five minutes of table growth.
SERVER_SETTINGS: dict[str, str] = {}


class PooledConnection(asyncpg.Connection):  # type: ignore[misc]
    """A pooled connection released without asyncpg's reset query.

    asyncpg sends `SELECT pg_advisory_unlock_all(); CLOSE ALL; UNLISTEN *;
    RESET ALL` on every release: one more round trip for every batch of every
    stage (2,626 of them in a 30-second run at 1,000 payments/s). paystream's
    pooled connections hold no session state to reset: settings are `SET LOCAL`
    inside transactions, no cursor outlives its transaction, nothing listens,
    and the one advisory lock (migrations) is taken and released on a
    connection of its own. asyncpg still rolls back a transaction left open.
    """

    def get_reset_query(self) -> str:
        return ""


async def _init_connection(connection: asyncpg.Connection) -> None:
    for type_name in ("json", "jsonb"):
        await connection.set_type_codec(
            type_name,
            encoder=lambda value: orjson.dumps(value).decode(),
            decoder=orjson.loads,
            schema="pg_catalog",
        )


async def create_pool(settings: Settings, size_max: int | None = None) -> Any:
    """A pool for `settings.database_url`, whose schema must be this code's (workers open one to start).

    An unreachable server, or a database not migrated or migrated by another
    version, is one clear error before any record is read.
    """
    size = size_max or settings.db_pool_size_max
    try:
        pool = await asyncpg.create_pool(
            settings.database_url,
            min_size=1,
            max_size=size,
            init=_init_connection,
            connection_class=PooledConnection,
            timeout=CONNECT_TIMEOUT_S,
            server_settings=SERVER_SETTINGS,
            command_timeout=120,
        )
    except (TimeoutError, OSError, asyncpg.PostgresError) as error:
        raise connect_error(settings, error) from error
    try:
        async with pool.acquire() as connection:
            await require_current_schema(connection, redacted(settings.database_url))
    except BaseException:
        await pool.close()
        raise
    return pool


async def connect(settings: Settings, *, migrated: bool = False) -> Any:
    """One connection; with `migrated`, the database must have exactly this code's migrations.

    Commands that read or write the schema pass `migrated=True`, so a database
    not migrated (or migrated by another version) is one line saying what to
    run, not an undefined-table traceback. Migrating itself does not.
    """
    try:
        connection = await asyncpg.connect(
            settings.database_url, timeout=CONNECT_TIMEOUT_S, server_settings=SERVER_SETTINGS
        )
    except (TimeoutError, OSError, asyncpg.PostgresError) as error:
        raise connect_error(settings, error) from error
    try:
        await _init_connection(connection)
        if migrated:
            await require_current_schema(connection, redacted(settings.database_url))
    except BaseException:
        await connection.close()
        raise
    return connection


def connect_error(settings: Settings, error: BaseException) -> PaystreamError:
    """One line for a failed connection: a missing database and a refused login are not outages."""
    where = redacted(settings.database_url)
    if isinstance(error, asyncpg.InvalidCatalogNameError):
        return PaystreamError(f"PostgreSQL at {where}: {error}; create it, then run `paystream db migrate`")
    if isinstance(error, asyncpg.InvalidAuthorizationSpecificationError):
        return PaystreamError(f"PostgreSQL at {where} refused the login: {error}")
    reason = str(error) or f"no answer within {CONNECT_TIMEOUT_S:.0f} s"
    return ServiceUnavailableError(
        f"cannot connect to PostgreSQL at {where}: {reason} (is the stack up? try: paystream stack up)"
    )


def redacted(url: str) -> str:
    """The URL without its password, for messages."""
    if "@" not in url or "://" not in url:
        return url
    scheme, rest = url.split("://", 1)
    credentials, host = rest.rsplit("@", 1)
    user = credentials.split(":", 1)[0]
    return f"{scheme}://{user}@{host}"
