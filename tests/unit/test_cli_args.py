"""Numeric command-line arguments are bounded, and argparse refuses a value out of bounds with one clear line."""

from __future__ import annotations

import argparse
from collections.abc import Iterator

import pytest

from paystream.cli.args import SEED_MAX, bounded_float, bounded_int, positive_int
from paystream.cli.main import build_parser


def _actions(parser: argparse.ArgumentParser, path: str = "paystream") -> Iterator[tuple[str, argparse.Action]]:
    for action in parser._actions:
        if isinstance(action, argparse._SubParsersAction):
            for name, child in action.choices.items():
                yield from _actions(child, f"{path} {name}")
        else:
            yield path, action


def test_bounded_int_takes_its_bounds_and_refuses_beyond() -> None:
    parse = bounded_int(2, 10)
    assert [parse("2"), parse("10"), parse(" 7 "), parse("1_0")] == [2, 10, 7, 10]
    for text in ("1", "11", "-5", "0", "", "x", "2.5", "1e1"):
        with pytest.raises(argparse.ArgumentTypeError) as raised:
            parse(text)
        assert str(raised.value) == f"must be a whole number from 2 to 10, got {text!r}"


def test_positive_int_starts_at_one() -> None:
    parse = positive_int(1_000_000)
    assert parse("1") == 1
    with pytest.raises(argparse.ArgumentTypeError, match=r"^must be a whole number from 1 to 1,000,000, got '0'$"):
        parse("0")


def test_bounded_float_refuses_nan_infinity_and_out_of_range() -> None:
    parse = bounded_float(0.1, 3_600)
    assert [parse("0.1"), parse("3600"), parse("2.5")] == [0.1, 3600.0, 2.5]
    for text in ("0.09", "3600.5", "-1", "nan", "inf", "-inf", "fast", ""):
        with pytest.raises(argparse.ArgumentTypeError) as raised:
            parse(text)
        assert str(raised.value) == f"must be a number from 0.1 to 3,600, got {text!r}"


def test_bounded_float_above_low_excludes_low() -> None:
    parse = bounded_float(0, 1_000_000, above_low=True)
    assert parse("0.001") == 0.001
    with pytest.raises(argparse.ArgumentTypeError) as raised:
        parse("0")
    assert str(raised.value) == "must be a number above 0 and at most 1,000,000, got '0'"


def test_no_numeric_argument_is_unbounded() -> None:
    unbounded = [
        f"{path} {'/'.join(action.option_strings) or action.dest}"
        for path, action in _actions(build_parser())
        if action.type in (int, float)
    ]
    assert unbounded == [], "use paystream.cli.args.bounded_int/bounded_float"


@pytest.mark.parametrize(
    ("command_line", "option", "wanted"),
    [
        ("publish --generate -5", "--generate", "whole number from 1 to 10,000,000, got '-5'"),
        ("publish --generate 0", "--generate", "whole number from 1 to 10,000,000, got '0'"),
        ("publish --generate 3 --rate -1", "--rate", "number from 0 to 1,000,000, got '-1'"),
        ("settlements list --limit 0", "--limit", "whole number from 1 to 100,000, got '0'"),
        ("dead-letters list --limit -1", "--limit", "whole number from 1 to 100,000, got '-1'"),
        ("accounts list --limit many", "--limit", "whole number from 1 to 100,000, got 'many'"),
        ("accounts seed --payers 9", "--payers", "whole number from 10 to 1,000,000, got '9'"),
        ("accounts seed --merchants 1001", "--merchants", "whole number from 2 to 1,000, got '1001'"),
        ("settlements follow --interval 0", "--interval", "number from 0.1 to 3,600, got '0'"),
        ("follow outcomes --idle-exit-ms 0", "--idle-exit-ms", "whole number from 1 to 86,400,000, got '0'"),
        ("worker risk --idle-exit-ms -1", "--idle-exit-ms", "whole number from 1 to 86,400,000, got '-1'"),
        ("run --idle-exit-ms x", "--idle-exit-ms", "whole number from 1 to 86,400,000, got 'x'"),
        ("stack logs kafka --lines 0", "--lines", "whole number from 1 to 100,000, got '0'"),
        ("loadtest --rate 0 --duration 5", "--rate", "number above 0 and at most 100,000, got '0'"),
        ("loadtest --rate 5 --duration nan", "--duration", "number above 0 and at most 86,400, got 'nan'"),
        ("demo --payments 0", "--payments", "whole number from 1 to 1,000,000, got '0'"),
        ("demo --duplicates -1", "--duplicates", "whole number from 0 to 1,000,000, got '-1'"),
        ("chaos --kill-interval 0", "--kill-interval", "number above 0 and at most 3,600, got '0'"),
        ("chaos --seed -1", "--seed", f"whole number from 0 to {SEED_MAX:,}, got '-1'"),
        ("bench --repeat 21", "--repeat", "whole number from 1 to 20, got '21'"),
        ("bench --payments 999", "--payments", "whole number from 1,000 to 1,000,000, got '999'"),
    ],
)
def test_the_parser_refuses_out_of_bounds_arguments(
    capsys: pytest.CaptureFixture[str], command_line: str, option: str, wanted: str
) -> None:
    with pytest.raises(SystemExit) as exited:
        build_parser().parse_args(command_line.split())
    assert exited.value.code == 2
    last_line = capsys.readouterr().err.splitlines()[-1]
    assert last_line.endswith(f": error: argument {option}: must be a {wanted}"), last_line


def test_defaults_are_within_their_bounds() -> None:
    """argparse runs only string defaults through `type`: a numeric default out of its own bounds would slip by."""
    checked = []
    for path, action in _actions(build_parser()):
        if isinstance(action.default, int | float) and not isinstance(action.default, bool) and action.type:
            assert callable(action.type)
            assert action.type(str(action.default)) == action.default, f"{path} {action.option_strings}"
            checked.append(action.dest)
    assert "limit" in checked
    assert "generate" not in checked  # no default: required in its group


def test_bench_only_takes_known_systems_and_refuses_the_rest() -> None:
    import argparse

    from paystream.cli.bench import _systems

    assert _systems("paystream, dbceiling") == ("paystream", "dbceiling")
    with pytest.raises(argparse.ArgumentTypeError, match="'paystream,nope': choose from paystream"):
        _systems("paystream,nope")
    with pytest.raises(argparse.ArgumentTypeError):
        _systems(" , ")
