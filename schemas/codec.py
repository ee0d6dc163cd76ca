"""Encoding and strict decoding of events, with a reason a person can act on.

msgspec decodes and validates in one pass and writes the JSON; decoding never
raises on bad input: it returns an `Invalid` naming the field, the rule broken
and the detail.

After msgspec, in this order, the decoder refuses what a later stage or
PostgreSQL could not store (rules in docs/reference/events.md):

- `text`: a string anywhere (values, map keys, nested Structs, lists)
  holding U+0000 (PostgreSQL text and jsonb cannot store it) or a lone
  surrogate (not encodable as UTF-8, so asyncpg cannot send it);
- `duplicate_key`: an object that names a key twice, at any depth, however
  the key is spelt (`"amo\\u0075nt_minor"`). JSON readers disagree on which
  value wins, so a repeat could mean one amount here and another elsewhere;
- `size`: a payment request whose re-encoding leaves too little room under
  `record_bytes_max` for the events derived from it (`schemas/envelope.py`);
- whatever the optional `admit` check refuses (the event-time window,
  `schemas/event_time.py`).

Each event is re-encoded once (about 0.3 µs for a payment). That encoding
tells whether the event needs walking for text (only when it holds \\u0000 or
cannot be made), and whether the record needs Python's parser for repeated
keys (not when it is that encoding, as every paystream producer writes, nor
when it differs from msgspec's spelling only in whitespace and key order):
see `_plainly_unique_keys`.

Every `Invalid` is storable text itself: NUL and lone surrogates in its field
and detail (from a field *name* in the input, say) are written as `\\u0000`.
"""

from __future__ import annotations

import itertools
import json
import re
from collections.abc import Callable
from dataclasses import dataclass
from datetime import UTC, datetime
from functools import cache
from typing import Any, Generic, TypeVar

import msgspec

from schemas.envelope import RESERVED_BYTES

E = TypeVar("E", bound=msgspec.Struct)

_ENCODER = msgspec.json.Encoder()
# msgspec ends a message with " - at `$.a.b`", or " - at `key` in `$.a`" when a
# map's key (not its value) is wrong.
_AT_PATH = re.compile(r"^(?P<message>.*?)(?: - at (?P<key>`key` in )?`\$(?P<path>[^`]*)`)?\Z", re.DOTALL)
# The name runs to the message's last backtick: a JSON key may be empty or hold backticks.
_NAMED_FIELD = re.compile(r"field `(?P<name>.*)`\Z", re.DOTALL)
# What PostgreSQL text cannot hold (NUL) and UTF-8 cannot encode (lone surrogates).
_UNSTORABLE = re.compile("[\x00\ud800-\udfff]")
# A JSON escape of a surrogate (\uD800..\uDFFF): the only way one can reach msgspec.
_SURROGATE_ESCAPE = re.compile(rb"\\u[dD][89a-fA-F]")


def storable_text(text: str) -> str:
    """`text` with NUL and lone surrogates written as `\\u0000`, `\\ud800`: PostgreSQL text can store the result.

    Everything else is kept as it is, so ordinary text is returned unchanged.
    """
    if _UNSTORABLE.search(text) is None:
        return text
    return _UNSTORABLE.sub(lambda found: f"\\u{ord(found.group()):04x}", text)


@dataclass(frozen=True, slots=True)
class Invalid:
    """Why a record was refused: `field` is a JSON path like `amount_minor` or `payment.currency`.

    `field` and `detail` go through `storable_text`, so a refusal can always be
    stored, whatever the input held.
    """

    field: str
    rule: str
    detail: str

    def __post_init__(self) -> None:
        object.__setattr__(self, "field", storable_text(self.field))
        object.__setattr__(self, "detail", storable_text(self.detail))

    def __str__(self) -> str:
        return f"{self.field}: {self.rule} ({self.detail})"


class _SchemaName(msgspec.Struct):
    """Only the `schema` and `v` fields of a document, to pick the type that decodes it."""

    schema: str | None = None
    v: int | None = None


