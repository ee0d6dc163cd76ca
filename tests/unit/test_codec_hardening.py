"""What a later stage or PostgreSQL could not store is refused at decode time.

`text`: NUL or a lone surrogate in any string; `duplicate_key`: an object that
names a key twice; `size`: a payment request whose derived events would not fit
under `record_bytes_max`. And every `Invalid` is storable text itself.
"""

from __future__ import annotations

import json
import string
from datetime import UTC, datetime, timedelta, timezone
from types import SimpleNamespace
from typing import Any

import msgspec
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import event as label
from hypothesis import strategies as st

from schemas.codec import Decoder, Invalid, encode, find_repeated_key, find_unstorable_text, storable_text
from schemas.dead_letter import DeadLetter
from schemas.envelope import (
    CARRIERS,
    RESERVED_BYTES,
    WIDEST_CHAR,
    WIDEST_CHAR_BYTES,
    envelope_bytes,
    largest_encoding,
)
from schemas.money import MINOR_UNIT_DIGITS
from schemas.payments import (
    FundsHeld,
    PaymentCleared,
    PaymentOutcome,
    PaymentRequested,
    RiskAssessed,
    funds_event_id,
    risk_event_id,
)
from schemas.registry import EVENT_TYPES, example_document

# Derandomized: the same examples on every run and every machine (as in tests/unit/test_fees.py).
PROPERTY = settings(derandomize=True, max_examples=200, deadline=None, suppress_health_check=[HealthCheck.too_slow])
LIMIT = 64 * 1024
REQUESTED = Decoder(PaymentRequested, LIMIT)
RISK = Decoder(RiskAssessed, LIMIT)
FUNDS = Decoder(FundsHeld, LIMIT)
_REQ = "payment.requested"


def doc(event_type: str = _REQ, **changes: Any) -> dict[str, Any]:
    document = example_document(event_type)
    document.update(changes)
    return document


def raw(document: Any) -> bytes:
    return json.dumps(document).encode()


def refusal(decoder: Decoder[Any], data: bytes) -> tuple[str, str]:
    result = decoder.decode(data)
    assert isinstance(result, Invalid), result
    assert result.detail
    return result.field, result.rule


def storable(text: str) -> bool:
    """What PostgreSQL text (no NUL) and asyncpg (UTF-8) can take."""
    try:
        text.encode("utf-8")
    except UnicodeEncodeError:
        return False
    return "\x00" not in text


# --- text: NUL and lone surrogates ------------------------------------------------------------


def test_the_re_encoding_shows_unstorable_text_so_only_those_events_are_walked() -> None:
    # Why the decoder walks an event only when its re-encoding holds \u0000 or cannot be made:
    # pinned here, an upgrade of msgspec that changed it would fail this test, not let them through.
    assert msgspec.json.encode("a\x00b") == b'"a\\u0000b"'
    with pytest.raises(UnicodeEncodeError):
        msgspec.json.encode("\ud800")
    with pytest.raises(UnicodeEncodeError):
        msgspec.json.encode({"\udfff": "key"})


def test_msgspec_reads_nul_only_as_an_escape_and_refuses_lone_surrogates_naming_no_field() -> None:
    strict = msgspec.json.Decoder(dict[str, str])
    with pytest.raises(msgspec.DecodeError, match="invalid character"):
        strict.decode(b'{"k": "a\x00b"}')
    with pytest.raises(msgspec.DecodeError, match="Invalid UTF-8"):
        strict.decode(b'{"k": "\xed\xa0\x80"}')  # U+D800 written as UTF-8 bytes
    assert strict.decode(b'{"k": "a\\u0000b"}') == {"k": "a\x00b"}
    # A lone surrogate escape is malformed JSON to msgspec; the decoder reads it again to name the string.
    with pytest.raises(msgspec.DecodeError, match="truncated"):
        strict.decode(b'{"k": "\\ud800"}')
    with pytest.raises(msgspec.DecodeError, match="surrogate"):
        strict.decode(b'{"k": "\\udc00x"}')


