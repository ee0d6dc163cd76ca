"""Settings: a mistyped or out-of-range PAYSTREAM_* variable fails loudly, naming itself.

Every field has a bound check (`test_every_field_refuses_*`), so a new field
added without one fails here; docs/operations.md lists exactly the fields,
with their defaults and bounds (`test_operations_doc_*`).
"""

from __future__ import annotations

import dataclasses
import re
from pathlib import Path
from typing import Any, get_type_hints

import pytest

from paystream.errors import SettingsError
from paystream.settings import (
    CRASH_POINTS,
    INT_BOUNDS,
    LOG_FORMATS,
    LOG_LEVELS,
    NAMESPACE_CHARS_MAX,
    REPO_ROOT,
    Settings,
    load_settings,
)
from workers import STAGE_NAMES

FIELDS = {field.name: field for field in dataclasses.fields(Settings)}
HINTS = get_type_hints(Settings)
INT_FIELDS = sorted(name for name in FIELDS if HINTS[name] is int)
OPERATIONS_DOC = REPO_ROOT / "docs" / "operations.md"

# At least one malformed value per field that is not a whole number; a new
# field of another type must add its own here (test_every_field_has_a_malformed_example).
MALFORMED: dict[str, list[str]] = {
    "kafka_bootstrap": ["", "kafka", "kafka:", ":9092", "kafka:0", "kafka:65536", "a:1,", "a:1;b:2", "a b:1", "h:p"],
    "database_url": ["", "127.0.0.1:15432/paystream", "mysql://u@h/db", "http://h/db", "postgresql://h/db x"],
    "namespace": ["a b", "t/1.", "ü.", "x" * (NAMESPACE_CHARS_MAX + 1)],
    "stack_dir": ["relative/stack", "."],
    "cache_dir": ["cache"],
    "kafka_version": ["", "latest", "3.9.0", "4.1", "4.1.1-rc1"],
    "crash_point": ["sometimes", "AFTER_DECODE"],
    "crash_stage": ["riskk", "all"],
    "log_level": ["loud", "verbose", ""],
    "log_format": ["xml", "JSON", ""],
    "metrics_host": ["", "a b", "host:9100", "http://host", "-bad", "a..b", "x" * 254, "[::1]"],
    "views_host": ["", "a b", "host:6066", "http://host", "-bad", "x" * 254, "[::1]"],
}


def _env_name(field: str) -> str:
    return f"PAYSTREAM_{field.upper()}"


def _refused(field: str, raw: str) -> str:
    with pytest.raises(SettingsError) as raised:
        load_settings({_env_name(field): raw})
    message = str(raised.value)
    assert _env_name(field) in message, message
    return message


def test_defaults_point_at_the_local_stack() -> None:
    settings = load_settings({})
    assert settings.kafka_bootstrap == "127.0.0.1:19092"
    assert settings.database_url.endswith("@127.0.0.1:15432/paystream")
    assert settings.crash_point is None


def test_the_defaults_are_valid() -> None:
    assert Settings().validate() == Settings()


def test_values_are_parsed_by_type() -> None:
    settings = load_settings(
        {"PAYSTREAM_BATCH_RECORDS_MAX": "250", "PAYSTREAM_STACK_DIR": "/tmp/x", "PAYSTREAM_CRASH_POINT": ""}
    )
    assert settings.batch_records_max == 250
    assert settings.stack_dir == Path("/tmp/x")
    assert settings.crash_point is None


def test_unknown_variable_is_named() -> None:
    with pytest.raises(SettingsError, match="unknown setting PAYSTREAM_BATCH_RECORD_MAX"):
        load_settings({"PAYSTREAM_BATCH_RECORD_MAX": "5"})