_SCHEMA_NAME = msgspec.json.Decoder(_SchemaName)


def schema_name_of(event_type: type[msgspec.Struct]) -> str:
    """The `schema` field's fixed value (`schema: Literal["x"] = "x"`) of a contract."""
    return str(_fixed_default(event_type, "schema"))


def _fixed_default(event_type: type[msgspec.Struct], name: str) -> object:
    for field in msgspec.structs.fields(event_type):
        if field.name == name and field.default is not msgspec.NODEFAULT:
            return field.default
    raise TypeError(f"{event_type.__name__} has no fixed `{name}` field")


class Decoder(Generic[E]):
    """A reusable strict decoder for one event type, or for several on one topic.

    Given several types, the document's `schema` field picks the type (the
    first type when the field is absent, so a payment request that omits it
    still decodes as one), and `v` the version when several versions of one
    contract are given (a reader of retained events of an older version); an
    unknown name is refused with rule `schema`.

    `admit`, when given, is asked about every event that passed every other
    rule, with the record's time (`decode`'s `record_time`, or now when the
    caller has none); the `Invalid` it returns refuses the record.
    """

    def __init__(
        self,
        event_type: type[E] | tuple[type[msgspec.Struct], ...],
        record_bytes_max: int = 64 * 1024,
        admit: Callable[[E, datetime], Invalid | None] | None = None,
    ) -> None:
        types = event_type if isinstance(event_type, tuple) else (event_type,)
        self.event_type = types[0]
        self.record_bytes_max = record_bytes_max
        self.admit = admit
        self._decoder = msgspec.json.Decoder(types[0])
        # One decoder per (schema, version) when the topic carries several types;
        # per name, the first type given is the one a document without `v` gets.
        self._by_version: dict[tuple[str, object], msgspec.json.Decoder[Any]] = {}
        self._by_schema: dict[str, msgspec.json.Decoder[Any]] = {}
        if len(types) > 1:
            for t in types:
                decoder = msgspec.json.Decoder(t)
                self._by_version[(schema_name_of(t), _fixed_default(t, "v"))] = decoder
                self._by_schema.setdefault(schema_name_of(t), decoder)
        # Room kept for the events derived from each type (payment requests only).
        self._reserved = {t: RESERVED_BYTES.get(t, 0) for t in types}
        self.reserved_bytes = self._reserved[types[0]]

    def _decoder_for(self, raw: bytes) -> msgspec.json.Decoder[Any] | Invalid:
        if not self._by_schema:
            return self._decoder
        try:
            named = _SCHEMA_NAME.decode(raw)
        except (msgspec.ValidationError, msgspec.DecodeError):
            return self._decoder  # not JSON, or `schema` not a string: the main decoder says what is wrong
        if named.schema is None:
            return self._decoder
        found = self._by_version.get((named.schema, named.v)) or self._by_schema.get(named.schema)
        if found is None:
            known = ", ".join(sorted(self._by_schema))
            return Invalid("schema", "schema", f"unknown event schema {named.schema!r} on this topic; known: {known}")
        return found

    def decode(self, raw: bytes | None, record_time: datetime | None = None) -> E | Invalid:
        if raw is None:
            return Invalid("$", "required", "the record has no value")
        if len(raw) > self.record_bytes_max:
            return Invalid("$", "size", f"{len(raw)} bytes exceeds the limit of {self.record_bytes_max}")
        decoder = self._decoder_for(raw)
        if isinstance(decoder, Invalid):
            return decoder
        try:
            event: E = decoder.decode(raw)
        except msgspec.ValidationError as error:
            return _reason(str(error), "schema", raw)
        except msgspec.DecodeError as error:
            return _undecodable(raw, str(error))
        # The re-encoding shows whether a string is unstorable: msgspec writes NUL as
        # \u0000 and cannot encode a lone surrogate at all. Only then is the event walked.
        try:
            canonical = _ENCODER.encode(event)
        except UnicodeEncodeError as error:
            return find_unstorable_text(event) or Invalid("$", "text", f"cannot be written as UTF-8: {error}")
        if b"\\u0000" in canonical:
            problem = find_unstorable_text(event)  # None when the text was a backslash and "u0000"
            if problem is not None:
                return problem
        if not _plainly_unique_keys(raw, canonical):
            problem = find_repeated_key(raw)
            if problem is not None:
                return problem
        reserved_bytes = self._reserved.get(type(event), 0)
        if reserved_bytes and len(canonical) + reserved_bytes > self.record_bytes_max:
            return Invalid(
                "$",
                "size",
                f"{len(canonical)} bytes as re-encoded, plus {reserved_bytes} bytes that the events derived"
                f" from it may add (risk.assessed, funds.held), exceeds the limit of {self.record_bytes_max}",
            )
        if self.admit is not None:
            refused = self.admit(event, datetime.now(UTC) if record_time is None else record_time)
            if refused is not None:
                return refused
        return event