@pytest.mark.parametrize(
    ("data", "field"),
    [
        pytest.param(raw(doc(metadata={"note": "a\x00b"})), "metadata.note", id="NUL in a metadata value"),
        pytest.param(raw(doc(metadata={"ok": "x", "n\x00te": "b"})), "metadata", id="NUL in a metadata key"),
        pytest.param(raw(doc(metadata={"note": "\x00"})), "metadata.note", id="only NUL"),
        pytest.param(
            raw(doc(metadata={"k": "x"})).replace(b'"x"', b'"\\ud800"'), "metadata.k", id="lone high surrogate"
        ),
        pytest.param(
            raw(doc(metadata={"k": "x"})).replace(b'"x"', b'"a\\udc00b"'), "metadata.k", id="lone low surrogate"
        ),
        pytest.param(
            raw(doc(metadata={"k": "x"})).replace(b'"x"', b'"\\ud800\\u0041"'),
            "metadata.k",
            id="high surrogate then not a low one",
        ),
        pytest.param(
            raw(doc(metadata={"x": "v"})).replace(b'"x"', b'"\\udfff"'), "metadata", id="lone surrogate in a key"
        ),
    ],
)
def test_unstorable_text_in_a_payment_is_refused_naming_where(data: bytes, field: str) -> None:
    assert refusal(REQUESTED, data) == (field, "text")


def test_the_detail_of_a_text_refusal_says_what_and_where_and_is_storable() -> None:
    result = REQUESTED.decode(raw(doc(metadata={"n\x00te": "b"})))
    assert result == Invalid(
        "metadata", "text", "a key 'n\\x00te' holds U+0000 at character 1: NUL, which PostgreSQL text cannot store"
    )
    result = REQUESTED.decode(raw(doc(metadata={"k": "x"})).replace(b'"x"', b'"ab\\ud800"'))
    assert result == Invalid(
        "metadata.k",
        "text",
        "'ab\\ud800' holds U+D800 at character 2: a lone surrogate, which is not encodable as UTF-8",
    )
    assert isinstance(result, Invalid) and storable(result.detail)


@pytest.mark.parametrize(
    ("event_type", "changes", "field"),
    [
        ("risk.assessed", {"reasons": ["ok", "fine", "a\x00"]}, "reasons[2]"),
        ("risk.assessed", {"event_id": "pay:\x00risk"}, "event_id"),
        ("risk.assessed", {"payment": doc(metadata={"note": "\x00"})}, "payment.metadata.note"),
        ("risk.assessed", {"payment": doc(metadata={"\x00": "v"})}, "payment.metadata"),
        ("funds.held", {"hold_id": "hold:\x00"}, "hold_id"),
        ("payment.outcome", {"reasons": ["\x00"]}, "reasons[0]"),
        ("dead_letter", {"detail": "bad \x00 input"}, "detail"),
        ("dead_letter", {"raw_text": "\x00"}, "raw_text"),
        ("settlement.batch_closed", {"payout_journal_id": "pay:\x00"}, "payout_journal_id"),
    ],
)
def test_nul_anywhere_in_any_event_is_refused_with_its_path(
    event_type: str, changes: dict[str, Any], field: str
) -> None:
    assert refusal(Decoder(EVENT_TYPES[event_type]), raw(doc(event_type, **changes))) == (field, "text")


def test_a_surrogate_nested_in_a_risk_assessed_payment_is_named_by_its_path() -> None:
    data = raw(doc("risk.assessed", payment=doc(metadata={"k": "x"}))).replace(b'"x"', b'"\\udbff"')
    assert refusal(RISK, data) == ("payment.metadata.k", "text")


def test_text_that_only_looks_like_an_escape_and_paired_surrogates_are_accepted() -> None:
    escaped_backslash = raw(doc(metadata={"k": "\\u0000 and \\ud800"}))  # a backslash, then "u0000"
    assert isinstance(REQUESTED.decode(escaped_backslash), PaymentRequested)
    pair = raw(doc(metadata={"k": "x"})).replace(b'"x"', b'"\\ud83d\\ude00"')
    decoded = REQUESTED.decode(pair)
    assert isinstance(decoded, PaymentRequested)
    assert decoded.metadata == {"k": "\U0001f600"}
    control = REQUESTED.decode(raw(doc(metadata={"k": "\x01\x1f\x7f"})))  # storable, if odd
    assert isinstance(control, PaymentRequested)


