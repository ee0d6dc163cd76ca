"""Risk configuration input is checked before anything is written: each refusal is one line naming the rule."""

from __future__ import annotations

import dataclasses
import getpass
import os

import pytest

from paystream.cli.main import build_parser, main
from paystream.demo_data import build_world
from paystream.risk_config import (
    LIMIT_FIELD_NAMES,
    LIMIT_FIELDS,
    MERCHANT_DAILY_AMOUNT_MAX_MINOR,
    REASON_CHARS_MAX,
    BlockEntry,
    CurrencyLimits,
    RiskConfigError,
    check_block_kind,
    check_block_value,
    check_currency,
    check_limit_changes,
    check_limit_value,
    check_limits,
    check_operator,
    check_reason,
    default_operator,
    demo_risk_config,
    describe_change,
)
from schemas.money import MINOR_UNIT_DIGITS
from workers.risk_rules import REASON_CHARS_MAX as OUTCOME_REASON_CHARS_MAX


def test_currencies_are_those_paystream_knows() -> None:
    assert [check_currency(c) for c in ("USD", "JPY", "CHF")] == ["USD", "JPY", "CHF"]
    for text in ("usd", "XXX", "", "US", "USDD"):
        with pytest.raises(RiskConfigError) as refused:
            check_currency(text)
        assert (
            str(refused.value) == f"unknown currency {text!r}: expected one of {', '.join(sorted(MINOR_UNIT_DIGITS))}"
        )


def test_limit_values_are_positive_and_fit_their_columns() -> None:
    assert check_limit_value("txn_amount_max_minor", 1) == 1
    assert check_limit_value("txn_amount_max_minor", 2**63 - 1) == 2**63 - 1
    assert check_limit_value("payer_10m_count_max", 2**31 - 1) == 2**31 - 1
    # Migration 003's cap: accepted at 2^57, refused one above.
    assert check_limit_value("merchant_daily_amount_max_minor", 2**57) == 2**57 == MERCHANT_DAILY_AMOUNT_MAX_MINOR
    refused = [
        ("txn_amount_max_minor", 0, "from 1 to 9,223,372,036,854,775,807, got 0"),
        ("txn_amount_max_minor", -5, "from 1 to 9,223,372,036,854,775,807, got -5"),
        ("txn_amount_max_minor", 2**63, f"from 1 to 9,223,372,036,854,775,807, got {2**63}"),
        ("payer_24h_count_max", 2**31, f"from 1 to 2,147,483,647, got {2**31}"),
        ("merchant_daily_amount_max_minor", 2**57 + 1, f"from 1 to 144,115,188,075,855,872, got {2**57 + 1}"),
        ("payer_10m_count_max", True, "from 1 to 2,147,483,647, got True"),
    ]
    for name, value, wanted in refused:
        with pytest.raises(RiskConfigError) as raised:
            check_limit_value(name, value)
        assert str(raised.value) == f"{name} must be a whole number {wanted}"
    with pytest.raises(RiskConfigError, match=r"^unknown risk limit 'txn_max': expected one of txn_amount_max_minor, "):
        check_limit_value("txn_max", 5)


def test_a_change_names_at_least_one_limit() -> None:
    assert check_limit_changes({"payer_10m_count_max": 3}) == {"payer_10m_count_max": 3}
    with pytest.raises(RiskConfigError, match=r"^no risk limit to set: give at least one of txn_amount_max_minor"):
        check_limit_changes({})


def test_whole_limits_are_checked_field_by_field() -> None:
    good = CurrencyLimits("EUR", 1, 2, 3, 4, 5, 6)
    assert check_limits(good) is good
    assert good.values() == dict(zip(LIMIT_FIELD_NAMES, (1, 2, 3, 4, 5, 6), strict=True))
    with pytest.raises(RiskConfigError, match=r"^payer_24h_amount_max_minor must be a whole number from 1 to"):
        check_limits(dataclasses.replace(good, payer_24h_amount_max_minor=0))
    with pytest.raises(RiskConfigError, match=r"^unknown currency 'EURO'"):
        check_limits(dataclasses.replace(good, currency="EURO"))


