"""The recording file: gzip-compressed JSON lines, standard library and orjson only.

Line 1 is a header (format name and version, topic, window), then one line
per record in the order they are to be played, then a trailer with the record
count. A file without its trailer was cut short and is refused, so a
half-written or truncated recording is never played as if it were whole.
Bytes (key, value, header values) are base64; `null` is a missing key or value.
docs/replay.md describes every field.
"""

from __future__ import annotations

import base64
import binascii
import gzip
import os
import zlib
from collections.abc import Callable, Generator, Iterator
from dataclasses import asdict, dataclass
from datetime import UTC, datetime
from functools import partial
from pathlib import Path
from types import TracebackType
from typing import Any

import orjson

from paystream.errors import PaystreamError

FORMAT_NAME = "paystream.replay"
FORMAT_VERSION = 1
# A record value is at most 1 MiB (max.message.bytes); base64 and JSON around
# it stay well below this, so a longer line is corruption, not data.
LINE_BYTES_MAX = 4 * 1024 * 1024
PARTIAL_SUFFIX = ".partial"

_HEADER_FIELDS = frozenset({"format", "version", "topic", "source_topic", "recorded_at", "since_ms", "until_ms"})
_RECORD_FIELDS = frozenset({"timestamp_ms", "partition", "offset", "key", "value", "headers"})
_TRAILER_FIELDS = frozenset({"end", "records"})

Headers = tuple[tuple[str, bytes | None], ...]
# Builds the error for one line of the file from what is wrong with it.
ErrorAt = Callable[[str], "RecordingError"]


class RecordingError(PaystreamError):
    """A recording file is missing, corrupt, truncated or of another format version."""


@dataclass(frozen=True, slots=True)
class RecordedRecord:
    """One Kafka record as it was read: `timestamp_ms` is its Kafka timestamp."""

    timestamp_ms: int
    partition: int
    offset: int
    key: bytes | None
    value: bytes | None
    headers: Headers = ()


@dataclass(frozen=True, slots=True)
class RecordingHeader:
    """`topic` is the declared name (played back into this namespace's topic of that name)."""

    topic: str
    source_topic: str
    recorded_at: str
    since_ms: int | None = None
    until_ms: int | None = None


@dataclass(frozen=True, slots=True)
class RecordingSummary:
    header: RecordingHeader
    records: int
    first_ms: int | None
    last_ms: int | None

    @property
    def span_ms(self) -> int:
        return 0 if self.first_ms is None or self.last_ms is None else self.last_ms - self.first_ms


def new_header(topic: str, source_topic: str, since_ms: int | None, until_ms: int | None) -> RecordingHeader:
    recorded_at = datetime.now(UTC).isoformat(timespec="milliseconds")
    return RecordingHeader(topic, source_topic, recorded_at, since_ms, until_ms)


class RecordingWriter:
    """Writes `<path>.partial` and renames it to `path` only after the trailer, so `path` is always whole."""

    def __init__(self, path: Path, header: RecordingHeader) -> None:
        self.path = path
        self.partial = path.with_name(path.name + PARTIAL_SUFFIX)
        self.header = header
        self.records = 0
        self.first_ms: int | None = None
        self.last_ms: int | None = None
        self._handle: gzip.GzipFile | None = None

    def __enter__(self) -> RecordingWriter:
        try:
            self._handle = gzip.open(self.partial, "wb")
        except OSError as error:
            raise RecordingError(f"cannot write {self.path}: {error.strerror or error}") from error
        self._line({"format": FORMAT_NAME, "version": FORMAT_VERSION, **asdict(self.header)})
        return self

    def write(self, record: RecordedRecord) -> None:
        self._line(
            {
                "timestamp_ms": record.timestamp_ms,
                "partition": record.partition,
                "offset": record.offset,
                "key": _b64(record.key),
                "value": _b64(record.value),
                "headers": [[name, _b64(value)] for name, value in record.headers],
            }
        )
        self.records += 1
        if self.first_ms is None:
            self.first_ms = record.timestamp_ms
        self.last_ms = record.timestamp_ms

    def __exit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        assert self._handle is not None
        try:
            if exc is None:
                self._line({"end": True, "records": self.records})
        finally:
            self._handle.close()
        if exc is None:
            os.replace(self.partial, self.path)
        else:
            self.partial.unlink(missing_ok=True)

    def summary(self) -> RecordingSummary:
        return RecordingSummary(self.header, self.records, self.first_ms, self.last_ms)

    def _line(self, fields: dict[str, Any]) -> None:
        assert self._handle is not None
        self._handle.write(orjson.dumps(fields) + b"\n")


