"""Every event contract by name, and its JSON Schema for publishers in other languages.

The JSON Schema files in `schemas/json/` are generated from the same msgspec
Structs the workers decode with, so the two cannot disagree by hand-editing.
`python -m schemas write` regenerates them; `python -m schemas check` (and a
unit test) fail when the committed files drift from the code.

What the generation adds to `msgspec.json.schema()`:

- the event's own object is the document root (msgspec puts it behind a
  `$ref`), with `$schema` (draft 2020-12), a stable `$id`, `title` and the
  docstring as `description`;
- `additionalProperties: false` on every Struct object, because decoding
  forbids unknown fields (msgspec already emits it; it is asserted, not assumed);
- regex patterns in the JSON Schema dialect: Python's `\\Z` ("end of text")
  becomes ECMA-262's `$`. A pattern ending in a bare `$` is refused, because in
  Python that `$` also matches before a trailing newline;
- one `examples` document per event (`EXAMPLES` below), which the tests decode.

Datetimes come out of msgspec as `{"type": "string", "format": "date-time"}`:
RFC 3339's date-time always carries an offset, which is what `Meta(tz=True)`
demands, so nothing is added for the timezone.
"""

from __future__ import annotations

import copy
import inspect
import json
from collections.abc import Mapping
from datetime import UTC, datetime
from pathlib import Path
from types import MappingProxyType
from typing import Any, Final

import msgspec

from schemas.accounts import (
    AccountCloseRequested,
    AccountOpenRequested,
    AccountOutcome,
    AccountRequestApproved,
    CaptureRequested,
    DepositRequested,
    VoidRequested,
    WithdrawalRequested,
    account_outcome_event_id,
    account_request_event_id,
    journal_id_for,
)
from schemas.dead_letter import DeadLetter, dead_letter_event_id
from schemas.payments import (
    Event,
    FundsHeld,
    PaymentCleared,
    PaymentOutcome,
    PaymentRequested,
    RiskAssessed,
    clearing_event_id,
    funds_event_id,
    outcome_event_id,
    risk_event_id,
)
from schemas.refunds import (
    PaymentRefunded,
    RefundCleared,
    RefundRequested,
    payment_refunded_event_id,
    refund_cleared_event_id,
    refund_journal_id,
)
from schemas.settlement import SettlementBatchClosed, batch_closed_event_id

JSON_SCHEMA_DIALECT: Final = "https://json-schema.org/draft/2020-12/schema"
SCHEMA_ID_BASE: Final = "https://paystream.dev/schemas/"
# Where the committed files live (shipped as package data, see pyproject.toml).
SCHEMA_DIR: Final = Path(__file__).resolve().parent / "json"
# Files of contract versions no longer written (schemas/retired.py): kept as
# they were published, never rewritten, and not reported as drift.
RETIRED_FILES: Final = frozenset({"payment.outcome.v1.json", "settlement.batch_closed.v1.json"})

EVENT_TYPES: Final[Mapping[str, type[Event]]] = MappingProxyType(
    {
        "payment.requested": PaymentRequested,
        "risk.assessed": RiskAssessed,
        "funds.held": FundsHeld,
        "payment.cleared": PaymentCleared,
        "payment.outcome": PaymentOutcome,
        "settlement.batch_closed": SettlementBatchClosed,
        "dead_letter": DeadLetter,
        "account.open.requested": AccountOpenRequested,
        "account.close.requested": AccountCloseRequested,
        "deposit.requested": DepositRequested,
        "withdrawal.requested": WithdrawalRequested,
        "capture.requested": CaptureRequested,
        "void.requested": VoidRequested,
        "refund.requested": RefundRequested,
        "refund.cleared": RefundCleared,
        "payment.refunded": PaymentRefunded,
        "account.request.approved": AccountRequestApproved,
        "account.outcome": AccountOutcome,
    }
)


_REQUESTED = PaymentRequested(
    payment_id="pay-20260301-0001",
    payer_account="acct-payer-17",
    merchant_id="m-coffee-42",
    amount_minor=1250,
    currency="EUR",
    country="DE",
    method="card",
    created_at=datetime(2026, 3, 1, 9, 30, 0, 125000, tzinfo=UTC),
    metadata={"order_ref": "A-1001"},
)
_AT = datetime(2026, 3, 1, 9, 30, 1, tzinfo=UTC)
_BATCH_ID = "m-coffee-42:EUR:20260301T000000Z"