def test_block_values_follow_the_payment_contract() -> None:
    assert check_block_kind("payer") == "payer"
    with pytest.raises(RiskConfigError) as raised:
        check_block_kind("ip")
    assert str(raised.value) == "unknown blocklist kind 'ip': expected one of payer, merchant, country"
    for kind, value in (("payer", "payer-000001"), ("merchant", "m:1_a.b-c"), ("payer", "x" * 64), ("country", "KP")):
        assert check_block_value(check_block_kind(kind), value) == value
    id_rule = "expected 1 to 64 of A-Z a-z 0-9 _ . : - (the {} id of a payment request)"
    for kind, value, wanted in (
        ("payer", "payer 1", id_rule.format("payer")),
        ("payer", "", id_rule.format("payer")),
        ("merchant", "m" * 65, id_rule.format("merchant")),
        ("payer", "payer-1\n", id_rule.format("payer")),
        ("country", "kp", "expected two upper-case letters (ISO 3166-1 alpha-2)"),
        ("country", "KPX", "expected two upper-case letters (ISO 3166-1 alpha-2)"),
    ):
        with pytest.raises(RiskConfigError) as raised:
            check_block_value(check_block_kind(kind), value)
        assert str(raised.value) == f"{kind} {value!r} is not valid: {wanted}"


def test_a_reason_fits_whole_in_a_rejection() -> None:
    # The longest prefix the risk stage puts before it, and the outcome's bound on a reason.
    assert len("blocked_merchant: ") + REASON_CHARS_MAX <= OUTCOME_REASON_CHARS_MAX
    assert check_reason("  chargebacks  ") == "chargebacks"
    assert check_reason("r" * REASON_CHARS_MAX) == "r" * REASON_CHARS_MAX
    for text, wanted in (
        ("", "reason must not be empty"),
        ("   ", "reason must not be empty"),
        ("r" * (REASON_CHARS_MAX + 1), f"reason must be at most 180 characters, got {REASON_CHARS_MAX + 1}"),
        ("two\nlines", "reason must not contain control characters, got 'two\\nlines'"),
        ("nul\x00", "reason must not contain control characters, got 'nul\\x00'"),
        ("half \udcff", "reason must not contain control characters, got 'half \\udcff'"),
    ):
        with pytest.raises(RiskConfigError) as raised:
            check_reason(text)
        assert str(raised.value) == wanted


def test_operator_names_are_bounded() -> None:
    assert check_operator(" alice ") == "alice"
    assert check_operator("o" * 64) == "o" * 64
    with pytest.raises(RiskConfigError, match=r"^operator must be at most 64 characters, got 65$"):
        check_operator("o" * 65)
    with pytest.raises(RiskConfigError, match=r"^operator must not be empty$"):
        check_operator(" ")


