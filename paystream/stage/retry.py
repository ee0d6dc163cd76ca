"""Which failures the stage loop retries, which it isolates, and which end the worker.

Three kinds of failure reach the loop:
- an *outage* (broker or database unreachable, a serialization failure, a
  deadlock): retried with capped backoff for at most retry_duration_ms_max;
- an *environment* error (a missing table or column, a permission, a read-only
  or full database): no record causes it and no retry fixes it, so the worker
  exits non-zero without committing and an operator fixes the environment;
- anything else while applying a batch is caused by the records: the loop
  isolates the record(s) and dead-letters them (`paystream.stage.isolation`).
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Awaitable, Callable
from typing import Any, TypeVar

import asyncpg
import structlog
from aiokafka.errors import KafkaConnectionError, KafkaError

from paystream.errors import PaystreamError
from paystream.settings import Settings

log = structlog.get_logger("paystream.stage")

T = TypeVar("T")

# SQLSTATEs worth a retry: serialization failure, deadlock, admin shutdown,
# crash shutdown, cannot connect now, too many connections, connection failures.
RETRIABLE_SQLSTATES = frozenset({"40001", "40P01", "57P01", "57P02", "57P03", "53300", "08000", "08003", "08006"})

# SQLSTATE classes that describe the database, not the data: connection (08),
# transaction state (25: read-only), authorization (28), catalog/schema (3D, 3F),
# syntax and access rules (42: undefined table/column, permission), resources
# (53: disk full, out of memory), object state (55: lock not available),
# operator intervention (57), system errors (58), configuration (F0), internal (XX).
ENVIRONMENT_SQLSTATE_CLASSES = frozenset({"08", "25", "28", "3D", "3F", "42", "53", "55", "57", "58", "F0", "XX"})


class RetriesExhaustedError(PaystreamError):
    """A transient failure outlasted retry_duration_ms_max; the worker exits without committing."""


class StopRequestedError(PaystreamError):
    """SIGTERM (or the caller's stop event) arrived while waiting to retry: give up the attempt, commit nothing."""


class RecordRefusedError(PaystreamError):
    """A stage found a record it must not apply; isolation dead-letters it with this message."""


def is_retriable(error: BaseException) -> bool:
    """Broker or database unavailable, or a transaction conflict: try again."""
    if isinstance(error, PaystreamError):
        return error.retriable
    if isinstance(error, KafkaError):
        return bool(getattr(error, "retriable", False)) or isinstance(error, KafkaConnectionError)
    if isinstance(error, asyncpg.PostgresError):
        return getattr(error, "sqlstate", None) in RETRIABLE_SQLSTATES
    # InternalClientError: a connection the server terminated while it sat idle in the pool (a
    # PostgreSQL restart) is handed out still consuming that error, and its next query fails with
    # "cannot switch to state N; another operation (2) is in progress" (asyncpg issue #784). The pool
    # replaces the connection: another attempt gets a working one, or waits for the server.
    return isinstance(
        error,
        OSError
        | asyncio.TimeoutError
        | asyncpg.InterfaceError
        | asyncpg.PostgresConnectionError
        | asyncpg.exceptions.InternalClientError,
    )


def is_environment_error(error: BaseException) -> bool:
    """The database or the process is broken, whatever the records: stop the worker."""
    if isinstance(error, MemoryError | RecursionError | SystemError):
        return True
    if isinstance(error, asyncpg.PostgresError):
        sqlstate = getattr(error, "sqlstate", None) or ""
        return sqlstate[:2] in ENVIRONMENT_SQLSTATE_CLASSES
    return False


def is_record_error(error: BaseException) -> bool:
    """Neither an outage nor a broken environment: some record in the batch causes it."""
    if not isinstance(error, Exception):
        return False  # cancellation, SIGINT, SystemExit: never a record's fault
    if isinstance(error, PaystreamError) and not error.retriable:
        # Our own operating errors (settings, stack) are not about records,
        # except the ones a stage raises deliberately for a record.
        return isinstance(error, RecordRefusedError)
    return not is_retriable(error) and not is_environment_error(error)


class Retrier:
    """Runs an attempt until it succeeds, retrying transient failures with capped backoff.

    The wait between attempts ends early when `stop` is set, so SIGTERM is
    honoured within one backoff step even while the broker is down.
    """

    def __init__(self, settings: Settings, stage: str, stop: asyncio.Event, on_retry: Callable[[], None]) -> None:
        self.settings = settings
        self.stage = stage
        self.stop = stop
        self.on_retry = on_retry

    async def __call__(self, what: str, attempt: Callable[[], Awaitable[T]], *, passthrough: Any = ()) -> T:
        backoff_ms = self.settings.retry_backoff_ms_initial
        deadline = time.monotonic() + self.settings.retry_duration_ms_max / 1000
        while True:
            try:
                return await attempt()
            except passthrough:
                raise
            except Exception as error:
                if not is_retriable(error):
                    raise
                if time.monotonic() >= deadline:
                    raise RetriesExhaustedError(
                        f"{what} kept failing for {self.settings.retry_duration_ms_max} ms: {error}"
                    ) from error
                self.on_retry()
                log.warning(
                    "transient failure, retrying",
                    stage=self.stage,
                    action=what,
                    error=f"{type(error).__name__}: {error}",
                    backoff_ms=backoff_ms,
                )
                if await _stopped_within(self.stop, backoff_ms / 1000):
                    raise StopRequestedError(f"stopped while retrying {what}") from error
                backoff_ms = min(backoff_ms * 2, self.settings.retry_backoff_ms_max)


async def _stopped_within(stop: asyncio.Event, seconds: float) -> bool:
    try:
        await asyncio.wait_for(stop.wait(), timeout=seconds)
    except TimeoutError:
        return False
    return True