# One realistic document per contract: written into the schema files as
# `examples`, and decoded by the tests so an example can never be invalid.
EXAMPLES: Final[Mapping[str, Event]] = MappingProxyType(
    {
        "payment.requested": _REQUESTED,
        "risk.assessed": RiskAssessed(
            event_id=risk_event_id(_REQUESTED.payment_id),
            decision="approved",
            reasons=[],
            assessed_at=_AT,
            payment=_REQUESTED,
        ),
        "funds.held": FundsHeld(
            event_id=funds_event_id(_REQUESTED.payment_id),
            hold_id=f"hold:{_REQUESTED.payment_id}",
            held_at=_AT,
            payment=_REQUESTED,
        ),
        "payment.cleared": PaymentCleared(
            event_id=clearing_event_id(_REQUESTED.payment_id),
            payment_id=_REQUESTED.payment_id,
            payer_account=_REQUESTED.payer_account,
            merchant_id=_REQUESTED.merchant_id,
            currency="EUR",
            gross_minor=1250,
            fee_minor=39,
            net_minor=1211,
            journal_id=f"clr:{_REQUESTED.payment_id}",
            event_time=_REQUESTED.created_at,
            cleared_at=_AT,
        ),
        "payment.outcome": PaymentOutcome(
            event_id=outcome_event_id(_REQUESTED.payment_id, "declined"),
            payment_id=_REQUESTED.payment_id,
            status="declined",
            stage="funds",
            reasons=["insufficient_funds: available 800 < amount 1250"],
            payer_account=_REQUESTED.payer_account,
            merchant_id=_REQUESTED.merchant_id,
            amount_minor=1250,
            currency="EUR",
            created_at=_REQUESTED.created_at,
            occurred_at=_AT,
        ),
        "settlement.batch_closed": SettlementBatchClosed(
            event_id=batch_closed_event_id(_BATCH_ID),
            batch_id=_BATCH_ID,
            merchant_id="m-coffee-42",
            currency="EUR",
            cycle_start=datetime(2026, 3, 1, tzinfo=UTC),
            cycle_end=datetime(2026, 3, 2, tzinfo=UTC),
            item_count=2,
            refund_count=1,
            gross_minor=2500,
            fee_minor=78,
            net_minor=2422,
            payout_journal_id=f"pay:{_BATCH_ID}",
            closed_at=datetime(2026, 3, 2, 0, 5, 0, tzinfo=UTC),
        ),
        "dead_letter": DeadLetter(
            event_id=dead_letter_event_id("risk", "payments.requested", 3, 1042),
            stage="risk",
            origin_topic="payments.requested",
            origin_partition=3,
            origin_offset=1042,
            field="amount_minor",
            rule="range",
            detail="Expected `int` >= 1",
            raw_text='{"payment_id":"pay-x","amount_minor":0}',
            raw_bytes=39,
            received_at=_AT,
        ),
        "account.open.requested": AccountOpenRequested(
            request_id="open-acct-payer-17",
            account_id="acct-payer-17",
            owner_id="cust-17",
            currency="EUR",
            created_at=datetime(2026, 3, 1, 9, 0, tzinfo=UTC),
        ),
        "account.close.requested": AccountCloseRequested(
            request_id="close-acct-payer-17",
            account_id="acct-payer-17",
            created_at=datetime(2026, 3, 9, 17, 0, tzinfo=UTC),
        ),
        "deposit.requested": DepositRequested(
            request_id="dep-20260301-0001",
            account_id="acct-payer-17",
            amount_minor=5000,
            currency="EUR",
            source_ref="SEPA-CT 2026030100017",
            created_at=datetime(2026, 3, 1, 9, 5, tzinfo=UTC),
            metadata={"channel": "bank_transfer"},
        ),
        "withdrawal.requested": WithdrawalRequested(
            request_id="wd-20260305-0001",
            account_id="acct-payer-17",
            amount_minor=2000,
            currency="EUR",
            destination_ref="DE89370400440532013000",
            created_at=datetime(2026, 3, 5, 12, 0, tzinfo=UTC),
        ),
        "capture.requested": CaptureRequested(
            request_id="cap-20260301-0001",
            account_id=_REQUESTED.payer_account,
            payment_id=_REQUESTED.payment_id,
            amount_minor=1000,
            currency="EUR",
            created_at=datetime(2026, 3, 1, 18, 0, tzinfo=UTC),
        ),
        "void.requested": VoidRequested(
            request_id="void-20260301-0001",
            account_id=_REQUESTED.payer_account,
            payment_id=_REQUESTED.payment_id,
            created_at=datetime(2026, 3, 1, 18, 0, tzinfo=UTC),
        ),
        "refund.requested": RefundRequested(
            request_id="rf-20260302-0001",
            account_id=_REQUESTED.payer_account,
            payment_id=_REQUESTED.payment_id,
            amount_minor=250,
            currency="EUR",
            reason="one item returned",
            created_at=datetime(2026, 3, 2, 10, 0, tzinfo=UTC),
        ),
        "refund.cleared": RefundCleared(
            event_id=refund_cleared_event_id("rf-20260302-0001"),
            refund_id="rf-20260302-0001",
            payment_id=_REQUESTED.payment_id,
            merchant_id=_REQUESTED.merchant_id,
            currency="EUR",
            gross_minor=250,
            fee_back_minor=8,
            net_back_minor=242,
            journal_id=refund_journal_id("rf-20260302-0001"),
            event_time=_REQUESTED.created_at,
            cleared_at=datetime(2026, 3, 2, 10, 0, 1, tzinfo=UTC),
        ),
        "payment.refunded": PaymentRefunded(
            event_id=payment_refunded_event_id(_REQUESTED.payment_id, "rf-20260302-0001"),
            payment_id=_REQUESTED.payment_id,
            refund_id="rf-20260302-0001",
            status="partially_refunded",
            payer_account=_REQUESTED.payer_account,
            merchant_id=_REQUESTED.merchant_id,
            currency="EUR",
            amount_minor=250,
            refunded_minor=250,
            captured_minor=1250,
            reason="one item returned",
            occurred_at=datetime(2026, 3, 2, 10, 0, 1, tzinfo=UTC),
        ),
        "account.request.approved": AccountRequestApproved(
            event_id=account_request_event_id("deposit", "dep-20260301-0001"),
            kind="deposit",
            request_id="dep-20260301-0001",
            account_id="acct-payer-17",
            assessed_at=_AT,
        ),
        "account.outcome": AccountOutcome(
            event_id=account_outcome_event_id("deposit", "dep-20260301-0001"),
            kind="deposit",
            request_id="dep-20260301-0001",
            account_id="acct-payer-17",
            status="succeeded",
            stage="funds",
            reasons=[],
            amount_minor=5000,
            currency="EUR",
            journal_id=journal_id_for("deposit", "dep-20260301-0001"),
            created_at=datetime(2026, 3, 1, 9, 5, tzinfo=UTC),
            occurred_at=_AT,
        ),
    }
)


