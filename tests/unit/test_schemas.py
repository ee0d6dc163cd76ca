"""The event contracts: round trips, and an `Invalid` that names the right field and rule."""

from __future__ import annotations

import json
from datetime import UTC, datetime
from typing import Any

import msgspec
import pytest

from schemas.codec import Decoder, Invalid, encode, to_builtins
from schemas.dead_letter import dead_letter_event_id
from schemas.payments import (
    PaymentRequested,
    RiskAssessed,
    clearing_event_id,
    funds_event_id,
    outcome_event_id,
    risk_event_id,
)
from schemas.registry import (
    EVENT_TYPES,
    EXAMPLES,
    UnknownEventTypeError,
    _ecma_pattern,
    event_struct,
    event_version,
    example_document,
    json_schema,
    schema_file_name,
    schema_id,
)
from schemas.settlement import batch_closed_event_id

MISSING = object()  # marks a field to delete from a sample document


def document(event_type: str, **changes: Any) -> dict[str, Any]:
    """The registry's example as JSON-ready builtins, with fields replaced or removed."""
    doc = example_document(event_type)
    for name, value in changes.items():
        if value is MISSING:
            del doc[name]
        else:
            doc[name] = value
    return doc


def raw(doc: Any) -> bytes:
    return json.dumps(doc).encode()


def decode(event_type: str, data: bytes) -> Any:
    return Decoder(EVENT_TYPES[event_type]).decode(data)


# --- the registry ---------------------------------------------------------------------------


def test_registry_names_all_eighteen_contracts_by_their_schema_field() -> None:
    assert set(EVENT_TYPES) == {
        "payment.requested",
        "risk.assessed",
        "funds.held",
        "payment.cleared",
        "payment.outcome",
        "settlement.batch_closed",
        "dead_letter",
        "account.open.requested",
        "account.close.requested",
        "deposit.requested",
        "withdrawal.requested",
        "capture.requested",
        "void.requested",
        "refund.requested",
        "refund.cleared",
        "payment.refunded",
        "account.request.approved",
        "account.outcome",
    }
    for name, struct in EVENT_TYPES.items():
        # The key is what the event says about itself on the wire.
        assert msgspec.to_builtins(EXAMPLES[name])["schema"] == name
        assert struct.__struct_config__.forbid_unknown_fields
        assert struct.__struct_config__.frozen


def test_schema_ids_and_file_names_carry_the_version() -> None:
    assert event_version("payment.requested") == 1
    assert schema_file_name("payment.requested") == "payment.requested.v1.json"
    assert schema_id("payment.requested") == "https://paystream.dev/schemas/payment.requested.v1.json"


def test_unknown_event_type_is_refused_with_the_known_names() -> None:
    with pytest.raises(UnknownEventTypeError, match=r"payment\.requested"):
        event_struct("payment.chargeback")
    with pytest.raises(KeyError):
        json_schema("payment.chargeback")


@pytest.mark.parametrize("event_type", sorted(EVENT_TYPES))
def test_json_schema_is_a_standalone_closed_document(event_type: str) -> None:
    schema = json_schema(event_type)
    assert schema["$schema"] == "https://json-schema.org/draft/2020-12/schema"
    assert schema["$id"] == f"https://paystream.dev/schemas/{schema_file_name(event_type)}"
    assert schema["title"] == EVENT_TYPES[event_type].__name__
    assert schema["description"] and not schema["description"].startswith(" ")
    assert "\n    " not in schema["description"]  # docstring indentation removed
    assert schema["type"] == "object"
    assert schema["additionalProperties"] is False
    assert "$ref" not in schema  # the event is the root, not behind a reference
    for sub in schema.get("$defs", {}).values():
        assert sub["additionalProperties"] is False
    assert schema["examples"] == [example_document(event_type)]


def test_datetimes_are_rfc3339_date_time_strings() -> None:
    created_at = json_schema("payment.requested")["properties"]["created_at"]
    assert created_at == {"type": "string", "format": "date-time"}


def test_python_end_anchor_becomes_the_ecma_one_and_a_bare_dollar_is_refused() -> None:
    assert _ecma_pattern(r"^[A-Z]{2}\Z", "t") == "^[A-Z]{2}$"
    assert json_schema("payment.requested")["properties"]["country"]["pattern"] == "^[A-Z]{2}$"
    assert _ecma_pattern(r"^a\\Z", "t") == r"^a\\Z"  # an escaped backslash then "Z"
    with pytest.raises(AssertionError, match="trailing newline"):
        _ecma_pattern(r"^[A-Z]{2}$", "t")
    assert _ecma_pattern(r"^cost\$", "t") == r"^cost\$"  # a literal dollar sign is fine


# --- round trips ----------------------------------------------------------------------------


@pytest.mark.parametrize("event_type", sorted(EVENT_TYPES))
def test_every_example_round_trips(event_type: str) -> None:
    doc = example_document(event_type)
    event = decode(event_type, raw(doc))
    assert not isinstance(event, Invalid), event
    assert event == EXAMPLES[event_type]
    assert decode(event_type, encode(event)) == event
    assert to_builtins(event) == doc