def find_unstorable_text(value: object, path: str = "") -> Invalid | None:
    """The first string in `value` (document order) that PostgreSQL or asyncpg cannot store, as `text`.

    Walks msgspec Structs (by their JSON field names), dicts (keys, then
    values: a bad key is blamed on the map, a bad value on `map.key`), lists
    and tuples (`list[3]`). Other values (numbers, timestamps, None) hold no text.
    """
    if not _holds_unstorable_text(value):
        return None
    # Found: walk again, this time building each path (a normal record never gets here).
    stack: list[tuple[object, str]] = [(value, path)]
    while stack:
        item, at = stack.pop()
        if isinstance(item, str):
            if _UNSTORABLE.search(item) is not None:
                return _text_invalid(at, item, "")
        elif isinstance(item, msgspec.Struct):
            fields = _struct_fields(type(item))
            stack.extend((getattr(item, name), _join(at, wire)) for name, wire in reversed(fields))
        elif isinstance(item, dict):
            children: list[tuple[object, str]] = []
            for key, child in item.items():
                if isinstance(key, str) and _UNSTORABLE.search(key) is not None:
                    return _text_invalid(at, key, "a key ")
                children.append((child, _join(at, key) if isinstance(key, str) else f"{at or '$'}[...]"))
            stack.extend(reversed(children))
        elif isinstance(item, list | tuple):
            stack.extend((child, f"{at or '$'}[{index}]") for index, child in reversed(list(enumerate(item))))
    return None


def _holds_unstorable_text(value: object) -> bool:
    """Whether any string in `value` holds NUL or a lone surrogate: the walk without paths (about 1.5 µs a payment)."""
    stack: list[object] = [value]
    while stack:
        item = stack.pop()
        if isinstance(item, str):
            if _unstorable(item):
                return True
        elif isinstance(item, msgspec.Struct):
            stack.extend(msgspec.structs.astuple(item))
        elif isinstance(item, dict):
            if any(isinstance(key, str) and _unstorable(key) for key in item):
                return True
            stack.extend(item.values())
        elif isinstance(item, list | tuple):
            stack.extend(item)
    return False


def _unstorable(text: str) -> bool:
    # An ASCII string holds no surrogate; `in` and isascii() cost far less than a regex search.
    return "\x00" in text or (not text.isascii() and _UNSTORABLE.search(text) is not None)


@cache
def _struct_fields(struct: type[msgspec.Struct]) -> tuple[tuple[str, str], ...]:
    """(attribute, JSON name) of each field, in encoding order."""
    return tuple(zip(struct.__struct_fields__, struct.__struct_encode_fields__, strict=True))


def _text_invalid(path: str, text: str, what: str) -> Invalid:
    found = _UNSTORABLE.search(text)
    assert found is not None
    char = found.group()
    reason = (
        "NUL, which PostgreSQL text cannot store"
        if char == "\x00"
        else "a lone surrogate, which is not encodable as UTF-8"
    )
    return Invalid(
        path or "$",
        "text",
        f"{what}{text[:80]!r} holds U+{ord(char):04X} at character {found.start()}: {reason}",
    )


