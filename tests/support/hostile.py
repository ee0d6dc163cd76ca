"""Hostile payment requests: shaped like a `payment.requested`, carrying extreme or odd values.

Each kind of hostile record is a Hypothesis strategy that draws the odd part
(where a NUL goes, which key repeats, how far past a bound a timestamp is, how
a key is escape-spelt) and returns a render function. Rendering happens just
before publishing, into a `Slot`: a unique payment id, an ordinary good
payment whose payer, merchant and currency the record borrows (so it lands on
the same partition as that payer's good payments), and the current time (the
event-time window is measured against the broker's append time).

Every record says what it must become (`Expectation`), worked out from its
kind and the documented rules (docs/reference/events.md), never by asking the
production decoder:

- `Refuse(field, rule)`: a dead letter with that field and rule;
- `Accept(statuses)`: a payments row that ends in one of these statuses;
- `Judged`: valid but for the event-time window, decided once the record's
  append time is known (`resolve`), exactly as the docs state the window;
- `Deviation`: a record the decoder refuses, but not with the documented field
  or rule (a known gap, pinned by an xfail test).

Sizes are checked the documented way whatever the kind (`finish`): a record over
`record_bytes_max` is refused `$`/`size` first, and a valid request whose
re-encoding (msgspec's writing: contract order, defaults, no whitespace) plus
the reserve for derived events exceeds the limit is refused `$`/`size`.

Drawing (`draw_drafts`): a `@given` collector with a fixed `@seed`,
`database=None` and the generate phase only, run for a few examples, each
drawing one record of every kind. That keeps one pipeline run for the whole
list (a run takes seconds; Hypothesis cannot shrink across it anyway), draws
the same records on every run, and still lets Hypothesis choose the values.
Hypothesis's first example is the simplest one of each kind; the rest are
random under the seed.
"""

from __future__ import annotations

import json
import re
import string
from collections.abc import Callable
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta, timezone
from typing import Any

import msgspec
from hypothesis import HealthCheck, Phase, given, seed
from hypothesis import settings as hypothesis_settings
from hypothesis import strategies as st

from paystream.demo_data import CURRENCIES, DemoWorld
from paystream.settings import Settings
from schemas.envelope import RESERVED_BYTES
from schemas.money import AMOUNT_MINOR_MAX, MINOR_UNIT_DIGITS
from schemas.payments import PaymentRequested

SETTLED = frozenset({"settled"})
REJECTED = frozenset({"rejected"})
DECLINED = frozenset({"declined"})

ID_ALPHABET = string.ascii_letters + string.digits + "_.:-"
ID_CHARS_MAX = 64
METADATA_ENTRIES_MAX = 32
METADATA_KEY_CHARS_MAX = 64
METADATA_VALUE_CHARS_MAX = 512
# Margins around the window bounds, far above any publishing delay: a record
# meant to be inside the past bound, or outside the future bound, stays so
# unless publishing takes longer than this. `resolve` judges each one against
# its real append time anyway, so a slow machine changes no verdict.
PAST_MARGIN = timedelta(seconds=60)
FUTURE_MARGIN = timedelta(seconds=30)
# Python's json refuses integers longer than this (sys.int_info.default_max_str_digits).
PYTHON_INT_DIGITS_MAX = 4_300

FIELDS = (
    "schema",
    "v",
    "payment_id",
    "payer_account",
    "merchant_id",
    "amount_minor",
    "currency",
    "country",
    "method",
    "created_at",
    "metadata",
)
# The contract's fields as msgspec re-encodes a request: the optional manual-capture
# fields (absent from these documents) are written with their defaults, before metadata.
CANONICAL_FIELDS = (*FIELDS[:-1], "capture", "capture_by", "metadata")
DEFAULTS: dict[str, Any] = {
    "schema": "payment.requested",
    "v": 1,
    "capture": "automatic",
    "capture_by": None,
    "metadata": {},
}
STRING_FIELDS = ("payment_id", "payer_account", "merchant_id", "currency", "country", "method", "created_at")
ID_FIELDS = ("payment_id", "payer_account", "merchant_id")
# A currency paystream accepts that the demo world has no risk limits (nor merchants) for.
UNCONFIGURED_CURRENCIES = tuple(sorted(set(MINOR_UNIT_DIGITS) - set(CURRENCIES)))
LONE_SURROGATES = ("\ud800", "\udbff", "\udc00", "\udfff", "\udc00\ud800", "\ud83d.")
# Characters that are valid but odd: C0 and C1 controls, DEL, line and paragraph
# separators, a BOM, zero-width space, noncharacters, combining marks, non-BMP.
ODD_CHARS = (
    "\x01",
    "\x1f",
    "\t",
    "\n",
    "\x7f",
    "\x85",
    "\x9f",
    "\u2028",
    "\u2029",
    "\ufeff",
    "\u200b",
    "\ufffe",
    "\uffff",
    "\u0301",
    '"',
    "\\",
    "`",
    "\U0001f600",
    "\U0010ffff",
)


# The kinds the decoder refuses, but not as documented (see the report in the test module).
LONE_MASKED = "lone surrogate, then something Python's json reads differently"
PATH_SUFFIX = "unknown field whose name ends like msgspec's path suffix"


# -- what a record must become ------------------------------------------------


@dataclass(frozen=True, slots=True)
class Refuse:
    field: str
    rule: str


@dataclass(frozen=True, slots=True)
class Accept:
    statuses: frozenset[str]


@dataclass(frozen=True, slots=True)
class Judged:
    """Valid, but for the event-time window: inside it, `inside`; outside, refused `created_at`/`window`."""

    created_at: datetime
    inside: Accept


@dataclass(frozen=True, slots=True)
class Deviation:
    """Refused, but the documented answer is `documented` and the decoder gives another one (`seen`)."""

    documented: Refuse
    seen: str


Expectation = Refuse | Accept | Judged | Deviation


