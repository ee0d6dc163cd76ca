"""The one settings object, read from PAYSTREAM_* environment variables.

Every limit has a unit in its name and an explicit bound. An unknown
PAYSTREAM_* variable is an error, so a mistyped limit fails loudly instead of
being silently ignored.
"""

from __future__ import annotations

import dataclasses
import ipaddress
import os
import re
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
    # After a batch's transaction while an earlier batch's Kafka commit is still deferred.
    "after_db_commit_deferred",
    "after_produce",
    "after_offset_commit",
    # A stage's timer (settlement's closes, funds' hold expiries): its work committed, its events
    # produced, then marked published.
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
    # Kafka offset commits leave the batch's path (paystream.stage.commits):
    # one in the background at most this often, the rest of the time none.
    # A crash replays at most this long's batches more (idempotent); 0 commits
    # after every batch and waits for it, as the loop first did.
    offset_commit_interval_ms: int = 250
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
    # Manual capture: an uncaptured hold expires this long after the payment's
    # created_at at the latest (a request's `capture_by` may shorten it).
    hold_expiry_s_max: int = 7 * 86_400
    # How often the funds stage expires the holds past their deadline.
    hold_expiry_interval_ms: int = 1_000

    # Settlement cycles and their cut-off.
    settlement_cycle_s: int = 86_400
    settlement_grace_s: int = 300
    settlement_close_interval_ms: int = 1_000

    # Fault injection for crash-safety tests; None in production.
    crash_point: str | None = None
    crash_stage: str | None = None
    crash_after_batches: int = 1

    # Live views (`paystream views`, docs/views.md): faust's web server. Loopback
    # by default; a container sets 0.0.0.0. Several views workers on one host
    # each take their own port (`--port`).
    views_port: int = 6066
    views_host: str = "127.0.0.1"

    log_level: str = "info"
    log_format: str = "console"

    # Operations (docs/operations.md "Metrics"): one HTTP port per worker process
    # for /metrics, /healthz and /readyz; 0 = no server. Loopback by default: a
    # container sets 0.0.0.0 so its scraper can reach it.
    metrics_port: int = 0
    metrics_host: str = "127.0.0.1"
    # /healthz fails when a stage loop neither iterated nor attempted a retry
    # for this long. Above the longest deliberate wait of a healthy loop (one
    # poll, one retry backoff), far below what an operator would tolerate.
    health_stall_s_max: int = 120
    # A per-stage progress line (records/s, lag, last batch age); 0 = none.
    progress_log_interval_s: int = 30

    def topic(self, name: str) -> str:
        """The namespaced topic name for a declared topic."""
        return f"{self.namespace}{name}"

    def group(self, stage: str) -> str:
        """The namespaced consumer group of a stage."""
        return f"{self.namespace}paystream.{stage}"

    def with_overrides(self, **changes: Any) -> Settings:
        return dataclasses.replace(self, **changes)

    def validate(self) -> Settings:
        """Refuse any value out of its bounds, naming the variable; every field has a check."""
        for name, (low, high) in INT_BOUNDS.items():
            _check_range(self, name, low, high)
        if self.retry_backoff_ms_initial > self.retry_backoff_ms_max:
            raise SettingsError(
                f"PAYSTREAM_RETRY_BACKOFF_MS_INITIAL={self.retry_backoff_ms_initial} is above"
                f" PAYSTREAM_RETRY_BACKOFF_MS_MAX={self.retry_backoff_ms_max}"
            )
        _check_pattern(self, "kafka_bootstrap", _BOOTSTRAP, "host:port, or several separated by commas")
        for address in self.kafka_bootstrap.split(","):
            port = int(address.rsplit(":", 1)[1])
            if not 1 <= port <= 65_535:
                raise SettingsError(
                    f"PAYSTREAM_KAFKA_BOOTSTRAP={self.kafka_bootstrap!r}: port {port} is outside 1..65535"
                )
        _check_pattern(self, "database_url", _DATABASE_URL, "a postgresql:// or postgres:// URL")
        _check_pattern(
            self, "namespace", _NAMESPACE, f"at most {NAMESPACE_CHARS_MAX} of the characters a-z A-Z 0-9 . _ -"
        )
        _check_pattern(self, "kafka_version", _KAFKA_VERSION, "a Kafka 4 release such as 4.1.1 (the stack runs 4.x)")
        for name in ("stack_dir", "cache_dir"):
            path: Path = getattr(self, name)
            if not path.is_absolute():
                raise SettingsError(f"PAYSTREAM_{name.upper()}={str(path)!r} must be an absolute path")
        _check_choice(self, "crash_point", CRASH_POINTS, optional=True)
        _check_choice(self, "crash_stage", _stage_names(), optional=True)
        _check_choice(self, "log_level", LOG_LEVELS, fold_case=True)
        _check_choice(self, "log_format", LOG_FORMATS)
        _check_host(self, "metrics_host")
        _check_host(self, "views_host")
        _check_stall_bound(self)
        return self


