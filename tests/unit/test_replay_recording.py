"""The recording file: any records round-trip exactly; every kind of damage is refused naming the line."""

from __future__ import annotations

import gzip
import tempfile
from pathlib import Path

import orjson
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from paystream.replay.recording import (
    RecordedRecord,
    Recording,
    RecordingError,
    RecordingWriter,
    new_header,
)

optional_bytes = st.one_of(st.none(), st.binary(max_size=300))
records = st.builds(
    RecordedRecord,
    timestamp_ms=st.integers(min_value=-1, max_value=2**53),
    partition=st.integers(min_value=0, max_value=2**31 - 1),
    offset=st.integers(min_value=0, max_value=2**63 - 1),
    key=optional_bytes,
    value=optional_bytes,
    headers=st.lists(st.tuples(st.text(max_size=20), optional_bytes), max_size=4).map(tuple),
)
HEADER = new_header("payments.requested", "ns.payments.requested", 1_000, 2_000)


def write(path: Path, items: list[RecordedRecord]) -> None:
    with RecordingWriter(path, HEADER) as writer:
        for item in items:
            writer.write(item)


def write_lines(path: Path, lines: list[bytes]) -> None:
    with gzip.open(path, "wb") as handle:
        handle.write(b"".join(lines))


def good_lines(tmp_path: Path, count: int = 3) -> list[bytes]:
    path = tmp_path / "good.gz"
    write(path, [RecordedRecord(1_000 + i, 0, i, b"k", b"v", (("h", b"x"),)) for i in range(count)])
    with gzip.open(path, "rb") as handle:
        return handle.readlines()


@settings(max_examples=60, deadline=None)
@given(items=st.lists(records, max_size=30), topic=st.text(min_size=1, max_size=40))
def test_any_records_round_trip(items: list[RecordedRecord], topic: str) -> None:
    with tempfile.TemporaryDirectory() as folder:
        path = Path(folder) / "r.jsonl.gz"
        header = new_header(topic, f"ns.{topic}", None, None)
        with RecordingWriter(path, header) as writer:
            for item in items:
                writer.write(item)
        recording = Recording(path)
        assert recording.header == header
        assert list(recording.records()) == items
        summary = recording.verify()
        assert summary.records == len(items)
        assert summary.first_ms == (items[0].timestamp_ms if items else None)
        assert summary.last_ms == (items[-1].timestamp_ms if items else None)
        assert not (Path(folder) / "r.jsonl.gz.partial").exists()


def test_a_failed_recording_leaves_no_file(tmp_path: Path) -> None:
    def fail_midway() -> None:
        with RecordingWriter(tmp_path / "r.gz", HEADER) as writer:
            writer.write(RecordedRecord(1, 0, 0, b"k", b"v"))
            raise RuntimeError("the broker went away")

    with pytest.raises(RuntimeError):
        fail_midway()
    assert list(tmp_path.iterdir()) == []


def test_header_and_trailer_lines_are_as_documented(tmp_path: Path) -> None:
    path = tmp_path / "r.gz"
    write(path, [RecordedRecord(1_500, 3, 42, None, b"\x00\xff", (("trace", None),))])
    with gzip.open(path, "rb") as handle:
        header, record, trailer = (orjson.loads(line) for line in handle)
    assert header == {
        "format": "paystream.replay",
        "version": 1,
        "topic": "payments.requested",
        "source_topic": "ns.payments.requested",
        "recorded_at": HEADER.recorded_at,
        "since_ms": 1_000,
        "until_ms": 2_000,
    }
    assert record == {
        "timestamp_ms": 1_500,
        "partition": 3,
        "offset": 42,
        "key": None,
        "value": "AP8=",
        "headers": [["trace", None]],
    }
    assert trailer == {"end": True, "records": 1}


def test_missing_file(tmp_path: Path) -> None:
    with pytest.raises(RecordingError, match=r"no such file: .*absent\.gz$"):
        Recording(tmp_path / "absent.gz")


def test_not_gzip(tmp_path: Path) -> None:
    path = tmp_path / "plain.jsonl"
    path.write_bytes(b'{"format": "paystream.replay"}\n')
    with pytest.raises(RecordingError, match="not a gzip file"):
        Recording(path)