def resolve(expect: Expectation, append_ms: int, settings: Settings) -> Expectation:
    """A `Judged` expectation decided against the record's append time; others unchanged.

    The docs' rule: refused when `created_at` is more than the past bound
    before, or more than the future bound after, the record's Kafka timestamp;
    the bounds themselves pass.
    """
    if not isinstance(expect, Judged):
        return expect
    appended = datetime(1970, 1, 1, tzinfo=UTC) + timedelta(milliseconds=append_ms)
    before = appended - expect.created_at
    if before > timedelta(seconds=settings.event_time_past_s_max):
        return Refuse("created_at", "window")
    if -before > timedelta(seconds=settings.event_time_future_s_max):
        return Refuse("created_at", "window")
    return expect.inside


# -- JSON written by hand: repeated keys, escapes, literal numbers -------------


@dataclass(frozen=True, slots=True)
class Lit:
    """JSON text written as it is (a number spelling, an escape-spelt key, a lone surrogate escape)."""

    text: str


@dataclass(frozen=True, slots=True)
class Stamp:
    """A timestamp as written (`text`) and the instant msgspec reads from it (to the microsecond)."""

    instant: datetime
    text: str


@dataclass(frozen=True, slots=True)
class Obj:
    """A JSON object as (key, value) pairs: a key may repeat."""

    pairs: tuple[tuple[str | Lit, Any], ...]


@dataclass(frozen=True, slots=True)
class Style:
    ascii_only: bool  # non-ASCII as \u escapes (non-BMP as surrogate pairs) or as UTF-8
    spaced: bool  # ", " and ": " between tokens, as most JSON libraries write


_LONE = re.compile("[\ud800-\udfff]")


def spell_string(text: str, ascii_only: bool) -> str:
    """A JSON string; lone surrogates (which UTF-8 cannot carry) as \\u escapes."""
    written = json.dumps(text, ensure_ascii=ascii_only)
    return _LONE.sub(lambda found: f"\\u{ord(found.group()):04x}", written)


def escape_spelt(key: str, positions: set[int], upper: bool) -> Lit:
    """`key` as a JSON string with the characters at `positions` written as \\u escapes."""
    parts = []
    for index, char in enumerate(key):
        if index in positions:
            units = char.encode("utf-16-be")
            escaped = "".join(f"\\u{int.from_bytes(units[i : i + 2], 'big'):04x}" for i in range(0, len(units), 2))
            parts.append(escaped.upper().replace("\\U", "\\u") if upper else escaped)
        else:
            parts.append(json.dumps(char, ensure_ascii=False)[1:-1])
    return Lit('"' + "".join(parts) + '"')


def write(value: Any, style: Style) -> str:
    if isinstance(value, Lit):
        return value.text
    if isinstance(value, Stamp):
        return spell_string(value.text, style.ascii_only)
    if isinstance(value, str):
        return spell_string(value, style.ascii_only)
    if isinstance(value, dict | Obj):
        pairs = value.pairs if isinstance(value, Obj) else tuple(value.items())
        comma, colon = (", ", ": ") if style.spaced else (",", ":")
        return "{" + comma.join(f"{write(key, style)}{colon}{write(item, style)}" for key, item in pairs) + "}"
    return json.dumps(value)


def canonical_size(document: dict[str, Any]) -> int:
    """Bytes of a valid request as msgspec re-encodes it: contract order, defaults written, no whitespace."""
    plain = {name: document.get(name, DEFAULTS.get(name)) for name in CANONICAL_FIELDS}
    stamp = plain["created_at"]
    plain["created_at"] = stamp.instant if isinstance(stamp, Stamp) else stamp
    return len(msgspec.json.encode(plain))


# -- timestamps ----------------------------------------------------------------


def offset_text(minutes: int, colon: bool = True) -> str:
    sign = "-" if minutes < 0 else "+"
    hours, mins = divmod(abs(minutes), 60)
    return f"{sign}{hours:02d}{':' if colon else ''}{mins:02d}"


def stamp(
    instant: datetime,
    offset_minutes: int = 0,
    *,
    separator: str = "T",
    colon: bool = True,
    digits: int = 6,
    utc: str | None = None,
) -> Stamp:
    """`instant` written in the given offset; `digits` of fraction (0, 3, 6 or 9: the instant is cut to them)."""
    if digits < 6:
        cut = 10 ** (6 - digits)
        instant = instant - timedelta(microseconds=instant.microsecond % cut)
    local = instant.astimezone(timezone(timedelta(minutes=offset_minutes)))
    fraction = f"{local.microsecond:06d}"
    fraction = fraction[:digits] if digits <= 6 else fraction + "0" * (digits - 6)
    text = f"{local:%Y-%m-%d}{separator}{local:%H:%M:%S}" + (f".{fraction}" if digits else "")
    offset = utc if (utc is not None and offset_minutes == 0) else offset_text(offset_minutes, colon)
    return Stamp(instant, text + offset)


def local_text(local: datetime, offset: str) -> str:
    """A naive local time of any year 1..9999 (isoformat pads the year) and an offset, as written."""
    return local.isoformat(timespec="microseconds") + offset


# -- records -------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class Slot:
    """Where a drawn record is rendered: its payment id, the good payment it borrows from, the time."""

    serial: int
    payment_id: str
    template: PaymentRequested
    now: datetime
    settings: Settings
    world: DemoWorld

    @property
    def amount(self) -> int:
        """A small amount every currency's limits and every ordinary payer's balance allow."""
        return 100 + self.serial % 400

    def request(self, **changes: Any) -> dict[str, Any]:
        """The request fields in contract order, the template's values, `changes` applied (OMIT drops one)."""
        template = self.template
        document: dict[str, Any] = {
            "schema": "payment.requested",
            "v": 1,
            "payment_id": self.payment_id,
            "payer_account": template.payer_account,
            "merchant_id": template.merchant_id,
            "amount_minor": self.amount,
            "currency": template.currency,
            "country": template.country,
            "method": template.method,
            "created_at": stamp(self.now - timedelta(seconds=1)),
            "metadata": {},
        }
        document.update(changes)
        return {name: value for name, value in document.items() if value is not OMIT}

    def accepting(self, currency: str) -> list[str]:
        blocked = set(self.world.blocked_merchants)
        return [
            m.merchant_id for m in self.world.merchants if currency in m.currencies and m.merchant_id not in blocked
        ]