# The bounds of every whole-number setting, low..high inclusive. docs/operations.md
# lists each (tests/unit/test_settings.py checks the table against these).
INT_BOUNDS: dict[str, tuple[int, int]] = {
    # Read only by `paystream stack up`, for the local broker's JVM.
    "kafka_heap_mb": (256, 32_768),
    "batch_records_max": (1, 100_000),
    "batch_wait_ms": (0, 60_000),
    "offset_commit_interval_ms": (0, 60_000),
    "produce_timeout_ms": (1, 600_000),
    "retry_backoff_ms_initial": (1, 60_000),
    "retry_backoff_ms_max": (1, 600_000),
    # A worker retrying holds its partitions without progress (its consumer's
    # max.poll.interval.ms is this plus a minute): an hour at most.
    "retry_duration_ms_max": (1_000, 3_600_000),
    # The broker's group.min.session.timeout.ms (6 s) is the floor.
    "kafka_session_timeout_ms": (6_000, 300_000),
    "db_pool_size_max": (1, 64),
    # Above the bytes a payment request's decoder keeps free for the events derived
    # from it (schemas/envelope.py, about 20 KiB), and below the topics'
    # max.message.bytes and the producer's max.request.size (1 MiB).
    "record_bytes_max": (32_768, 1_000_000),
    "shutdown_grace_ms": (100, 600_000),
    # No further back than the risk stage's long velocity window (one day):
    # an older payment would escape its limits.
    "event_time_past_s_max": (1, 86_400),
    "event_time_future_s_max": (0, 3_600),
    "hold_open_s_max": (60, 7 * 86_400),
    "hold_expiry_s_max": (1, 30 * 86_400),
    "hold_expiry_interval_ms": (10, 600_000),
    "settlement_cycle_s": (1, 31 * 86_400),
    "settlement_grace_s": (0, 86_400),
    "settlement_close_interval_ms": (10, 600_000),
    "views_port": (1, 65_535),
    "crash_after_batches": (1, 1_000_000),
    # 0 = no metrics server; otherwise a TCP port.
    "metrics_port": (0, 65_535),
    # Floor: above a default retry backoff (5 s); cross-checked in validate().
    "health_stall_s_max": (10, 3_600),
    "progress_log_interval_s": (0, 86_400),
}
# Kafka allows topic names of up to 249 characters; the declared names take at
# most 21 (tests/unit/test_settings.py checks the sum stays below).
NAMESPACE_CHARS_MAX = 100
LOG_LEVELS = ("debug", "info", "warning", "error", "critical")
LOG_FORMATS = ("console", "json")

_HOST_PORT = r"(?:[A-Za-z0-9_-]+(?:\.[A-Za-z0-9_-]+)*|\[[0-9A-Fa-f:.]+\]):[0-9]{1,5}"
_BOOTSTRAP = re.compile(rf"{_HOST_PORT}(?:,{_HOST_PORT})*")
_DATABASE_URL = re.compile(r"(?:postgresql|postgres)://[^\s/?#]*(?:/[^\s?#]*)?(?:\?\S*)?")
_NAMESPACE = re.compile(rf"[A-Za-z0-9._-]{{0,{NAMESPACE_CHARS_MAX}}}")
_KAFKA_VERSION = re.compile(r"4\.[0-9]+\.[0-9]+")
HOST_CHARS_MAX = 253
_HOST_NAME = re.compile(
    r"[A-Za-z0-9](?:[A-Za-z0-9-]{0,61}[A-Za-z0-9])?(?:\.[A-Za-z0-9](?:[A-Za-z0-9-]{0,61}[A-Za-z0-9])?)*"
)
_PASSWORD = re.compile(r"(://[^:/@\s]*:)[^@\s]*@")


def _check_range(settings: Settings, name: str, low: int, high: int) -> None:
    value = getattr(settings, name)
    if not low <= value <= high:
        raise SettingsError(f"PAYSTREAM_{name.upper()}={value} is outside {low}..{high}")


def _check_pattern(settings: Settings, name: str, pattern: re.Pattern[str], wanted: str) -> None:
    value = getattr(settings, name)
    if not pattern.fullmatch(value):
        # A URL's password stays out of the message (and so out of terminals and logs).
        shown = _PASSWORD.sub(r"\1***@", value)
        raise SettingsError(f"PAYSTREAM_{name.upper()}={shown!r} must be {wanted}")


def _check_choice(
    settings: Settings, name: str, choices: tuple[str, ...], optional: bool = False, fold_case: bool = False
) -> None:
    value = getattr(settings, name)
    if value is None and optional:
        return
    if (value.lower() if fold_case else value) not in choices:
        raise SettingsError(f"PAYSTREAM_{name.upper()}={value!r} is not one of {', '.join(choices)}")


def _check_host(settings: Settings, name: str) -> None:
    """An IP address (v4 or v6, bare) or a DNS host name: what aiohttp can bind to."""
    host = getattr(settings, name)
    try:
        ipaddress.ip_address(host)
    except ValueError:
        if len(host) > HOST_CHARS_MAX or not _HOST_NAME.fullmatch(host):
            raise SettingsError(
                f"PAYSTREAM_{name.upper()}={host!r} must be an IP address or a host name (such as 127.0.0.1 or 0.0.0.0)"
            ) from None


def _check_stall_bound(settings: Settings) -> None:
    """A healthy loop waits at most one poll or one retry backoff between two signs of progress."""
    for name, wait_ms in (
        ("batch_wait_ms", settings.batch_wait_ms),
        ("retry_backoff_ms_max", settings.retry_backoff_ms_max),
    ):
        if settings.health_stall_s_max * 1000 <= wait_ms:
            raise SettingsError(
                f"PAYSTREAM_HEALTH_STALL_S_MAX={settings.health_stall_s_max} must be above"
                f" PAYSTREAM_{name.upper()}={wait_ms} ms: a stage waiting that long would be reported stalled"
            )


def _stage_names() -> tuple[str, ...]:
    # Imported here: workers imports this module.
    from workers import STAGE_NAMES

    return tuple(STAGE_NAMES)


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


__all__ = [
    "CRASH_POINTS",
    "INT_BOUNDS",
    "LOG_FORMATS",
    "LOG_LEVELS",
    "NAMESPACE_CHARS_MAX",
    "REPO_ROOT",
    "TICK_CRASH_POINTS",
    "Settings",
    "load_settings",
]
