"""Versioned, idempotent migrations: NNN_name.sql files applied once each, in order.

An advisory lock makes concurrent `migrate` calls (workers starting together,
the compose init service) safe: one applies, the others wait and find nothing to do.

A command run against a database that lacks the schema meets an undefined table
or column; `schema_error` turns that into one line saying how far the database
is migrated and what to run (the command line's entry point uses it).
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from importlib import resources
from typing import Any

from paystream.errors import PaystreamError, SchemaError

MIGRATION_LOCK_KEY = 0x70617973  # "pays"
_FILE_NAME = re.compile(r"^(?P<version>\d{3})_(?P<name>[a-z0-9_]+)\.sql$")


@dataclass(frozen=True, slots=True)
class Migration:
    version: int
    name: str
    sql: str


def available_migrations() -> list[Migration]:
    folder = resources.files("paystream.db") / "migrations"
    found = []
    for item in folder.iterdir():
        match = _FILE_NAME.match(item.name)
        if match:
            found.append(Migration(int(match.group("version")), match.group("name"), item.read_text()))
    found.sort(key=lambda m: m.version)
    versions = [m.version for m in found]
    assert len(set(versions)) == len(versions), f"duplicate migration versions: {versions}"
    return found


async def migrate(connection: Any) -> list[Migration]:
    """Apply the migrations this database lacks; returns those applied now."""
    applied_now: list[Migration] = []
    await connection.execute("SELECT pg_advisory_lock($1)", MIGRATION_LOCK_KEY)
    try:
        await connection.execute(
            """CREATE TABLE IF NOT EXISTS schema_migrations (
                   version integer PRIMARY KEY,
                   name text NOT NULL,
                   applied_at timestamptz NOT NULL DEFAULT now())"""
        )
        rows = await connection.fetch("SELECT version, name FROM schema_migrations")
        done = {row["version"]: row["name"] for row in rows}
        for migration in available_migrations():
            if migration.version in done:
                if done[migration.version] != migration.name:
                    raise PaystreamError(
                        f"migration {migration.version} is recorded as {done[migration.version]!r}"
                        f" but the file is {migration.name!r}: the database belongs to another"
                        " version of paystream"
                    )
                continue
            async with connection.transaction():
                await connection.execute(migration.sql)
                await connection.execute(
                    "INSERT INTO schema_migrations (version, name) VALUES ($1, $2)",
                    migration.version,
                    migration.name,
                )
            applied_now.append(migration)
        newest_known = max((m.version for m in available_migrations()), default=0)
        if done and max(done) > newest_known:
            raise PaystreamError(
                f"the database has migration {max(done)}, newer than this code knows"
                f" ({newest_known}): upgrade paystream"
            )
    finally:
        await connection.execute("SELECT pg_advisory_unlock($1)", MIGRATION_LOCK_KEY)
    return applied_now


async def applied_versions(connection: Any) -> list[int]:
    """The migrations recorded in this database, oldest first; empty when it was never migrated."""
    if not await connection.fetchval("SELECT to_regclass('schema_migrations') IS NOT NULL"):
        return []
    return [row["version"] for row in await connection.fetch("SELECT version FROM schema_migrations ORDER BY 1")]


def schema_error(database: str, applied: list[int] | None, cause: BaseException) -> SchemaError:
    """What a database that lacks a table or column (`cause`) is missing, and the fix, in one line.

    `applied` is `applied_versions` of the database, or None when it could not be read.
    """
    newest = max((m.version for m in available_migrations()), default=0)
    missing = str(cause).strip() or type(cause).__name__
    if applied is None:
        state = "lacks the schema this paystream needs"
    elif not applied:
        state = "is not migrated"
    elif max(applied) < newest:
        state = f"is migrated only to {max(applied):03d} of {newest:03d}"
    else:
        return SchemaError(
            f"database {database} has every migration recorded (up to {max(applied):03d}) but {missing}:"
            " it was changed by hand; restore it from a backup, or migrate a new database"
        )
    return SchemaError(f"database {database} {state} ({missing}): run `paystream db migrate`")


async def require_current_schema(connection: Any, database: str) -> None:
    """Raise SchemaError unless this database has exactly the migrations this code knows."""
    applied = await applied_versions(connection)
    newest = max((m.version for m in available_migrations()), default=0)
    if not applied:
        raise SchemaError(f"database {database} is not migrated: run `paystream db migrate`")
    if max(applied) < newest:
        raise SchemaError(
            f"database {database} is migrated only to {max(applied):03d} of {newest:03d}: run `paystream db migrate`"
        )
    if max(applied) > newest:
        raise SchemaError(
            f"database {database} has migration {max(applied):03d}, newer than this code knows ({newest:03d}):"
            " upgrade paystream"
        )
