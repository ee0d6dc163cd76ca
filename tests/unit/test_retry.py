"""Failure classes: what the loop retries, what it isolates as a poison record, what ends the worker."""

from __future__ import annotations

import asyncio

import asyncpg
import pytest
from aiokafka.errors import KafkaConnectionError, NotLeaderForPartitionError

from paystream.errors import ConcurrentChangeError, SettingsError
from paystream.settings import Settings
from paystream.stage.isolation import applies_bound
from paystream.stage.retry import (
    Retrier,
    RetriesExhaustedError,
    StopRequestedError,
    is_environment_error,
    is_record_error,
    is_retriable,
)


@pytest.mark.parametrize(
    "error",
    [
        asyncpg.exceptions.SerializationError("conflict"),
        asyncpg.exceptions.DeadlockDetectedError("deadlock"),
        asyncpg.exceptions.AdminShutdownError("shutdown"),
        asyncpg.exceptions.CannotConnectNowError("starting"),
        asyncpg.exceptions.TooManyConnectionsError("full"),
        asyncpg.exceptions.ConnectionDoesNotExistError("gone"),
        # What a pooled connection the server terminated (a PostgreSQL restart) raises on its next use.
        asyncpg.exceptions.InternalClientError("cannot switch to state 15; another operation (2) is in progress"),
        ConnectionRefusedError("refused"),
        TimeoutError(),
        KafkaConnectionError("no broker"),
        NotLeaderForPartitionError(),
        ConcurrentChangeError("closed meanwhile"),
    ],
)
def test_outages_and_conflicts_are_retried_never_isolated(error: BaseException) -> None:
    assert is_retriable(error)
    assert not is_record_error(error)


@pytest.mark.parametrize(
    "error",
    [
        asyncpg.exceptions.UndefinedTableError("relation does not exist"),
        asyncpg.exceptions.UndefinedColumnError("column does not exist"),
        asyncpg.exceptions.InsufficientPrivilegeError("permission denied"),
        asyncpg.exceptions.ReadOnlySQLTransactionError("read-only"),
        asyncpg.exceptions.DiskFullError("disk full"),
        asyncpg.exceptions.InternalServerError("internal"),
        MemoryError(),
    ],
)
def test_a_broken_environment_ends_the_worker(error: BaseException) -> None:
    assert is_environment_error(error)
    assert not is_retriable(error)
    assert not is_record_error(error)


@pytest.mark.parametrize(
    "error",
    [
        OverflowError("date value out of range"),
        ValueError("bad value"),
        KeyError("missing"),
        AssertionError("a stage's own check"),
        asyncpg.exceptions.DatetimeFieldOverflowError("timestamp out of range"),
        asyncpg.exceptions.CharacterNotInRepertoireError("invalid byte sequence for encoding UTF8: 0x00"),
        asyncpg.exceptions.CheckViolationError("violates check constraint"),
        asyncpg.exceptions.NumericValueOutOfRangeError("bigint out of range"),
        asyncpg.exceptions.RaiseError("raised by a trigger"),
        UnicodeEncodeError("utf-8", "\ud800", 0, 1, "surrogates not allowed"),
    ],
)
def test_errors_caused_by_records_are_isolated(error: BaseException) -> None:
    assert is_record_error(error)
    assert not is_retriable(error)


def test_our_operating_errors_and_cancellation_are_not_blamed_on_records() -> None:
    assert not is_record_error(SettingsError("bad setting"))
    assert not is_record_error(asyncio.CancelledError())
    assert not is_record_error(KeyboardInterrupt())


def test_isolation_cost_is_logarithmic_in_the_batch() -> None:
    assert applies_bound(2_000, 0) == 1
    assert applies_bound(2_000, 1) == 23
    assert applies_bound(2_000, 3) == 67
    assert applies_bound(1, 1) == 3


def _settings(**changes: int) -> Settings:
    return Settings().with_overrides(retry_backoff_ms_initial=1, retry_backoff_ms_max=2, **changes)


async def test_a_transient_failure_is_retried_until_it_succeeds() -> None:
    calls = []
    retries = []

    async def flaky() -> str:
        calls.append(1)
        if len(calls) < 4:
            raise ConnectionResetError("dropped")
        return "done"

    retrier = Retrier(_settings(retry_duration_ms_max=60_000), "risk", asyncio.Event(), lambda: retries.append(1))
    assert await retrier("apply batch", flaky) == "done"
    assert len(calls) == 4
    assert len(retries) == 3


async def test_a_transient_failure_past_the_deadline_raises_retries_exhausted() -> None:
    calls = []

    async def down() -> None:
        calls.append(1)
        raise ConnectionRefusedError("down")

    retrier = Retrier(_settings(retry_duration_ms_max=30), "risk", asyncio.Event(), lambda: None)
    with pytest.raises(RetriesExhaustedError, match="apply batch kept failing for 30 ms: down"):
        await retrier("apply batch", down)
    assert len(calls) >= 2


async def test_a_non_retriable_failure_is_raised_at_once() -> None:
    calls = []

    async def broken() -> None:
        calls.append(1)
        raise ValueError("poison")

    retrier = Retrier(_settings(retry_duration_ms_max=60_000), "risk", asyncio.Event(), lambda: None)
    with pytest.raises(ValueError, match="poison"):
        await retrier("apply batch", broken)
    assert calls == [1]


async def test_stop_ends_the_wait_between_retries() -> None:
    stop = asyncio.Event()
    calls = []

    async def down() -> None:
        calls.append(1)
        stop.set()  # SIGTERM arrives while the broker is down
        raise ConnectionRefusedError("down")

    # A retry window of ten minutes with a ten-minute backoff: only the stop event can end this.
    settings = Settings().with_overrides(
        retry_backoff_ms_initial=600_000, retry_backoff_ms_max=600_000, retry_duration_ms_max=600_000
    )
    retrier = Retrier(settings, "risk", stop, lambda: None)
    with pytest.raises(StopRequestedError, match="connect to Kafka"):
        await asyncio.wait_for(retrier("connect to Kafka", down), timeout=60)
    assert calls == [1]