OMIT = Lit("<omitted>")


@dataclass(frozen=True, slots=True)
class Shape:
    """A rendered record before its bytes: the value to write and what it must become."""

    value: Any  # a request dict, an Obj, or finished JSON text
    expect: Expectation
    style: Style
    payer: str | None = None  # the Kafka key, when not the template's payer
    payment_id: str | None = ""  # "" means the slot's; None: no plain payment id to look up
    valid: dict[str, Any] | None = None  # the request as a valid document, for the size rule


@dataclass(frozen=True, slots=True)
class Hostile:
    kind: str
    key: bytes
    raw: bytes
    payment_id: str | None
    expect: Expectation


Render = Callable[[Slot], Shape]


@dataclass(frozen=True, slots=True)
class Draft:
    kind: str
    render: Render

    def build(self, slot: Slot) -> Hostile:
        return finish(self.kind, slot, self.render(slot))


def finish(kind: str, slot: Slot, shape: Shape) -> Hostile:
    text = shape.value if isinstance(shape.value, str) else write(shape.value, shape.style)
    raw = text.encode("utf-8")
    limit = slot.settings.record_bytes_max
    expect = shape.expect
    if len(raw) > limit:
        expect = Refuse("$", "size")  # before anything else is read
    elif shape.valid is not None and canonical_size(shape.valid) + RESERVED_BYTES[PaymentRequested] > limit:
        expect = Refuse("$", "size")  # no room for the events derived from it
    payment_id = slot.payment_id if shape.payment_id == "" else shape.payment_id
    if payment_id is not None and ("\x00" in payment_id or _LONE.search(payment_id)):
        payment_id = None
    key = shape.payer or slot.template.payer_account
    return Hostile(kind, key.encode(), raw, payment_id, expect)


def valid(document: dict[str, Any], expect: Expectation, style: Style, **extra: Any) -> Shape:
    return Shape(document, expect, style, valid=document, **extra)


# -- strategies ----------------------------------------------------------------

# Storable text: anything UTF-8 can carry but NUL, with the odd characters drawn often.
chars = st.one_of(st.characters(codec="utf-8", exclude_characters="\x00"), st.sampled_from(ODD_CHARS))
# Characters msgspec writes in at most two bytes, unescaped: for records that must stay small.
narrow = st.characters(codec="utf-8", min_codepoint=0x20, max_codepoint=0x7FF, exclude_characters='"\\')
styles = st.builds(Style, st.booleans(), st.booleans())
offsets = st.one_of(st.sampled_from([-(24 * 60 - 1), 24 * 60 - 1, 0, 330, -570, 345]), st.integers(-1439, 1439))
lone = st.sampled_from(LONE_SURROGATES)


def texts(min_size: int, max_size: int) -> st.SearchStrategy[str]:
    return st.text(chars, min_size=min_size, max_size=max_size)


def metadata(max_size: int = 3) -> st.SearchStrategy[dict[str, str]]:
    return st.dictionaries(texts(1, 16), texts(0, 24), max_size=max_size)


def unknown_names(min_size: int = 0) -> st.SearchStrategy[str]:
    """Field names the contract does not have (and that do not mimic msgspec's path suffix, see Deviation)."""
    return texts(min_size, 20).filter(lambda name: name not in FIELDS and " - at " not in name)


def json_values() -> st.SearchStrategy[Lit]:
    """Any small JSON value, including strings holding NUL or a lone surrogate."""
    return st.one_of(
        st.integers().map(lambda n: Lit(str(n))),
        st.sampled_from(["null", "true", "[]", "{}", "1.5", "1e400"]).map(Lit),
        texts(0, 12).map(lambda s: Lit(spell_string(s, False))),
        st.tuples(texts(0, 6), lone).map(lambda p: Lit(spell_string(p[0] + p[1], False))),
        st.just(Lit('"\\u0000"')),
    )


def insert(text: str, extra: str, at: int) -> str:
    at = min(at, len(text))
    return text[:at] + extra + text[at:]


def padded_id(prefix: str, fill: str, length: int) -> str:
    """`prefix` followed by `fill` repeated, exactly `length` characters (the prefix keeps it unique)."""
    return (prefix + fill * length)[:length]


KINDS: dict[str, st.SearchStrategy[Render]] = {}


def kind(name: str) -> Callable[[Callable[..., Render]], Callable[..., Render]]:
    def register(function: Callable[..., Render]) -> Callable[..., Render]:
        KINDS[name] = st.composite(function)()
        return function

    return register


# Text: NUL and lone surrogates are refused (`text`), other characters are valid.


@kind("NUL in a metadata value")
def _nul_value(draw: st.DrawFn) -> Render:
    others, key, value = draw(metadata()), draw(texts(1, 16)), draw(texts(0, 20))
    bad = insert(value, "\x00", draw(st.integers(0, 20)))
    style = draw(styles)
    others.pop(key, None)

    def render(slot: Slot) -> Shape:
        return Shape(slot.request(metadata={**others, key: bad}), Refuse(f"metadata.{key}", "text"), style)

    return render


@kind("NUL in a metadata key")
def _nul_key(draw: st.DrawFn) -> Render:
    others, key, value = draw(metadata()), draw(texts(0, 15)), draw(texts(0, 20))
    bad = insert(key, "\x00", draw(st.integers(0, 15)))
    style = draw(styles)

    def render(slot: Slot) -> Shape:
        return Shape(slot.request(metadata={**others, bad: value}), Refuse("metadata", "text"), style)

    return render