@pytest.mark.parametrize(
    ("name", "value", "message"),
    [
        ("PAYSTREAM_BATCH_RECORDS_MAX", "0", "=0 is outside 1..100000"),
        ("PAYSTREAM_BATCH_RECORDS_MAX", "many", "='many' is not a whole number"),
        ("PAYSTREAM_KAFKA_SESSION_TIMEOUT_MS", "1000", "=1000 is outside 6000..300000"),
        ("PAYSTREAM_RECORD_BYTES_MAX", "0", "=0 is outside 32768..1000000"),
        ("PAYSTREAM_RETRY_DURATION_MS_MAX", "-5", "=-5 is outside 1000..3600000"),
        ("PAYSTREAM_SHUTDOWN_GRACE_MS", "0", "=0 is outside 100..600000"),
        ("PAYSTREAM_LOG_LEVEL", "loud", "='loud' is not one of debug, info, warning, error, critical"),
        ("PAYSTREAM_LOG_FORMAT", "xml", "='xml' is not one of console, json"),
        ("PAYSTREAM_CRASH_POINT", "sometimes", "='sometimes' is not one of after_decode, "),
        ("PAYSTREAM_CRASH_STAGE", "riskk", "='riskk' is not one of risk, funds, clearing, settlement"),
        ("PAYSTREAM_NAMESPACE", "a b.", "='a b.' must be at most 100 of the characters a-z A-Z 0-9 . _ -"),
        ("PAYSTREAM_KAFKA_BOOTSTRAP", "kafka", "='kafka' must be host:port, or several separated by commas"),
        ("PAYSTREAM_KAFKA_BOOTSTRAP", "a:1,b:70000", "='a:1,b:70000': port 70000 is outside 1..65535"),
        ("PAYSTREAM_KAFKA_VERSION", "3.9.0", "='3.9.0' must be a Kafka 4 release such as 4.1.1"),
        ("PAYSTREAM_STACK_DIR", "stack", "='stack' must be an absolute path"),
    ],
)
def test_bad_values_fail_with_the_variable_name(name: str, value: str, message: str) -> None:
    with pytest.raises(SettingsError) as raised:
        load_settings({name: value})
    assert str(raised.value).startswith(name + message)


@pytest.mark.parametrize("field", INT_FIELDS)
def test_every_whole_number_field_refuses_values_out_of_its_bounds(field: str) -> None:
    assert field in INT_BOUNDS, f"{field} has no bounds in paystream.settings.INT_BOUNDS"
    low, high = INT_BOUNDS[field]
    assert low <= FIELDS[field].default <= high, field
    for raw in (str(low - 1), str(high + 1), "-1000000000000", "1000000000000"):
        assert _refused(field, raw) == f"{_env_name(field)}={int(raw)} is outside {low}..{high}"
    for raw in ("", "ten", "1.5", "1e3"):
        assert _refused(field, raw) == f"{_env_name(field)}={raw!r} is not a whole number"
    # The bounds themselves are allowed (cross-field rules aside: backoff initial <= max < the stall bound).
    for value in (low, high):
        changes = {field: value}
        if field == "retry_backoff_ms_initial":
            changes["retry_backoff_ms_max"] = max(value, INT_BOUNDS["retry_backoff_ms_max"][0])
        if field == "retry_backoff_ms_max":
            changes["retry_backoff_ms_initial"] = min(value, INT_BOUNDS["retry_backoff_ms_initial"][1])
            changes["health_stall_s_max"] = INT_BOUNDS["health_stall_s_max"][1]
        Settings(**changes).validate()


def test_every_field_has_a_malformed_example() -> None:
    others = sorted(name for name in FIELDS if name not in INT_FIELDS)
    assert sorted(MALFORMED) == others, "a new setting needs a check in Settings.validate() and an example here"
    assert sorted(INT_BOUNDS) == INT_FIELDS


@pytest.mark.parametrize(("field", "raw"), [(f, raw) for f, values in MALFORMED.items() for raw in values])
def test_every_field_refuses_malformed_values(field: str, raw: str) -> None:
    _refused(field, raw)


def test_backoff_must_not_start_above_its_cap() -> None:
    with pytest.raises(SettingsError) as raised:
        load_settings({"PAYSTREAM_RETRY_BACKOFF_MS_INITIAL": "6000", "PAYSTREAM_RETRY_BACKOFF_MS_MAX": "5000"})
    assert str(raised.value) == ("PAYSTREAM_RETRY_BACKOFF_MS_INITIAL=6000 is above PAYSTREAM_RETRY_BACKOFF_MS_MAX=5000")


@pytest.mark.parametrize(
    ("field", "raw", "expected"),
    [
        ("kafka_bootstrap", "broker1:9092,broker2.example.com:9093", "broker1:9092,broker2.example.com:9093"),
        ("kafka_bootstrap", "[::1]:9092", "[::1]:9092"),
        ("kafka_bootstrap", "kafka_1:65535", "kafka_1:65535"),
        ("database_url", "postgres://u:p@h:5432/db?sslmode=require", "postgres://u:p@h:5432/db?sslmode=require"),
        ("database_url", "postgresql:///db?host=/run/postgresql", "postgresql:///db?host=/run/postgresql"),
        ("namespace", "t1a2b3c4d.", "t1a2b3c4d."),
        ("namespace", "", ""),
        ("log_level", "WARNING", "WARNING"),
        ("kafka_version", "4.0.0", "4.0.0"),
        ("crash_stage", "settlement", "settlement"),
        ("cache_dir", "~/c", Path("~/c").expanduser()),
        ("metrics_host", "0.0.0.0", "0.0.0.0"),
        ("metrics_host", "::", "::"),
        ("metrics_host", "metrics-1.example.com", "metrics-1.example.com"),
        ("views_host", "0.0.0.0", "0.0.0.0"),
        ("views_host", "::1", "::1"),
        ("metrics_port", "9100", 9100),
    ],
)
def test_well_formed_values_are_accepted(field: str, raw: str, expected: Any) -> None:
    assert getattr(load_settings({_env_name(field): raw}), field) == expected


