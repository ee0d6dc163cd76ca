"""argparse types for numeric arguments: a value out of its bounds is refused by the parser.

`parser.add_argument("--limit", type=bounded_int(1, 100_000))` makes argparse
print `argument --limit: must be a whole number from 1 to 100,000, got '-5'`
with the command's usage and exit 2, before anything connects anywhere.
"""

from __future__ import annotations

import argparse
import math
from collections.abc import Callable

# Shared bounds, so the same kind of argument has the same range in every command.
ROWS_MAX = 100_000
SEED_MAX = 2**31 - 1
IDLE_EXIT_MS_MAX = 86_400_000


def bounded_int(low: int, high: int) -> Callable[[str], int]:
    """A whole number in low..high, inclusive."""
    assert low <= high

    def parse(text: str) -> int:
        try:
            value = int(text)
        except ValueError:
            value = None
        if value is None or not low <= value <= high:
            raise argparse.ArgumentTypeError(f"must be a whole number from {low:,} to {high:,}, got {text!r}")
        return value

    return parse


def bounded_float(low: float, high: float, *, above_low: bool = False) -> Callable[[str], float]:
    """A finite number in low..high; with `above_low`, strictly above `low`."""
    assert low <= high

    def parse(text: str) -> float:
        try:
            value = float(text)
        except ValueError:
            value = math.nan
        too_low = value <= low if above_low else value < low
        if not math.isfinite(value) or too_low or value > high:
            span = (
                f"above {_shown(low)} and at most {_shown(high)}"
                if above_low
                else f"from {_shown(low)} to {_shown(high)}"
            )
            raise argparse.ArgumentTypeError(f"must be a number {span}, got {text!r}")
        return value

    return parse


def _shown(number: float) -> str:
    return f"{int(number):,}" if float(number).is_integer() else f"{number:g}"


def positive_int(high: int) -> Callable[[str], int]:
    """A whole number in 1..high."""
    return bounded_int(1, high)


ROWS = positive_int(ROWS_MAX)
SEED = bounded_int(0, SEED_MAX)
IDLE_EXIT_MS = positive_int(IDLE_EXIT_MS_MAX)