def test_a_field_name_with_nul_or_a_surrogate_gives_a_storable_refusal() -> None:
    with_nul = raw(doc(_REQ, **{"a\x00b": 1}))
    result = REQUESTED.decode(with_nul)
    assert isinstance(result, Invalid)
    assert (result.field, result.rule) == ("a\\u0000b", "unknown_field")
    assert result.detail == "Object contains unknown field `a\\u0000b`"
    # msgspec stops at the surrogate before it knows the field is unknown: the key is blamed on the record.
    with_surrogate = raw(doc(x=1)).replace(b'"x"', b'"\\ud800"')
    result = REQUESTED.decode(with_surrogate)
    assert isinstance(result, Invalid)
    assert (result.field, result.rule) == ("$", "text")
    assert storable(result.field) and storable(result.detail)
    nested = raw(doc("risk.assessed", payment=doc(_REQ, **{"\x00": 1})))
    assert refusal(RISK, nested) == ("payment.\\u0000", "unknown_field")


def test_storable_text_escapes_only_nul_and_lone_surrogates() -> None:
    plain = "pay-1: amount 1250 € \U0001f600 \x01 \\u0000"
    assert storable_text(plain) is plain
    assert storable_text("a\x00b") == "a\\u0000b"
    assert storable_text("\ud800x\udfff") == "\\ud800x\\udfff"
    assert storable_text("") == ""


def test_every_invalid_is_storable_whatever_it_was_given() -> None:
    made = Invalid("a\x00.\ud800", "text", "detail \x00 \udc80")
    assert (made.field, made.detail) == ("a\\u0000.\\ud800", "detail \\u0000 \\udc80")
    assert str(made) == "a\\u0000.\\ud800: text (detail \\u0000 \\udc80)"


@PROPERTY
@given(st.text(st.characters(codec=None), max_size=40))
def test_storable_text_is_always_storable_and_keeps_storable_text(text: str) -> None:
    escaped = storable_text(text)
    assert storable(escaped)
    assert (escaped == text) is storable(text)


def test_the_walker_reads_structs_built_in_code_dicts_lists_and_tuples() -> None:
    payment = PaymentRequested(**{**msgspec.to_builtins(example_requested()), "metadata": {"\ud800": "v"}})
    assert find_unstorable_text(payment) == Invalid(
        "metadata",
        "text",
        "a key '\\ud800' holds U+D800 at character 0: a lone surrogate, which is not encodable as UTF-8",
    )
    event = RiskAssessed(
        event_id="e", decision="approved", reasons=["a", "b\x00"], assessed_at=datetime.now(UTC), payment=payment
    )
    problem = find_unstorable_text(event)
    assert problem is not None and (problem.field, problem.rule) == ("reasons[1]", "text")
    problem = find_unstorable_text({"a": [1, ("x", {"b": "\x00"})]})
    assert problem is not None and problem.field == "a[1][1].b"
    problem = find_unstorable_text("\x00")
    assert problem is not None and problem.field == "$"
    assert find_unstorable_text({"a": [1, 2.5, None, True, datetime.now(UTC), "fine"]}) is None


def example_requested() -> PaymentRequested:
    decoded = REQUESTED.decode(raw(doc()))
    assert isinstance(decoded, PaymentRequested)
    return decoded


# --- duplicate keys ---------------------------------------------------------------------------


def with_repeat(document: dict[str, Any], text: str) -> bytes:
    """The document's JSON with `text` (`"key": value`) added at the end of its top-level object."""
    return raw(document)[:-1] + b", " + text.encode() + b"}"