@kind("NUL in an unknown field name")
def _nul_unknown(draw: st.DrawFn) -> Render:
    name = draw(
        st.one_of(
            st.tuples(unknown_names(), st.integers(0, 20)).map(lambda drawn: insert(drawn[0], "\x00", drawn[1])),
            st.sampled_from(["amount_minor\x00", "\x00metadata", "\x00"]),
        )
    )
    value, at, style = draw(json_values()), draw(st.integers(0, len(FIELDS))), draw(styles)

    def render(slot: Slot) -> Shape:
        pairs = list(slot.request().items())
        pairs.insert(at, (name, value))
        return Shape(Obj(tuple(pairs)), Refuse(name.replace("\x00", "\\u0000"), "unknown_field"), style)

    return render


@kind("NUL in an id, country, currency or method")
def _nul_field(draw: st.DrawFn) -> Render:
    field = draw(st.sampled_from((*ID_FIELDS, "country", "currency", "method")))
    at, style = draw(st.integers(0, 64)), draw(styles)
    rule = "enum" if field in ("currency", "method") else "pattern"

    def render(slot: Slot) -> Shape:
        document = slot.request()
        document[field] = insert(document[field], "\x00", at)
        return Shape(document, Refuse(field, rule), style)

    return render


@kind("lone surrogate in a metadata value")
def _lone_value(draw: st.DrawFn) -> Render:
    others, key, value = draw(metadata()), draw(texts(1, 16)), draw(texts(0, 20))
    bad = insert(value, draw(lone), draw(st.integers(0, 20)))
    style = draw(styles)
    others.pop(key, None)

    def render(slot: Slot) -> Shape:
        return Shape(slot.request(metadata={**others, key: bad}), Refuse(f"metadata.{key}", "text"), style)

    return render


@kind("lone surrogate in a metadata key")
def _lone_key(draw: st.DrawFn) -> Render:
    others, key, value = draw(metadata()), draw(texts(0, 15)), draw(texts(0, 20))
    bad = insert(key, draw(lone), draw(st.integers(0, 15)))
    style = draw(styles)

    def render(slot: Slot) -> Shape:
        return Shape(slot.request(metadata={**others, bad: value}), Refuse("metadata", "text"), style)

    return render


@kind("lone surrogate in an unknown field name")
def _lone_unknown(draw: st.DrawFn) -> Render:
    name = insert(draw(unknown_names()), draw(lone), draw(st.integers(0, 20)))
    value, at, style = draw(json_values()), draw(st.integers(0, len(FIELDS))), draw(styles)

    def render(slot: Slot) -> Shape:
        pairs = list(slot.request().items())
        pairs.insert(at, (name, value))
        # The reading stops at the surrogate; the string that holds it is a key of the record itself.
        return Shape(Obj(tuple(pairs)), Refuse("$", "text"), style)

    return render


@kind("lone surrogate in a string field")
def _lone_field(draw: st.DrawFn) -> Render:
    field = draw(st.sampled_from(STRING_FIELDS))
    surrogate, at, style = draw(lone), draw(st.integers(0, 64)), draw(styles)

    def render(slot: Slot) -> Shape:
        document = slot.request()
        current = document[field]
        document[field] = insert(current.text if isinstance(current, Stamp) else current, surrogate, at)
        return Shape(document, Refuse(field, "text"), style)

    return render


@kind("control, separator, noncharacter and non-BMP text")
def _odd_text(draw: st.DrawFn) -> Render:
    entries = draw(st.dictionaries(texts(1, 64), texts(0, 64), min_size=1, max_size=METADATA_ENTRIES_MAX))
    style = draw(styles)

    def render(slot: Slot) -> Shape:
        document = slot.request(metadata=entries)
        return valid(document, Accept(SETTLED), style)

    return render


# Repeated keys: refused `duplicate_key` whatever the spelling, even with equal values.


def _repeat(draw: st.DrawFn, spelt: bool) -> Render:
    field = draw(st.sampled_from(FIELDS))
    position = draw(st.integers(0, len(FIELDS)))
    chosen = draw(st.sets(st.integers(0, len(field) - 1), min_size=1)) if spelt else set()
    upper, same, style = draw(st.booleans()), draw(st.booleans()), draw(styles)
    other_metadata = draw(metadata())

    def render(slot: Slot) -> Shape:
        document = slot.request()
        again: Any = document[field]
        if not same and field == "amount_minor":
            again = slot.amount + 1
        elif not same and field == "metadata":
            again = other_metadata
        pairs: list[tuple[str | Lit, Any]] = list(document.items())
        first = list(document).index(field)
        key: str | Lit = escape_spelt(field, chosen, upper) if spelt else field
        pairs.insert(max(position, first + 1), (key, again))
        return Shape(Obj(tuple(pairs)), Refuse(field, "duplicate_key"), style)

    return render


@kind("repeated top-level key")
def _repeat_plain(draw: st.DrawFn) -> Render:
    return _repeat(draw, spelt=False)


@kind("repeated top-level key, escape-spelt")
def _repeat_spelt(draw: st.DrawFn) -> Render:
    return _repeat(draw, spelt=True)


@kind("repeated metadata key")
def _repeat_metadata(draw: st.DrawFn) -> Render:
    entries = draw(st.dictionaries(texts(1, 16), texts(0, 16), min_size=1, max_size=METADATA_ENTRIES_MAX))
    key = draw(st.sampled_from(sorted(entries)))
    spelt = draw(st.booleans())
    chosen = draw(st.sets(st.integers(0, len(key) - 1), min_size=1)) if spelt else set()
    again, position, upper, style = (
        draw(texts(0, 16)),
        draw(st.integers(0, len(entries))),
        draw(st.booleans()),
        draw(styles),
    )

    def render(slot: Slot) -> Shape:
        pairs: list[tuple[str | Lit, Any]] = list(entries.items())
        first = list(entries).index(key)
        pairs.insert(max(position, first + 1), (escape_spelt(key, chosen, upper) if spelt else key, again))
        # With 32 distinct keys the object names 33: the repeat is what is refused, not the count.
        return Shape(slot.request(metadata=Obj(tuple(pairs))), Refuse(f"metadata.{key}", "duplicate_key"), style)

    return render


# Event time: the window around the broker's append time, odd spellings, odd years.