def _undecodable(raw: bytes, message: str) -> Invalid:
    """A document msgspec could not read: `json`, unless what stopped it was a lone surrogate.

    msgspec refuses a surrogate escape without its pair as malformed JSON
    ("Input data was truncated" at the end of a string), naming no field.
    Python's json reads it: when it reads the whole document, the text that
    holds the surrogate is named, as `text`.
    """
    if _SURROGATE_ESCAPE.search(raw) is not None:
        try:
            # Every pair kept that holds bad text (a later plain value of the
            # same key must not hide it), and numbers left unread (Python's int
            # refuses over 4,300 digits): only the text matters here.
            document = json.loads(
                raw.decode("utf-8"),
                object_pairs_hook=_keep_unstorable,
                parse_int=str,
                parse_float=str,
                parse_constant=str,
            )
        except (ValueError, RecursionError):
            pass
        else:
            problem = find_unstorable_text(document)
            if problem is not None:
                return problem
    return Invalid("$", "json", message)


def _keep_unstorable(pairs: list[tuple[str, Any]]) -> dict[str, Any]:
    """An object where a repeated key keeps a value holding unstorable text over a later, plain one."""
    found: dict[str, Any] = {}
    for key, value in pairs:
        if key in found and find_unstorable_text(found[key]) is not None:
            continue
        found[key] = value
    return found


class _RepeatedKeyError(Exception):
    """An object named a key twice; raised from inside json.loads to stop at once."""


def _unique_pairs(pairs: list[tuple[str, Any]]) -> dict[str, Any]:
    found = dict(pairs)
    if len(found) != len(pairs):
        raise _RepeatedKeyError
    return found


class _Repeats(dict[str, Any]):
    """An object that named `key` `count` times (its first repeated key); `ended` orders objects by their end."""

    key: str = ""
    count: int = 0
    ended: int = 0


def _marking_hook() -> Callable[[list[tuple[str, Any]]], dict[str, Any]]:
    ended = itertools.count()

    def mark(pairs: list[tuple[str, Any]]) -> dict[str, Any]:
        found = dict(pairs)
        order = next(ended)
        if len(found) == len(pairs):
            return found
        names = [name for name, _value in pairs]
        marked = _Repeats(found)
        marked.key = next(name for index, name in enumerate(names) if name in names[:index])
        marked.count = names.count(marked.key)
        marked.ended = order
        return marked

    return mark


def _plainly_unique_keys(raw: bytes, canonical: bytes) -> bool:
    """Whether `raw` cannot repeat a key, shown without Python's parser (several times cheaper).

    msgspec never writes a key twice. So a record that is exactly the event's
    re-encoding (what every paystream producer sends) repeats none; nor does
    one that, stripped of whitespace, is what msgspec writes for its plain
    reading (objects as dicts, in the record's key order): a repeated key
    would be written once there, and the two could not be equal. Anything
    else (other escapes or number spellings) gets the full check.
    """
    if raw == canonical:
        return True
    try:
        return _ENCODER.encode(msgspec.json.decode(raw)) == msgspec.json.format(raw, indent=-1)
    except msgspec.MsgspecError:
        return False