@pytest.mark.parametrize(
    ("decoder", "data", "field"),
    [
        pytest.param(REQUESTED, with_repeat(doc(amount_minor=100), '"amount_minor": 99999999'), "amount_minor",
                     id="top level, another value"),
        pytest.param(REQUESTED, with_repeat(doc(), '"amount_minor": 1250'), "amount_minor", id="top level, same value"),
        pytest.param(REQUESTED, with_repeat(doc(), '"amo\\u0075nt_minor": 99999999'), "amount_minor",
                     id="spelled with an escape"),
        pytest.param(REQUESTED, with_repeat(doc(), '"\\u0070ayment_id": "pay-2"'), "payment_id",
                     id="escape at the start"),
        pytest.param(REQUESTED, raw(doc(metadata={"note": "a"}))[:-2] + b', "note": "b"}}', "metadata.note",
                     id="inside metadata"),
        pytest.param(REQUESTED, with_repeat(doc(), '"schema": "payment.requested"'), "schema",
                     id="a field with a default"),
        pytest.param(RISK, raw(doc("risk.assessed"))[:-2] + b', "amount_minor": 99}}', "payment.amount_minor",
                     id="nested payment"),
        pytest.param(RISK, raw(doc("risk.assessed", payment=doc(metadata={"n": "a"})))[:-3] + b', "n": "b"}}}',
                     "payment.metadata.n", id="nested payment metadata"),
        pytest.param(FUNDS, with_repeat(doc("funds.held"), '"hold_id": "hold:other"'), "hold_id",
                     id="funds.held"),
    ],
)  # fmt: skip
def test_a_repeated_key_is_refused_naming_the_object_and_key(decoder: Decoder[Any], data: bytes, field: str) -> None:
    assert refusal(decoder, data) == (field, "duplicate_key")


def test_the_detail_of_a_repeated_key_counts_it() -> None:
    data = raw(doc(metadata={"note": "a"}))[:-2] + b', "note": "b", "note": "c"}}'
    assert REQUESTED.decode(data) == Invalid(
        "metadata.note",
        "duplicate_key",
        "the key 'note' appears 3 times in `metadata`; JSON readers disagree on which value wins,"
        " so a repeated key is refused",
    )


def test_repeats_are_looked_for_in_any_spelling_of_a_payment() -> None:
    payment = example_requested()
    unicode_payment = msgspec.structs.replace(payment, metadata={"ref": "A-1001 €", "city": "Zürich"})
    for event in (payment, unicode_payment):
        document = msgspec.to_builtins(event)
        spellings = [
            encode(event),  # paystream's own: exactly the re-encoding
            json.dumps(document).encode(),  # spaces after separators
            json.dumps(document, sort_keys=True, indent=2, ensure_ascii=False).encode(),  # another key order
            json.dumps(document, ensure_ascii=True).encode(),  # \u escapes: the full check
            json.dumps(document).replace('"method"', '"m\\u0065thod"').encode(),
        ]
        for spelling in spellings:
            assert REQUESTED.decode(spelling) == event, spelling
            assert find_repeated_key(spelling) is None


def test_the_full_check_reports_the_first_object_to_end_with_a_repeat() -> None:
    # As msgspec reports a missing field: when its object ends. An inner object ends before its holder.
    assert find_repeated_key(b'{"a": {"x": 1, "x": 2}, "b": 1, "b": 2}') == Invalid(
        "a.x",
        "duplicate_key",
        "the key 'x' appears 2 times in `a`; JSON readers disagree on which value wins, so a repeated key is refused",
    )
    found = find_repeated_key(b'{"b": 1, "b": 2, "a": {"x": 1, "x": 2}}')
    assert found is not None and found.field == "a.x"
    found = find_repeated_key(b'{"p": {"y": 1, "y": 1}, "q": {"z": 1, "z": 1}}')
    assert found is not None and found.field == "p.y"
    found = find_repeated_key(b'{"l": [{"k": 1}, {"k": 1, "k": 1}]}')
    assert found is not None and found.field == "l[1].k"
    found = find_repeated_key(b'{"": 1, "": 2}')
    assert found is not None and (found.field, found.detail.split(";")[0]) == (
        '""',
        "the key '' appears 2 times in the record",
    )
    assert find_repeated_key(b'{"a": {"x": 1}, "b": [{"x": 2}], "x": 3}') is None


