"""structlog set-up: console lines for people, JSON lines for operators.

Everything goes through the standard library's logging: paystream's own
structlog events and those of aiokafka and asyncpg get the same renderer, so
an operator's JSON log stays one JSON object per line whichever library wrote
it. A traceback, too, is a field of its event's object (`exception`: a list of
frames), never lines of raw text; so is an exception nothing caught.
"""

from __future__ import annotations

import contextlib
import logging
import sys
from collections.abc import Iterator
from types import TracebackType
from typing import Any, TextIO

import structlog

from paystream.settings import Settings

# aiokafka logs these at ERROR while it retries them itself (a group
# coordinator still loading after the broker starts, a partition whose leader
# is not serving yet or moved): an operator needs to see them, but they are
# not failures of ours.
_RETRIED_BY_AIOKAFKA = (
    "GroupCoordinatorNotAvailableError",
    "NotCoordinatorForGroupError",
    "NotLeaderForPartitionError",
)


# While a command polls a broker that is not up yet, or restarts it on purpose,
# the Kafka client's connection errors are noise in front of the one line (or
# report) that says what happened. One entry per active `quiet_client_logs`.
_client_log_floors: list[int] = []


@contextlib.contextmanager
def quiet_client_logs(level: int = logging.CRITICAL) -> Iterator[None]:
    """Hold the Kafka client's log records below `level` back for a while.

    Entries are added and removed, never saved and restored: overlapping uses
    in concurrent tasks cannot leave the client muted.
    """
    _client_log_floors.append(level)
    try:
        yield
    finally:
        _client_log_floors.remove(level)


class _KafkaClientRecords(logging.Filter):
    """Errors the Kafka client retries itself become warnings; muted ones are dropped."""

    def filter(self, record: logging.LogRecord) -> bool:
        if not record.name.startswith("aiokafka"):
            return True
        if record.levelno == logging.ERROR and any(mark in record.getMessage() for mark in _RETRIED_BY_AIOKAFKA):
            record.levelno = logging.WARNING
            record.levelname = "WARNING"
            # Its logger let it through as an error; as a warning it must pass that logger's level again.
            if not logging.getLogger(record.name).isEnabledFor(logging.WARNING):
                return False
        return not _client_log_floors or record.levelno >= max(_client_log_floors)


class _CurrentStderr(logging.StreamHandler):  # type: ignore[type-arg]
    """Writes to whatever sys.stderr is at the moment of writing.

    A handler that kept the stream it was made with would write to a closed
    file once that stream is replaced (pytest's capture, a daemon's redirect).
    """

    def __init__(self) -> None:
        super().__init__(sys.stderr)

    @property
    def stream(self) -> TextIO:
        return sys.stderr

    @stream.setter
    def stream(self, _value: Any) -> None:
        pass


# Structured tracebacks without the frames' local variables: those may hold a
# database URL's password or a payment's details, which have no place in logs.
_JSON_TRACEBACKS = structlog.processors.ExceptionRenderer(
    structlog.tracebacks.ExceptionDictTransformer(show_locals=False)
)


def _log_uncaught(kind: type[BaseException], error: BaseException, traceback: TracebackType | None) -> None:
    """JSON mode's sys.excepthook: an exception nothing caught is one JSON object, like every other line."""
    if issubclass(kind, KeyboardInterrupt):
        sys.__excepthook__(kind, error, traceback)
        return
    structlog.get_logger("paystream").critical("uncaught exception", exc_info=(kind, error, traceback))


def configure_logging(settings: Settings) -> None:
    level = logging.getLevelNamesMapping().get(settings.log_level.upper(), logging.INFO)
    renderer: structlog.types.Processor
    # Console: ConsoleRenderer prints a traceback for people. JSON: the
    # traceback becomes the event's `exception` field, for ours and for the
    # libraries' records (ProcessorFormatter hands both their exc_info).
    formatting: list[structlog.types.Processor] = [structlog.stdlib.ProcessorFormatter.remove_processors_meta]
    if settings.log_format == "json":
        formatting.append(_JSON_TRACEBACKS)
        renderer = structlog.processors.JSONRenderer()
        sys.excepthook = _log_uncaught
    else:
        renderer = structlog.dev.ConsoleRenderer(colors=False)
        if sys.excepthook is _log_uncaught:
            sys.excepthook = sys.__excepthook__
    shared: list[structlog.types.Processor] = [
        structlog.contextvars.merge_contextvars,
        structlog.processors.add_log_level,
        structlog.processors.TimeStamper(fmt="iso", utc=True),
    ]
    structlog.configure(
        processors=[*shared, structlog.stdlib.ProcessorFormatter.wrap_for_formatter],
        wrapper_class=structlog.make_filtering_bound_logger(level),
        logger_factory=structlog.stdlib.LoggerFactory(),
        cache_logger_on_first_use=True,
    )
    handler = _CurrentStderr()
    handler.addFilter(_KafkaClientRecords())
    handler.setFormatter(
        structlog.stdlib.ProcessorFormatter(
            foreign_pre_chain=[structlog.stdlib.add_logger_name, *shared],
            processors=[*formatting, renderer],
        )
    )
    root = logging.getLogger()
    root.handlers[:] = [handler]
    # The libraries' warnings stay visible; their info chatter does not.
    root.setLevel(max(level, logging.WARNING))
    logging.getLogger("paystream").setLevel(level)
