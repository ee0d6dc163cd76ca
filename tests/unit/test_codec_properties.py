"""Properties of the codec over generated input: round trips, amount bounds, no exceptions."""

from __future__ import annotations

import json
import string
from datetime import UTC, datetime, timedelta, timezone
from typing import get_args

from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from jsonschema import Draft202012Validator

from schemas.codec import Decoder, Invalid, encode
from schemas.money import AMOUNT_MINOR_MAX, MINOR_UNIT_DIGITS
from schemas.payments import PaymentMethod, PaymentRequested, RiskAssessed, risk_event_id
from schemas.registry import EVENT_TYPES, SCHEMA_DIR, example_document, schema_file_name

DECODERS = {name: Decoder(struct) for name, struct in EVENT_TYPES.items()}
REQUESTED = DECODERS["payment.requested"]
RISK = DECODERS["risk.assessed"]

ID_ALPHABET = string.ascii_letters + string.digits + "_.:-"

ids = st.text(alphabet=ID_ALPHABET, min_size=1, max_size=64)
# RFC 3339 offsets are whole minutes, strictly inside ±24:00.
offsets = st.integers(min_value=-(24 * 60 - 1), max_value=24 * 60 - 1).map(
    lambda minutes: timezone(timedelta(minutes=minutes))
)
# Hypothesis takes naive bounds and attaches the drawn timezone; a day's margin
# keeps every offset's local time inside years 1..9999.
aware_datetimes = st.datetimes(
    min_value=datetime(1, 1, 2),  # noqa: DTZ001
    max_value=datetime(9999, 12, 30),  # noqa: DTZ001
    timezones=st.one_of(st.just(UTC), offsets),
)
# Text PostgreSQL can store: UTF-8 encodable (no lone surrogates) and no NUL; others are refused (`text`).
storable = st.characters(codec="utf-8", exclude_characters="\x00")
metadata = st.dictionaries(st.text(storable, min_size=1, max_size=64), st.text(storable, max_size=512), max_size=32)
amounts = st.integers(min_value=1, max_value=AMOUNT_MINOR_MAX)
out_of_range_amounts = st.one_of(
    st.integers(max_value=0),
    st.integers(min_value=AMOUNT_MINOR_MAX + 1),
    st.sampled_from([0, -1, AMOUNT_MINOR_MAX + 1, 2**63, 2**64, -(2**63) - 1, 10**40]),
)


@st.composite
def payments(draw: st.DrawFn, amount: st.SearchStrategy[int] = amounts) -> PaymentRequested:
    return PaymentRequested(
        payment_id=draw(ids),
        payer_account=draw(ids),
        merchant_id=draw(ids),
        amount_minor=draw(amount),
        currency=draw(st.sampled_from(sorted(MINOR_UNIT_DIGITS))),  # type: ignore[arg-type]
        country=draw(st.text(alphabet=string.ascii_uppercase, min_size=2, max_size=2)),
        method=draw(st.sampled_from(get_args(PaymentMethod))),
        created_at=draw(aware_datetimes),
        metadata=draw(metadata),
    )


@given(payments())
def test_any_valid_payment_round_trips(payment: PaymentRequested) -> None:
    decoded = REQUESTED.decode(encode(payment))
    assert decoded == payment
    assert isinstance(decoded, PaymentRequested)
    assert decoded.created_at.utcoffset() == payment.created_at.utcoffset()
    assert encode(decoded) == encode(payment)


@given(payments(), st.lists(st.text(storable, max_size=200), max_size=16), aware_datetimes)
def test_any_valid_nested_payment_round_trips(
    payment: PaymentRequested, reasons: list[str], assessed_at: datetime
) -> None:
    event = RiskAssessed(
        event_id=risk_event_id(payment.payment_id),
        decision="approved",
        reasons=reasons,
        assessed_at=assessed_at,
        payment=payment,
    )
    assert RISK.decode(encode(event)) == event


_REQUESTED_SCHEMA = json.loads((SCHEMA_DIR / schema_file_name("payment.requested")).read_text("utf-8"))
_REQUESTED_VALIDATOR = Draft202012Validator(_REQUESTED_SCHEMA, format_checker=Draft202012Validator.FORMAT_CHECKER)


@settings(suppress_health_check=[HealthCheck.too_slow], deadline=None)
@given(payments())
def test_what_paystream_encodes_the_schema_file_accepts(payment: PaymentRequested) -> None:
    # What the Python publisher sends is what a publisher in another language may send.
    errors = [e.message for e in _REQUESTED_VALIDATOR.iter_errors(json.loads(encode(payment)))]
    assert errors == []


@given(payments(amount=out_of_range_amounts))
def test_any_amount_outside_the_bounds_is_refused_naming_amount_minor(
    payment: PaymentRequested,
) -> None:
    # A Struct built in code is not validated; decoding its JSON is.
    result = REQUESTED.decode(encode(payment))
    assert isinstance(result, Invalid)
    assert (result.field, result.rule) == ("amount_minor", "range"), result


@given(payments(amount=out_of_range_amounts))
def test_a_nested_amount_outside_the_bounds_names_its_path(payment: PaymentRequested) -> None:
    doc = example_document("risk.assessed")
    doc["payment"] = json.loads(encode(payment))
    result = RISK.decode(json.dumps(doc).encode())
    assert isinstance(result, Invalid)
    assert (result.field, result.rule) == ("payment.amount_minor", "range"), result


@given(st.binary(max_size=2048), st.sampled_from(sorted(EVENT_TYPES)))
def test_arbitrary_bytes_never_raise(data: bytes, event_type: str) -> None:
    result = DECODERS[event_type].decode(data)
    assert isinstance(result, (Invalid, EVENT_TYPES[event_type]))


json_values = st.recursive(
    st.none() | st.booleans() | st.integers() | st.floats(allow_nan=False, allow_infinity=False) | st.text(max_size=80),
    lambda children: st.lists(children, max_size=4) | st.dictionaries(st.text(max_size=10), children, max_size=4),
    max_leaves=12,
)


@given(st.sampled_from(sorted(EVENT_TYPES)), st.data())
def test_one_field_replaced_by_any_json_is_blamed_on_that_field(event_type: str, data: st.DataObject) -> None:
    doc = example_document(event_type)
    name = data.draw(st.sampled_from(sorted(doc)), label="field")
    doc[name] = data.draw(json_values, label="value")
    result = DECODERS[event_type].decode(json.dumps(doc).encode())
    if isinstance(result, Invalid):
        # The field itself, or a path inside it (payment.currency, metadata[...], reasons[3]).
        assert result.field == name or result.field.startswith((f"{name}.", f"{name}[")), result
        assert result.rule in {"type", "enum", "range", "length", "pattern", "format", "timezone",
                               "required", "unknown_field", "text"}, result  # fmt: skip
    else:
        assert isinstance(result, EVENT_TYPES[event_type])


@given(st.sampled_from(sorted(EVENT_TYPES)), st.data())
def test_a_truncated_document_is_json_or_a_missing_field(event_type: str, data: st.DataObject) -> None:
    text = json.dumps(example_document(event_type)).encode()
    cut = data.draw(st.integers(min_value=0, max_value=len(text) - 1), label="cut")
    result = DECODERS[event_type].decode(text[:cut])
    assert isinstance(result, Invalid)
    assert result.rule in {"json", "required"}, result
