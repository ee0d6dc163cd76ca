"""A merchant as operators describe it, validated: id, name, fee schedules per currency, settlement cycle.

Every check here has a twin constraint in the database (migrations 001 and
004), so a merchant the code accepts is one the database stores, and a row
written by hand cannot be one the code would refuse. A refusal is a
`MerchantInputError` naming the field and the reason, for a command line
(`paystream: error: fee: ...`) or an import report (`line 7: fee_bps: ...`).

Text forms, shared by the command line and CSV import:
- fee schedule `CUR:BPS[:FIXED[:MIN]]`, e.g. `EUR:250:25:50` (2.5% + 0.25, at least 0.50);
- cycle `daily HH:00 Area/Location` (or `daily HH Area/Location`), `hourly`,
  `seconds N`, or `default` (empty in CSV): the global PAYSTREAM_SETTLEMENT_CYCLE_S.
"""

from __future__ import annotations

import re
import unicodedata
from collections.abc import Iterable
from dataclasses import dataclass
from typing import get_args

import msgspec

from paystream.demo_data import DemoMerchant
from paystream.errors import PaystreamError
from schemas.money import AMOUNT_MINOR_MAX, MINOR_UNIT_DIGITS
from schemas.payments import IdText
from workers.cycles import CYCLE_SECONDS_MAX, CycleSpec, known_time_zone

_ID_META = next(m for m in get_args(IdText)[1:] if isinstance(m, msgspec.Meta))
assert _ID_META.pattern is not None and _ID_META.max_length is not None
ID_PATTERN = re.compile(_ID_META.pattern)
ID_CHARS_MAX: int = _ID_META.max_length
NAME_CHARS_MAX = 200
FEE_BPS_MAX = 10_000
# The zone names the database accepts (merchants_cycle_time_zone): IANA Area/Location, or UTC.
TIME_ZONE_PATTERN = re.compile(r"(UTC|[A-Z][A-Za-z_]*(/[A-Za-z0-9_+-]+){1,2})\Z")
# Characters a name may not hold: controls, formats, separators other than the space, unassigned.
_NAME_REFUSED_CATEGORIES = frozenset({"Cc", "Cf", "Cs", "Co", "Cn", "Zl", "Zp"})
_DAILY = re.compile(r"daily\s+(?P<hour>[0-9]{1,2})(?::00)?\s+(?P<zone>\S+)\Z")
_SECONDS = re.compile(r"seconds\s+(?P<seconds>\S+)\Z")


class MerchantInputError(PaystreamError):
    """A value that is not a valid merchant, fee schedule or cycle: `<field>: <reason>`."""

    def __init__(self, field: str, reason: str) -> None:
        super().__init__(f"{field}: {reason}")
        self.field = field
        self.reason = reason


@dataclass(frozen=True, slots=True, order=True)
class FeeSchedule:
    """Fee = max(min_minor, round_half_up(gross * fee_bps / 10000) + fixed_minor), capped at gross."""

    currency: str
    fee_bps: int
    fixed_minor: int
    min_minor: int

    def describe(self) -> str:
        return f"{self.currency}:{self.fee_bps}:{self.fixed_minor}:{self.min_minor}"


@dataclass(frozen=True, slots=True)
class MerchantSpec:
    """What onboarding a merchant writes. `fees` are sorted by currency; `cycle` None is the global default."""

    merchant_id: str
    name: str
    fees: tuple[FeeSchedule, ...]
    cycle: CycleSpec | None

    @property
    def currencies(self) -> tuple[str, ...]:
        return tuple(f.currency for f in self.fees)


def check_merchant_id(text: str) -> str:
    if not 1 <= len(text) <= ID_CHARS_MAX or not ID_PATTERN.search(text):
        raise MerchantInputError(
            "merchant_id", f"must be 1 to {ID_CHARS_MAX} of the characters A-Z a-z 0-9 _ . : - (got {text!r})"
        )
    return text


def check_name(text: str) -> str:
    if not text or text.strip() != text:
        raise MerchantInputError("name", f"must be non-empty without leading or trailing spaces (got {text!r})")
    if len(text) > NAME_CHARS_MAX:
        raise MerchantInputError("name", f"must be at most {NAME_CHARS_MAX} characters (got {len(text)})")
    odd = next((c for c in text if unicodedata.category(c) in _NAME_REFUSED_CATEGORIES), None)
    if odd is not None:
        raise MerchantInputError("name", f"must not contain control or invisible characters (got U+{ord(odd):04X})")
    return text


def check_currency(text: str) -> str:
    if text not in MINOR_UNIT_DIGITS:
        raise MerchantInputError("currency", f"unknown currency {text!r}; known: {', '.join(MINOR_UNIT_DIGITS)}")
    return text


