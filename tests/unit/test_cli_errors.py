"""The one-line messages for a database without this code's schema and for a broker that does not answer."""

from __future__ import annotations

import asyncio
from typing import Any

import asyncpg
import pytest
from aiokafka.errors import KafkaConnectionError

from paystream.cli.main import _translated, main
from paystream.cli.reach import KAFKA_REACH_S, kafka_unreachable
from paystream.db.migrate import available_migrations, require_current_schema, schema_error
from paystream.errors import SchemaError, ServiceUnavailableError
from paystream.settings import Settings

DB = "postgresql://app@db:5432/pay"
NEWEST = max(m.version for m in available_migrations())
MISSING = asyncpg.UndefinedTableError('relation "payments" does not exist')


class FakeConnection:
    """Answers the two queries `applied_versions` makes."""

    def __init__(self, versions: list[int] | None) -> None:
        self.versions = versions

    async def fetchval(self, sql: str, *args: Any) -> Any:
        assert "to_regclass('schema_migrations')" in sql
        return self.versions is not None

    async def fetch(self, sql: str, *args: Any) -> list[dict[str, int]]:
        assert self.versions is not None
        return [{"version": v} for v in self.versions]


@pytest.mark.parametrize(
    ("applied", "message"),
    [
        (None, f'database {DB} lacks the schema this paystream needs (relation "payments" does not exist):'),
        ([], f'database {DB} is not migrated (relation "payments" does not exist): run `paystream db migrate`'),
        ([1], f"database {DB} is migrated only to 001 of {NEWEST:03d} (relation "),
        (
            list(range(1, NEWEST + 1)),
            f'database {DB} has every migration recorded (up to {NEWEST:03d}) but relation "payments" does not exist:'
            " it was changed by hand",
        ),
    ],
)
def test_schema_error_says_how_far_the_database_is_migrated(applied: list[int] | None, message: str) -> None:
    error = schema_error(DB, applied, MISSING)
    assert isinstance(error, SchemaError)
    assert str(error).startswith(message)
    assert "\n" not in str(error)


@pytest.mark.parametrize(
    ("versions", "message"),
    [
        (None, f"database {DB} is not migrated: run `paystream db migrate`"),
        ([], f"database {DB} is not migrated: run `paystream db migrate`"),
        ([1], f"database {DB} is migrated only to 001 of {NEWEST:03d}: run `paystream db migrate`"),
        (
            [*range(1, NEWEST + 2)],
            f"database {DB} has migration {NEWEST + 1:03d}, newer than this code knows ({NEWEST:03d}):"
            " upgrade paystream",
        ),
    ],
)
def test_require_current_schema_refuses_any_other_version(versions: list[int] | None, message: str) -> None:
    with pytest.raises(SchemaError) as raised:
        asyncio.run(require_current_schema(FakeConnection(versions), DB))
    assert str(raised.value) == message


def test_require_current_schema_accepts_this_codes_migrations() -> None:
    asyncio.run(require_current_schema(FakeConnection([m.version for m in available_migrations()]), DB))


def test_kafka_unreachable_names_the_bootstrap_address() -> None:
    settings = Settings(kafka_bootstrap="b1:9092,b2:9092")
    assert str(kafka_unreachable(settings, KafkaConnectionError("Unable to bootstrap from [...]"))) == (
        "cannot reach Kafka at b1:9092,b2:9092: no broker answered (is the stack up? try: paystream stack up)"
    )
    assert str(kafka_unreachable(settings, TimeoutError())) == (
        f"cannot reach Kafka at b1:9092,b2:9092: no broker answered within {KAFKA_REACH_S:.0f} s"
        " (is the stack up? try: paystream stack up)"
    )


def test_the_entry_point_translates_a_missing_table_and_a_kafka_connection_error() -> None:
    # Nothing listens on port 1: how far the database is migrated cannot be read either.
    settings = Settings(database_url="postgresql://app@127.0.0.1:1/pay", kafka_bootstrap="127.0.0.1:1")

    async def missing_table() -> None:
        raise MISSING

    async def no_broker() -> None:
        raise KafkaConnectionError("Unable to bootstrap from [('127.0.0.1', 1)]")

    with pytest.raises(SchemaError, match=r"^database postgresql://app@127.0.0.1:1/pay lacks the schema"):
        asyncio.run(_translated(missing_table(), settings))
    with pytest.raises(ServiceUnavailableError, match=r"^cannot reach Kafka at 127.0.0.1:1: no broker answered "):
        asyncio.run(_translated(no_broker(), settings))


def test_a_bad_setting_is_one_line_and_exit_2(
    capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("PAYSTREAM_LOG_LEVEL", "loud")
    assert main(["reconcile"]) == 2
    captured = capsys.readouterr()
    assert captured.out == ""
    assert captured.err.splitlines() == [
        "paystream: error: PAYSTREAM_LOG_LEVEL='loud' is not one of debug, info, warning, error, critical"
    ]
