"""How many bytes the events derived from a payment request add to it, worked out from the contracts.

Every stage decodes its input with the same `record_bytes_max`. `risk.assessed`
and `funds.held` carry the whole `payment.requested` inside an envelope (ids,
reasons, a timestamp): a request that used the whole limit would be approved
by risk and its `risk.assessed` refused by funds for its size. So the decoder
of `payment.requested` keeps room for the largest envelope
(`RESERVED_BYTES[PaymentRequested]`, used by `schemas.codec.Decoder`).

The envelope is measured, not guessed. Each carrier is built with every field
at the largest encoding its type allows (strings at their `max_length` of the
character with the longest JSON spelling, lists at their `max_length`, the
longest literal, the longest timestamp) around a payment, encoded, and the
payment's own encoding subtracted: msgspec writes a nested Struct exactly as
it writes it alone, so the difference is the same for every payment.

The events that do not carry the payment (`payment.outcome`,
`payment.cleared`) have a size bounded by their types alone, far below the
default limit; `largest_encoding` measures them too (see the unit tests).
"""

from __future__ import annotations

from collections.abc import Mapping
from datetime import UTC, datetime, timedelta, timezone
from types import MappingProxyType
from typing import Any, Final

import msgspec
import msgspec.inspect as mi

from schemas.payments import FundsHeld, PaymentRequested, RiskAssessed

# msgspec escapes only ASCII characters in strings (control characters as
# \u00XX, `"` and `\`); any other code point is written as its UTF-8 bytes, at
# most 4. So the widest character is an ASCII one, found by measuring them all.
WIDEST_CHAR: Final = max((chr(code) for code in range(0x80)), key=lambda char: len(msgspec.json.encode(char)))
WIDEST_CHAR_BYTES: Final = len(msgspec.json.encode(WIDEST_CHAR)) - 2
# The longest timestamp msgspec writes: every field at its widest, microseconds and
# a negative offset of whole minutes (msgspec writes offsets to the minute).
WIDEST_TIME: Final = datetime(9999, 12, 31, 23, 59, 59, 999_999, tzinfo=timezone(-timedelta(hours=23, minutes=59)))

# The events a stage derives from a payment request that carry it whole.
CARRIERS: Final[tuple[type[msgspec.Struct], ...]] = (RiskAssessed, FundsHeld)


def largest_encoding(event_type: type[msgspec.Struct], around: msgspec.Struct | None = None) -> bytes:
    """`event_type` with every field at its largest, encoded; a field of `around`'s type holds `around`.

    Raises TypeError for a field whose type sets no bound (a string without
    `max_length`, say): such an event has no largest encoding.
    """
    return msgspec.json.encode(_largest(mi.type_info(event_type), around))


def envelope_bytes(carrier: type[msgspec.Struct], payment: msgspec.Struct) -> int:
    """What the largest `carrier` adds to the encoding of the payment it carries."""
    return len(largest_encoding(carrier, payment)) - len(msgspec.json.encode(payment))


def _largest(info: mi.Type, around: msgspec.Struct | None) -> Any:
    if isinstance(info, mi.StructType):
        if around is not None and info.cls is type(around):
            return around
        return info.cls(**{field.name: _largest(field.type, around) for field in info.fields})
    if isinstance(info, mi.StrType) and info.max_length is not None:
        # An upper bound even where a pattern allows fewer characters: a Struct
        # built in code is not validated, and the bound is what matters here.
        return WIDEST_CHAR * info.max_length
    if isinstance(info, mi.ListType) and info.max_length is not None:
        return [_largest(info.item_type, around)] * info.max_length
    if isinstance(info, mi.LiteralType):
        return _widest(info.values)
    if isinstance(info, mi.DateTimeType):
        return WIDEST_TIME
    if isinstance(info, mi.NoneType):
        return None
    if isinstance(info, mi.IntType):
        low = info.ge if info.gt is None else info.gt + 1
        high = info.le if info.lt is None else info.lt - 1
        # A side without a bound reaches msgspec's own limits (int64 below, uint64 above).
        return _widest([-(2**63) if low is None else low, 2**64 - 1 if high is None else high])
    if isinstance(info, mi.UnionType):
        return _widest([_largest(member, around) for member in info.types])
    raise TypeError(f"{info} sets no bound: an event with it has no largest encoding")


def _widest(values: Any) -> Any:
    return max(values, key=lambda value: len(msgspec.json.encode(value)))


def _sample_payment() -> PaymentRequested:
    return PaymentRequested(
        payment_id="p",
        payer_account="a",
        merchant_id="m",
        amount_minor=1,
        currency="EUR",
        country="DE",
        method="card",
        created_at=datetime(2026, 1, 1, tzinfo=UTC),
    )


# Bytes a payment request's decoder keeps free under `record_bytes_max` for the
# largest event derived from it (the type the decoder reads -> bytes).
RESERVED_BYTES: Final[Mapping[type[msgspec.Struct], int]] = MappingProxyType(
    {PaymentRequested: max(envelope_bytes(carrier, _sample_payment()) for carrier in CARRIERS)}
)
