"""Encoding and strict decoding of events, with a reason a person can act on.

msgspec decodes and validates in one pass and writes the JSON; decoding never
raises on bad input: it returns an `Invalid` naming the field, the rule broken
and the detail.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from typing import Any, Generic, TypeVar

import msgspec

E = TypeVar("E", bound=msgspec.Struct)

_ENCODER = msgspec.json.Encoder()
# msgspec ends a message with " - at `$.a.b`", or " - at `key` in `$.a`" when a
# map's key (not its value) is wrong.
_AT_PATH = re.compile(r"^(?P<message>.*?)(?: - at (?P<key>`key` in )?`\$(?P<path>[^`]*)`)?\Z", re.DOTALL)
# The name runs to the message's last backtick: a JSON key may be empty or hold backticks.
_NAMED_FIELD = re.compile(r"field `(?P<name>.*)`\Z", re.DOTALL)


@dataclass(frozen=True, slots=True)
class Invalid:
    """Why a record was refused: `field` is a JSON path like `amount_minor` or `payment.currency`."""

    field: str
    rule: str
    detail: str

    def __str__(self) -> str:
        return f"{self.field}: {self.rule} ({self.detail})"


class Decoder(Generic[E]):
    """A reusable strict decoder for one event type."""

    def __init__(self, event_type: type[E], record_bytes_max: int = 64 * 1024) -> None:
        self.event_type = event_type
        self.record_bytes_max = record_bytes_max
        self._decoder = msgspec.json.Decoder(event_type)

    def decode(self, raw: bytes | None) -> E | Invalid:
        if raw is None:
            return Invalid("$", "required", "the record has no value")
        if len(raw) > self.record_bytes_max:
            return Invalid("$", "size", f"{len(raw)} bytes exceeds the limit of {self.record_bytes_max}")
        try:
            return self._decoder.decode(raw)
        except msgspec.ValidationError as error:
            return _reason(str(error), "schema")
        except msgspec.DecodeError as error:
            return Invalid("$", "json", str(error))


def _reason(message: str, default_rule: str) -> Invalid:
    match = _AT_PATH.match(message)
    assert match is not None  # the pattern matches any string
    text = match.group("message")
    path = (match.group("path") or "").lstrip(".")
    if match.group("key"):
        text = f"{text} (in a key of `{path or '$'}`)"
    named = _NAMED_FIELD.search(text)
    if text.startswith("Object missing required field") and named:
        return Invalid(_join(path, named.group("name")), "required", text)
    if text.startswith("Object contains unknown field") and named:
        return Invalid(_join(path, named.group("name")), "unknown_field", text)
    if text.startswith("Invalid enum value"):
        return Invalid(path or "$", "enum", text)
    if text.startswith("Invalid RFC3339"):
        # Not a timestamp at all (as opposed to one without an offset: "timezone").
        return Invalid(path or "$", "format", text)
    if text.startswith("Number out of range"):
        # A JSON number too large for any integer or float (1e400).
        return Invalid(path or "$", "range", text)
    if text.startswith("Expected `"):
        rule = "range" if any(op in text for op in (">=", "<=", " > ", " < ")) else "type"
        if "matching regex" in text:
            rule = "pattern"
        elif "length" in text:
            rule = "length"
        elif "timezone" in text or "tz" in text:
            rule = "timezone"
        return Invalid(path or "$", rule, text)
    return Invalid(path or "$", default_rule, text)


def _join(path: str, name: str) -> str:
    name = name or '""'  # an empty key, spelled so a log line still shows a field
    return f"{path}.{name}" if path else name


def encode(event: msgspec.Struct) -> bytes:
    return _ENCODER.encode(event)


def to_builtins(event: msgspec.Struct) -> Any:
    return msgspec.to_builtins(event)