class Recording:
    """A recording file; its header is read and checked on opening, every other line as it is read."""

    def __init__(self, path: Path) -> None:
        self.path = path
        lines = self._lines()
        try:
            first = next(lines, None)
        finally:
            lines.close()
        if first is None:
            raise RecordingError(f"{path}: empty file, not a {FORMAT_NAME} recording")
        self.header = _parse_header(self._json(first), partial(self._error, 1))

    def records(self) -> Iterator[RecordedRecord]:
        """Every record in file order; raises RecordingError at the first bad line or a missing trailer."""
        count = 0
        trailer: dict[str, Any] | None = None
        lines = self._lines()
        try:
            next(lines)  # the header, checked on opening
            for number, raw in lines:
                fields = self._json((number, raw))
                error_at = partial(self._error, number)
                if trailer is not None:
                    raise error_at("a line after the trailer")
                if "end" in fields:
                    trailer = _parse_trailer(fields, count, error_at)
                    continue
                yield _parse_record(fields, error_at)
                count += 1
        finally:
            lines.close()
        if trailer is None:
            raise RecordingError(f"{self.path}: truncated after line {count + 1}: no trailer line")

    def verify(self) -> RecordingSummary:
        """Read the whole file once, so a corrupt one is refused before anything is sent."""
        count = 0
        first_ms: int | None = None
        last_ms: int | None = None
        for record in self.records():
            count += 1
            first_ms = record.timestamp_ms if first_ms is None else first_ms
            last_ms = record.timestamp_ms
        return RecordingSummary(self.header, count, first_ms, last_ms)

    def _lines(self) -> Generator[tuple[int, bytes], None, None]:
        if not self.path.is_file():
            raise RecordingError(f"no such file: {self.path}")
        number = 0
        try:
            with gzip.open(self.path, "rb") as handle:
                while raw := handle.readline(LINE_BYTES_MAX + 1):
                    number += 1
                    if len(raw) > LINE_BYTES_MAX:
                        raise self._error(number, f"longer than {LINE_BYTES_MAX} bytes")
                    yield number, raw
        except gzip.BadGzipFile as error:
            if number == 0:
                raise RecordingError(f"{self.path}: not a gzip file ({error})") from error
            raise RecordingError(f"{self.path}: corrupt compressed data after line {number} ({error})") from error
        except EOFError as error:
            raise RecordingError(
                f"{self.path}: truncated after line {number}: the compressed data ends early"
            ) from error
        except zlib.error as error:
            raise RecordingError(f"{self.path}: corrupt compressed data after line {number} ({error})") from error

    def _json(self, line: tuple[int, bytes]) -> dict[str, Any]:
        number, raw = line
        if not raw.endswith(b"\n"):
            raise self._error(number, "the file ends in the middle of this line")
        try:
            fields = orjson.loads(raw)
        except orjson.JSONDecodeError as error:
            raise self._error(number, f"not JSON ({error})") from None
        if not isinstance(fields, dict):
            raise self._error(number, "not a JSON object")
        return fields

    def _error(self, number: int, what: str) -> RecordingError:
        return RecordingError(f"{self.path}: line {number}: {what}")


def _parse_header(fields: dict[str, Any], error: ErrorAt) -> RecordingHeader:
    if fields.get("format") != FORMAT_NAME:
        raise error(f"not a {FORMAT_NAME} recording (format {fields.get('format')!r})")
    if fields.get("version") != FORMAT_VERSION:
        raise error(f"format version {fields.get('version')!r} is not supported; this paystream reads {FORMAT_VERSION}")
    _checked(fields, _HEADER_FIELDS, error)
    for name in ("topic", "source_topic", "recorded_at"):
        if not isinstance(fields[name], str):
            raise error(f"{name} is not a string")
    for name in ("since_ms", "until_ms"):
        if fields[name] is not None and not _is_int(fields[name]):
            raise error(f"{name} is neither null nor a whole number")
    return RecordingHeader(
        fields["topic"], fields["source_topic"], fields["recorded_at"], fields["since_ms"], fields["until_ms"]
    )


def _parse_record(fields: dict[str, Any], error: ErrorAt) -> RecordedRecord:
    _checked(fields, _RECORD_FIELDS, error)
    for name in ("timestamp_ms", "partition", "offset"):
        if not _is_int(fields[name]):
            raise error(f"{name} is not a whole number")
    headers = fields["headers"]
    if not isinstance(headers, list) or not all(
        isinstance(h, list) and len(h) == 2 and isinstance(h[0], str) for h in headers
    ):
        raise error("headers is not a list of [name, value] pairs")
    return RecordedRecord(
        timestamp_ms=fields["timestamp_ms"],
        partition=fields["partition"],
        offset=fields["offset"],
        key=_unb64(fields["key"], "key", error),
        value=_unb64(fields["value"], "value", error),
        headers=tuple((name, _unb64(value, f"header {name!r}", error)) for name, value in headers),
    )


def _parse_trailer(fields: dict[str, Any], count: int, error: ErrorAt) -> dict[str, Any]:
    _checked(fields, _TRAILER_FIELDS, error)
    if fields["end"] is not True or not _is_int(fields["records"]):
        raise error('the trailer is not {"end": true, "records": N}')
    if fields["records"] != count:
        raise error(f"the trailer counts {fields['records']} records, the file holds {count}")
    return fields


def _checked(fields: dict[str, Any], expected: frozenset[str], error: ErrorAt) -> None:
    missing = sorted(expected - fields.keys())
    unknown = sorted(fields.keys() - expected)
    if missing:
        raise error(f"missing field {missing[0]!r}")
    if unknown:
        raise error(f"unknown field {unknown[0]!r}")


def _is_int(value: Any) -> bool:
    return type(value) is int  # bool is an int subclass and not a number here


def _b64(data: bytes | None) -> str | None:
    return None if data is None else base64.b64encode(data).decode("ascii")


def _unb64(text: Any, name: str, error: ErrorAt) -> bytes | None:
    if text is None:
        return None
    if not isinstance(text, str):
        raise error(f"{name} is neither null nor a base64 string")
    try:
        return base64.b64decode(text, validate=True)
    except (binascii.Error, ValueError):
        raise error(f"{name} is not valid base64") from None