def whole_number(field: str, text: str, low: int, high: int) -> int:
    """A whole number written in decimal digits (an optional minus), low..high inclusive."""
    if not re.fullmatch(r"-?[0-9]{1,20}", text.strip()):
        raise MerchantInputError(field, f"must be a whole number from {low:,} to {high:,} (got {text!r})")
    value = int(text)
    if not low <= value <= high:
        raise MerchantInputError(field, f"must be from {low:,} to {high:,} (got {value:,})")
    return value


def fee_schedule(currency: str, fee_bps: int, fixed_minor: int, min_minor: int) -> FeeSchedule:
    check_currency(currency)
    for field, value, high in (
        ("fee_bps", fee_bps, FEE_BPS_MAX),
        ("fixed_minor", fixed_minor, AMOUNT_MINOR_MAX),
        ("min_minor", min_minor, AMOUNT_MINOR_MAX),
    ):
        if not 0 <= value <= high:
            raise MerchantInputError(field, f"must be from 0 to {high:,} (got {value:,})")
    return FeeSchedule(currency, fee_bps, fixed_minor, min_minor)


def parse_fee(text: str) -> FeeSchedule:
    """`CUR:BPS[:FIXED[:MIN]]`: fixed and minimum default to 0."""
    parts = text.split(":")
    if not 2 <= len(parts) <= 4:
        raise MerchantInputError("fee", f"must be CUR:BPS[:FIXED[:MIN]], e.g. EUR:250:25:50 (got {text!r})")
    currency = check_currency(parts[0])
    bps = whole_number("fee_bps", parts[1], 0, FEE_BPS_MAX)
    fixed = whole_number("fixed_minor", parts[2], 0, AMOUNT_MINOR_MAX) if len(parts) > 2 else 0
    minimum = whole_number("min_minor", parts[3], 0, AMOUNT_MINOR_MAX) if len(parts) > 3 else 0
    return FeeSchedule(currency, bps, fixed, minimum)


def check_time_zone(name: str) -> str:
    if not TIME_ZONE_PATTERN.match(name) or not known_time_zone(name):
        raise MerchantInputError(
            "cycle", f"unknown time zone {name!r}: give an IANA name such as Europe/Berlin, or UTC"
        )
    return name


def parse_cycle(text: str) -> CycleSpec | None:
    """`daily HH:00 Zone`, `hourly`, `seconds N`; `default` or empty: None (the global default)."""
    words = " ".join(text.split())
    if words in ("", "default"):
        return None
    if words == "hourly":
        return CycleSpec("hourly")
    daily = _DAILY.match(words)
    if daily:
        hour = int(daily["hour"])
        if hour > 23:
            raise MerchantInputError("cycle", f"the cut-off hour must be from 0 to 23 (got {hour})")
        return CycleSpec.daily(hour, check_time_zone(daily["zone"]))
    seconds = _SECONDS.match(words)
    if seconds:
        return CycleSpec.every(whole_number("cycle", seconds["seconds"], 1, CYCLE_SECONDS_MAX))
    raise MerchantInputError(
        "cycle",
        f"must be 'daily HH:00 Area/Location', 'hourly', 'seconds N' or 'default' (got {text!r})",
    )


def describe_cycle(cycle: CycleSpec | None) -> str:
    return "default" if cycle is None else cycle.describe()


def merchant_spec(merchant_id: str, name: str, fees: Iterable[FeeSchedule], cycle: CycleSpec | None) -> MerchantSpec:
    """A complete merchant: valid id and name, at least one fee schedule, one per currency."""
    check_merchant_id(merchant_id)
    check_name(name)
    by_currency: dict[str, FeeSchedule] = {}
    for fee in fees:
        if fee.currency in by_currency:
            raise MerchantInputError("fee", f"{fee.currency} is given twice")
        by_currency[fee.currency] = fee_schedule(fee.currency, fee.fee_bps, fee.fixed_minor, fee.min_minor)
    if not by_currency:
        raise MerchantInputError("fee", "a merchant needs at least one fee schedule (the currencies it accepts)")
    return MerchantSpec(merchant_id, name, tuple(sorted(by_currency.values())), cycle)


def spec_from_demo(merchant: DemoMerchant) -> MerchantSpec:
    """The demo world's merchant (one fee for all its currencies, the default cycle) as a spec."""
    fees = [FeeSchedule(c, merchant.fee_bps, merchant.fixed_minor, merchant.min_minor) for c in merchant.currencies]
    return merchant_spec(merchant.merchant_id, merchant.name, fees, None)


def differences(stored: MerchantSpec, wanted: MerchantSpec) -> list[str]:
    """What differs between a stored merchant and the one asked for, in words; empty when identical."""
    assert stored.merchant_id == wanted.merchant_id
    found = []
    if stored.name != wanted.name:
        found.append(f"name {stored.name!r}")
    if stored.cycle != wanted.cycle:
        found.append(f"cycle {describe_cycle(stored.cycle)!r}")
    if stored.fees != wanted.fees:
        found.append(f"fees {' '.join(f.describe() for f in stored.fees)}")
    return found
