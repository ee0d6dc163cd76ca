"""The committed JSON Schema files: true to the code, valid, and in agreement with our decoders.

Publishers in other languages validate against these files; workers decode with
msgspec. A document one accepts and the other refuses would either be
dead-lettered after the publisher thought it fine, or be refused by a publisher
although paystream would take it. The cross-check below pins down both sides;
the few places where they cannot agree are listed in docs/reference/events.md.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest
from jsonschema import Draft202012Validator
from jsonschema.validators import validator_for

from schemas.__main__ import main
from schemas.codec import Decoder, Invalid
from schemas.payments import PaymentOutcome, PaymentRequested
from schemas.registry import (
    EVENT_TYPES,
    RETIRED_FILES,
    SCHEMA_DIR,
    check_schema_files,
    example_document,
    render,
    schema_file_name,
    write_schema_files,
)
from schemas.retired import PaymentOutcomeV1, SettlementBatchClosedV1
from schemas.settlement import SettlementBatchClosed

MISSING = object()
DOCS = Path(__file__).resolve().parents[2] / "docs" / "reference"


def committed(event_type: str) -> dict[str, Any]:
    schema: dict[str, Any] = json.loads((SCHEMA_DIR / schema_file_name(event_type)).read_text("utf-8"))
    return schema


def validator(event_type: str) -> Draft202012Validator:
    # Without a format checker, "format" is only an annotation and a naive
    # timestamp would pass. Publishers should enable theirs as well.
    return Draft202012Validator(committed(event_type), format_checker=Draft202012Validator.FORMAT_CHECKER)


def document(event_type: str, **changes: Any) -> dict[str, Any]:
    doc = example_document(event_type)
    for name, value in changes.items():
        if value is MISSING:
            del doc[name]
        else:
            doc[name] = value
    return doc


# --- the files match the code ---------------------------------------------------------------


def test_committed_files_match_the_code() -> None:
    drift = check_schema_files(SCHEMA_DIR)
    assert drift == [], "schema files drifted from schemas/*.py; run: python -m schemas write\n" + "\n".join(drift)


@pytest.mark.parametrize("event_type", sorted(EVENT_TYPES))
def test_each_file_is_the_rendering_of_its_struct(event_type: str) -> None:
    # Regenerated in memory and compared byte for byte (sorted keys, 2-space indent, final newline).
    text = (SCHEMA_DIR / schema_file_name(event_type)).read_text("utf-8")
    assert text == render(event_type)
    assert text.endswith("}\n")
    assert json.dumps(json.loads(text), indent=2, sort_keys=True, ensure_ascii=False) + "\n" == text


def test_rendering_is_deterministic() -> None:
    assert all(render(name) == render(name) for name in EVENT_TYPES)


def test_no_stray_files_in_the_schema_directory() -> None:
    assert sorted(p.name for p in SCHEMA_DIR.glob("*.json")) == sorted(
        [*map(schema_file_name, EVENT_TYPES), *RETIRED_FILES]
    )


def test_a_retired_version_keeps_its_published_file_and_is_still_read() -> None:
    # payment.outcome v1 is no longer written (v2 has manual capture's statuses), but retained events are read.
    assert {"payment.outcome.v1.json", "settlement.batch_closed.v1.json"} == RETIRED_FILES
    published = json.loads((SCHEMA_DIR / "payment.outcome.v1.json").read_text("utf-8"))
    assert published["properties"]["v"]["enum"] == [1]
    assert "authorized" not in published["properties"]["status"]["enum"]
    reader = Decoder((PaymentOutcome, PaymentOutcomeV1))
    old = example_document("payment.outcome") | {"v": 1}
    old.pop("captured_minor", None)
    assert isinstance(reader.decode(json.dumps(old).encode()), PaymentOutcomeV1)
    assert isinstance(reader.decode(json.dumps(example_document("payment.outcome")).encode()), PaymentOutcome)
    # A v1 event with a v2-only status is refused: v1 never had it.
    refused = reader.decode(json.dumps(old | {"status": "authorized"}).encode())
    assert isinstance(refused, Invalid) and (refused.field, refused.rule) == ("status", "enum")
    # settlement.batch_closed v1 (before refunds): never negative, no refund count; still read.
    batches = Decoder((SettlementBatchClosed, SettlementBatchClosedV1))
    old_batch = example_document("settlement.batch_closed") | {"v": 1}
    old_batch.pop("refund_count")
    assert isinstance(batches.decode(json.dumps(old_batch).encode()), SettlementBatchClosedV1)
    negative = example_document("settlement.batch_closed") | {"net_minor": -5, "gross_minor": 73}
    assert isinstance(batches.decode(json.dumps(negative).encode()), SettlementBatchClosed)
    refused = batches.decode(json.dumps(old_batch | {"net_minor": -5}).encode())
    assert isinstance(refused, Invalid) and (refused.field, refused.rule) == ("net_minor", "range")


def test_check_reports_missing_differing_and_unexpected_files(tmp_path: Path) -> None:
    assert len(check_schema_files(tmp_path)) == len(EVENT_TYPES)  # all missing
    assert len(write_schema_files(tmp_path)) == len(EVENT_TYPES)
    assert check_schema_files(tmp_path) == []
    assert write_schema_files(tmp_path) == []  # nothing changed, nothing rewritten

    edited = tmp_path / schema_file_name("payment.requested")
    edited.write_text(edited.read_text("utf-8").replace('"minimum": 1', '"minimum": 0'), "utf-8")
    (tmp_path / schema_file_name("dead_letter")).unlink()
    (tmp_path / "payment.requested.v0.json").write_text("{}\n", "utf-8")

    assert check_schema_files(tmp_path) == [
        f"differs: {edited}",
        f"missing: {tmp_path / 'dead_letter.v1.json'}",
        f"unexpected: {tmp_path / 'payment.requested.v0.json'}",
    ]


def test_cli_check_exits_1_listing_drift_and_write_repairs_it(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    assert main(["check", "--dir", str(tmp_path)]) == 1
    err = capsys.readouterr().err
    assert f"missing: {tmp_path / 'payment.requested.v1.json'}" in err
    assert "run: python -m schemas write" in err

    assert main(["write", "--dir", str(tmp_path)]) == 0
    assert main(["check", "--dir", str(tmp_path)]) == 0
    assert "match the code" in capsys.readouterr().out


def test_cli_refuses_an_unknown_command() -> None:
    with pytest.raises(SystemExit) as exited:
        main(["publish"])
    assert exited.value.code == 2


# --- the files are valid JSON Schema --------------------------------------------------------


@pytest.mark.parametrize("event_type", sorted(EVENT_TYPES))
def test_each_file_is_a_valid_draft_2020_12_schema(event_type: str) -> None:
    schema = committed(event_type)
    assert validator_for(schema) is Draft202012Validator
    Draft202012Validator.check_schema(schema)  # raises SchemaError if not
    for example in schema["examples"]:
        validator(event_type).validate(example)
        assert not isinstance(Decoder(EVENT_TYPES[event_type]).decode(json.dumps(example).encode()), Invalid)


def test_the_format_checker_really_checks_date_time() -> None:
    # jsonschema skips "date-time" silently when rfc3339-validator is missing.
    checker = Draft202012Validator.FORMAT_CHECKER
    assert "date-time" in checker.checkers
    assert not checker.conforms("2026-03-01T09:30:00", "date-time")


# --- jsonschema and our Decoder agree ------------------------------------------------------

_REQ = "payment.requested"
_DOLLAR_REASON = (
    "python-jsonschema evaluates `pattern` with Python's re, whose `$` also matches before a "
    "trailing newline; ECMA-262 (the dialect JSON Schema specifies, used by validators in "
    "other languages) and our decoder (\\Z) refuse it"
)
_INTEGER_REASON = (
    "JSON Schema counts 1.0 as an integer (draft 2020-12 looks at the value, not the "
    "notation); msgspec refuses a number written with a fraction or exponent for an int field"
)

# (case id, event type, document, accepted)
AGREEMENT_CASES: list[tuple[Any, ...]] = [
    ("example", _REQ, document(_REQ), True),
    ("minimal", _REQ, document(_REQ, metadata=MISSING), True),
    ("without schema and v", _REQ, document(_REQ, schema=MISSING, v=MISSING), True),
    ("amount 1", _REQ, document(_REQ, amount_minor=1), True),
    ("amount 10^15", _REQ, document(_REQ, amount_minor=10**15), True),
    ("JPY", _REQ, document(_REQ, currency="JPY", amount_minor=500), True),
    ("offset +05:30", _REQ, document(_REQ, created_at="2026-03-01T15:00:00+05:30"), True),
    ("offset -00:00", _REQ, document(_REQ, created_at="2026-03-01T09:30:00-00:00"), True),
    ("lowercase t and z", _REQ, document(_REQ, created_at="2026-03-01t09:30:00z"), True),
    ("nanoseconds", _REQ, document(_REQ, created_at="2026-03-01T09:30:00.123456789Z"), True),
    ("id with all allowed chars", _REQ, document(_REQ, payment_id="aZ09_.:-"), True),
    ("id of 64 chars", _REQ, document(_REQ, payment_id="p" * 64), True),
    ("metadata 32 entries", _REQ, document(_REQ, metadata={str(i): "" for i in range(32)}), True),
    ("metadata unicode", _REQ, document(_REQ, metadata={"note": "café ☕ 支付"}), True),
    # bad: the cases every publisher hits first
    ("missing payer_account", _REQ, document(_REQ, payer_account=MISSING), False),
    ("missing created_at", _REQ, document(_REQ, created_at=MISSING), False),
    ("amount as text", _REQ, document(_REQ, amount_minor="1250"), False),
    ("amount true", _REQ, document(_REQ, amount_minor=True), False),
    ("amount 12.5", _REQ, document(_REQ, amount_minor=12.5), False),
    ("amount null", _REQ, document(_REQ, amount_minor=None), False),
    ("unknown field", _REQ, document(_REQ, amount=1250), False),
    ("currency unknown", _REQ, document(_REQ, currency="XXX"), False),
    ("currency lowercase", _REQ, document(_REQ, currency="eur"), False),
    ("amount 0", _REQ, document(_REQ, amount_minor=0), False),
    ("amount negative", _REQ, document(_REQ, amount_minor=-1250), False),
    ("amount > 10^15", _REQ, document(_REQ, amount_minor=10**15 + 1), False),
    ("amount 10^30", _REQ, document(_REQ, amount_minor=10**30), False),
    ("naive created_at", _REQ, document(_REQ, created_at="2026-03-01T09:30:00"), False),
    ("date only", _REQ, document(_REQ, created_at="2026-03-01"), False),
    ("not a time", _REQ, document(_REQ, created_at="yesterday"), False),
    ("February 30", _REQ, document(_REQ, created_at="2026-02-30T09:30:00Z"), False),
    ("hour 24", _REQ, document(_REQ, created_at="2026-03-01T24:00:00Z"), False),
    ("leap second", _REQ, document(_REQ, created_at="2026-12-31T23:59:60Z"), False),
    ("v=2", _REQ, document(_REQ, v=2), False),
    ("v true", _REQ, document(_REQ, v=True), False),
    ("v as text", _REQ, document(_REQ, v="1"), False),
    ("schema of another event", _REQ, document(_REQ, schema="funds.held"), False),
    ("method unknown", _REQ, document(_REQ, method="cash"), False),
    ("id with a space", _REQ, document(_REQ, payment_id="pay 1"), False),
    ("id empty", _REQ, document(_REQ, payment_id=""), False),
    ("id of 65 chars", _REQ, document(_REQ, payment_id="p" * 65), False),
    ("country lowercase", _REQ, document(_REQ, country="de"), False),
    ("country of 3 letters", _REQ, document(_REQ, country="DEU"), False),
    ("metadata 33 entries", _REQ, document(_REQ, metadata={str(i): "" for i in range(33)}), False),
    ("metadata empty key", _REQ, document(_REQ, metadata={"": "x"}), False),
    ("metadata long value", _REQ, document(_REQ, metadata={"k": "x" * 513}), False),
    ("metadata number value", _REQ, document(_REQ, metadata={"k": 1}), False),
    ("metadata nested", _REQ, document(_REQ, metadata={"k": {"a": "b"}}), False),
    ("not an object", _REQ, [document(_REQ)], False),
    # other events, including the nested payment
    ("risk example", "risk.assessed", document("risk.assessed"), True),
    (
        "risk nested currency",
        "risk.assessed",
        document("risk.assessed", payment=document(_REQ, currency="XXX")),
        False,
    ),
    ("risk nested unknown", "risk.assessed", document("risk.assessed", payment=document(_REQ, x=1)), False),
    ("risk 17 reasons", "risk.assessed", document("risk.assessed", reasons=["r"] * 17), False),
    ("funds naive held_at", "funds.held", document("funds.held", held_at="2026-03-01T09:30:01"), False),
    ("cleared fee 0", "payment.cleared", document("payment.cleared", fee_minor=0, net_minor=1250), True),
    ("cleared gross 0", "payment.cleared", document("payment.cleared", gross_minor=0), False),
    ("outcome with batch", "payment.outcome", document("payment.outcome", batch_id="b-1"), True),
    ("outcome status unknown", "payment.outcome", document("payment.outcome", status="lost"), False),
    (
        "batch payout null",
        "settlement.batch_closed",
        document("settlement.batch_closed", payout_journal_id=None),
        True,
    ),
    (
        "batch payout missing",
        "settlement.batch_closed",
        document("settlement.batch_closed", payout_journal_id=MISSING),
        False,
    ),
    (
        "batch sum 2^63",
        "settlement.batch_closed",
        document("settlement.batch_closed", net_minor=2**63),
        False,
    ),
    ("dead letter example", "dead_letter", document("dead_letter"), True),
    ("dead letter offset text", "dead_letter", document("dead_letter", origin_offset="7"), False),
    # Where the two cannot agree (see docs/reference/events.md, "Where validators differ"):
    # a fifth element is the reason the case is skipped.
    ("id with trailing newline", _REQ, document(_REQ, payment_id="pay-1\n"), False, _DOLLAR_REASON),
    ("amount 1.0", _REQ, document(_REQ, amount_minor=1.0), False, _INTEGER_REASON),
]


def _as_param(case: tuple[Any, ...]) -> Any:
    name, event_type, doc, accepted, *skip = case
    marks = [pytest.mark.skip(reason=skip[0])] if skip else []
    return pytest.param(event_type, doc, accepted, id=name, marks=marks)


@pytest.mark.parametrize(("event_type", "doc", "accepted"), [_as_param(c) for c in AGREEMENT_CASES])
def test_json_schema_and_decoder_agree(event_type: str, doc: Any, accepted: bool) -> None:
    schema_errors = [e.message for e in validator(event_type).iter_errors(doc)]
    decoded = Decoder(EVENT_TYPES[event_type]).decode(json.dumps(doc).encode())
    assert (not schema_errors) is accepted, schema_errors
    assert (not isinstance(decoded, Invalid)) is accepted, decoded


def test_where_they_differ_is_what_the_docs_say() -> None:
    """The known disagreements, pinned so docs/reference/events.md stays true."""
    decoder = Decoder(EVENT_TYPES[_REQ])
    check = validator(_REQ)

    def both(doc: dict[str, Any]) -> tuple[bool, bool]:
        return check.is_valid(doc), not isinstance(decoder.decode(json.dumps(doc).encode()), Invalid)

    # The schema allows; the decoder refuses. Publishers must avoid these.
    assert both(document(_REQ, amount_minor=1.0)) == (True, False)
    # python-jsonschema's `$` lets a trailing newline through; ECMA-262 and the decoder do not.
    assert both(document(_REQ, payment_id="pay-1\n")) == (True, False)
    # The decoder is more lenient than RFC 3339 here; a schema-valid document is never hurt.
    assert both(document(_REQ, created_at="2026-03-01 09:30:00Z")) == (False, True)
    assert both(document(_REQ, created_at="2026-03-01T09:30:00+0530")) == (False, True)
    # An unpaired surrogate escape: Python's json (and so the validator) takes it; paystream refuses it.
    text = json.dumps(document(_REQ, metadata={"k": "x"})).replace('"x"', '"\\ud800"')
    assert check.is_valid(json.loads(text))
    refused = decoder.decode(text.encode())
    assert isinstance(refused, Invalid) and (refused.field, refused.rule) == ("metadata.k", "text")
    # So is NUL, which no schema forbids and PostgreSQL text cannot store.
    assert both(document(_REQ, metadata={"k": "a\x00b"})) == (True, False)
    # A repeated key: the validator sees the value its parser kept (the last); paystream refuses it.
    text = json.dumps(document(_REQ))[:-1] + ', "amount_minor": 99}'
    assert check.is_valid(json.loads(text))
    refused = decoder.decode(text.encode())
    assert isinstance(refused, Invalid) and (refused.field, refused.rule) == ("amount_minor", "duplicate_key")


def test_the_json_pattern_is_ecma_anchored() -> None:
    pattern = committed(_REQ)["properties"]["payment_id"]["pattern"]
    assert pattern == "^[A-Za-z0-9_.:\\-]+$"


# --- the reference docs keep up ------------------------------------------------------------

RULES = {
    "size", "json", "required", "unknown_field", "type", "enum", "range", "length", "pattern",
    "timezone", "format", "schema", "text", "duplicate_key", "window", "idempotency_conflict", "hold_not_open",
}  # fmt: skip


def test_events_reference_has_a_section_and_a_file_for_every_event() -> None:
    text = (DOCS / "events.md").read_text("utf-8")
    for name in EVENT_TYPES:
        assert f"\n## {name}\n" in text, name
        assert f"`schemas/json/{schema_file_name(name)}`" in text, name


def test_events_reference_documents_every_rule() -> None:
    text = (DOCS / "events.md").read_text("utf-8")
    for rule in RULES:
        assert f"| `{rule}` |" in text, rule


def test_events_reference_lists_every_field_of_payment_requested() -> None:
    text = (DOCS / "events.md").read_text("utf-8")
    section = text.split("\n## payment.requested\n", 1)[1].split("\n## ", 1)[0]
    for field in PaymentRequested.__struct_fields__:
        assert f"`{field}`" in section, field
