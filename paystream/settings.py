"""The one settings object, read from PAYSTREAM_* environment variables.

Every limit has a unit in its name and an explicit bound. An unknown
PAYSTREAM_* variable is an error, so a mistyped limit fails loudly instead of
being silently ignored.
"""

from __future__ import annotations

import dataclasses
import os
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any, get_type_hints

from paystream.errors import SettingsError

ENV_PREFIX = "PAYSTREAM_"
REPO_ROOT = Path(__file__).resolve().parent.parent

# Ports of the local stack: off the defaults so a developer's own Kafka or
# PostgreSQL on 9092/5432 is never touched.
STACK_KAFKA_PORT = 19092
STACK_KAFKA_CONTROLLER_PORT = 19093
STACK_POSTGRES_PORT = 15432

CRASH_POINTS = (
    "after_decode",
    "in_isolation",
    "in_transaction",
    "after_db_commit",
    "after_produce",
    "after_offset_commit",
    # Settlement's timer: a close committed, its events produced, then marked published.
    "after_tick_commit",
    "after_tick_produce",
)
TICK_CRASH_POINTS = ("after_tick_commit", "after_tick_produce")


@dataclass(frozen=True, slots=True)
class Settings:
    """What every command and worker reads; defaults fit the local stack."""

    kafka_bootstrap: str = f"127.0.0.1:{STACK_KAFKA_PORT}"
    database_url: str = f"postgresql://paystream@127.0.0.1:{STACK_POSTGRES_PORT}/paystream"
    # Prefix for every topic and consumer group name, so test runs and
    # parallel demos never see each other's data. Empty in production.
    namespace: str = ""

    stack_dir: Path = REPO_ROOT / ".stack"
    cache_dir: Path = Path.home() / ".cache" / "paystream"
    kafka_version: str = "4.1.1"
    kafka_heap_mb: int = 512

    # The stage loop. Each batch costs a dozen round trips to PostgreSQL and one
    # produce-and-commit whatever its size; measured with four worker processes
    # draining 40,000 payments here: 500 -> about 3,000/s, 2,000 -> about
    # 4,000/s (and a quarter less PostgreSQL CPU per payment), 4,000 -> no better.
    batch_records_max: int = 2_000
    batch_wait_ms: int = 100
    produce_timeout_ms: int = 30_000
    retry_backoff_ms_initial: int = 100
    retry_backoff_ms_max: int = 5_000
    # A transient error is retried this long before the worker gives up and
    # exits non-zero (a supervisor restarts it; nothing was committed).
    retry_duration_ms_max: int = 300_000
    # How long a silent consumer keeps its partitions: after a SIGKILL, its
    # partitions wait this long before another consumer takes them. The
    # broker's group.min.session.timeout.ms (6 s) is the floor.
    kafka_session_timeout_ms: int = 10_000
    db_pool_size_max: int = 4
    record_bytes_max: int = 64 * 1024
    shutdown_grace_ms: int = 30_000

    # The event-time window at the edge: a payment request whose created_at is
    # further than this before, or after, the time the broker appended the
    # record is refused (dead letter `created_at`/`window`). Measured against
    # the record's append time, not the wall clock, so a replay after an outage
    # decides exactly as the first pass did. The past bound is the risk
    # stage's long velocity window: an older payment would escape its limits.
    event_time_past_s_max: int = 86_400
    event_time_future_s_max: int = 300
    # A hold still open this long after it was placed is a reconcile violation
    # (`hold_open_within_bound`): every hold must end captured or released.
    hold_open_s_max: int = 3_600

    # Settlement cycles and their cut-off.
    settlement_cycle_s: int = 86_400
    settlement_grace_s: int = 300
    settlement_close_interval_ms: int = 1_000

    # Fault injection for crash-safety tests; None in production.
    crash_point: str | None = None
    crash_stage: str | None = None
    crash_after_batches: int = 1

    log_level: str = "info"
    log_format: str = "console"

    def topic(self, name: str) -> str:
        """The namespaced topic name for a declared topic."""
        return f"{self.namespace}{name}"

    def group(self, stage: str) -> str:
        """The namespaced consumer group of a stage."""
        return f"{self.namespace}paystream.{stage}"

    def with_overrides(self, **changes: Any) -> Settings:
        return dataclasses.replace(self, **changes)

    def validate(self) -> Settings:
        _check_positive(self, "batch_records_max", 1, 100_000)
        _check_positive(self, "batch_wait_ms", 0, 60_000)
        _check_positive(self, "produce_timeout_ms", 1, 600_000)
        _check_positive(self, "retry_backoff_ms_initial", 1, 60_000)
        _check_positive(self, "retry_backoff_ms_max", 1, 600_000)
        _check_positive(self, "db_pool_size_max", 1, 64)
        _check_positive(self, "kafka_session_timeout_ms", 6_000, 300_000)
        _check_positive(self, "settlement_cycle_s", 1, 31 * 86_400)
        _check_positive(self, "settlement_grace_s", 0, 86_400)
        _check_positive(self, "crash_after_batches", 1, 1_000_000)
        if self.crash_point is not None and self.crash_point not in CRASH_POINTS:
            raise SettingsError(f"PAYSTREAM_CRASH_POINT={self.crash_point!r} is not one of {', '.join(CRASH_POINTS)}")
        if self.log_format not in ("console", "json"):
            raise SettingsError(f"PAYSTREAM_LOG_FORMAT={self.log_format!r} must be console or json")
        return self


def _check_positive(settings: Settings, name: str, low: int, high: int) -> None:
    value = getattr(settings, name)
    if not low <= value <= high:
        raise SettingsError(f"PAYSTREAM_{name.upper()}={value} is outside {low}..{high}")


def _convert(name: str, raw: str, hint: Any) -> Any:
    if hint is int:
        try:
            return int(raw)
        except ValueError:
            raise SettingsError(f"{ENV_PREFIX}{name.upper()}={raw!r} is not a whole number") from None
    if hint is Path:
        return Path(raw).expanduser()
    if hint == (str | None):
        return raw or None
    return raw


def load_settings(environ: Mapping[str, str] | None = None) -> Settings:
    """Build settings from the environment; unknown PAYSTREAM_* names are errors."""
    env = os.environ if environ is None else environ
    hints = get_type_hints(Settings)
    known = {f.name for f in dataclasses.fields(Settings)}
    values: dict[str, Any] = {}
    for key, raw in env.items():
        if not key.startswith(ENV_PREFIX):
            continue
        name = key[len(ENV_PREFIX) :].lower()
        if name not in known:
            raise SettingsError(
                f"unknown setting {key}; known: " + ", ".join(sorted(ENV_PREFIX + k.upper() for k in known))
            )
        values[name] = _convert(name, raw, hints[name])
    return Settings(**values).validate()


__all__ = ["CRASH_POINTS", "TICK_CRASH_POINTS", "REPO_ROOT", "Settings", "load_settings"]