@kind("created_at just inside the past bound")
def _past_inside(draw: st.DrawFn) -> Render:
    extra_us, offset, style = draw(st.integers(0, 600_000_000)), draw(offsets), draw(styles)

    def render(slot: Slot) -> Shape:
        past = timedelta(seconds=slot.settings.event_time_past_s_max)
        instant = slot.now - past + PAST_MARGIN + timedelta(microseconds=extra_us)
        document = slot.request(created_at=stamp(instant, offset))
        return valid(document, Judged(instant, Accept(SETTLED)), style)

    return render


@kind("created_at just past the past bound")
def _past_outside(draw: st.DrawFn) -> Render:
    beyond_us = draw(st.one_of(st.integers(1, 999), st.integers(1_000, 60_000_000)))
    offset, style = draw(offsets), draw(styles)

    def render(slot: Slot) -> Shape:
        past = timedelta(seconds=slot.settings.event_time_past_s_max)
        instant = slot.now - past - timedelta(microseconds=beyond_us)
        document = slot.request(created_at=stamp(instant, offset))
        return valid(document, Judged(instant, Accept(SETTLED)), style)

    return render


@kind("created_at just inside the future bound")
def _future_inside(draw: st.DrawFn) -> Render:
    before_us, offset, style = draw(st.integers(1, 5_000_000)), draw(offsets), draw(styles)

    def render(slot: Slot) -> Shape:
        future = timedelta(seconds=slot.settings.event_time_future_s_max)
        instant = slot.now + max(future - timedelta(microseconds=before_us), timedelta(0))
        document = slot.request(created_at=stamp(instant, offset))
        return valid(document, Judged(instant, Accept(SETTLED)), style)

    return render


@kind("created_at just past the future bound")
def _future_outside(draw: st.DrawFn) -> Render:
    extra_us, offset, style = draw(st.integers(0, 600_000_000)), draw(offsets), draw(styles)

    def render(slot: Slot) -> Shape:
        future = timedelta(seconds=slot.settings.event_time_future_s_max)
        instant = slot.now + future + FUTURE_MARGIN + timedelta(microseconds=extra_us)
        document = slot.request(created_at=stamp(instant, offset))
        return valid(document, Judged(instant, Accept(SETTLED)), style)

    return render


@kind("created_at in year 1 or 9999, extreme offsets")
def _far_years(draw: st.DrawFn) -> Render:
    year = draw(st.sampled_from([1, 9999]))
    # Naive local times: the offset is written next to them (years 1 and 9999 have no room to convert).
    if year == 1:
        low, high = datetime(1, 1, 1), datetime(1, 12, 31, 23, 59, 59, 999_999)  # noqa: DTZ001
    else:
        low, high = datetime(9999, 1, 1), datetime(9999, 12, 31, 23, 59, 59, 999_999)  # noqa: DTZ001
    local = draw(st.one_of(st.sampled_from([low, high]), st.datetimes(min_value=low, max_value=high)))
    offset = draw(st.one_of(st.sampled_from([24 * 60 - 1, -(24 * 60 - 1)]), offsets))
    style = draw(styles)

    def render(slot: Slot) -> Shape:
        document = slot.request(created_at=local_text(local, offset_text(offset)))
        return Shape(document, Refuse("created_at", "window"), style)

    return render


@kind("created_at now, in an odd but valid spelling")
def _odd_spelling(draw: st.DrawFn) -> Render:
    ago_us, offset = draw(st.integers(1_000_000, 3_600_000_000)), draw(offsets)
    separator, colon = draw(st.sampled_from(["T", "t", " "])), draw(st.booleans())
    digits, utc = draw(st.sampled_from([0, 3, 6, 9])), draw(st.sampled_from([None, "Z", "z", "-00:00"]))
    style = draw(styles)

    def render(slot: Slot) -> Shape:
        written = stamp(
            slot.now - timedelta(microseconds=ago_us),
            offset,
            separator=separator,
            colon=colon,
            digits=digits,
            utc=utc,
        )
        return valid(slot.request(created_at=written), Judged(written.instant, Accept(SETTLED)), style)

    return render


@kind("created_at a second before local midnight, rounded up into the next day")
def _rounded_midnight(draw: st.DrawFn) -> Render:
    minutes_after, nines, style = draw(st.integers(1, 30)), draw(st.integers(1, 3)), draw(styles)

    def render(slot: Slot) -> Shape:
        # An offset whose local time is `minutes_after` past midnight now: the last
        # 23:59:59.999999 was a few minutes ago, well inside the window.
        minute_of_day = slot.now.hour * 60 + slot.now.minute
        offset = (minutes_after - minute_of_day) % (24 * 60)
        offset = offset - 24 * 60 if offset > 12 * 60 else offset  # the same local time, a negative offset
        zone = timezone(timedelta(minutes=offset))
        local = slot.now.astimezone(zone).replace(hour=23, minute=59, second=59, microsecond=999_999)
        if local > slot.now:
            local -= timedelta(days=1)
        written = local_text(local.replace(tzinfo=None), offset_text(offset))
        # Fraction digits past the microsecond are rounded: ".9999999" is the next second, here midnight.
        written = written.replace(".999999", ".999999" + "9" * nines)
        instant = local + timedelta(microseconds=1)
        return valid(slot.request(created_at=written), Judged(instant, Accept(SETTLED)), style)

    return render


@kind("created_at not a valid timestamp (leap second, 24:00, 29 February, no offset)")
def _bad_timestamps(draw: st.DrawFn) -> Render:
    variant, offset, style = draw(st.integers(0, 6)), draw(offsets), draw(styles)

    def render(slot: Slot) -> Shape:
        day = f"{slot.now:%Y-%m-%d}"
        tz = offset_text(offset)
        written, rule = [
            (f"{day}T23:59:60{tz}", "format"),
            (f"{day}T23:59:60.5Z", "format"),
            (f"{day}T24:00:00{tz}", "format"),
            (f"2025-02-29T12:00:00{tz}", "format"),
            (f"{day}T12:00:00+24:00", "format"),
            (f"{day}T12:00:00", "timezone"),
            (day, "format"),
        ][variant]
        return Shape(slot.request(created_at=written), Refuse("created_at", rule), style)

    return render


