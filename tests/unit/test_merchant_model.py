"""Merchant validation: ids, names, fee schedules, cycles and their text forms; the command line refuses early."""

from __future__ import annotations

import pytest
from hypothesis import given
from hypothesis import strategies as st

from paystream.cli.main import build_parser, main
from paystream.demo_data import build_world
from paystream.merchants.model import (
    FeeSchedule,
    MerchantInputError,
    MerchantSpec,
    check_merchant_id,
    check_name,
    describe_cycle,
    differences,
    merchant_spec,
    parse_cycle,
    parse_fee,
    spec_from_demo,
)
from workers.cycles import CycleSpec

EUR = FeeSchedule("EUR", 250, 25, 0)


def refusal(call: object, *args: object) -> tuple[str, str]:
    with pytest.raises(MerchantInputError) as raised:
        call(*args)  # type: ignore[operator]
    return raised.value.field, raised.value.reason


def test_merchant_ids_follow_the_payment_contract() -> None:
    assert check_merchant_id("merchant-001") == "merchant-001"
    assert check_merchant_id("a.b:c_d-9") == "a.b:c_d-9"
    assert check_merchant_id("m" * 64) == "m" * 64
    for bad in ("", "m" * 65, "with space", "ümlaut", "a/b", "m-1\n"):
        field, reason = refusal(check_merchant_id, bad)
        assert field == "merchant_id"
        assert reason == f"must be 1 to 64 of the characters A-Z a-z 0-9 _ . : - (got {bad!r})"


def test_names_are_trimmed_printable_and_bounded() -> None:
    assert check_name("Zoë's Café, Berlin") == "Zoë's Café, Berlin"
    assert refusal(check_name, "") == ("name", "must be non-empty without leading or trailing spaces (got '')")
    assert refusal(check_name, " Shop")[0] == "name"
    assert refusal(check_name, "x" * 201) == ("name", "must be at most 200 characters (got 201)")
    assert refusal(check_name, "Tab\there") == ("name", "must not contain control or invisible characters (got U+0009)")
    assert refusal(check_name, "Zero\u200bwidth")[1].endswith("(got U+200B)")
    assert refusal(check_name, "Next\u0085line")[1].endswith("(got U+0085)")


def test_fee_text_form() -> None:
    assert parse_fee("EUR:250:25:50") == FeeSchedule("EUR", 250, 25, 50)
    assert parse_fee("JPY:0") == FeeSchedule("JPY", 0, 0, 0)
    assert parse_fee("USD:10000:7") == FeeSchedule("USD", 10_000, 7, 0)
    assert refusal(parse_fee, "EUR") == ("fee", "must be CUR:BPS[:FIXED[:MIN]], e.g. EUR:250:25:50 (got 'EUR')")
    assert refusal(parse_fee, "EUR:1:2:3:4")[0] == "fee"
    assert refusal(parse_fee, "XXX:1")[0] == "currency"
    assert refusal(parse_fee, "eur:1")[0] == "currency"
    assert refusal(parse_fee, "EUR:10001") == ("fee_bps", "must be from 0 to 10,000 (got 10,001)")
    assert refusal(parse_fee, "EUR:-1") == ("fee_bps", "must be from 0 to 10,000 (got -1)")
    assert refusal(parse_fee, "EUR:2.5") == ("fee_bps", "must be a whole number from 0 to 10,000 (got '2.5')")
    assert refusal(parse_fee, "EUR:1:-5") == ("fixed_minor", "must be from 0 to 1,000,000,000,000,000 (got -5)")
    assert refusal(parse_fee, "EUR:1:0:1000000000000001")[0] == "min_minor"


def test_cycle_text_forms_round_trip() -> None:
    assert parse_cycle("daily 18:00 Europe/Berlin") == CycleSpec.daily(18, "Europe/Berlin")
    assert parse_cycle("  daily   7 America/New_York ") == CycleSpec.daily(7, "America/New_York")
    assert parse_cycle("daily 0:00 UTC") == CycleSpec.daily(0, "UTC")
    assert parse_cycle("hourly") == CycleSpec("hourly")
    assert parse_cycle("seconds 30") == CycleSpec.every(30)
    assert parse_cycle("default") is None
    assert parse_cycle("") is None
    for spec in (CycleSpec.daily(18, "Europe/Berlin"), CycleSpec("hourly"), CycleSpec.every(2_678_400), None):
        assert parse_cycle(describe_cycle(spec)) == spec


