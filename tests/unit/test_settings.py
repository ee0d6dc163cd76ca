"""Settings: a mistyped or out-of-range PAYSTREAM_* variable fails loudly, naming itself."""

from __future__ import annotations

from pathlib import Path

import pytest

from paystream.errors import SettingsError
from paystream.settings import load_settings


def test_defaults_point_at_the_local_stack() -> None:
    settings = load_settings({})
    assert settings.kafka_bootstrap == "127.0.0.1:19092"
    assert settings.database_url.endswith("@127.0.0.1:15432/paystream")
    assert settings.crash_point is None


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
        ("PAYSTREAM_BATCH_RECORDS_MAX", "0", "outside 1..100000"),
        ("PAYSTREAM_BATCH_RECORDS_MAX", "many", "is not a whole number"),
        ("PAYSTREAM_KAFKA_SESSION_TIMEOUT_MS", "1000", "outside 6000..300000"),
        ("PAYSTREAM_CRASH_POINT", "sometimes", "is not one of"),
        ("PAYSTREAM_LOG_FORMAT", "xml", "must be console or json"),
    ],
)
def test_bad_values_fail_with_the_variable_name(name: str, value: str, message: str) -> None:
    with pytest.raises(SettingsError, match=message) as raised:
        load_settings({name: value})
    assert name in str(raised.value)


def test_unrelated_environment_is_ignored() -> None:
    assert load_settings({"HOME": "/root", "PAYSTREAMX": "1"}).namespace == ""