def test_offsets_other_than_utc_are_kept() -> None:
    event = decode("payment.requested", raw(document("payment.requested", created_at="2026-03-01T15:00:00+05:30")))
    assert isinstance(event, PaymentRequested)
    assert event.created_at == datetime(2026, 3, 1, 9, 30, tzinfo=UTC)
    assert event.created_at.utcoffset() is not None
    assert json.loads(encode(event))["created_at"] == "2026-03-01T15:00:00+05:30"


def test_schema_and_version_default_when_absent() -> None:
    event = decode("payment.requested", raw(document("payment.requested", schema=MISSING, v=MISSING)))
    assert isinstance(event, PaymentRequested)
    assert (event.schema, event.v) == ("payment.requested", 1)
    # ... and are always written out, so consumers in any language see them.
    assert json.loads(encode(event))["v"] == 1


def test_event_ids_are_derived_deterministically() -> None:
    assert risk_event_id("pay-1") == "pay-1:risk"
    assert funds_event_id("pay-1") == "pay-1:funds"
    assert clearing_event_id("pay-1") == "pay-1:clearing"
    assert outcome_event_id("pay-1", "declined") == "pay-1:declined"
    assert batch_closed_event_id("m-1:EUR:20260301T000000Z") == "m-1:EUR:20260301T000000Z:closed"
    assert dead_letter_event_id("risk", "payments.requested", 3, 7) == "risk:payments.requested:3:7"


# --- every Invalid names the field and the rule ---------------------------------------------

_REQ = "payment.requested"

INVALID_CASES: list[tuple[str, str, bytes, str, str]] = [
    # (case id, event type, raw bytes, field, rule)
    ("amount 0", _REQ, raw(document(_REQ, amount_minor=0)), "amount_minor", "range"),
    ("amount negative", _REQ, raw(document(_REQ, amount_minor=-5)), "amount_minor", "range"),
    ("amount > 10^15", _REQ, raw(document(_REQ, amount_minor=10**15 + 1)), "amount_minor", "range"),
    ("amount 1e400", _REQ, raw(document(_REQ))[:-1] + b', "amount_minor": 1e400}', "amount_minor", "range"),
    ("amount as text", _REQ, raw(document(_REQ, amount_minor="1250")), "amount_minor", "type"),
    ("amount with fraction", _REQ, raw(document(_REQ, amount_minor=12.5)), "amount_minor", "type"),
    ("amount 1.0", _REQ, raw(document(_REQ, amount_minor=1.0)), "amount_minor", "type"),
    ("amount true", _REQ, raw(document(_REQ, amount_minor=True)), "amount_minor", "type"),
    ("currency unknown", _REQ, raw(document(_REQ, currency="XXX")), "currency", "enum"),
    ("currency lowercase", _REQ, raw(document(_REQ, currency="eur")), "currency", "enum"),
    ("currency number", _REQ, raw(document(_REQ, currency=978)), "currency", "type"),
    ("payment_id pattern", _REQ, raw(document(_REQ, payment_id="pay 1")), "payment_id", "pattern"),
    ("payment_id newline", _REQ, raw(document(_REQ, payment_id="pay-1\n")), "payment_id", "pattern"),
    ("payment_id empty", _REQ, raw(document(_REQ, payment_id="")), "payment_id", "length"),
    ("payment_id too long", _REQ, raw(document(_REQ, payment_id="p" * 65)), "payment_id", "length"),
    ("country lowercase", _REQ, raw(document(_REQ, country="de")), "country", "pattern"),
    ("country newline", _REQ, raw(document(_REQ, country="DE\n")), "country", "pattern"),
    ("method unknown", _REQ, raw(document(_REQ, method="cash")), "method", "enum"),
    ("missing payer_account", _REQ, raw(document(_REQ, payer_account=MISSING)), "payer_account", "required"),
    ("unknown field", _REQ, raw(document(_REQ, amount=1250)), "amount", "unknown_field"),
    ("v=2", _REQ, raw(document(_REQ, v=2)), "v", "enum"),
    ("wrong schema name", _REQ, raw(document(_REQ, schema="funds.held")), "schema", "enum"),
    (
        "naive created_at",
        _REQ,
        raw(document(_REQ, created_at="2026-03-01T09:30:00")),
        "created_at",
        "timezone",
    ),
    ("created_at not a time", _REQ, raw(document(_REQ, created_at="yesterday")), "created_at", "format"),
    (
        "created_at leap second",
        _REQ,
        raw(document(_REQ, created_at="2026-12-31T23:59:60Z")),
        "created_at",
        "format",
    ),
    ("created_at epoch number", _REQ, raw(document(_REQ, created_at=1772357400)), "created_at", "type"),
    (
        "metadata 33 entries",
        _REQ,
        raw(document(_REQ, metadata={str(i): "x" for i in range(33)})),
        "metadata",
        "length",
    ),
    ("metadata empty key", _REQ, raw(document(_REQ, metadata={"": "x"})), "metadata", "length"),
    ("metadata long value", _REQ, raw(document(_REQ, metadata={"k": "x" * 513})), "metadata[...]", "length"),
    ("metadata number value", _REQ, raw(document(_REQ, metadata={"k": 1})), "metadata[...]", "type"),
    ("truncated JSON", _REQ, raw(document(_REQ))[:-7], "$", "json"),
    ("garbage bytes", _REQ, b"\xff\xfe\x00garbage", "$", "json"),
    ("empty record", _REQ, b"", "$", "json"),
    ("trailing bytes", _REQ, raw(document(_REQ)) + b"}", "$", "json"),
    ("top level array", _REQ, b"[]", "$", "type"),
    ("top level null", _REQ, b"null", "$", "type"),
    (
        "nested payment.currency",
        "risk.assessed",
        raw(document("risk.assessed", payment=document(_REQ, currency="XXX"))),
        "payment.currency",
        "enum",
    ),
    (
        "nested missing payment.payment_id",
        "funds.held",
        raw(document("funds.held", payment=document(_REQ, payment_id=MISSING))),
        "payment.payment_id",
        "required",
    ),
    (
        "nested unknown payment.extra",
        "risk.assessed",
        raw(document("risk.assessed", payment=document(_REQ, extra=1))),
        "payment.extra",
        "unknown_field",
    ),
    (
        "nested unknown empty key",
        "funds.held",
        raw(document("funds.held", payment={"": None})),
        'payment.""',
        "unknown_field",
    ),
    ("unknown field with a backtick", _REQ, raw(document(_REQ, **{"a`b": 1})), "a`b", "unknown_field"),
    (
        "reason too long",
        "payment.outcome",
        raw(document("payment.outcome", reasons=["ok", "x" * 201])),
        "reasons[1]",
        "length",
    ),
    ("outcome status", "payment.outcome", raw(document("payment.outcome", status="lost")), "status", "enum"),
    ("fee negative", "payment.cleared", raw(document("payment.cleared", fee_minor=-1)), "fee_minor", "range"),
    (
        "batch item_count negative",
        "settlement.batch_closed",
        raw(document("settlement.batch_closed", item_count=-1)),
        "item_count",
        "range",
    ),
    (
        "batch sum above int64",
        "settlement.batch_closed",
        raw(document("settlement.batch_closed", gross_minor=2**63)),
        "gross_minor",
        "range",
    ),
    (
        "payout journal not text",
        "settlement.batch_closed",
        raw(document("settlement.batch_closed", payout_journal_id=7)),
        "payout_journal_id",
        "type",
    ),
    (
        "dead letter missing stage",
        "dead_letter",
        raw(document("dead_letter", stage=MISSING)),
        "stage",
        "required",
    ),
]


