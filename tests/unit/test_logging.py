"""Log set-up: one renderer for ours and the libraries' records, written to the current stderr."""

from __future__ import annotations

import io
import json
import logging
import sys

import pytest
import structlog

from paystream.logging import configure_logging, quiet_client_logs
from paystream.settings import Settings


@pytest.fixture(autouse=True)
def _keep_the_excepthook(monkeypatch: pytest.MonkeyPatch) -> None:
    """configure_logging replaces sys.excepthook in JSON mode: each test gets the session's back."""
    monkeypatch.setattr("sys.excepthook", sys.excepthook)


def _lines(stream: io.StringIO) -> list[dict[str, object]]:
    return [json.loads(line) for line in stream.getvalue().splitlines()]


def test_json_logs_stay_json_whichever_library_wrote_them(monkeypatch: pytest.MonkeyPatch) -> None:
    captured = io.StringIO()
    monkeypatch.setattr("sys.stderr", captured)
    configure_logging(Settings(log_format="json"))

    structlog.get_logger("paystream.stage").info("batch applied", records=3)
    structlog.get_logger("paystream.stage").debug("not shown at info")
    logging.getLogger("aiokafka.conn").info("library chatter, not shown")
    logging.getLogger("aiokafka.consumer.fetcher").error("Failed fetch offsets: [Error 99] SomethingNewError")

    lines = _lines(captured)
    assert [(line["event"], line["level"]) for line in lines] == [
        ("batch applied", "info"),
        ("Failed fetch offsets: [Error 99] SomethingNewError", "error"),
    ]
    assert lines[0]["records"] == 3
    assert lines[1]["logger"] == "aiokafka.consumer.fetcher"


def test_errors_the_kafka_client_retries_itself_are_warnings(monkeypatch: pytest.MonkeyPatch) -> None:
    captured = io.StringIO()
    monkeypatch.setattr("sys.stderr", captured)
    configure_logging(Settings(log_format="json"))

    logging.getLogger("aiokafka.consumer.group_coordinator").error(
        "Group Coordinator Request failed: [Error 15] GroupCoordinatorNotAvailableError"
    )
    assert [line["level"] for line in _lines(captured)] == ["warning"]


def test_a_downgraded_error_respects_a_logger_set_to_errors_only(monkeypatch: pytest.MonkeyPatch) -> None:
    captured = io.StringIO()
    monkeypatch.setattr("sys.stderr", captured)
    configure_logging(Settings(log_format="json"))
    fetcher = logging.getLogger("aiokafka.consumer.fetcher")
    fetcher.setLevel(logging.ERROR)
    try:
        fetcher.error("Failed fetch offsets from 1: [Error 6] NotLeaderForPartitionError")
        fetcher.error("Failed fetch offsets from 1: [Error 99] SomethingNewError")
    finally:
        fetcher.setLevel(logging.NOTSET)
    assert [line["event"] for line in _lines(captured)] == ["Failed fetch offsets from 1: [Error 99] SomethingNewError"]


def test_logs_follow_stderr_when_it_is_replaced(monkeypatch: pytest.MonkeyPatch) -> None:
    first = io.StringIO()
    monkeypatch.setattr("sys.stderr", first)
    configure_logging(Settings(log_format="json"))
    first.close()  # what a test runner does with the stream it captured into

    second = io.StringIO()
    monkeypatch.setattr("sys.stderr", second)
    structlog.get_logger("paystream.runner").info("after the swap")
    logging.getLogger("asyncpg.pool").warning("library after the swap")

    assert [line["event"] for line in _lines(second)] == ["after the swap", "library after the swap"]


def test_overlapping_quiet_periods_never_leave_the_client_muted(monkeypatch: pytest.MonkeyPatch) -> None:
    captured = io.StringIO()
    monkeypatch.setattr("sys.stderr", captured)
    configure_logging(Settings(log_format="json"))
    client = logging.getLogger("aiokafka.conn")

    first, second = quiet_client_logs(), quiet_client_logs(logging.ERROR)
    first.__enter__()
    second.__enter__()
    client.error("hidden while both are active")
    first.__exit__(None, None, None)  # the first to enter leaves first: a save-and-restore would mute for good
    client.warning("hidden: below the second's floor")
    client.error("shown: at the second's floor")
    second.__exit__(None, None, None)
    client.warning("shown: nothing holds it back")
    structlog.get_logger("paystream.stage").info("ours are never held back")

    assert [line["event"] for line in _lines(captured)] == [
        "shown: at the second's floor",
        "shown: nothing holds it back",
        "ours are never held back",
    ]


def test_a_traceback_in_json_mode_is_one_json_object(monkeypatch: pytest.MonkeyPatch) -> None:
    """Ours, a library's and an uncaught one: each is one line that parses, its traceback a field of it."""
    captured = io.StringIO()
    monkeypatch.setattr("sys.stderr", captured)
    configure_logging(Settings(log_format="json"))

    def fail() -> None:
        secret = "postgresql://app:s3cret@db/pay"  # a frame's local: never in a log
        raise ValueError(f"bad value\nsecond line of the message ({len(secret)})")

    try:
        fail()
    except ValueError:
        structlog.get_logger("paystream.stage").exception("stage failed", stage="risk")
        logging.getLogger("aiokafka.consumer.group_coordinator").exception("Unexpected error in coordinator routine")
        error_info = sys.exc_info()
    sys.excepthook(*error_info)  # type: ignore[arg-type]

    lines = captured.getvalue().splitlines()
    parsed = [json.loads(line) for line in lines]  # every line is one JSON object
    assert [(p["event"], p["level"]) for p in parsed] == [
        ("stage failed", "error"),
        ("Unexpected error in coordinator routine", "error"),
        ("uncaught exception", "critical"),
    ]
    for entry in parsed:
        (exception,) = entry["exception"]
        assert (exception["exc_type"], exception["exc_value"]) == (
            "ValueError",
            "bad value\nsecond line of the message (30)",
        )
        assert [frame["name"] for frame in exception["frames"]][-1] == "fail"
        assert "s3cret" not in json.dumps(entry)
    assert parsed[1]["logger"] == "aiokafka.consumer.group_coordinator"


def test_console_mode_gives_the_default_excepthook_back() -> None:
    configure_logging(Settings(log_format="json"))
    assert sys.excepthook is not sys.__excepthook__
    configure_logging(Settings(log_format="console"))
    assert sys.excepthook is sys.__excepthook__