# Amounts: 1 <= amount <= 10^15, integers written as integers.


@kind("amount at its bounds")
def _amount_bounds(draw: st.DrawFn) -> Render:
    amount, style = draw(st.sampled_from([1, AMOUNT_MINOR_MAX])), draw(styles)

    def render(slot: Slot) -> Shape:
        # 10^15 is valid and far over every demo currency's per-transaction limit: rejected by risk.
        return valid(slot.request(amount_minor=amount), Accept(SETTLED if amount == 1 else REJECTED), style)

    return render


@kind("amount out of range")
def _amount_range(draw: st.DrawFn) -> Render:
    spelling = draw(
        st.one_of(
            st.sampled_from(["0", "-0", "-1", str(AMOUNT_MINOR_MAX + 1), str(2**63), str(2**64), "1e400", "-1e400"]),
            st.just("1" + "0" * 400),
            st.integers(max_value=0).map(str),
            st.integers(min_value=AMOUNT_MINOR_MAX + 1).map(str),
        )
    )
    style = draw(styles)

    def render(slot: Slot) -> Shape:
        return Shape(slot.request(amount_minor=Lit(spelling)), Refuse("amount_minor", "range"), style)

    return render


@kind("amount not an integer")
def _amount_type(draw: st.DrawFn) -> Render:
    finite = st.floats(allow_nan=False, allow_infinity=False).map(repr)
    spelling = draw(
        st.one_of(
            st.sampled_from(["1.0", "1e3", "1E3", "0.5e1", "-0.0", "1000000000000000.0", "1e-400", "true", "null"]),
            st.sampled_from(['"500"', "[500]", "{}"]),
            finite.filter(lambda text: "e" in text or "." in text),
        )
    )
    style = draw(styles)

    def render(slot: Slot) -> Shape:
        return Shape(slot.request(amount_minor=Lit(spelling)), Refuse("amount_minor", "type"), style)

    return render


# Ids: 1-64 characters of [A-Za-z0-9_.:-].


@kind("id at 64 characters")
def _id_max(draw: st.DrawFn) -> Render:
    field, fill = draw(st.sampled_from(ID_FIELDS)), draw(st.text(ID_ALPHABET, min_size=1, max_size=8))
    style = draw(styles)

    def render(slot: Slot) -> Shape:
        value = padded_id(f"{slot.payment_id}-", fill, ID_CHARS_MAX)
        document = slot.request(**{field: value})
        if field == "payment_id":
            return valid(document, Accept(SETTLED), style, payment_id=value)
        if field == "payer_account":  # no such account: risk approves, funds declines
            return valid(document, Accept(DECLINED), style, payer=value)
        return valid(document, Accept(REJECTED), style)  # no such merchant: not accepting

    return render


@kind("id one past its limits or outside its pattern")
def _id_bad(draw: st.DrawFn) -> Render:
    field = draw(st.sampled_from((*ID_FIELDS, "country")))
    variant = draw(st.integers(0, 4))
    fill = draw(st.text(ID_ALPHABET, min_size=1, max_size=8))
    stranger = draw(narrow.filter(lambda char: char not in ID_ALPHABET))
    at, style = draw(st.integers(0, 64)), draw(styles)

    def render(slot: Slot) -> Shape:
        plain = slot.request()[field]
        if field == "country":
            value, rule = [
                ("de", "pattern"),
                ("DEU", "pattern"),
                ("D", "pattern"),
                ("", "pattern"),
                ("DE\n", "pattern"),
            ][variant]
        else:
            value, rule = [
                (padded_id(f"{slot.payment_id}-", fill, ID_CHARS_MAX + 1), "length"),
                ("", "length"),
                (insert(plain, stranger, at), "pattern"),
                (plain + "\n", "pattern"),
                (" " + plain, "pattern"),
            ][variant]
        document = slot.request(**{field: value})
        return Shape(document, Refuse(field, rule), style, payment_id=value if field == "payment_id" else "")

    return render


@kind("currency or method outside its set")
def _enum_bad(draw: st.DrawFn) -> Render:
    field = draw(st.sampled_from(["currency", "method"]))
    value = draw(
        st.sampled_from(["eur", "XTS", "EURO", "€", "", " EUR"])
        if field == "currency"
        else st.sampled_from(["Card", "cash", "", "card ", "CARD"])
    )
    style = draw(styles)

    def render(slot: Slot) -> Shape:
        return Shape(slot.request(**{field: value}), Refuse(field, "enum"), style)

    return render


@kind("schema and v omitted or off")
def _schema_v(draw: st.DrawFn) -> Render:
    variant, style = draw(st.integers(0, 8)), draw(styles)

    def render(slot: Slot) -> Shape:
        choices: list[tuple[dict[str, Any], Expectation]] = [
            ({"schema": OMIT, "v": OMIT}, Accept(SETTLED)),
            ({"schema": OMIT}, Accept(SETTLED)),
            ({"v": OMIT}, Accept(SETTLED)),
            ({"v": Lit("2")}, Refuse("v", "enum")),
            ({"v": Lit("0")}, Refuse("v", "enum")),
            ({"v": Lit("1.0")}, Refuse("v", "type")),
            ({"v": Lit("true")}, Refuse("v", "type")),
            # payments.requested carries several contracts: a name it does not carry is `schema`.
            ({"schema": "payment.outcome"}, Refuse("schema", "schema")),
            ({"schema": "Payment.Requested"}, Refuse("schema", "schema")),
        ]
        changes, expect = choices[variant]
        document = slot.request(**changes)
        if isinstance(expect, Accept):
            return valid(document, expect, style)
        return Shape(document, expect, style)

    return render


@kind("unknown field with an odd name")
def _unknown_field(draw: st.DrawFn) -> Render:
    name, value = draw(unknown_names()), draw(json_values())
    at, style = draw(st.integers(0, len(FIELDS))), draw(styles)

    def render(slot: Slot) -> Shape:
        pairs = list(slot.request().items())
        pairs.insert(at, (name, value))
        return Shape(Obj(tuple(pairs)), Refuse(name or '""', "unknown_field"), style)

    return render