def test_empty_file(tmp_path: Path) -> None:
    path = tmp_path / "empty.gz"
    write_lines(path, [])
    with pytest.raises(RecordingError, match="empty file"):
        Recording(path)


def test_compressed_data_cut_short_names_the_last_whole_line(tmp_path: Path) -> None:
    path = tmp_path / "r.gz"
    # Incompressible values, so the cut falls in the middle of the records.
    write(path, [RecordedRecord(i, 0, i, b"k", bytes(range(256)) * 8 + i.to_bytes(4, "big")) for i in range(50)])
    data = path.read_bytes()
    path.write_bytes(data[: len(data) // 2])
    recording = Recording(path)
    with pytest.raises(RecordingError, match=r"truncated after line (\d+): the compressed data ends early") as caught:
        list(recording.records())
    assert 1 < int(caught.value.args[0].split("line ")[1].split(":")[0]) < 52


def test_missing_trailer_is_truncation(tmp_path: Path) -> None:
    path = tmp_path / "r.gz"
    write_lines(path, good_lines(tmp_path)[:-1])
    with pytest.raises(RecordingError, match=r"truncated after line 4: no trailer line"):
        Recording(path).verify()


def test_last_line_cut_in_the_middle(tmp_path: Path) -> None:
    lines = good_lines(tmp_path)
    path = tmp_path / "r.gz"
    write_lines(path, [*lines[:2], lines[2][:10]])
    with pytest.raises(RecordingError, match=r"line 3: the file ends in the middle of this line"):
        Recording(path).verify()


RECORD_LINE = b'{"timestamp_ms": 1, "partition": 0, "offset": 0, "key": null, "value": null, "headers": []'
BAD_LINES = [
    (3, b"{not json\n", r"line 3: not JSON"),
    (3, b"[1, 2]\n", r"line 3: not a JSON object"),
    (2, RECORD_LINE.replace(b'"value": null', b'"value": "!!"') + b"}\n", r"line 2: value is not valid base64"),
    (2, RECORD_LINE.replace(b'"timestamp_ms": 1', b'"timestamp_ms": 1.5') + b"}\n", r"line 2: timestamp_ms is not a"),
    (2, RECORD_LINE.replace(b', "headers": []', b"") + b"}\n", r"line 2: missing field 'headers'"),
    (2, RECORD_LINE + b', "x": 1}\n', r"line 2: unknown field 'x'"),
    (2, RECORD_LINE.replace(b"[]", b'[["a"]]') + b"}\n", r"line 2: headers is not a list of \[name, value\] pairs"),
    (5, b'{"end": true, "records": 7}\n', r"line 5: the trailer counts 7 records, the file holds 3"),
]


@pytest.mark.parametrize(("line_number", "replacement", "message"), BAD_LINES)
def test_a_bad_line_is_named(tmp_path: Path, line_number: int, replacement: bytes, message: str) -> None:
    lines = good_lines(tmp_path)
    lines[line_number - 1] = replacement
    path = tmp_path / "r.gz"
    write_lines(path, lines)
    with pytest.raises(RecordingError, match=message):
        Recording(path).verify()


def test_a_line_after_the_trailer(tmp_path: Path) -> None:
    lines = good_lines(tmp_path)
    path = tmp_path / "r.gz"
    write_lines(path, [*lines, lines[1]])
    with pytest.raises(RecordingError, match=r"line 6: a line after the trailer"):
        Recording(path).verify()


BAD_HEADERS = [
    (
        {"format": "paystream.replay", "version": 2},
        r"line 1: format version 2 is not supported; this paystream reads 1",
    ),
    ({"format": "something.else", "version": 1}, r"line 1: not a paystream.replay recording"),
    ({"format": "paystream.replay", "version": 1, "topic": "t"}, r"line 1: missing field 'recorded_at'"),
]


@pytest.mark.parametrize(("header", "message"), BAD_HEADERS)
def test_a_foreign_or_newer_header_is_refused(tmp_path: Path, header: dict[str, object], message: str) -> None:
    path = tmp_path / "r.gz"
    write_lines(path, [orjson.dumps(header) + b"\n", *good_lines(tmp_path)[1:]])
    with pytest.raises(RecordingError, match=message):
        Recording(path)