def example_document(event_type: str) -> dict[str, Any]:
    """The example of an event as JSON-ready builtins (what goes on the wire)."""
    event_struct(event_type)
    document: dict[str, Any] = msgspec.to_builtins(EXAMPLES[event_type])
    return document


class UnknownEventTypeError(KeyError):
    """A schema name that is not in `EVENT_TYPES`."""

    def __init__(self, name: str) -> None:
        super().__init__(f"unknown event type {name!r}; known: {', '.join(EVENT_TYPES)}")


def event_struct(name: str) -> type[Event]:
    try:
        return EVENT_TYPES[name]
    except KeyError:
        raise UnknownEventTypeError(name) from None


def event_version(name: str) -> int:
    """The contract version, read from the Struct's `v` default (`v: Literal[1] = 1`)."""
    return int(_field_default(event_struct(name), "v"))


def schema_file_name(name: str) -> str:
    return f"{name}.v{event_version(name)}.json"


def schema_id(name: str) -> str:
    return f"{SCHEMA_ID_BASE}{schema_file_name(name)}"


def json_schema(event_type: str) -> dict[str, Any]:
    """A standalone draft 2020-12 JSON Schema document for one event type."""
    struct = event_struct(event_type)
    generated = msgspec.json.schema(struct)
    defs: dict[str, Any] = copy.deepcopy(generated.get("$defs", {}))
    root_name = struct.__name__
    if generated.get("$ref") != f"#/$defs/{root_name}" or root_name not in defs:
        raise AssertionError(f"msgspec no longer puts {root_name} behind a $ref: {generated}")
    root: dict[str, Any] = defs.pop(root_name)
    if _mentions_ref(defs, f"#/$defs/{root_name}"):
        # A recursive contract would need its references rewritten to "#".
        raise AssertionError(f"{root_name} refers to itself; the registry cannot flatten it")

    document: dict[str, Any] = {
        "$schema": JSON_SCHEMA_DIALECT,
        "$id": schema_id(event_type),
        **root,
        "title": root_name,
        "description": inspect.cleandoc(struct.__doc__ or root_name),
        "examples": [example_document(event_type)],
    }
    if defs:
        document["$defs"] = defs
    _normalise(document, event_type)
    return document


def render(event_type: str) -> str:
    """The exact text of a schema file: sorted keys, 2-space indent, trailing newline."""
    return json.dumps(json_schema(event_type), indent=2, sort_keys=True, ensure_ascii=False) + "\n"


def write_schema_files(directory: Path = SCHEMA_DIR) -> list[Path]:
    """Write every event's schema file; returns the paths whose content changed."""
    directory.mkdir(parents=True, exist_ok=True)
    changed: list[Path] = []
    for name in EVENT_TYPES:
        path = directory / schema_file_name(name)
        text = render(name)
        if not path.is_file() or path.read_text(encoding="utf-8") != text:
            path.write_text(text, encoding="utf-8", newline="\n")
            changed.append(path)
    return changed


