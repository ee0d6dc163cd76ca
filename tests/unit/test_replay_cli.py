"""The replay commands refuse bad input with one line and exit status 2, before touching Kafka."""

from __future__ import annotations

import gzip
from pathlib import Path

import pytest

from paystream.cli.main import main
from paystream.replay.recording import RecordedRecord, RecordingWriter, new_header


def recording(path: Path, topic: str = "payments.requested") -> Path:
    with RecordingWriter(path, new_header(topic, f"ns.{topic}", None, None)) as writer:
        writer.write(RecordedRecord(1_000, 0, 0, b"payer-1", b"{}"))
    return path


def one_error_line(capsys: pytest.CaptureFixture[str], argv: list[str]) -> str:
    assert main(argv) == 2
    captured = capsys.readouterr()
    assert captured.out == ""
    lines = captured.err.splitlines()
    assert len(lines) == 1, captured.err
    assert lines[0].startswith("paystream: error: ")
    return lines[0].removeprefix("paystream: error: ")


def test_missing_file(capsys: pytest.CaptureFixture[str], tmp_path: Path) -> None:
    assert one_error_line(capsys, ["replay", "play", str(tmp_path / "nope.gz")]) == f"no such file: {tmp_path}/nope.gz"


def test_corrupt_file_names_the_line(capsys: pytest.CaptureFixture[str], tmp_path: Path) -> None:
    path = recording(tmp_path / "r.gz")
    with gzip.open(path, "rb") as handle:
        lines = handle.readlines()
    with gzip.open(path, "wb") as handle:
        handle.write(lines[0] + b'{"timestamp_ms": "soon"}\n' + lines[2])
    message = one_error_line(capsys, ["replay", "play", str(path)])
    assert message == f"{path}: line 2: missing field 'headers'"


def test_truncated_file(capsys: pytest.CaptureFixture[str], tmp_path: Path) -> None:
    path = recording(tmp_path / "r.gz")
    with gzip.open(path, "rb") as handle:
        lines = handle.readlines()
    with gzip.open(path, "wb") as handle:
        handle.write(b"".join(lines[:2]))
    assert one_error_line(capsys, ["replay", "play", str(path)]) == f"{path}: truncated after line 2: no trailer line"


def test_newer_format_version(capsys: pytest.CaptureFixture[str], tmp_path: Path) -> None:
    path = tmp_path / "r.gz"
    with gzip.open(path, "wb") as handle:
        handle.write(b'{"format": "paystream.replay", "version": 2}\n')
    message = one_error_line(capsys, ["replay", "play", str(path)])
    assert message == f"{path}: line 1: format version 2 is not supported; this paystream reads 1"


@pytest.mark.parametrize(
    ("extra", "message"),
    [
        (["--speed", "fast"], "--speed 'fast' is not a number, max or 0"),
        (["--speed", "-2"], "--speed '-2' must be positive, or max (or 0) for as fast as possible"),
        (["--speed", "inf"], "--speed 'inf' is not a finite number"),
        (["--rate-cap", "0"], "--rate-cap '0' must be a positive number of records per second"),
        (["--id-salt", "abc"], "--id-salt needs --rewrite-ids"),
        (["--rewrite-ids", "--id-salt", "a b"], "--id-salt 'a b' must be 1 to 64 of A-Z a-z 0-9 _ . -"),
        (["--topic", "payments.typo"], "topic 'payments.typo' is not declared; declared topics: payments.requested,"),
    ],
)
def test_bad_play_arguments(capsys: pytest.CaptureFixture[str], tmp_path: Path, extra: list[str], message: str) -> None:
    path = recording(tmp_path / "r.gz")
    assert one_error_line(capsys, ["replay", "play", str(path), *extra]).startswith(message)


def test_rewriting_ids_needs_a_payments_recording(capsys: pytest.CaptureFixture[str], tmp_path: Path) -> None:
    path = recording(tmp_path / "r.gz", topic="payments.outcomes")
    message = one_error_line(capsys, ["replay", "play", str(path), "--rewrite-ids"])
    assert message == "--rewrite-ids applies to payments.requested records; these are from payments.outcomes"


@pytest.mark.parametrize(
    ("argv", "message"),
    [
        (["record", "--topic", "nope"], "topic 'nope' is not declared; declared topics: payments.requested,"),
        (["record", "--topic", "funds.held", "--since", "yesterday"], "--since 'yesterday' is not an ISO 8601 time"),
        (["record", "--topic", "funds.held", "--until", "2026-01-01T00:00:00"], "--until '2026-01-01T00:00:00' needs"),
        (
            ["record", "--topic", "funds.held", "--since", "2026-01-02T00:00:00Z", "--until", "2026-01-01T00:00:00Z"],
            "--since 2026-01-02T00:00:00Z is not before --until 2026-01-01T00:00:00Z",
        ),
        (["copy", "--from-topic", "nope"], "topic 'nope' is not declared"),
        (["copy", "--from-topic", "funds.held", "--rewrite-ids"], "--rewrite-ids applies to payments.requested"),
    ],
)
def test_bad_record_and_copy_arguments(
    capsys: pytest.CaptureFixture[str], tmp_path: Path, argv: list[str], message: str
) -> None:
    out = ["--out", str(tmp_path / "x.gz")] if argv[0] == "record" else []
    assert one_error_line(capsys, ["replay", *argv, *out]).startswith(message)
    assert not (tmp_path / "x.gz").exists()