@pytest.mark.parametrize(
    ("text", "reason"),
    [
        ("weekly", "must be 'daily HH:00 Area/Location', 'hourly', 'seconds N' or 'default' (got 'weekly')"),
        ("daily 18:30 Europe/Berlin", "must be 'daily HH:00 Area/Location', 'hourly', 'seconds N' or 'default'"
         " (got 'daily 18:30 Europe/Berlin')"),
        ("daily 24 Europe/Berlin", "the cut-off hour must be from 0 to 23 (got 24)"),
        ("daily 18 Europe/Atlantis", "unknown time zone 'Europe/Atlantis': give an IANA name such as Europe/Berlin,"
         " or UTC"),
        ("daily 18 UTC+3", "unknown time zone 'UTC+3': give an IANA name such as Europe/Berlin, or UTC"),
        ("daily 18 EST5EDT", "unknown time zone 'EST5EDT': give an IANA name such as Europe/Berlin, or UTC"),
        ("daily 18", "must be 'daily HH:00 Area/Location', 'hourly', 'seconds N' or 'default' (got 'daily 18')"),
        ("seconds 0", "must be from 1 to 2,678,400 (got 0)"),
        ("seconds 2678401", "must be from 1 to 2,678,400 (got 2,678,401)"),
        ("seconds x", "must be a whole number from 1 to 2,678,400 (got 'x')"),
    ],
)  # fmt: skip
def test_bad_cycles_are_refused_with_a_reason(text: str, reason: str) -> None:
    assert refusal(parse_cycle, text) == ("cycle", reason)


def test_a_merchant_needs_fees_once_per_currency() -> None:
    spec = merchant_spec("m-1", "Shop", [FeeSchedule("USD", 1, 0, 0), EUR], None)
    assert spec.fees == (EUR, FeeSchedule("USD", 1, 0, 0))  # sorted by currency
    assert spec.currencies == ("EUR", "USD")
    assert refusal(merchant_spec, "m-1", "Shop", [], None)[0] == "fee"
    assert refusal(merchant_spec, "m-1", "Shop", [EUR, FeeSchedule("EUR", 1, 0, 0)], None) == (
        "fee",
        "EUR is given twice",
    )
    assert refusal(merchant_spec, "m 1", "Shop", [EUR], None)[0] == "merchant_id"
    assert refusal(merchant_spec, "m-1", "Shop", [FeeSchedule("EUR", 10_001, 0, 0)], None)[0] == "fee_bps"


def test_demo_merchants_become_specs_with_the_default_cycle() -> None:
    world = build_world(merchant_count=1_000)
    specs = [spec_from_demo(m) for m in world.merchants]
    assert len({s.merchant_id for s in specs}) == 1_000
    first, demo = specs[0], world.merchants[0]
    assert first.merchant_id == demo.merchant_id and first.name == demo.name and first.cycle is None
    assert first.currencies == tuple(sorted(demo.currencies))
    assert {(f.fee_bps, f.fixed_minor, f.min_minor) for f in first.fees} == {
        (demo.fee_bps, demo.fixed_minor, demo.min_minor)
    }


def test_differences_name_the_stored_values() -> None:
    stored = MerchantSpec("m-1", "Shop", (EUR,), None)
    assert differences(stored, stored) == []
    wanted = MerchantSpec("m-1", "Shop 2", (EUR, FeeSchedule("USD", 1, 0, 0)), CycleSpec("hourly"))
    assert differences(stored, wanted) == ["name 'Shop'", "cycle 'default'", "fees EUR:250:25:0"]


@given(st.integers(min_value=0, max_value=10_000), st.integers(min_value=0, max_value=10**15))
def test_every_valid_fee_text_parses_to_its_numbers(bps: int, fixed: int) -> None:
    assert parse_fee(f"GBP:{bps}:{fixed}:{fixed}") == FeeSchedule("GBP", bps, fixed, fixed)


@pytest.mark.parametrize(
    ("argv", "message"),
    [
        (["add", "m 1", "--name", "x", "--fee", "EUR:1"], "argument merchant_id: merchant_id: must be 1 to 64"),
        (["add", "m-1", "--name", "x", "--fee", "EUR:99999"], "argument --fee: fee_bps: must be from 0 to 10,000"),
        (["add", "m-1", "--name", "x"], "the following arguments are required: --fee"),
        (["add", "m-1", "--name", "x", "--fee", "EUR:1", "--cycle", "weekly"], "argument --cycle: cycle: must be"),
        (["update", "m-1", "--remove-fee", "EURO"], "argument --remove-fee: currency: unknown currency 'EURO'"),
        (["list", "--limit", "0"], "argument --limit: must be a whole number from 1 to 100,000"),
        (["list", "--status", "closed"], "argument --status: invalid choice: 'closed'"),
    ],
)
def test_the_command_line_refuses_bad_values_before_connecting(
    argv: list[str], message: str, capsys: pytest.CaptureFixture[str]
) -> None:
    with pytest.raises(SystemExit) as exited:
        build_parser().parse_args(["merchants", *argv])
    assert exited.value.code == 2
    err = capsys.readouterr().err
    assert "Traceback" not in err
    assert err.splitlines()[-1].startswith(f"paystream merchants {argv[0]}: error: {message}"), err


def test_input_errors_found_after_parsing_are_one_line_exit_2(capsys: pytest.CaptureFixture[str]) -> None:
    # Two schedules for one currency, and an update that changes nothing: refused before any connection.
    assert main(["merchants", "add", "m-1", "--name", "x", "--fee", "EUR:1", "--fee", "EUR:2"]) == 2
    assert capsys.readouterr().err == "paystream: error: fee: EUR is given twice\n"
    assert main(["merchants", "update", "m-1"]) == 2
    assert (
        capsys.readouterr().err == "paystream: error: nothing to update: give --name, --fee, --remove-fee or --cycle\n"
    )