def check_schema_files(directory: Path = SCHEMA_DIR) -> list[str]:
    """How the files in `directory` differ from the code; empty when they match.

    A file for a name or version the code no longer has is reported too: `write`
    never deletes, so removing a published contract stays a deliberate act.
    """
    drift: list[str] = []
    expected: set[str] = set()
    for name in EVENT_TYPES:
        file_name = schema_file_name(name)
        expected.add(file_name)
        path = directory / file_name
        if not path.is_file():
            drift.append(f"missing: {path}")
        elif path.read_text(encoding="utf-8") != render(name):
            drift.append(f"differs: {path}")
    if directory.is_dir():
        kept = expected | RETIRED_FILES
        drift.extend(f"unexpected: {path}" for path in sorted(directory.glob("*.json")) if path.name not in kept)
    return drift


def _field_default(struct: type[msgspec.Struct], field_name: str) -> Any:
    for field in msgspec.structs.fields(struct):
        if field.name == field_name:
            if field.default is msgspec.NODEFAULT:
                break
            return field.default
    raise AssertionError(f"{struct.__name__}.{field_name} needs a default")


def _check_names() -> None:
    """The registry's key is what the event says about itself in its `schema` field."""
    for name, struct in EVENT_TYPES.items():
        declared = _field_default(struct, "schema")
        if declared != name:
            raise AssertionError(f"EVENT_TYPES[{name!r}] is {struct.__name__}, whose schema is {declared!r}")


def _mentions_ref(node: Any, ref: str) -> bool:
    if isinstance(node, dict):
        return node.get("$ref") == ref or any(_mentions_ref(v, ref) for v in node.values())
    if isinstance(node, list):
        return any(_mentions_ref(v, ref) for v in node)
    return False


# Keywords whose value is a subschema, a list of them, or a map of name -> subschema.
# Everything else (examples, defaults, enum values) is instance data and left alone.
_SUBSCHEMA: Final = frozenset(
    {"items", "additionalProperties", "propertyNames", "contains", "not", "if", "then", "else"}
)
_SUBSCHEMA_LISTS: Final = frozenset({"anyOf", "oneOf", "allOf", "prefixItems"})
_SUBSCHEMA_MAPS: Final = frozenset({"properties", "patternProperties", "$defs", "dependentSchemas"})


def _normalise(schema: Any, event_type: str) -> None:
    """Walk a (sub)schema in place: descriptions, closed objects, portable patterns."""
    if not isinstance(schema, dict):
        return  # `true`/`false` schemas
    if isinstance(schema.get("description"), str):
        schema["description"] = inspect.cleandoc(schema["description"])
    if schema.get("type") == "object" and "properties" in schema:
        # A Struct object. Every contract forbids unknown fields when decoding;
        # a Struct without that flag would make the schema lie, so it is refused.
        if schema.get("additionalProperties", False) is not False:
            raise AssertionError(f"{event_type}: {schema.get('title')} allows unknown fields")
        schema["additionalProperties"] = False
    if isinstance(schema.get("pattern"), str):
        schema["pattern"] = _ecma_pattern(schema["pattern"], event_type)
    for keyword, value in schema.items():
        if keyword in _SUBSCHEMA:
            _normalise(value, event_type)
        elif keyword in _SUBSCHEMA_LISTS:
            for item in value:
                _normalise(item, event_type)
        elif keyword in _SUBSCHEMA_MAPS:
            for item in value.values():
                _normalise(item, event_type)


def _ecma_pattern(pattern: str, event_type: str) -> str:
    """Translate a Python pattern's end anchor `\\Z` into ECMA-262's `$`."""
    escapes: list[tuple[int, str]] = []  # (position of the backslash, escaped character)
    position = 0
    while position < len(pattern):
        if pattern[position] == "\\" and position + 1 < len(pattern):
            escapes.append((position, pattern[position + 1]))
            position += 2
        else:
            position += 1
    python_only = [(at, char) for at, char in escapes if char in "AZ"]
    anchored = bool(python_only) and python_only[-1] == (len(pattern) - 2, "Z")
    if anchored:
        python_only.pop()
    ends_in_escaped_char = bool(escapes) and escapes[-1][0] == len(pattern) - 2
    if python_only or (pattern.endswith("$") and not ends_in_escaped_char):
        raise AssertionError(
            f"{event_type}: pattern {pattern!r} must end in \\Z (Python's $ matches before a "
            "trailing newline) and use no other Python-only anchors"
        )
    return pattern[:-2] + "$" if anchored else pattern


_check_names()