ID_ALPHABET = string.ascii_letters + string.digits + "_.:-"
ids = st.text(alphabet=ID_ALPHABET, min_size=1, max_size=64)
utc_times = st.datetimes(
    min_value=datetime(2000, 1, 1),  # noqa: DTZ001 - hypothesis bounds are naive
    max_value=datetime(2100, 1, 1),  # noqa: DTZ001
    timezones=st.just(UTC),
)
small_text = st.text(st.characters(codec="utf-8", exclude_characters="\x00"), max_size=30)


@st.composite
def small_payments(draw: st.DrawFn) -> PaymentRequested:
    return PaymentRequested(
        payment_id=draw(ids),
        payer_account=draw(ids),
        merchant_id=draw(ids),
        amount_minor=draw(st.integers(min_value=1, max_value=10**15)),
        currency=draw(st.sampled_from(sorted(MINOR_UNIT_DIGITS))),
        country=draw(st.text(alphabet=string.ascii_uppercase, min_size=2, max_size=2)),
        method=draw(st.sampled_from(["card", "wallet", "bank_transfer"])),
        created_at=draw(utc_times),
        metadata=draw(st.dictionaries(small_text.filter(bool), small_text, max_size=6)),
    )


@PROPERTY
@given(small_payments(), st.data())
def test_repeating_any_key_of_any_payment_is_refused_naming_it(payment: PaymentRequested, data: st.DataObject) -> None:
    document = msgspec.to_builtins(payment)
    keys = [(name, None) for name in document] + [(name, "metadata") for name in document["metadata"]]
    name, inside = data.draw(st.sampled_from(keys), label="key")
    target = document if inside is None else document["metadata"]
    pairs = [*target.items(), (name, target[name])]  # the same key again, with the same value
    spelled = "{" + ", ".join(f"{json.dumps(k)}: {json.dumps(v)}" for k, v in pairs) + "}"
    if inside is None:
        text = spelled
    else:
        outer = {**document, "metadata": "@@"}
        text = json.dumps(outer).replace('"@@"', spelled)
    assert refusal(REQUESTED, text.encode()) == (name if inside is None else f"metadata.{name}", "duplicate_key")
    assert REQUESTED.decode(json.dumps(document).encode()) == payment


# --- size: room for what is derived from a payment request ------------------------------------


def test_the_reserve_is_the_largest_envelope_around_a_payment() -> None:
    assert WIDEST_CHAR_BYTES == 6  # \u0000 .. \u001f are written as six bytes
    assert len(msgspec.json.encode(WIDEST_CHAR)) == 2 + WIDEST_CHAR_BYTES
    small, big = example_requested(), msgspec.structs.replace(example_requested(), metadata={"k": "€" * 512})
    envelopes = {carrier: envelope_bytes(carrier, small) for carrier in CARRIERS}
    assert envelopes == {carrier: envelope_bytes(carrier, big) for carrier in CARRIERS}  # any payment
    assert RESERVED_BYTES[PaymentRequested] == max(envelopes.values()) == envelopes[RiskAssessed]
    # 16 reasons of 200 six-byte characters, a 200-character event id, the longest timestamp, and the rest.
    assert envelopes[RiskAssessed] == 20_588
    assert envelopes[FundsHeld] == 2_545  # with a manual capture's capture_minor
    # Only payment requests keep room: the other decoders have no reserve.
    reserves = {name: Decoder(t).reserved_bytes for name, t in EVENT_TYPES.items()}
    assert {name: r for name, r in reserves.items() if r} == {"payment.requested": 20_588}
    assert len(reserves) == len(EVENT_TYPES)


def test_the_widest_character_is_wider_than_any_non_ascii_one() -> None:
    # msgspec writes every non-ASCII character as its UTF-8 bytes (at most 4), never escaped.
    non_ascii = "".join(chr(c) for c in range(0x80, 0x110000) if not 0xD800 <= c <= 0xDFFF)
    assert msgspec.json.encode(non_ascii) == b'"' + non_ascii.encode("utf-8") + b'"'
    assert max(len(msgspec.json.encode(chr(c))) - 2 for c in range(0x80)) == WIDEST_CHAR_BYTES