# Metadata: at most 32 entries, keys 1-64 characters, values at most 512.


@kind("metadata at its bounds")
def _metadata_bounds(draw: st.DrawFn) -> Render:
    count = draw(st.sampled_from([METADATA_ENTRIES_MAX, 1, 16]))
    key_fill = draw(st.text(narrow, min_size=1, max_size=6))
    value_fill = draw(st.text(st.one_of(narrow, st.sampled_from(ODD_CHARS)), min_size=1, max_size=6))
    style = draw(styles)

    def render(slot: Slot) -> Shape:
        entries = {
            padded_id(f"{index:02d}", key_fill, METADATA_KEY_CHARS_MAX): padded_id(
                "", value_fill, METADATA_VALUE_CHARS_MAX
            )
            for index in range(count)
        }
        # Valid; `finish` turns it into a size refusal if wide characters leave no room for derived events.
        return valid(slot.request(metadata=entries), Accept(SETTLED), style)

    return render


@kind("metadata one past its bounds, or not strings")
def _metadata_over(draw: st.DrawFn) -> Render:
    variant, fill, style = draw(st.integers(0, 5)), draw(st.text(narrow, min_size=1, max_size=6)), draw(styles)
    odd = draw(st.sampled_from(["1", "null", "true", "[]", "{}", "1.5", '["a"]']))
    whole = draw(st.sampled_from(["null", "[]", '"x"', "1", '[["a", "b"]]']))

    def render(slot: Slot) -> Shape:
        value: Any
        if variant == 0:
            value, expect = {f"k{i:02d}": fill for i in range(METADATA_ENTRIES_MAX + 1)}, Refuse("metadata", "length")
        elif variant == 1:
            value, expect = {padded_id("k", fill, METADATA_KEY_CHARS_MAX + 1): "v"}, Refuse("metadata", "length")
        elif variant == 2:
            value, expect = {"": fill}, Refuse("metadata", "length")
        elif variant == 3:
            long_value = padded_id("", fill, METADATA_VALUE_CHARS_MAX + 1)
            value, expect = {"note": long_value}, Refuse("metadata[...]", "length")
        elif variant == 4:
            value, expect = Obj((("note", "fine"), ("odd", Lit(odd)))), Refuse("metadata[...]", "type")
        else:
            value, expect = Lit(whole), Refuse("metadata", "type")
        return Shape(slot.request(metadata=value), expect, style)

    return render


# Size: the record limit, and the room kept for the events derived from a request.


