"""Reading a merchants CSV file: header rules, line numbers, one merchant all or nothing, file-level refusals."""

from __future__ import annotations

from pathlib import Path

import pytest

from paystream.errors import PaystreamError
from paystream.merchants.csv_import import (
    IMPORT_LINES_MAX,
    ImportFileError,
    LineRefusal,
    parse_merchants_csv,
    read_merchants_csv,
)
from paystream.merchants.model import FeeSchedule, MerchantSpec
from workers.cycles import CycleSpec

HEADER = "merchant_id,name,currency,fee_bps,fixed_minor,min_minor,cycle\n"


def parse(text: str) -> tuple[list[tuple[MerchantSpec, tuple[int, ...]]], list[str], int]:
    parsed = parse_merchants_csv(text.splitlines(keepends=True))
    return parsed.merchants, [str(r) for r in parsed.refused], parsed.lines


def test_one_line_per_merchant_and_currency_groups_into_merchants() -> None:
    merchants, refused, lines = parse(
        HEADER
        + "m-1,Alpha,EUR,250,25,0,daily 18:00 Europe/Berlin\n"
        + 'm-2,"Beta, Inc.",USD,100,0,5,\n'
        + "m-1,Alpha,USD,290,30,5,daily 18:00 Europe/Berlin\n"
    )
    assert refused == []
    assert lines == 3
    assert merchants == [
        (
            MerchantSpec(
                "m-1",
                "Alpha",
                (FeeSchedule("EUR", 250, 25, 0), FeeSchedule("USD", 290, 30, 5)),
                CycleSpec.daily(18, "Europe/Berlin"),
            ),
            (2, 4),
        ),
        (MerchantSpec("m-2", "Beta, Inc.", (FeeSchedule("USD", 100, 0, 5),), None), (3,)),
    ]


def test_columns_in_any_order_spaces_ignored_cycle_optional_and_a_bom() -> None:
    text = "\ufeffcurrency, merchant_id ,min_minor,fixed_minor,fee_bps,name\n EUR , m-9 ,0,0,1, Nine \n"
    merchants, refused, _ = parse(text)
    assert refused == []
    assert merchants == [(MerchantSpec("m-9", "Nine", (FeeSchedule("EUR", 1, 0, 0),), None), (2,))]


def test_every_refused_line_names_its_number_field_and_reason() -> None:
    text = (
        HEADER  # line 1
        + "m-1,Alpha,EUR,250,25,0,\n"  # 2: good
        + "\n"  # 3: blank, skipped but counted as a line of the file
        + "m-3,Gamma,XXX,100,0,0,hourly\n"  # 4: bad currency
        + "m-3,Gamma,EUR,100,0,0,hourly\n"  # 5: good, but its merchant is refused
        + "m-4,Delta,EUR,10001,0,0,\n"  # 6
        + "m-5,Eps,EUR,1,0,0,seconds 30\n"  # 7: good, but line 8 contradicts it
        + "m-5,Epsilon,USD,1,0,0,seconds 30\n"  # 8
        + "m-6,Zeta,EUR,1,0\n"  # 9: too few fields
        + 'm-7,"Multi\n'  # 10-11: a quoted line break in the name
        + 'line",EUR,1,0,0,\n'
        + "m-8,Eta,EUR,1,0,0,weekly\n"  # 12
        + "m-9,Theta,EUR,1,0,0,\n"  # 13
        + "m-9,Theta,EUR,2,0,0,\n"  # 14: EUR twice
        + "bad id,Iota,EUR,1,0,0,\n"  # 15
        + "m-10,Kappa,EUR,1,0,0,hourly\n"  # 16
        + "m-10,Kappa,GBP,1,0,0,\n"  # 17: cycle differs
    )
    merchants, refused, lines = parse(text)
    assert [spec.merchant_id for spec, _ in merchants] == ["m-1"]
    assert lines == 14  # records: the blank line and the header are not counted, lines 10-11 are one
    assert refused == [
        "line 4: currency: unknown currency 'XXX'; known: AUD, BRL, CAD, CHF, CNY, EUR, GBP, HKD, INR, JPY, KRW, MXN,"
        " NOK, SEK, SGD, USD",
        "line 5: merchant_id: not applied: line 4 of merchant m-3 was refused",
        "line 6: fee_bps: must be from 0 to 10,000 (got 10,001)",
        "line 7: merchant_id: not applied: line 8 of merchant m-5 was refused",
        "line 8: name: differs from line 7 of the same merchant ('Eps')",
        "line 9: row: has 5 fields; the header has 7",
        "line 10: name: must not contain control or invisible characters (got U+000A)",
        "line 12: cycle: must be 'daily HH:00 Area/Location', 'hourly', 'seconds N' or 'default' (got 'weekly')",
        "line 13: merchant_id: not applied: line 14 of merchant m-9 was refused",
        "line 14: currency: EUR is already on line 13 for this merchant",
        "line 15: merchant_id: must be 1 to 64 of the characters A-Z a-z 0-9 _ . : - (got 'bad id')",
        "line 16: merchant_id: not applied: line 17 of merchant m-10 was refused",
        "line 17: cycle: differs from line 16 of the same merchant ('hourly')",
    ]


@pytest.mark.parametrize(
    ("header", "message"),
    [
        ("", "the file is empty: it needs a header row"),
        ("merchant_id,name,currency,fee_bps,fixed_minor\n", "line 1: header: missing column(s) min_minor"),
        (
            "merchant_id,name,currency,fee_bps,fixed_minor,min_minor,colour\n",
            "line 1: header: unknown column(s) colour",
        ),
        (
            "merchant_id,name,name,currency,fee_bps,fixed_minor,min_minor\n",
            "line 1: header: repeated column(s) name",
        ),
    ],
)
def test_a_bad_header_refuses_the_whole_file(header: str, message: str) -> None:
    with pytest.raises(ImportFileError) as raised:
        parse_merchants_csv((header + "m-1,A,EUR,1,0,0\n").splitlines(keepends=True) if header else [])
    assert str(raised.value).startswith(message)


def test_too_many_lines_refuse_the_whole_file() -> None:
    lines = [HEADER] + [f"m-{n},Shop,EUR,1,0,0,\n" for n in range(IMPORT_LINES_MAX + 1)]
    with pytest.raises(ImportFileError, match=r"^more than 200,000 lines: split the file$"):
        parse_merchants_csv(lines)


def test_text_that_is_not_utf8_or_not_csv_refuses_the_whole_file(tmp_path: Path) -> None:
    latin = tmp_path / "latin1.csv"
    latin.write_bytes(HEADER.encode() + "m-1,Café,EUR,1,0,0,\n".encode("latin-1"))
    with pytest.raises(ImportFileError, match=r"^line 2: not UTF-8 text"):
        read_merchants_csv(latin)
    broken = tmp_path / "broken.csv"
    broken.write_text(HEADER + 'm-1,"Open quote,EUR,1,0,0,\n')
    with pytest.raises(ImportFileError, match=r"^line 2: not valid CSV"):
        read_merchants_csv(broken)
    with pytest.raises(PaystreamError, match=r"^no such file: "):
        read_merchants_csv(tmp_path / "missing.csv")


def test_refusals_sort_by_line() -> None:
    assert sorted([LineRefusal(10, "a", "x"), LineRefusal(9, "b", "y")])[0].line == 9