def test_events_that_do_not_carry_the_payment_fit_whatever_they_hold() -> None:
    assert len(largest_encoding(PaymentOutcome)) == 23_149
    assert len(largest_encoding(PaymentCleared)) == 3_870
    assert max(len(largest_encoding(PaymentOutcome)), len(largest_encoding(PaymentCleared))) <= LIMIT
    with pytest.raises(TypeError, match="sets no bound"):
        largest_encoding(DeadLetter)  # its strings are unbounded: it is never derived from a payment


def padded(target_bytes: int, fill: str = "€") -> PaymentRequested:
    """A payment whose canonical encoding is exactly `target_bytes` long (metadata of `fill` and ASCII)."""
    base = msgspec.structs.replace(example_requested(), metadata={})
    metadata: dict[str, str] = {}
    for index in range(32):
        key = f"k{index:02d}"
        entry = {**metadata, key: ""}
        room = target_bytes - len(encode(msgspec.structs.replace(base, metadata=entry)))
        if room <= 0:
            break
        width = len(fill.encode())
        metadata[key] = fill * min(room // width, 512)
        if len(metadata[key]) < 512:
            short = target_bytes - len(encode(msgspec.structs.replace(base, metadata=metadata)))
            metadata[key] += "x" * min(short, 512 - len(metadata[key]))
    payment = msgspec.structs.replace(base, metadata=metadata)
    assert len(encode(payment)) == target_bytes, (len(encode(payment)), target_bytes)
    return payment


def test_a_request_too_big_for_its_derived_events_is_refused_at_the_exact_bound() -> None:
    reserve = RESERVED_BYTES[PaymentRequested]
    at_bound = padded(LIMIT - reserve)
    assert REQUESTED.decode(encode(at_bound)) == at_bound
    over = padded(LIMIT - reserve + 1)
    result = REQUESTED.decode(encode(over))
    assert result == Invalid(
        "$",
        "size",
        f"{LIMIT - reserve + 1} bytes as re-encoded, plus {reserve} bytes that the events derived from it may add"
        f" (risk.assessed, funds.held), exceeds the limit of {LIMIT}",
    )
    # The re-encoding counts, not the record: spaces do not make a request too big ...
    spaced = json.dumps(msgspec.to_builtins(at_bound), indent=1, ensure_ascii=False).encode()
    assert len(spaced) > len(encode(at_bound))
    assert REQUESTED.decode(spaced) == at_bound
    # ... and a smaller limit moves the bound with it.
    small = Decoder(PaymentRequested, record_bytes_max=reserve + 400)
    assert isinstance(small.decode(encode(padded(400, fill="x"))), PaymentRequested)
    assert refusal(small, encode(padded(401, fill="x"))) == ("$", "size")


# Widest first: hypothesis leans towards the first, and the bound is only reached with wide text.
wide_chars = st.sampled_from(["\x01", "\U0001f600", "€", "é", '"', "\\", "\n", "a"])


@st.composite
def long_text(draw: st.DrawFn, max_size: int, min_size: int = 0) -> str:
    """Up to `max_size` characters, mostly near it, from a few wide pieces (cheap to draw)."""
    size = draw(st.one_of(st.just(max_size), st.integers(min_value=min_size, max_value=max_size)))
    pieces = draw(st.lists(wide_chars, min_size=1, max_size=4))
    return ("".join(pieces) * size)[:size] if size else ""


@st.composite
def big_payments(draw: st.DrawFn) -> PaymentRequested:
    count = draw(st.one_of(st.just(32), st.integers(min_value=0, max_value=32)))  # often the most entries
    keys = [f"{index:02d}" + draw(long_text(62)) for index in range(count)]  # distinct, up to 64 characters
    metadata = {key: draw(long_text(512)) for key in keys}
    offset = timezone(timedelta(minutes=draw(st.integers(min_value=-(24 * 60 - 1), max_value=24 * 60 - 1))))
    return msgspec.structs.replace(
        draw(small_payments()), metadata=metadata, created_at=datetime(2026, 3, 1, 9, 30, tzinfo=offset)
    )


@PROPERTY
@given(big_payments(), st.sampled_from(["\x01", "€", "a"]))
def test_what_the_decoder_accepts_its_derived_events_fit_and_decode_in_the_next_stage(
    payment: PaymentRequested, reason_char: str
) -> None:
    data = encode(payment)
    if len(data) > LIMIT:
        label("over the record limit")
        return  # refused before parsing; nothing is derived
    decoded = REQUESTED.decode(data)
    if isinstance(decoded, Invalid):
        label("refused: no room for derived events")
        assert (decoded.field, decoded.rule) == ("$", "size")
        assert len(data) + RESERVED_BYTES[PaymentRequested] > LIMIT
        return
    label("accepted, larger than 40,000 bytes" if len(data) > 40_000 else "accepted")
    assert decoded == payment
    # The largest events risk and funds could derive: every reason at its widest, the longest ids and times.
    latest = datetime(9999, 12, 31, 23, 59, 59, 999_999, tzinfo=timezone(-timedelta(hours=23, minutes=59)))
    assessed = RiskAssessed(
        event_id=risk_event_id(payment.payment_id).ljust(200, "\x01"),
        decision="rejected",
        reasons=[reason_char * 200] * 16,
        assessed_at=latest,
        payment=decoded,
    )
    held = FundsHeld(
        event_id=funds_event_id(payment.payment_id).ljust(200, "\x01"),
        hold_id="hold:".ljust(200, "\x01"),
        held_at=latest,
        payment=decoded,
    )
    for derived, decoder in ((assessed, RISK), (held, FUNDS)):
        encoded = encode(derived)
        assert len(encoded) <= LIMIT, (type(derived).__name__, len(encoded))
        assert decoder.decode(encoded) == derived


def test_an_event_that_cannot_be_re_encoded_is_walked_for_its_surrogate() -> None:
    # msgspec never decodes a lone surrogate; should a decoder ever hand one over, the walk still names it.
    built = msgspec.structs.replace(example_requested(), metadata={"k": "\udc80"})
    decoder = Decoder(PaymentRequested)
    decoder._decoder = SimpleNamespace(decode=lambda _raw: built)  # type: ignore[assignment]
    result = decoder.decode(raw(doc()))
    assert isinstance(result, Invalid)
    assert (result.field, result.rule) == ("metadata.k", "text")


@pytest.mark.parametrize(
    ("tail", "field"),
    [
        (b',"payment_id":"p1"}', "payment_id"),  # the same key again, plainly: it must not hide the first
        (b',"metadata":{"n":' + b"7" * 5_000 + b"}}", "payment_id"),  # a number Python's int refuses to read
    ],
)
def test_a_lone_surrogate_is_named_whatever_follows_it(tail: bytes, field: str) -> None:
    document = doc(payment_id="PLACEHOLDER")
    document.pop("metadata", None)
    data = msgspec.json.encode(document).replace(b'"PLACEHOLDER"', b'"p1\\ud800"')
    assert refusal(REQUESTED, data[:-1] + tail) == (field, "text")


@pytest.mark.parametrize(
    ("data", "field"),
    [
        (b'{"note - at `$.amount_minor": 1}', "note - at `$.amount_minor"),
        (b'{"note` - at `$.amount_minor": 1}', "note` - at `$.amount_minor"),
        (b'{"zz": 1}', "zz"),
        (b'{"a`b": 1}', "a`b"),
    ],
)
def test_an_unknown_field_is_named_as_sent_even_when_it_looks_like_a_path(data: bytes, field: str) -> None:
    assert refusal(REQUESTED, data) == (field, "unknown_field")


def test_a_nested_unknown_field_is_named_with_its_path_even_when_it_looks_like_one() -> None:
    assert refusal(RISK, b'{"payment": {"zz": 1}}') == ("payment.zz", "unknown_field")
    assert refusal(RISK, b'{"payment": {"zz` - at `$.x": 1}}') == ("payment.zz` - at `$.x", "unknown_field")