def _fill_to(document: dict[str, Any], target: int, wide: str) -> dict[str, str]:
    """Metadata that brings the request's re-encoding to exactly `target` bytes: wide characters, then ASCII."""
    wide_bytes = len(msgspec.json.encode(wide)) - 2
    entries: dict[str, str] = {}
    for index in range(METADATA_ENTRIES_MAX):
        name = f"x{index:02d}"
        missing = target - canonical_size({**document, "metadata": {**entries, name: ""}})
        if missing <= METADATA_VALUE_CHARS_MAX:
            assert missing >= 0, (target, missing)
            entries[name] = "a" * missing  # one byte a character: lands exactly
            return entries
        # Leave between a quarter and a half of a value's room for the ASCII entry that follows.
        entries[name] = wide * min(METADATA_VALUE_CHARS_MAX, (missing - METADATA_VALUE_CHARS_MAX // 2) // wide_bytes)
    raise AssertionError(f"{target} bytes cannot be reached with {METADATA_ENTRIES_MAX} entries of {wide!r}")


def _room(over: int, wide: str, spaced: bool) -> Render:
    def render(slot: Slot) -> Shape:
        room = slot.settings.record_bytes_max - RESERVED_BYTES[PaymentRequested]
        document = slot.request()
        document["metadata"] = _fill_to(document, room + over, wide)
        assert canonical_size(document) == room + over
        # UTF-8 as it is (not \u escapes), so the record itself stays under the limit.
        expect = Refuse("$", "size") if over else Accept(SETTLED)
        return valid(document, expect, Style(ascii_only=False, spaced=spaced))

    return render


WIDE = st.sampled_from(["€", "\u2028", "\ufffe", "\U0001f600", "\U0010ffff", "\x01", "\x1f"])


@kind("re-encoding exactly at the room left under the limit")
def _room_exact(draw: st.DrawFn) -> Render:
    return _room(0, draw(WIDE), draw(st.booleans()))


@kind("re-encoding one byte past the room left under the limit")
def _room_over(draw: st.DrawFn) -> Render:
    return _room(1, draw(WIDE), draw(st.booleans()))


def _record_limit(beyond: int, wide: str) -> Render:
    def render(slot: Slot) -> Shape:
        limit = slot.settings.record_bytes_max
        # Written with \u escapes (6 or 12 bytes a character) and then whitespace: far
        # larger than its re-encoding, which leaves room for the derived events.
        entries = {f"e{i:02d}": wide * 300 for i in range(METADATA_ENTRIES_MAX)}
        document = slot.request(metadata=entries)
        style = Style(ascii_only=True, spaced=False)
        text = write(document, style)
        while len(text.encode()) > limit - 100:
            entries.popitem()
            document = slot.request(metadata=entries)
            text = write(document, style)
        text = text[:-1] + " " * (limit + beyond - len(text.encode())) + "}"
        expect = Refuse("$", "size") if beyond else Accept(SETTLED)
        return Shape(text, expect, style, valid=document if not beyond else None)

    return render


# Characters whose \u escape is wider than their re-encoding, so the re-encoding leaves room.
ESCAPED = st.sampled_from(["\U0001f600", "é", "\u2028", "\ufffe"])


@kind("record exactly at the byte limit")
def _record_at_limit(draw: st.DrawFn) -> Render:
    return _record_limit(0, draw(ESCAPED))


@kind("record past the byte limit")
def _record_past_limit(draw: st.DrawFn) -> Render:
    return _record_limit(draw(st.sampled_from([1, 2, 1_000])), draw(ESCAPED))


# Values the schema allows and the demo world does not know.


@kind("currency without risk limits")
def _currency_unconfigured(draw: st.DrawFn) -> Render:
    currency, style = draw(st.sampled_from(UNCONFIGURED_CURRENCIES)), draw(styles)

    def render(slot: Slot) -> Shape:
        return valid(slot.request(currency=currency), Accept(REJECTED), style)

    return render


@kind("currency other than the payer's")
def _currency_mismatch(draw: st.DrawFn) -> Render:
    pick, style = draw(st.integers(0, 1_000)), draw(styles)

    def render(slot: Slot) -> Shape:
        others = [c for c in CURRENCIES if c != slot.template.currency]
        currency = others[pick % len(others)]
        merchants = slot.accepting(currency)
        document = slot.request(currency=currency, merchant_id=merchants[pick % len(merchants)])
        return valid(document, Accept(DECLINED), style)  # risk approves, funds: currency_mismatch

    return render


@kind("payer that does not exist")
def _payer_unknown(draw: st.DrawFn) -> Render:
    fill, style = draw(st.text(ID_ALPHABET, min_size=1, max_size=12)), draw(styles)

    def render(slot: Slot) -> Shape:
        payer = f"nobody-{slot.serial:04d}-{fill}"
        return valid(slot.request(payer_account=payer), Accept(DECLINED), style, payer=payer)

    return render


@kind("closed payer")
def _payer_closed(draw: st.DrawFn) -> Render:
    pick, style = draw(st.integers(0, 1_000)), draw(styles)

    def render(slot: Slot) -> Shape:
        closed = [p for p in slot.world.payers if p.status == "closed"]
        payer = closed[pick % len(closed)]
        merchants = slot.accepting(payer.currency)
        document = slot.request(
            payer_account=payer.account_id, currency=payer.currency, merchant_id=merchants[pick % len(merchants)]
        )
        return valid(document, Accept(DECLINED), style, payer=payer.account_id)  # funds: account_closed

    return render


@kind("merchant that does not exist")
def _merchant_unknown(draw: st.DrawFn) -> Render:
    fill, style = draw(st.text(ID_ALPHABET, min_size=1, max_size=12)), draw(styles)

    def render(slot: Slot) -> Shape:
        document = slot.request(merchant_id=f"shop-{slot.serial:04d}-{fill}")
        return valid(document, Accept(REJECTED), style)  # merchant_not_accepting

    return render


@kind("country well-formed but odd, or blocked")
def _country(draw: st.DrawFn) -> Render:
    country, style = draw(st.sampled_from(["ZZ", "AA", "XK", "EU", "QQ", "KP"])), draw(styles)

    def render(slot: Slot) -> Shape:
        expect = Accept(REJECTED if country == slot.world.blocked_countries[0] else SETTLED)
        return valid(slot.request(country=country), expect, style)

    return render


# Known gaps: refused, but not with the documented field and rule.


@kind(LONE_MASKED)
def _lone_masked(draw: st.DrawFn) -> Render:
    variant = draw(st.integers(0, 2))
    field = draw(st.sampled_from(ID_FIELDS))
    surrogate, digits, style = draw(lone), draw(st.integers(PYTHON_INT_DIGITS_MAX + 1, 6_000)), draw(styles)
    key = draw(texts(1, 12))

    def render(slot: Slot) -> Shape:
        if variant == 2:
            # The metadata value holds the surrogate; the same metadata key follows with a plain value.
            pairs: tuple[tuple[str | Lit, Any], ...] = ((key, "x" + surrogate), (key, "plain"))
            document = slot.request(metadata=Obj(pairs))
            documented = Refuse(f"metadata.{key}", "text")
        else:
            document = slot.request()
            plain = document[field]
            document[field] = plain + surrogate
            documented = Refuse(field, "text")
            if variant == 1:
                # Python's json refuses an integer this long, so it cannot find the surrogate either.
                document["amount_minor"] = Lit("9" * digits)
        value: Any = document
        if variant == 0:
            # The same field again, plain: Python's json keeps the last value and sees no surrogate.
            value = Obj((*document.items(), (field, plain)))
        return Shape(value, Deviation(documented, "`$` / `json` (JSON is malformed)"), style)

    return render


@kind(PATH_SUFFIX)
def _unknown_suffix(draw: st.DrawFn) -> Render:
    head = draw(st.text(string.ascii_letters, min_size=1, max_size=8))
    path = draw(st.sampled_from(["", ".amount_minor", ".payment_id", ".q", "[3]"]))
    tick = draw(st.sampled_from(["", "`"]))
    style = draw(styles)
    name = f"{head}{tick} - at `${path}"

    def render(slot: Slot) -> Shape:
        pairs = (*slot.request().items(), (name, Lit("1")))
        seen = "the path in the name taken for msgspec's: another field, rule `schema` or `unknown_field`"
        return Shape(Obj(pairs), Deviation(Refuse(name, "unknown_field"), seen), style)

    return render


# -- drawing -------------------------------------------------------------------


def draw_drafts(examples: int, seed_value: int) -> list[Draft]:
    """`examples` drafts of every kind, drawn by Hypothesis under a fixed seed (see the module docstring)."""
    drafts: list[Draft] = []
    names = list(KINDS)
    every_kind = st.tuples(*(KINDS[name] for name in names))

    @seed(seed_value)
    @hypothesis_settings(
        max_examples=examples,
        database=None,
        phases=[Phase.generate],
        deadline=None,
        suppress_health_check=[
            HealthCheck.too_slow,
            HealthCheck.data_too_large,
            HealthCheck.large_base_example,
            HealthCheck.filter_too_much,
        ],
    )
    @given(every_kind)
    def collect(renders: tuple[Render, ...]) -> None:
        drafts.extend(Draft(name, render) for name, render in zip(names, renders, strict=True))

    collect()
    return drafts