def test_the_default_operator_is_the_os_user_with_a_fallback(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(getpass, "getuser", lambda: "ops-someone")
    assert default_operator() == "ops-someone"
    for failure in (OSError("no user"), KeyError("getpwuid(): uid not found: 4242")):

        def failing(error: Exception = failure) -> str:
            raise error

        monkeypatch.setattr(getpass, "getuser", failing)
        assert default_operator() == f"uid:{os.getuid()}"
    # A name that is not a valid operator (from LOGNAME, say) is not recorded either.
    monkeypatch.setattr(getpass, "getuser", lambda: "bad\nname")
    assert default_operator() == f"uid:{os.getuid()}"


def test_describe_change_names_what_changed() -> None:
    assert describe_change({"txn_amount_max_minor": 5, "payer_10m_count_max": 2}, {"txn_amount_max_minor": 7,
                           "payer_10m_count_max": 2}) == "txn_amount_max_minor 5 -> 7"  # fmt: skip
    created = describe_change(None, {"payer_10m_count_max": 2, "txn_amount_max_minor": 5})
    assert created == "txn_amount_max_minor 5; payer_10m_count_max 2"  # in column order
    assert describe_change(None, {"reason": "fraud"}) == "reason 'fraud'"
    assert describe_change({"reason": "a"}, {"reason": "b"}) == "reason 'a' -> 'b'"
    assert describe_change({"reason": "a"}, None) == "reason 'a' -> (removed)"


def test_the_demo_risk_configuration_is_the_seeds_and_valid() -> None:
    world = build_world()
    limits, entries = demo_risk_config(world)
    assert [dataclasses.astuple(x) for x in limits] == [dataclasses.astuple(x) for x in world.limits]
    assert [check_limits(x) for x in limits] == limits
    assert entries[: len(world.blocked_payers)] == [
        BlockEntry("payer", p, "demo: payer reported for fraud") for p in world.blocked_payers
    ]
    assert [e for e in entries if e.kind != "payer"] == [
        BlockEntry("merchant", world.blocked_merchants[0], "demo: merchant under review"),
        BlockEntry("country", "KP", "demo: sanctioned country"),
    ]
    for entry in entries:
        assert check_block_value(entry.kind, entry.value) == entry.value
        assert check_reason(entry.reason) == entry.reason


@pytest.mark.parametrize(
    ("command_line", "wanted"),
    [
        ("risk limits set usd --txn-amount-max 5", "argument CURRENCY: unknown currency 'usd': expected one of AUD"),
        ("risk limits set USD --txn-amount-max 0", "argument --txn-amount-max: must be a whole number from 1 to"),
        (
            f"risk limits set USD --merchant-daily-amount-max {2**57 + 1}",
            "argument --merchant-daily-amount-max: must be a whole number from 1 to 144,115,188,075,855,872, got",
        ),
        ("risk limits set USD --payer-10m-count-max x", "argument --payer-10m-count-max: must be a whole number"),
        ("risk limits show --currency EURO", "argument --currency: unknown currency 'EURO'"),
        ("risk block ip 1.2.3.4 --reason x", "argument KIND: invalid choice: 'ip'"),
        ("risk block payer payer-1", "the following arguments are required: --reason"),
        ("risk unblock planet payer-1", "argument KIND: invalid choice: 'planet'"),
        ("risk list --kind ip", "argument --kind: invalid choice: 'ip'"),
        ("risk list --limit 0", "argument --limit: must be a whole number from 1 to 100,000, got '0'"),
        ("risk history --limit 100001", "argument --limit: must be a whole number from 1 to 100,000, got '100001'"),
    ],
)
def test_the_parser_refuses_bad_risk_arguments(
    capsys: pytest.CaptureFixture[str], command_line: str, wanted: str
) -> None:
    with pytest.raises(SystemExit) as exited:
        build_parser().parse_args(command_line.split())
    assert exited.value.code == 2
    last_line = capsys.readouterr().err.splitlines()[-1]
    assert f": error: {wanted}" in last_line, last_line


def test_every_limit_has_its_option() -> None:
    args = build_parser().parse_args(
        ["risk", "limits", "set", "JPY", *(x for f in LIMIT_FIELDS for x in (f.option, str(LIMIT_FIELDS.index(f) + 1)))]
    )
    assert {name: getattr(args, name) for name in LIMIT_FIELD_NAMES} == dict(
        zip(LIMIT_FIELD_NAMES, range(1, 7), strict=True)
    )
    assert args.currency == "JPY"
    assert args.operator is None  # the OS user, looked up when the command runs


@pytest.mark.parametrize(
    ("argv", "wanted"),
    [
        (["risk", "limits", "set", "USD"], "nothing to set: give at least one of --txn-amount-max, "),
        (
            ["risk", "block", "payer", "payer 1", "--reason", "r"],
            "payer 'payer 1' is not valid: expected 1 to 64 of A-Z a-z 0-9 _ . : - (the payer id of a payment request)",
        ),
        (["risk", "block", "country", "KP", "--reason", " "], "reason must not be empty"),
        (["risk", "unblock", "payer", " "], "payer must not be empty"),
        (["risk", "unblock", "merchant", "m" * 65], "merchant must be at most 64 characters, got 65"),
        (["risk", "block", "payer", "payer-1", "--reason", "r", "--operator", ""], None),
    ],
)
def test_bad_input_is_one_line_and_exit_2_before_connecting(
    capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch, argv: list[str], wanted: str | None
) -> None:
    # Nothing listens here: a refusal that connected first would be a connection error instead.
    monkeypatch.setenv("PAYSTREAM_DATABASE_URL", "postgresql://nobody@127.0.0.1:9/none")
    if wanted is None:  # refused by argparse (the operator's type), with the usage
        with pytest.raises(SystemExit) as exited:
            main(argv)
        assert exited.value.code == 2
        assert capsys.readouterr().err.splitlines()[-1].endswith("argument --operator: operator must not be empty")
        return
    assert main(argv) == 2
    captured = capsys.readouterr()
    assert captured.out == ""
    lines = captured.err.splitlines()
    assert len(lines) == 1 and lines[0].startswith(f"paystream: error: {wanted}"), captured.err