@pytest.mark.parametrize(
    ("event_type", "data", "field", "rule"),
    [pytest.param(*case[1:], id=case[0]) for case in INVALID_CASES],
)
def test_invalid_names_field_and_rule(event_type: str, data: bytes, field: str, rule: str) -> None:
    result = decode(event_type, data)
    assert isinstance(result, Invalid), result
    assert (result.field, result.rule) == (field, rule), result
    assert result.detail
    assert str(result).startswith(f"{field}: {rule} (")


def test_oversized_payload_is_refused_before_parsing() -> None:
    decoder = Decoder(PaymentRequested, record_bytes_max=1024)
    doc = document(_REQ, metadata={"note": "x" * 2000})
    result = decoder.decode(raw(doc))
    assert isinstance(result, Invalid)
    assert (result.field, result.rule) == ("$", "size")
    assert "exceeds the limit of 1024" in result.detail
    # Exactly at the limit is still parsed (and here refused for its own reason).
    at_limit = b" " * 1024
    assert decoder.decode(at_limit) == Invalid("$", "json", "Input data was truncated")


def test_a_record_without_a_value_is_required() -> None:
    result = Decoder(PaymentRequested).decode(None)
    assert isinstance(result, Invalid)
    assert (result.field, result.rule) == ("$", "required")


def test_the_first_problem_in_document_order_is_reported() -> None:
    # msgspec stops at the first error it meets; the reason is one field, not a list.
    first = decode(_REQ, b'{"currency": "XXX", "amount_minor": 0}')
    assert isinstance(first, Invalid) and first.field == "currency"
    first = decode(_REQ, b'{"amount_minor": 0, "currency": "XXX"}')
    assert isinstance(first, Invalid) and first.field == "amount_minor"
    # A value is checked as soon as it is read, before a later syntax error ...
    early = decode(_REQ, b'{"amount_minor": 0, "payment_id": "p')
    assert isinstance(early, Invalid) and (early.field, early.rule) == ("amount_minor", "range")
    # ... and a missing field is noticed when its object closes, before trailing bytes.
    closed = decode(_REQ, b'{"payment_id": "p-1"} trailing')
    assert isinstance(closed, Invalid) and (closed.field, closed.rule) == ("payer_account", "required")


def test_risk_assessed_carries_the_full_payment() -> None:
    event = decode("risk.assessed", raw(document("risk.assessed")))
    assert isinstance(event, RiskAssessed)
    assert event.payment == EXAMPLES[_REQ]
    assert event.event_id == risk_event_id(event.payment.payment_id)
