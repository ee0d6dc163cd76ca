"""`paystream merchants import FILE.csv`: many merchants from one CSV file, with a line-numbered report.

The file (docs/merchants.md): UTF-8 (a byte-order mark is allowed), commas,
double quotes around a value that holds a comma, a quote or a line break. The
first row is a header naming the columns, in any order: `merchant_id`,
`name`, `currency`, `fee_bps`, `fixed_minor`, `min_minor`, and optionally
`cycle` (empty: the default cycle). One line per merchant and currency; the
lines of one merchant need not be adjacent, and must agree on name and cycle.
Spaces around a value are ignored; blank lines are skipped.

Guarantees:
- A merchant is all or nothing: if one of its lines is refused, none of its
  lines is applied (each is reported), so fixing the file and importing it
  again does the rest; lines already applied are `unchanged` the second time.
- A merchant that exists exactly as the file says is unchanged; one that
  exists with a different body is refused (`paystream merchants update`).
- Every refused line is reported as `line N: <field>: <reason>`, N the line
  where the record starts; the first failing field of a line is named.
- A bad header, more than IMPORT_LINES_MAX lines, text that is not UTF-8 or
  not CSV: nothing is applied (`ImportFileError`).
- Merchants are applied IMPORT_CHUNK_MERCHANTS per transaction, in file
  order; an error in between leaves earlier chunks applied, and importing the
  same file again is safe.
"""

from __future__ import annotations

import csv
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from paystream.errors import PaystreamError
from paystream.merchants.model import (
    FEE_BPS_MAX,
    FeeSchedule,
    MerchantInputError,
    MerchantSpec,
    check_currency,
    check_merchant_id,
    check_name,
    merchant_spec,
    parse_cycle,
    whole_number,
)
from paystream.merchants.store import onboard
from schemas.money import AMOUNT_MINOR_MAX
from workers.cycles import CycleSpec

COLUMNS_REQUIRED = ("merchant_id", "name", "currency", "fee_bps", "fixed_minor", "min_minor")
COLUMNS_OPTIONAL = ("cycle",)
# 1,000 merchants in all 16 currencies take 16,000 lines: room for ten times that.
IMPORT_LINES_MAX = 200_000
# One transaction's share: a few statements whatever its size (store.onboard).
IMPORT_CHUNK_MERCHANTS = 500


class ImportFileError(PaystreamError):
    """The file as a whole cannot be read as a merchants CSV: nothing was applied."""


@dataclass(frozen=True, slots=True, order=True)
class LineRefusal:
    line: int
    field: str
    reason: str

    def __str__(self) -> str:
        return f"line {self.line}: {self.field}: {self.reason}"


@dataclass(frozen=True, slots=True)
class _Line:
    number: int
    merchant_id: str
    name: str
    cycle: CycleSpec | None
    fee: FeeSchedule


@dataclass(slots=True)
class ParsedImport:
    """Merchants ready to onboard, each with the lines it came from, and the lines refused on reading."""

    merchants: list[tuple[MerchantSpec, tuple[int, ...]]] = field(default_factory=list)
    refused: list[LineRefusal] = field(default_factory=list)
    lines: int = 0


@dataclass(slots=True)
class ImportReport:
    lines: int = 0
    applied_lines: int = 0
    added: int = 0
    unchanged: int = 0
    accounts_opened: int = 0
    refused: list[LineRefusal] = field(default_factory=list)


def read_merchants_csv(path: Path) -> ParsedImport:
    if not path.is_file():
        raise PaystreamError(f"no such file: {path}")
    with path.open("rb") as handle:
        return parse_merchants_csv(_decoded(handle))


def _decoded(handle: Iterable[bytes]) -> Iterator[str]:
    for number, raw in enumerate(handle, start=1):
        try:
            text = raw.decode("utf-8")
        except UnicodeDecodeError as error:
            raise ImportFileError(f"line {number}: not UTF-8 text ({error.reason} at byte {error.start})") from error
        yield text


def parse_merchants_csv(lines: Iterable[str]) -> ParsedImport:
    """Validate every line and group lines by merchant; pure (no database)."""
    reader = csv.reader(lines, strict=True)
    header = _header(reader)
    parsed = ParsedImport()
    good: list[_Line] = []
    # merchant id as written -> lines of it refused on reading: the merchant is refused as a whole.
    refused_of: dict[str, list[int]] = {}
    last_line = reader.line_num
    while True:
        start = last_line + 1
        try:
            row = next(reader, None)
        except csv.Error as error:
            raise ImportFileError(f"line {start}: not valid CSV: {error}") from error
        if row is None:
            break
        last_line = reader.line_num
        if not any(cell.strip() for cell in row):
            continue
        parsed.lines += 1
        if parsed.lines > IMPORT_LINES_MAX:
            raise ImportFileError(f"more than {IMPORT_LINES_MAX:,} lines: split the file")
        if len(row) != len(header):
            parsed.refused.append(LineRefusal(start, "row", f"has {len(row)} fields; the header has {len(header)}"))
            continue
        values = {name: cell.strip() for name, cell in zip(header, row, strict=True)}
        try:
            good.append(_line(start, values))
        except MerchantInputError as error:
            parsed.refused.append(LineRefusal(start, error.field, error.reason))
            refused_of.setdefault(values["merchant_id"], []).append(start)
    _group(good, refused_of, parsed)
    parsed.refused.sort()
    return parsed