def find_repeated_key(raw: bytes) -> Invalid | None:
    """The first object in `raw` (a document msgspec read) to end that names a key twice, as `duplicate_key`.

    The standard library's parser reads every key, escapes resolved, and hands
    each object's pairs over as the object ends, before they are merged.
    "First" is in the order objects end, as msgspec reports a missing field
    when its object ends: an inner object before the one holding it. `field`
    is the object's path plus the key (`amount_minor`, `payment.metadata.note`).
    """
    text = raw.decode("utf-8")
    try:
        json.loads(text, object_pairs_hook=_unique_pairs)
    except _RepeatedKeyError:
        pass
    except (ValueError, RecursionError) as error:
        # msgspec read it and Python's json cannot: not expected, and not let through unchecked.
        return Invalid("$", "json", f"cannot check it for repeated keys: {error}")
    else:
        return None
    repeats: list[tuple[_Repeats, str]] = []
    stack: list[tuple[Any, str]] = [(json.loads(text, object_pairs_hook=_marking_hook()), "")]
    while stack:
        item, at = stack.pop()
        if isinstance(item, _Repeats):
            repeats.append((item, at))
        if isinstance(item, dict):
            stack.extend((child, _join(at, key)) for key, child in item.items())
        elif isinstance(item, list):
            stack.extend((child, f"{at or '$'}[{index}]") for index, child in enumerate(item))
    first, at = min(repeats, key=lambda repeat: repeat[0].ended)
    return Invalid(
        _join(at, first.key),
        "duplicate_key",
        f"the key {first.key!r} appears {first.count} times in {'`' + at + '`' if at else 'the record'};"
        " JSON readers disagree on which value wins, so a repeated key is refused",
    )


def _reason(message: str, default_rule: str, raw: bytes | None = None) -> Invalid:
    if raw is not None and message.startswith(_UNKNOWN_FIELD):
        found = _unknown_field(message, raw)
        if found is not None:
            return found
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


_UNKNOWN_FIELD = "Object contains unknown field `"
_SUFFIX_START = re.compile(r"` - at `\$")
_PATH_STEP = re.compile(r"\.(?P<key>\w+)|\[(?P<index>\d+)\]")


def _unknown_field(message: str, raw: bytes) -> Invalid | None:
    """Name an unknown field as sent, even when its name looks like msgspec's " - at `$.path`" suffix.

    msgspec writes `unknown field `NAME`` and, below the top level, ` - at `$PATH``;
    a name may itself contain that suffix, so each way of reading the message is
    checked against the document: the one whose object really holds that key wins.
    A real suffix always follows the name's closing backtick, so a message with
    no "` - at `$" in it can be read one way only. None when no reading fits.
    """
    body = message[len(_UNKNOWN_FIELD) :]
    readings = [(body[:-1], "")] if body.endswith("`") else []
    for suffix in _SUFFIX_START.finditer(body):
        rest = body[suffix.end() :]
        if rest.endswith("`") and "`" not in rest[:-1]:
            readings.append((body[: suffix.start()], rest[:-1]))
    if len(readings) == 1:
        name, path = readings[0]
        return Invalid(_join(path.lstrip("."), name), "unknown_field", f"Object contains unknown field `{name}`")
    if not readings:
        return None
    try:
        document = json.loads(raw.decode("utf-8"), parse_int=str, parse_float=str, parse_constant=str)
    except (ValueError, RecursionError):
        return None
    for name, path in readings:
        holder = _at_path(document, path)
        if isinstance(holder, dict) and name in holder:
            return Invalid(_join(path.lstrip("."), name), "unknown_field", f"Object contains unknown field `{name}`")
    return None


def _at_path(document: Any, path: str) -> Any:
    """The value at a msgspec path like `.payment` or `.items[2]`; None when the document has none there."""
    node, position = document, 0
    while position < len(path):
        step = _PATH_STEP.match(path, position)
        if step is None:
            return None
        if step.group("key") is not None:
            if not isinstance(node, dict) or step.group("key") not in node:
                return None
            node = node[step.group("key")]
        else:
            index = int(step.group("index"))
            if not isinstance(node, list) or index >= len(node):
                return None
            node = node[index]
        position = step.end()
    return node


def _join(path: str, name: str) -> str:
    name = name or '""'  # an empty key, spelled so a log line still shows a field
    return f"{path}.{name}" if path else name


def encode(event: msgspec.Struct) -> bytes:
    return _ENCODER.encode(event)


def to_builtins(event: msgspec.Struct) -> Any:
    return msgspec.to_builtins(event)