@pytest.mark.parametrize(
    ("environment", "message"),
    [
        (
            {"PAYSTREAM_RETRY_BACKOFF_MS_MAX": "200000"},
            "PAYSTREAM_HEALTH_STALL_S_MAX=120 must be above PAYSTREAM_RETRY_BACKOFF_MS_MAX=200000 ms:"
            " a stage waiting that long would be reported stalled",
        ),
        (
            {"PAYSTREAM_HEALTH_STALL_S_MAX": "30", "PAYSTREAM_BATCH_WAIT_MS": "30000"},
            "PAYSTREAM_HEALTH_STALL_S_MAX=30 must be above PAYSTREAM_BATCH_WAIT_MS=30000 ms:"
            " a stage waiting that long would be reported stalled",
        ),
    ],
)
def test_the_stall_bound_is_above_every_deliberate_wait(environment: dict[str, str], message: str) -> None:
    with pytest.raises(SettingsError) as raised:
        load_settings(environment)
    assert str(raised.value) == message


def test_a_database_password_is_not_repeated_in_the_message() -> None:
    message = _refused("database_url", "mysql://app:s3cret@db:3306/pay")
    assert "s3cret" not in message
    assert message == "PAYSTREAM_DATABASE_URL='mysql://app:***@db:3306/pay' must be a postgresql:// or postgres:// URL"


def test_a_namespaced_topic_name_fits_kafka() -> None:
    from topology.topics import TOPICS

    assert NAMESPACE_CHARS_MAX + max(len(topic.name) for topic in TOPICS) <= 249


def test_record_bytes_floor_leaves_room_for_a_payment() -> None:
    from schemas.envelope import RESERVED_BYTES
    from schemas.payments import PaymentRequested

    assert INT_BOUNDS["record_bytes_max"][0] >= RESERVED_BYTES[PaymentRequested] + 4_096


def test_event_time_past_bound_is_the_long_velocity_window() -> None:
    from workers.risk_rules import VELOCITY_LONG_WINDOW

    assert INT_BOUNDS["event_time_past_s_max"][1] == VELOCITY_LONG_WINDOW.total_seconds()


def test_crash_stages_are_the_stages() -> None:
    for stage in STAGE_NAMES:
        assert load_settings({"PAYSTREAM_CRASH_STAGE": stage}).crash_stage == stage


def test_unrelated_environment_is_ignored() -> None:
    assert load_settings({"HOME": "/root", "PAYSTREAMX": "1"}).namespace == ""


# --- docs/operations.md lists exactly the settings ---------------------------------------------


def _doc_rows() -> dict[str, list[str]]:
    rows: dict[str, list[str]] = {}
    for line in OPERATIONS_DOC.read_text(encoding="utf-8").splitlines():
        match = re.match(r"\| `PAYSTREAM_([A-Z0-9_]+)` \|", line)
        if match:
            cells = [cell.strip() for cell in line.strip().strip("|").split(" | ")]
            assert len(cells) == 5, line
            name = match.group(1).lower()
            assert name not in rows, f"{name} is listed twice"
            rows[name] = cells
    return rows


def test_operations_doc_lists_exactly_the_settings() -> None:
    assert sorted(_doc_rows()) == sorted(FIELDS)


def test_operations_doc_states_each_default_and_bound() -> None:
    rows = _doc_rows()
    for name in INT_FIELDS:
        _, default, allowed, what, why = rows[name]
        low, high = INT_BOUNDS[name]
        assert default == str(FIELDS[name].default), name
        assert allowed.startswith(f"{low}..{high}"), name
        assert what and why, name
    for name in ("kafka_bootstrap", "database_url", "kafka_version", "log_level", "log_format"):
        assert rows[name][1] == f"`{FIELDS[name].default}`", name
    assert rows["namespace"][1] == "empty"
    for name, choices in (
        ("crash_point", CRASH_POINTS),
        ("crash_stage", STAGE_NAMES),
        ("log_level", LOG_LEVELS),
        ("log_format", LOG_FORMATS),
    ):
        assert re.findall(r"`([a-z_]+)`", rows[name][2]) == list(choices), name
    assert f"at most {NAMESPACE_CHARS_MAX}" in rows["namespace"][2]