def _header(reader: Any) -> list[str]:
    try:
        header = next(reader, None)
    except csv.Error as error:
        raise ImportFileError(f"line 1: not valid CSV: {error}") from error
    if header is None:
        raise ImportFileError("the file is empty: it needs a header row")
    names = [cell.strip() for cell in header]
    if names:
        names[0] = names[0].removeprefix("\ufeff").strip()  # a byte-order mark some editors write
    unknown = [n for n in names if n not in COLUMNS_REQUIRED + COLUMNS_OPTIONAL]
    missing = [n for n in COLUMNS_REQUIRED if n not in names]
    repeated = sorted({n for n in names if names.count(n) > 1})
    problems = (
        ([f"unknown column(s) {', '.join(unknown)}"] if unknown else [])
        + ([f"missing column(s) {', '.join(missing)}"] if missing else [])
        + ([f"repeated column(s) {', '.join(repeated)}"] if repeated else [])
    )
    if problems:
        wanted = ",".join(COLUMNS_REQUIRED + COLUMNS_OPTIONAL)
        raise ImportFileError(f"line 1: header: {'; '.join(problems)} (the header is {wanted}; cycle is optional)")
    return names


def _line(number: int, values: dict[str, str]) -> _Line:
    merchant_id = check_merchant_id(values["merchant_id"])
    name = check_name(values["name"])
    currency = check_currency(values["currency"])
    fee = FeeSchedule(
        currency,
        whole_number("fee_bps", values["fee_bps"], 0, FEE_BPS_MAX),
        whole_number("fixed_minor", values["fixed_minor"], 0, AMOUNT_MINOR_MAX),
        whole_number("min_minor", values["min_minor"], 0, AMOUNT_MINOR_MAX),
    )
    return _Line(number, merchant_id, name, parse_cycle(values.get("cycle", "")), fee)


def _group(lines: list[_Line], refused_of: dict[str, list[int]], parsed: ParsedImport) -> None:
    """One spec per merchant whose lines are all good and agree; every line of another merchant refused."""
    by_merchant: dict[str, list[_Line]] = {}
    for line in lines:
        by_merchant.setdefault(line.merchant_id, []).append(line)
    for merchant_id, group in by_merchant.items():
        refused = list(refused_of.get(merchant_id, []))
        reference = group[0]
        currencies: dict[str, int] = {}
        kept = []
        for line in group:
            clash = _clash(line, reference, currencies)
            if clash is None:
                currencies[line.fee.currency] = line.number
                kept.append(line)
            else:
                parsed.refused.append(clash)
                refused.append(line.number)
        if refused:
            first = min(refused)
            parsed.refused.extend(
                LineRefusal(k.number, "merchant_id", f"not applied: line {first} of merchant {merchant_id} was refused")
                for k in kept
            )
            continue
        spec = merchant_spec(merchant_id, reference.name, [k.fee for k in kept], reference.cycle)
        parsed.merchants.append((spec, tuple(k.number for k in kept)))


def _clash(line: _Line, reference: _Line, currencies: dict[str, int]) -> LineRefusal | None:
    """A line that contradicts an earlier line of the same merchant."""
    if line.name != reference.name:
        return LineRefusal(line.number, "name", f"differs from line {reference.number} of the same merchant"
                           f" ({reference.name!r})")  # fmt: skip
    if line.cycle != reference.cycle:
        shown = "default" if reference.cycle is None else reference.cycle.describe()
        return LineRefusal(line.number, "cycle", f"differs from line {reference.number} of the same merchant"
                           f" ({shown!r})")  # fmt: skip
    if line.fee.currency in currencies:
        return LineRefusal(line.number, "currency", f"{line.fee.currency} is already on line"
                           f" {currencies[line.fee.currency]} for this merchant")  # fmt: skip
    return None


async def import_merchants(
    connection: Any, parsed: ParsedImport, progress: Callable[[int], None] | None = None
) -> ImportReport:
    """Onboard the parsed merchants chunk by chunk; `progress` gets the lines done after each chunk."""
    report = ImportReport(lines=parsed.lines, refused=list(parsed.refused))
    merchants = parsed.merchants
    for first in range(0, len(merchants), IMPORT_CHUNK_MERCHANTS):
        chunk = merchants[first : first + IMPORT_CHUNK_MERCHANTS]
        onboarded = await onboard(connection, [spec for spec, _ in chunk])
        report.added += len(onboarded.added)
        report.unchanged += len(onboarded.unchanged)
        report.accounts_opened += onboarded.accounts_opened
        for spec, numbers in chunk:
            refusal = onboarded.refused.get(spec.merchant_id)
            if refusal is None:
                report.applied_lines += len(numbers)
            else:
                report.refused.extend(LineRefusal(n, refusal.field, refusal.reason) for n in numbers)
        if progress is not None:
            progress(sum(len(numbers) for _, numbers in chunk))
    report.refused.sort()
    return report
