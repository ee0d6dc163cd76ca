"""structlog set-up: console lines for people, JSON lines for operators.

Everything goes through the standard library's logging: paystream's own
structlog events and those of aiokafka and asyncpg get the same renderer, so
an operator's JSON log stays one JSON object per line whichever library wrote
it.
"""

from __future__ import annotations

import logging
import sys
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


class _RetriedByClient(logging.Filter):
    """Report errors that the Kafka client retries on its own as warnings."""

    def filter(self, record: logging.LogRecord) -> bool:
        if record.levelno == logging.ERROR and any(mark in record.getMessage() for mark in _RETRIED_BY_AIOKAFKA):
            record.levelno = logging.WARNING
            record.levelname = "WARNING"
            # Its logger let it through as an error; as a warning it must pass that logger's level again.
            return logging.getLogger(record.name).isEnabledFor(logging.WARNING)
        return True


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


def configure_logging(settings: Settings) -> None:
    level = logging.getLevelNamesMapping().get(settings.log_level.upper(), logging.INFO)
    renderer: structlog.types.Processor
    if settings.log_format == "json":
        renderer = structlog.processors.JSONRenderer()
    else:
        renderer = structlog.dev.ConsoleRenderer(colors=False)
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
    handler.addFilter(_RetriedByClient())
    handler.setFormatter(
        structlog.stdlib.ProcessorFormatter(
            foreign_pre_chain=[structlog.stdlib.add_logger_name, *shared],
            processors=[structlog.stdlib.ProcessorFormatter.remove_processors_meta, renderer],
        )
    )
    root = logging.getLogger()
    root.handlers[:] = [handler]
    # The libraries' warnings stay visible; their info chatter does not.
    root.setLevel(max(level, logging.WARNING))
    logging.getLogger("paystream").setLevel(level)
